package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DockerImage is the image StartDocker imports from the busybox rootfs.
const DockerImage = "clawd-test/busybox"

// Docker is a dockerd private to a test process, running its containers on
// the harness containerd (namespace "moby").
type Docker struct {
	Host    string // unix:///tmp/ce2e-<id>/d.sock
	Dir     string
	LogPath string

	id     string
	cmd    *exec.Cmd
	exited chan struct{}
	once   sync.Once

	netMu         sync.Mutex
	netGatewayMAC map[string]string // Docker network -> its gateway's MAC (Network)
}

// StartDocker starts dockerd on containerd c (so Docker tasks are visible in
// namespace "moby") without touching the host network (--iptables=false
// --bridge=none) and imports DockerImage. Stopped at t.Cleanup.
func StartDocker(t testing.TB, c *Containerd) *Docker {
	t.Helper()
	RequireRoot(t)
	d, err := startDocker(c, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	return d
}

var (
	sharedDockerOnce sync.Once
	sharedDocker     *Docker
	sharedDockerErr  error
)

// SharedDocker returns the package's dockerd (on SharedContainerd), started
// on first use and stopped by Main.
func SharedDocker(t testing.TB) *Docker {
	t.Helper()
	ctd := SharedContainerd(t)
	sharedDockerOnce.Do(func() {
		var logDir string
		if logDir, sharedDockerErr = ownedDir(); sharedDockerErr != nil {
			return
		}
		sharedDocker, sharedDockerErr = startDocker(ctd, logDir)
		if sharedDockerErr == nil {
			addSharedCleanup(func() { sharedDocker.stop(); removeOwnedDir(logDir) })
		}
	})
	if sharedDockerErr != nil {
		t.Fatal(sharedDockerErr)
	}
	return sharedDocker
}

func startDocker(c *Containerd, logDir string) (d *Docker, err error) {
	for _, bin := range []string{"dockerd", "docker"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("start docker: %w (install the Debian package docker.io)", err)
		}
	}
	rootfs, err := ensureRootfs()
	if err != nil {
		return nil, err
	}
	id := shortID(8)
	if err := markOwned(id); err != nil {
		return nil, err
	}
	dir := filepath.Join(os.TempDir(), tmpPrefix+id)
	d = &Docker{Host: "unix://" + filepath.Join(dir, "d.sock"), Dir: dir, LogPath: filepath.Join(logDir, "dockerd.log"), id: id}
	defer func() {
		if err != nil {
			d.stop()
			err = fmt.Errorf("start docker: %w", err)
		}
	}()
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return d, err
	}
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		return d, err
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return d, err
	}
	defer logf.Close()
	cmd := exec.Command("dockerd",
		"--host", d.Host,
		"--containerd", c.Address,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "x"),
		"--pidfile", filepath.Join(dir, "d.pid"),
		"--config-file", cfg,
		"--storage-driver", "vfs",
		"--iptables=false", "--bridge=none", "--ip-masq=false", "--ip-forward=false",
		"--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return d, err
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func() { cmd.Wait(); close(d.exited) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-d.exited:
			log, _ := os.ReadFile(d.LogPath)
			return d, fmt.Errorf("dockerd exited: %s", tail(log, 2000))
		default:
		}
		if _, _, err := d.docker(context.Background(), nil, "version", "--format", "{{.Server.APIVersion}}"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("dockerd at %s not ready after 60s (log %s)", d.Host, d.LogPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var img bytes.Buffer
	if err := tarDir(rootfs, &img); err != nil {
		return d, fmt.Errorf("tar rootfs: %w", err)
	}
	if _, stderr, err := d.docker(context.Background(), &img, "import", "-", DockerImage); err != nil {
		return d, fmt.Errorf("docker import: %v: %s", err, stderr)
	}
	return d, nil
}

// CLI runs the docker CLI against this daemon (e.g. "exec", "--privileged", ...).
func (d *Docker) CLI(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return d.docker(ctx, nil, args...)
}

// docker runs the docker CLI against this daemon.
func (d *Docker) docker(ctx context.Context, stdin io.Reader, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"--host", d.Host}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(d.Dir, "cli"))
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func (d *Docker) stop() {
	d.once.Do(func() {
		if d.cmd != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if out, _, err := d.docker(ctx, nil, "ps", "-aq"); err == nil && strings.TrimSpace(out) != "" {
				d.docker(ctx, nil, append([]string{"rm", "-f"}, strings.Fields(out)...)...)
			}
			cancel()
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(20 * time.Second):
				d.cmd.Process.Kill()
				<-d.exited
			}
		}
		removeID(d.id)
	})
}

// tarDir writes dir as a tar stream (for docker import).
func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	var paths []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dir {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = rel
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// Run starts a Docker container from DockerImage (`docker run -d --network
// none`) and gives it the same veth network as containerd containers, via
// its /proc/PID/ns/net bind-mounted at /run/netns/clawd-c-<id>. Labels are
// Docker labels. Removed at t.Cleanup.
func (d *Docker) Run(t testing.TB, name string, o RunOpts) *Container {
	t.Helper()
	ct, err := d.run(name, o)
	if err != nil {
		t.Fatalf("docker run %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := ct.stop(); err != nil {
			t.Errorf("remove docker container %s: %v", ct.Name, err)
		}
	})
	return ct
}

func (d *Docker) run(name string, o RunOpts) (ct *Container, err error) {
	short := shortID(8)
	ct = &Container{Name: name + "-" + short, Namespace: "moby", Runtime: "docker", short: short}
	defer func() {
		if err != nil {
			ct.stop()
		}
	}()
	if o.NetnsOf != nil {
		return ct, errors.New("RunOpts.NetnsOf is supported for containerd containers only")
	}
	network := "none"
	if o.DockerNetwork != "" {
		network = o.DockerNetwork
	}
	args := []string{"run", "-d", "--network", network, "--name", ct.Name}
	keys := make([]string, 0, len(o.Labels))
	for k := range o.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--label", k+"="+o.Labels[k])
	}
	for _, c := range o.Caps {
		args = append(args, "--cap-add", strings.TrimPrefix(c, "CAP_"))
	}
	for _, c := range o.CapDrop {
		args = append(args, "--cap-drop", strings.TrimPrefix(c, "CAP_"))
	}
	for _, dev := range o.Devices {
		args = append(args, "--device", dev)
	}
	for host, inside := range o.Files {
		args = append(args, "-v", host+":"+inside+":ro")
	}
	for _, e := range o.Env {
		args = append(args, "-e", e)
	}
	cmdArgs := o.Args
	if len(cmdArgs) == 0 {
		cmdArgs = []string{"sleep", "3600"}
	}
	args = append(append(args, DockerImage), cmdArgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, stderr, err := d.docker(ctx, nil, args...)
	if err != nil {
		return ct, fmt.Errorf("%v: %s", err, stderr)
	}
	ct.ID = strings.TrimSpace(out)
	ct.remove = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, stderr, err := d.docker(ctx, nil, "rm", "-f", ct.ID); err != nil && !strings.Contains(stderr, "No such container") {
			return fmt.Errorf("docker rm: %v: %s", err, stderr)
		}
		return nil
	}
	out, stderr, err = d.docker(ctx, nil, "inspect", "--format", "{{.State.Pid}}", ct.ID)
	if err != nil {
		return ct, fmt.Errorf("inspect: %v: %s", err, stderr)
	}
	if ct.PID, err = strconv.Atoi(strings.TrimSpace(out)); err != nil || ct.PID <= 0 {
		return ct, fmt.Errorf("container %s has no PID (%q); did it exit?", ct.Name, out)
	}
	mode := o.Network
	if o.DockerNetwork != "" {
		mode = "none" // Docker's network driver made eth0
	}
	if err := ct.setupNetwork(mode, fmt.Sprintf("/proc/%d/ns/net", ct.PID), o.PeerNetns); err != nil {
		return ct, err
	}
	if o.DockerNetwork != "" {
		out, stderr, err := d.docker(ctx, nil, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}", ct.ID)
		if err != nil {
			return ct, fmt.Errorf("inspect network: %v: %s", err, stderr)
		}
		f := strings.Fields(out)
		if len(f) < 1 {
			return ct, fmt.Errorf("container %s has no address on %s: %q", ct.Name, o.DockerNetwork, out)
		}
		if ct.IPv4, err = netip.ParseAddr(f[0]); err != nil {
			return ct, err
		}
		ct.GatewayMAC = d.netGatewayMAC[o.DockerNetwork]
	}
	ct.exec = func(ctx context.Context, args ...string) (string, string, int, error) {
		stdout, stderr, err := d.docker(ctx, nil, append([]string{"exec", ct.ID}, args...)...)
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil {
			if ee.ExitCode() == 126 || ee.ExitCode() == 127 || (ee.ExitCode() == 1 && strings.Contains(stderr, "Error response from daemon")) {
				if strings.Contains(stderr, "Error response from daemon") || strings.Contains(stderr, "OCI runtime exec failed") {
					return stdout, stderr, -1, fmt.Errorf("docker exec %v: %s", args, strings.TrimSpace(stderr))
				}
			}
			return stdout, stderr, ee.ExitCode(), nil
		}
		if err != nil {
			return stdout, stderr, -1, fmt.Errorf("docker exec %v: %w", args, err)
		}
		return stdout, stderr, 0, nil
	}
	return ct, nil
}

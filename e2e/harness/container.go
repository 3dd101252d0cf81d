package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RunOpts configures a test container.
type RunOpts struct {
	Labels  map[string]string
	Args    []string          // default: sleep 3600
	Network string            // "veth" (default) or "none" (lo only)
	Caps    []string          // extra capabilities, e.g. CAP_NET_RAW, CAP_NET_ADMIN
	Files   map[string]string // host path -> path in the container (read-only bind mount)
	Env     []string          // extra KEY=VALUE environment
	CapDrop []string          // capabilities to drop, e.g. CAP_NET_RAW (--cap-drop)
	Devices []string          // host device nodes to give the container, e.g. /dev/net/tun
	// PeerNetns puts the far end of the container's veth into this network
	// namespace (e.g. the upstream's) instead of the host's: the container
	// then reaches that namespace directly, not through the host.
	PeerNetns string
	// DockerNetwork (Docker only) runs the container on this Docker
	// network (see Docker.Network) instead of the harness veth.
	DockerNetwork string
	// NetnsOf joins another running container's network namespace, as the
	// containers of a Kubernetes pod share theirs (Network is ignored). The
	// container's addresses are that one's; its namespace outlives this one.
	// containerd only.
	NetnsOf *Container
	// Rootfs, when set, is a read-only root (AgentRoot) the container gets
	// a private overlay of, instead of a copy of the busybox root. Writes
	// (clawd's --trust-ca among them) land in the overlay's upper layer.
	Rootfs string
	// Namespace is the containerd namespace (default "default"): daemons
	// on one machine that watch different namespaces each get their own
	// containers (the fleet tests). containerd only.
	Namespace string
}

// Container is a running test container.
type Container struct {
	ID, Name, Namespace string
	Runtime             string // "containerd" or "docker"
	PID                 int    // init process on the host
	Netns               string // /run/netns/clawd-c-<id>
	IPv4, IPv6          netip.Addr
	HostVeth            string // host side of the veth ("" for Network "none")
	HostIPv4, HostIPv6  netip.Addr
	GatewayMAC          string // MAC of the next hop on eth0, for packet-socket frames

	short    string
	peerNs   string // netns holding the far end of the veth (PeerNetns)
	joined   bool   // in another container's network namespace (RunOpts.NetnsOf)
	slotLock *os.File
	exec     func(ctx context.Context, args ...string) (string, string, int, error)
	remove   func() error
	stopOnce sync.Once
	stopErr  error
}

const ctrNamespace = "default"

func withNamespace(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}

// Run starts a busybox container named name-<rand> in containerd namespace
// "default", with its own network namespace (see the package doc), and
// removes it at t.Cleanup. Labels become containerd container labels.
func (c *Containerd) Run(t testing.TB, name string, o RunOpts) *Container {
	t.Helper()
	ct, err := c.run(name, o)
	if err != nil {
		t.Fatalf("run container %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := ct.stop(); err != nil {
			t.Errorf("remove container %s: %v", ct.ID, err)
		}
	})
	return ct
}

func (c *Containerd) run(name string, o RunOpts) (ct *Container, err error) {
	cl := c.Client()
	if cl == nil {
		return nil, errors.New("containerd is stopped")
	}
	short := shortID(8)
	ns := o.Namespace
	if ns == "" {
		ns = ctrNamespace
	}
	ct = &Container{ID: name + "-" + short, Name: name + "-" + short, Namespace: ns, Runtime: "containerd", short: short}
	defer func() {
		if err != nil {
			ct.stop()
		}
	}()
	if o.NetnsOf != nil {
		ct.joinNetwork(o.NetnsOf)
	} else if err := ct.setupNetwork(o.Network, "", o.PeerNetns); err != nil {
		return ct, err
	}
	var rootfs string
	unmount := func() {}
	if o.Rootfs != "" {
		rootfs, unmount, err = overlayRootfs(o.Rootfs, filepath.Join(c.Dir, "rootfs", ct.ID+".ovl"))
	} else {
		rootfs, err = containerRootfs(filepath.Join(c.Dir, "rootfs", ct.ID))
	}
	if err != nil {
		return ct, err
	}
	ct.remove = func() error { unmount(); return nil }
	args := o.Args
	if len(args) == 0 {
		args = []string{"sleep", "3600"}
	}
	var mounts []specs.Mount
	for host, inside := range o.Files {
		mounts = append(mounts, specs.Mount{Destination: inside, Type: "bind", Source: host, Options: []string{"rbind", "ro"}})
	}
	mounts = append(mounts, specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}})
	specOpts := []oci.SpecOpts{
		oci.WithRootFSPath(rootfs),
		oci.WithProcessArgs(args...),
		oci.WithDefaultPathEnv,
		oci.WithEnv(o.Env),
		oci.WithHostname(name),
		oci.WithMounts(mounts),
		oci.WithAddedCapabilities(o.Caps),
		oci.WithDroppedCapabilities(o.CapDrop),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ct.Netns}),
	}
	for _, dev := range o.Devices {
		specOpts = append(specOpts, oci.WithDevices(dev, dev, "rwm"))
	}
	ctx, cancel := context.WithTimeout(withNamespace(context.Background(), ns), time.Minute)
	defer cancel()
	cctr, err := cl.NewContainer(ctx, ct.ID, containerd.WithContainerLabels(o.Labels), containerd.WithNewSpec(specOpts...))
	if err != nil {
		return ct, fmt.Errorf("create container: %w", err)
	}
	logPath := filepath.Join(c.Dir, "rootfs", ct.ID+".log")
	// Containers are loaded again on every call: the client is replaced when
	// containerd restarts.
	load := func(ctx context.Context) (containerd.Container, error) {
		cl := c.Client()
		if cl == nil {
			return nil, errors.New("containerd is stopped")
		}
		return cl.LoadContainer(ctx, ct.ID)
	}
	ct.remove = func() error {
		ctx, cancel := context.WithTimeout(withNamespace(context.Background(), ns), time.Minute)
		defer cancel()
		cctr, err := load(ctx)
		if err == nil {
			err = deleteContainer(ctx, cctr)
		} else if errdefs.IsNotFound(err) {
			err = nil
		}
		unmount()
		os.RemoveAll(rootfs)
		os.Remove(logPath)
		return err
	}
	task, err := cctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		return ct, fmt.Errorf("create task: %w", err)
	}
	ct.PID = int(task.Pid())
	if err := task.Start(ctx); err != nil {
		return ct, fmt.Errorf("start task: %w", err)
	}
	fifoDir := filepath.Join(c.Dir, "fifo")
	ct.exec = func(ctx context.Context, args ...string) (string, string, int, error) {
		ctx = withNamespace(ctx, ns)
		cctr, err := load(ctx)
		if err != nil {
			return "", "", -1, fmt.Errorf("exec: load container: %w", err)
		}
		return execTask(ctx, ns, cctr, fifoDir, args)
	}
	return ct, nil
}

var execSeq struct {
	sync.Mutex
	n int
}

// execTask runs args in the container's task and collects its output.
func execTask(ctx context.Context, ns string, cctr containerd.Container, fifoDir string, args []string) (string, string, int, error) {
	task, err := cctr.Task(ctx, nil)
	if err != nil {
		return "", "", -1, fmt.Errorf("exec: load task: %w", err)
	}
	spec, err := cctr.Spec(ctx)
	if err != nil {
		return "", "", -1, fmt.Errorf("exec: load spec: %w", err)
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Terminal = false
	execSeq.Lock()
	execSeq.n++
	execID := fmt.Sprintf("exec-%d-%s", execSeq.n, shortID(4))
	execSeq.Unlock()
	var stdout, stderr lockedBuffer
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		return "", "", -1, err
	}
	p, err := task.Exec(ctx, execID, &pspec, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(fifoDir)))
	if err != nil {
		return "", "", -1, fmt.Errorf("exec %v: %w", args, err)
	}
	// Delete with a fresh context: the process must not outlive a cancelled call.
	defer func() {
		dctx, cancel := context.WithTimeout(withNamespace(context.Background(), ns), 30*time.Second)
		defer cancel()
		p.Delete(dctx, containerd.WithProcessKill)
	}()
	statusC, err := p.Wait(ctx)
	if err != nil {
		return "", "", -1, fmt.Errorf("exec %v: wait: %w", args, err)
	}
	if err := p.Start(ctx); err != nil {
		return "", "", -1, fmt.Errorf("exec %v: start: %w", args, err)
	}
	select {
	case st := <-statusC:
		code, _, err := st.Result()
		if err != nil {
			return "", "", -1, fmt.Errorf("exec %v: %w", args, err)
		}
		// Output is complete once the IO copiers have finished, which needs
		// every writer of the FIFOs gone. A background child ("cmd &") keeps
		// them open forever, so after the process exits give the copiers a
		// short grace period, then cut them off.
		ioDone := make(chan struct{})
		go func() { p.IO().Wait(); close(ioDone) }()
		select {
		case <-ioDone:
		case <-time.After(2 * time.Second):
			p.IO().Cancel()
			p.IO().Close()
		case <-ctx.Done():
			p.IO().Cancel()
			p.IO().Close()
		}
		return stdout.String(), stderr.String(), int(code), nil
	case <-ctx.Done():
		kctx, cancel := context.WithTimeout(withNamespace(context.Background(), ns), 10*time.Second)
		p.Kill(kctx, syscall.SIGKILL)
		cancel()
		return "", "", -1, fmt.Errorf("exec %v: %w", args, ctx.Err())
	}
}

// deleteContainer kills and deletes the task (if any), then the container.
func deleteContainer(ctx context.Context, cctr containerd.Container) error {
	if task, err := cctr.Task(ctx, nil); err == nil {
		if st, err := task.Wait(ctx); err == nil {
			if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
				// A created-but-not-started task cannot always be killed; delete forces it.
				_ = err
			}
			select {
			case <-st:
			case <-time.After(10 * time.Second):
			}
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task: %w", err)
		}
	}
	if err := cctr.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container: %w", err)
	}
	return nil
}

// Exec runs args inside the container and returns its output and exit code.
// err is only set when the command could not be run at all.
func (ct *Container) Exec(ctx context.Context, args ...string) (stdout, stderr string, exit int, err error) {
	if ct.exec == nil {
		return "", "", -1, errors.New("container is not running")
	}
	return ct.exec(ctx, args...)
}

// Stop kills the task and deletes task and container (firing the runtime's
// exit/delete events) and removes its network. Safe to call twice.
func (ct *Container) Stop(t testing.TB) {
	t.Helper()
	if err := ct.stop(); err != nil {
		t.Errorf("stop container %s: %v", ct.ID, err)
	}
}

func (ct *Container) stop() error {
	ct.stopOnce.Do(func() {
		if ct.remove != nil {
			ct.stopErr = ct.remove()
		}
		ct.exec = nil
		ct.teardownNetwork()
	})
	return ct.stopErr
}

// overlayRootfs mounts an overlay of the read-only lower root at
// dir/merged (upper and work beside it), with the harness's resolv.conf
// and hosts, and returns it with the function that unmounts and removes it.
func overlayRootfs(lower, dir string) (string, func(), error) {
	merged := filepath.Join(dir, "merged")
	upper := filepath.Join(dir, "upper")
	work := filepath.Join(dir, "work")
	for _, d := range []string{merged, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", nil, err
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("mount overlay of %s: %w", lower, err)
	}
	var once sync.Once
	unmount := func() {
		once.Do(func() {
			syscall.Unmount(merged, syscall.MNT_DETACH)
			os.RemoveAll(dir)
		})
	}
	for name, content := range map[string]string{
		"etc/resolv.conf": "nameserver " + UpstreamDNS.String() + "\n",
		"etc/hosts":       "127.0.0.1 localhost\n::1 localhost\n",
	} {
		p := filepath.Join(merged, name)
		os.Remove(p) // it may be a link into the host's /run
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			unmount()
			return "", nil, err
		}
	}
	return merged, unmount, nil
}

// lockedBuffer is written by the IO copier while Exec may already read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

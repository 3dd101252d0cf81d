package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// Containerd is a containerd daemon private to a test process: its own
// config, socket, root and state under /tmp/ce2e-<id> (short, because a unix
// socket path is limited to 108 bytes).
type Containerd struct {
	Address string // unix socket path
	Root    string
	State   string
	Dir     string // base dir holding everything above
	LogPath string // containerd's stdout/stderr

	id     string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	client *containerd.Client
}

// StartContainerd starts a containerd and waits until it answers; it is
// stopped (and its containers killed) at t.Cleanup. Prefer SharedContainerd
// to start one per test package.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	RequireRoot(t)
	c, err := startContainerd(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)
	return c
}

var (
	sharedCtdOnce sync.Once
	sharedCtd     *Containerd
	sharedCtdErr  error
)

// SharedContainerd returns the package's containerd, started on first use
// and stopped by Main.
func SharedContainerd(t testing.TB) *Containerd {
	t.Helper()
	RequireRoot(t)
	sharedCtdOnce.Do(func() {
		var logDir string
		if logDir, sharedCtdErr = ownedDir(); sharedCtdErr != nil {
			return
		}
		sharedCtd, sharedCtdErr = startContainerd(logDir)
		if sharedCtdErr == nil {
			addSharedCleanup(func() { sharedCtd.stopAll(); removeOwnedDir(logDir) })
		}
	})
	if sharedCtdErr != nil {
		t.Fatal(sharedCtdErr)
	}
	return sharedCtd
}

const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""
`

func startContainerd(logDir string) (c *Containerd, err error) {
	if _, err := exec.LookPath("containerd"); err != nil {
		return nil, fmt.Errorf("start containerd: %w (install the Debian package containerd)", err)
	}
	id := shortID(8)
	if err := markOwned(id); err != nil {
		return nil, err
	}
	dir := filepath.Join(os.TempDir(), tmpPrefix+id)
	c = &Containerd{
		Dir: dir, Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"),
		Address: filepath.Join(dir, "c.sock"), LogPath: filepath.Join(logDir, "containerd.log"), id: id,
	}
	defer func() {
		if err != nil {
			c.stopAll()
			err = fmt.Errorf("start containerd: %w", err)
		}
	}()
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return c, err
	}
	cfg := fmt.Sprintf(containerdConfig, c.Root, c.State, c.Address, c.Address+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		return c, err
	}
	if err := c.start(); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Containerd) start() error {
	logf, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("containerd", "--config", filepath.Join(c.Dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Die with the test process; shims (and so containers) survive, which
	// CleanupStale takes care of.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := containerd.New(c.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		return err
	}
	for {
		select {
		case <-exited:
			cl.Close()
			log, _ := os.ReadFile(c.LogPath)
			return fmt.Errorf("containerd exited: %s", tail(log, 2000))
		default:
		}
		if ok, err := cl.IsServing(ctx); err == nil && ok {
			break
		}
		if ctx.Err() != nil {
			cl.Close()
			return fmt.Errorf("containerd at %s not ready after 30s (log %s)", c.Address, c.LogPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.mu.Lock()
	old := c.client
	c.client = cl
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Client returns a containerd client for this daemon (owned by the harness:
// do not Close it).
func (c *Containerd) Client() *containerd.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client
}

// Restart stops containerd (SIGTERM) and starts it again on the same dirs;
// running tasks survive in their shims.
func (c *Containerd) Restart(t testing.TB) {
	t.Helper()
	c.stopDaemon()
	if err := c.start(); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
}

// Stop stops the daemon without touching its containers (tests of a
// runtime that is down); Restart brings it back.
func (c *Containerd) Stop(t testing.TB) {
	t.Helper()
	c.stopDaemon()
}

func (c *Containerd) stopDaemon() {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// stopAll kills every task, stops the daemon and removes its dirs.
func (c *Containerd) stopAll() {
	c.mu.Lock()
	cl := c.client
	c.client = nil
	c.mu.Unlock()
	if cl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		killAllContainers(ctx, cl)
		cancel()
		cl.Close()
	}
	c.stopDaemon()
	// Whatever is left (shims after a failed kill) goes the stale way.
	removeID(c.id)
}

func killAllContainers(ctx context.Context, cl *containerd.Client) {
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		return
	}
	for _, ns := range nss {
		nctx := withNamespace(ctx, ns)
		cs, err := cl.Containers(nctx)
		if err != nil {
			continue
		}
		for _, ctr := range cs {
			deleteContainer(nctx, ctr)
		}
	}
}

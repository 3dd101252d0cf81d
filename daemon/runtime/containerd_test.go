package runtime

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/clawd-dev/clawd/e2e/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// waitEvent returns the first event matching, failing after a generous
// guard timeout (the runtime, not the test, decides how fast events come).
func waitEvent(t *testing.T, evs <-chan Event, what string, ok func(Event) bool) Event {
	t.Helper()
	guard := time.After(60 * time.Second)
	for {
		select {
		case ev, open := <-evs:
			if !open {
				t.Fatalf("event stream closed while waiting for %s", what)
			}
			if ok(ev) {
				return ev
			}
		case <-guard:
			t.Fatalf("no %s event", what)
		}
	}
}

func isEvent(typ EventType, id string) func(Event) bool {
	return func(ev Event) bool { return ev.Type == typ && ev.Container.ID == id }
}

func newContainerdRuntime(t *testing.T, addr string) *Containerd {
	t.Helper()
	r, err := NewContainerd(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c := r.(*Containerd)
	c.minBackoff, c.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	return c
}

func TestContainerdLifecycle(t *testing.T) {
	harness.RequireRoot(t)
	ctd := harness.SharedContainerd(t)
	r := newContainerdRuntime(t, ctd.Address)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, _ := r.Events(ctx)

	ct := ctd.Run(t, "life", harness.RunOpts{Network: "none", Labels: map[string]string{"clawd.attach": "true", "team": "a"}})
	ev := waitEvent(t, evs, "task created", isEvent(TaskCreated, ct.ID))
	if ev.Container.PID != ct.PID || ev.Container.Namespace != "default" || ev.Container.Runtime != "containerd" || !AutoAttach(ev.Container.Labels) || ev.Container.Labels["team"] != "a" {
		t.Fatalf("created event = %+v, want PID %d with labels", ev, ct.PID)
	}

	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range list {
		if c.ID == ct.ID && c.PID == ct.PID {
			found = true
		}
	}
	if !found {
		t.Fatalf("List() = %+v, missing %s", list, ct.ID)
	}

	for _, ref := range []string{ct.ID, ct.ID[:len(ct.ID)-2]} {
		got, err := Multi{r}.Resolve(ctx, ref, "")
		if err != nil || got.ID != ct.ID || got.PID != ct.PID {
			t.Fatalf("Resolve(%q) = %+v, %v", ref, got, err)
		}
	}
	if _, err := (Multi{r}).Resolve(ctx, "no-such-container", ""); err == nil || !strings.Contains(err.Error(), `no container "no-such-container" in containerd (namespaces default, moby, k8s.io)`) {
		t.Fatalf("unknown container: %v", err)
	}
	if _, err := (Multi{r}).Resolve(ctx, ct.ID, "k8s.io"); err == nil {
		t.Fatal("Resolve in the wrong namespace found the container")
	}

	// An exec'd process exiting is not the container exiting.
	if _, _, code, err := ct.Exec(ctx, "true"); err != nil || code != 0 {
		t.Fatalf("exec: %d %v", code, err)
	}
	ct.Stop(t)
	ev = waitEvent(t, evs, "task exited", func(ev Event) bool { return ev.Container.ID == ct.ID })
	if ev.Type != TaskExited {
		t.Fatalf("after exec and stop got %v first, want task-exited", ev.Type)
	}
	if !AutoAttach(ev.Container.Labels) {
		t.Errorf("exit event lost the labels: %+v", ev.Container)
	}
}

// TaskCreated carries the PID before the container's process runs: that is
// where clawd attaches, before the agent's first instruction.
func TestContainerdCreatedBeforeStart(t *testing.T) {
	harness.RequireRoot(t)
	ctd := harness.SharedContainerd(t)
	r := newContainerdRuntime(t, ctd.Address)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, _ := r.Events(ctx)

	nctx := namespaces.WithNamespace(ctx, "default")
	id := "early-" + strings.ReplaceAll(t.Name(), "/", "-")
	cl := ctd.Client()
	c, err := cl.NewContainer(nctx, id, containerd.WithContainerLabels(map[string]string{"clawd.dev/attach": "true"}),
		containerd.WithNewSpec(oci.WithRootFSPath(harness.BusyboxRootfs(t)), oci.WithRootFSReadonly(), oci.WithDefaultPathEnv, oci.WithProcessArgs("sleep", "60")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx := namespaces.WithNamespace(context.Background(), "default")
		if task, err := c.Task(dctx, nil); err == nil {
			task.Delete(dctx, containerd.WithProcessKill)
		}
		c.Delete(dctx)
	})
	task, err := c.NewTask(nctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, evs, "task created", isEvent(TaskCreated, id))
	if ev.Container.PID != int(task.Pid()) || !AutoAttach(ev.Container.Labels) {
		t.Fatalf("event %+v, want PID %d and attach label", ev, task.Pid())
	}
	cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(ev.Container.PID) + "/cmdline")
	if strings.Contains(string(cmd), "sleep") {
		t.Fatalf("process already runs %q at task-created", cmd)
	}
}

// The watcher survives a containerd restart: it reports the outage on the
// error channel, reconnects, and reports what changed meanwhile.
func TestContainerdRestart(t *testing.T) {
	harness.RequireRoot(t)
	ctd := harness.StartContainerd(t)
	r := newContainerdRuntime(t, ctd.Address)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, errs := r.Events(ctx)

	keep := ctd.Run(t, "keep", harness.RunOpts{Network: "none"})
	waitEvent(t, evs, "created keep", isEvent(TaskCreated, keep.ID))
	gone := ctd.Run(t, "gone", harness.RunOpts{Network: "none"})
	waitEvent(t, evs, "created gone", isEvent(TaskCreated, gone.ID))

	ctd.Stop(t)
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), ctd.Address) {
			t.Errorf("error %q does not name the socket", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no error reported while containerd is down")
	}
	// The container dies while nobody listens.
	if p, err := os.FindProcess(gone.PID); err == nil {
		p.Kill()
	}
	ctd.Restart(t)

	ev := waitEvent(t, evs, "exit of gone after reconnect", func(ev Event) bool {
		return ev.Container.ID == gone.ID || ev.Container.ID == keep.ID && ev.Type == TaskExited
	})
	if ev.Type != TaskExited || ev.Container.ID != gone.ID {
		t.Fatalf("got %v for %s, want task-exited for %s", ev.Type, ev.Container.ID, gone.ID)
	}
	// Live events flow again.
	again := ctd.Run(t, "again", harness.RunOpts{Network: "none"})
	waitEvent(t, evs, "created after restart", isEvent(TaskCreated, again.ID))
	if _, err := (Multi{r}).Resolve(ctx, keep.ID, ""); err != nil {
		t.Fatalf("resolve after restart: %v", err)
	}
}

func TestUnreachableRuntime(t *testing.T) {
	harness.RequireRoot(t)
	missing := t.TempDir() + "/missing.sock"
	down, err := NewContainerd(missing, []string{"default"})
	if err != nil {
		t.Fatalf("NewContainerd must connect lazily: %v", err)
	}
	defer down.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := down.List(ctx); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("List on a missing socket: %v, want an error naming it", err)
	}
	// Events keeps retrying and says why.
	evs, errs := down.Events(ctx)
	select {
	case err := <-errs:
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Fatalf("Events error %v, want one naming %s", err, missing)
		}
	case ev := <-evs:
		t.Fatalf("event %+v from a missing runtime", ev)
	case <-ctx.Done():
		t.Fatal("no error from Events on a missing socket")
	}
	dmissing := "unix://" + t.TempDir() + "/d.sock"
	ddown, err := NewDocker(dmissing)
	if err != nil {
		t.Fatalf("NewDocker must connect lazily: %v", err)
	}
	defer ddown.Close()
	if _, err := ddown.List(ctx); err == nil || !strings.Contains(err.Error(), dmissing) {
		t.Fatalf("docker List on a missing socket: %v", err)
	}

	ctd := harness.SharedContainerd(t)
	up := newContainerdRuntime(t, ctd.Address)
	ct := ctd.Run(t, "reach", harness.RunOpts{Network: "none"})
	got, err := Multi{down, up}.Resolve(ctx, ct.ID, "")
	if err != nil || got.ID != ct.ID {
		t.Fatalf("Resolve with one runtime down: %+v %v", got, err)
	}
	if _, err := (Multi{down}).Resolve(ctx, ct.ID, ""); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Resolve with all runtimes down: %v", err)
	}
}

package runtime

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

func newDockerRuntime(t *testing.T, host string) *Docker {
	t.Helper()
	r, err := NewDocker(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	d := r.(*Docker)
	d.minBackoff, d.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	return d
}

// Docker runs on the harness containerd: Multi reports its containers once,
// with the Docker name and labels, as soon as containerd creates the task.
func TestDockerOnSharedContainerd(t *testing.T) {
	harness.RequireRoot(t)
	ctd := harness.SharedContainerd(t)
	dk := harness.SharedDocker(t)
	d := newDockerRuntime(t, dk.Host)
	c := newContainerdRuntime(t, ctd.Address)
	m := Multi{c, d}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, _ := m.Events(ctx)
	devs, _ := d.Events(ctx)

	ct := dk.Run(t, "agent", harness.RunOpts{Network: "none", Labels: map[string]string{"clawd.dev/attach": "true"}})
	ev := waitEvent(t, evs, "task created", isEvent(TaskCreated, ct.ID))
	if ev.Container.Runtime != "docker" || ev.Container.Name != ct.Name || ev.Container.PID != ct.PID || !AutoAttach(ev.Container.Labels) {
		t.Fatalf("merged event = %+v, want docker %s PID %d with labels", ev.Container, ct.Name, ct.PID)
	}
	dev := waitEvent(t, devs, "docker start", isEvent(TaskCreated, ct.ID))
	if dev.Container.Name != ct.Name || dev.Container.Namespace != "moby" || dev.Container.PID != ct.PID {
		t.Fatalf("docker event = %+v", dev.Container)
	}

	for _, ref := range []string{ct.Name, "/" + ct.Name, ct.ID, ct.ID[:12]} {
		got, err := m.Resolve(ctx, ref, "")
		if err != nil || got.Runtime != "docker" || got.ID != ct.ID || got.PID != ct.PID || got.Name != ct.Name {
			t.Fatalf("Resolve(%q) = %+v, %v", ref, got, err)
		}
	}
	list, err := d.List(ctx)
	if err != nil || len(list) == 0 {
		t.Fatalf("List = %v, %v", list, err)
	}

	ct.Stop(t)
	ev = waitEvent(t, evs, "exit", func(ev Event) bool { return ev.Container.ID == ct.ID })
	if ev.Type != TaskExited || ev.Container.Runtime != "docker" {
		t.Fatalf("after stop: %v %+v", ev.Type, ev.Container)
	}
	// The duplicates (containerd exit/delete, docker die/destroy) are dropped:
	// a later container's event is the next one we see for Docker.
	next := dk.Run(t, "next", harness.RunOpts{Network: "none"})
	ev = waitEvent(t, evs, "next created", func(ev Event) bool { return ev.Container.Runtime == "docker" })
	if ev.Container.ID != next.ID || ev.Type != TaskCreated {
		t.Fatalf("got %v for %s, want created for %s (duplicate not dropped?)", ev.Type, ev.Container.Name, next.Name)
	}

	if _, err := m.Resolve(ctx, "no-such", ""); err == nil || !strings.Contains(err.Error(), "or docker") {
		t.Fatalf("unknown: %v", err)
	}
}

// Package runtime finds the containers clawd attaches to: it resolves names
// given on the command line or in config to containers of containerd or
// Docker, and watches their lifecycle so that labelled containers are
// attached before their first instruction runs.
//
// The heavy runtime clients stay inside this package; the daemon sees only
// the Runtime interface.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode"

	"github.com/clawd-dev/clawd/policy"
)

// Container is a container known to a runtime.
type Container struct {
	policy.Container     // ID, Name, Runtime ("containerd"|"docker"), Namespace, Labels
	PID              int // init process PID on the host (0 if no running task)
}

// EventType is the kind of lifecycle event.
type EventType int

const (
	// TaskCreated: the container's init process exists (PID set). For
	// containerd this fires after runc create and before the process runs,
	// which is where auto-attach must happen.
	TaskCreated EventType = iota + 1
	// TaskExited: the init process exited, or the task or container was
	// deleted. It may be reported more than once for one container.
	TaskExited
)

func (t EventType) String() string {
	switch t {
	case TaskCreated:
		return "task-created"
	case TaskExited:
		return "task-exited"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one lifecycle change.
type Event struct {
	Type      EventType
	Container Container
	// Sync is set for events synthesised when the stream (re)connects:
	// TaskCreated for every running container found, TaskExited for those
	// that vanished while disconnected. Consumers must be idempotent.
	Sync bool
}

// Runtime is one container runtime.
type Runtime interface {
	// Name is "containerd" or "docker".
	Name() string
	// List returns the containers with a running (or created) task.
	List(ctx context.Context) ([]Container, error)
	// Resolve returns the containers ref designates: an exact ID or name
	// wins, else every container whose ID starts with ref. namespace ""
	// means all watched namespaces. No match is an empty slice, not an error.
	Resolve(ctx context.Context, ref, namespace string) ([]Container, error)
	// Events streams lifecycle events until ctx is done. Connection errors
	// are reported on the error channel (without blocking) and the stream
	// reconnects with backoff; both channels close when ctx is done.
	Events(ctx context.Context) (<-chan Event, <-chan error)
	Close() error
}

// AutoAttach reports whether a container asks to be attached at start:
// label clawd.attach=true or clawd.dev/attach=true.
func AutoAttach(labels map[string]string) bool {
	for _, k := range []string{"clawd.attach", "clawd.dev/attach"} {
		if strings.EqualFold(strings.TrimSpace(labels[k]), "true") {
			return true
		}
	}
	return false
}

// maxRefLen bounds refs from hostile input (CLI args, webhooks).
const maxRefLen = 256

// ValidateRef checks a container reference before it is sent to a runtime.
func ValidateRef(ref string) error {
	if ref == "" {
		return errors.New("empty container reference")
	}
	if len(ref) > maxRefLen {
		return fmt.Errorf("container reference too long (%d bytes, max %d)", len(ref), maxRefLen)
	}
	for _, r := range ref {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("container reference %q contains invalid characters", ref)
		}
	}
	return nil
}

// match picks from all the containers that ref designates. Exact ID
// matches win, then exact names, then ID prefixes.
func match(all []Container, ref string, nameEq func(c Container, ref string) bool) []Container {
	var ids, names, prefixes []Container
	for _, c := range all {
		switch {
		case c.ID == ref:
			ids = append(ids, c)
		case nameEq(c, ref):
			names = append(names, c)
		case strings.HasPrefix(c.ID, ref):
			prefixes = append(prefixes, c)
		}
	}
	if len(ids) > 0 {
		return ids
	}
	if len(names) > 0 {
		return names
	}
	return prefixes
}

// Multi is the set of configured runtimes.
type Multi []Runtime

// Resolve finds exactly one container across all runtimes. A runtime that
// cannot be reached is skipped; only when all fail is that the error.
// Docker containers are also visible in containerd namespace "moby": the
// Docker view (with its name and labels) is preferred.
func (m Multi) Resolve(ctx context.Context, ref, namespace string) (Container, error) {
	if err := ValidateRef(ref); err != nil {
		return Container{}, err
	}
	if len(m) == 0 {
		return Container{}, errors.New("no container runtime configured")
	}
	var found []Container
	var errs []error
	for _, r := range m {
		cs, err := r.Resolve(ctx, ref, namespace)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name(), err))
			continue
		}
		found = append(found, cs...)
	}
	if len(errs) == len(m) {
		return Container{}, fmt.Errorf("resolve container %q: %w", ref, errors.Join(errs...))
	}
	found = dedupeDocker(found)
	// An exact ID or name match anywhere beats prefix matches elsewhere.
	exact := found[:0:0]
	for _, c := range found {
		if c.ID == ref || c.Name == ref || strings.TrimPrefix(c.Name, "/") == strings.TrimPrefix(ref, "/") {
			exact = append(exact, c)
		}
	}
	if len(exact) > 0 {
		found = exact
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		msg := fmt.Sprintf("no container %q in %s", ref, m.describe())
		if len(errs) > 0 {
			return Container{}, fmt.Errorf("%s (%w)", msg, errors.Join(errs...))
		}
		return Container{}, errors.New(msg)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].Key() < found[j].Key() })
	var cands []string
	for _, c := range found {
		cands = append(cands, fmt.Sprintf("%s/%s/%s (%s)", c.Runtime, c.Namespace, c.ID, c.Name))
	}
	return Container{}, fmt.Errorf("container %q is ambiguous: %s; use a longer ID", ref, strings.Join(cands, ", "))
}

// describe names the runtimes for "not found" errors, e.g.
// `containerd (namespaces default, moby, k8s.io) or docker`.
func (m Multi) describe() string {
	var parts []string
	for _, r := range m {
		if c, ok := r.(interface{ Namespaces() []string }); ok {
			parts = append(parts, fmt.Sprintf("%s (namespaces %s)", r.Name(), strings.Join(c.Namespaces(), ", ")))
			continue
		}
		parts = append(parts, r.Name())
	}
	return strings.Join(parts, " or ")
}

// dedupeDocker drops containerd "moby" entries that Docker also reports.
func dedupeDocker(cs []Container) []Container {
	docker := map[string]bool{}
	for _, c := range cs {
		if c.Runtime == "docker" {
			docker[c.ID] = true
		}
	}
	out := cs[:0:0]
	for _, c := range cs {
		if c.Runtime == "containerd" && c.Namespace == DockerNamespace && docker[c.ID] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// DockerNamespace is the containerd namespace Docker runs its containers in.
const DockerNamespace = "moby"

// Close closes every runtime.
func (m Multi) Close() error {
	var errs []error
	for _, r := range m {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// Events merges the event streams of all runtimes. When Docker is among
// them, containerd events of namespace "moby" (which fire earlier than
// Docker's own: /tasks/create comes before the process runs) are reported
// with the Docker identity (runtime "docker", Docker name and labels), and
// repeated TaskCreated/TaskExited for the same container are dropped, so a
// Docker container is reported once however many streams see it. Errors are
// prefixed with the runtime name.
func (m Multi) Events(ctx context.Context) (<-chan Event, <-chan error) {
	out := make(chan Event, 64)
	errc := make(chan error, 16)
	var docker *Docker
	for _, r := range m {
		if d, ok := r.(*Docker); ok {
			docker = d
		}
	}
	merged := make(chan Event)
	var wg sync.WaitGroup
	for _, r := range m {
		evs, errs := r.Events(ctx)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for ev := range evs {
				if docker != nil && ev.Container.Runtime == "containerd" && ev.Container.Namespace == DockerNamespace {
					if dc, ok := docker.lookup(ctx, ev.Container.ID); ok {
						pid := ev.Container.PID
						ev.Container = dc
						ev.Container.PID = pid
					}
				}
				select {
				case merged <- ev:
				case <-ctx.Done():
				}
			}
		}()
		go func() {
			defer wg.Done()
			for err := range errs {
				select {
				case errc <- err:
				default:
				}
			}
		}()
	}
	go func() { wg.Wait(); close(merged) }()
	go func() {
		defer close(out)
		defer close(errc)
		d := newDedup()
		for ev := range merged {
			if !d.keep(ev) {
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
			}
		}
	}()
	return out, errc
}

// dedup drops events that do not change a container's state.
type dedup struct {
	pid map[string]int // key -> PID while created; absent when exited or unknown
	ex  map[string]bool
}

func newDedup() *dedup { return &dedup{pid: map[string]int{}, ex: map[string]bool{}} }

func (d *dedup) keep(ev Event) bool {
	if len(d.pid)+len(d.ex) > 10000 {
		d.pid, d.ex = map[string]int{}, map[string]bool{}
	}
	k := ev.Container.Key()
	switch ev.Type {
	case TaskCreated:
		if p, ok := d.pid[k]; ok && (p == ev.Container.PID || ev.Container.PID == 0) {
			return false
		}
		d.pid[k] = ev.Container.PID
		delete(d.ex, k)
		return true
	case TaskExited:
		if d.ex[k] {
			return false
		}
		delete(d.pid, k)
		d.ex[k] = true
		return true
	}
	return true
}

// List returns the running containers of all runtimes, Docker containers
// once (see Resolve). Unreachable runtimes are skipped; the error is
// non-nil when any failed, together with what the others returned.
func (m Multi) List(ctx context.Context) ([]Container, error) {
	var all []Container
	var errs []error
	for _, r := range m {
		cs, err := r.List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name(), err))
			continue
		}
		all = append(all, cs...)
	}
	return dedupeDocker(all), errors.Join(errs...)
}

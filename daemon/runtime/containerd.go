package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"

	"github.com/clawd-dev/clawd/policy"
)

// DefaultNamespaces are watched when NewContainerd gets none.
var DefaultNamespaces = []string{"default", DockerNamespace, "k8s.io"}

// Containerd watches containers of a containerd daemon (1.6 or later).
type Containerd struct {
	address    string
	namespaces []string
	client     *containerd.Client
	// backoff between reconnect attempts of Events; tests shorten it.
	minBackoff, maxBackoff time.Duration
}

// NewContainerd returns a runtime for the containerd at address (a unix
// socket path). It connects lazily: it succeeds even when containerd is not
// running yet, calls then fail with an error naming the socket, and Events
// keeps retrying. It fails only for an unusable address or namespace.
func NewContainerd(address string, nss []string) (Runtime, error) {
	if address == "" {
		return nil, errors.New("containerd: empty socket address")
	}
	if len(nss) == 0 {
		nss = DefaultNamespaces
	}
	for _, ns := range nss {
		if err := identifiers.Validate(ns); err != nil {
			return nil, fmt.Errorf("containerd: namespace %q: %w", ns, err)
		}
	}
	cl, err := containerd.New(address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	return &Containerd{address: address, namespaces: append([]string(nil), nss...), client: cl,
		minBackoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second}, nil
}

func (c *Containerd) Name() string { return "containerd" }

// Namespaces returns the watched namespaces.
func (c *Containerd) Namespaces() []string { return append([]string(nil), c.namespaces...) }

// Close closes the client connection.
func (c *Containerd) Close() error { return c.client.Close() }

func (c *Containerd) wrap(op string, err error) error {
	return fmt.Errorf("containerd at %s: %s: %w", c.address, op, err)
}

func (c *Containerd) watched(ns string) bool {
	for _, n := range c.namespaces {
		if n == ns {
			return true
		}
	}
	return false
}

func toContainer(ns string, cc containers.Container, pid uint32) Container {
	labels := cc.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	name := cc.ID
	// nerdctl keeps the human name in a label.
	if n := labels["nerdctl/name"]; n != "" {
		name = n
	}
	return Container{
		Container: policy.Container{ID: cc.ID, Name: name, Runtime: "containerd", Namespace: ns, Labels: labels},
		PID:       int(pid),
	}
}

// all returns every container of namespace ns with its task PID (0 if it
// has no live task); with live only those with a created/running task.
func (c *Containerd) all(ctx context.Context, ns string, live bool) ([]Container, error) {
	nctx := namespaces.WithNamespace(ctx, ns)
	resp, err := c.client.TaskService().List(nctx, &tasks.ListTasksRequest{})
	if err != nil {
		return nil, c.wrap("list tasks in "+ns, errgrpc.ToNative(err))
	}
	pids := map[string]uint32{}
	for _, t := range resp.Tasks {
		switch t.Status {
		case tasktypes.Status_CREATED, tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
			pids[t.ID] = t.Pid
		}
	}
	ccs, err := c.client.ContainerService().List(nctx)
	if err != nil {
		return nil, c.wrap("list containers in "+ns, err)
	}
	var out []Container
	for _, cc := range ccs {
		pid, ok := pids[cc.ID]
		if live && !ok {
			continue
		}
		out = append(out, toContainer(ns, cc, pid))
	}
	return out, nil
}

// List returns the containers with a created or running task.
func (c *Containerd) List(ctx context.Context) ([]Container, error) {
	var out []Container
	for _, ns := range c.namespaces {
		cs, err := c.all(ctx, ns, true)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// Resolve finds containers by ID, name label or ID prefix; containers
// without a task are returned with PID 0.
func (c *Containerd) Resolve(ctx context.Context, ref, namespace string) ([]Container, error) {
	if err := ValidateRef(ref); err != nil {
		return nil, err
	}
	nss := c.namespaces
	if namespace != "" {
		if err := identifiers.Validate(namespace); err != nil {
			return nil, fmt.Errorf("namespace %q: %w", namespace, err)
		}
		nss = []string{namespace}
	}
	var all []Container
	for _, ns := range nss {
		cs, err := c.all(ctx, ns, false)
		if err != nil {
			return nil, err
		}
		all = append(all, cs...)
	}
	return match(all, ref, func(ct Container, ref string) bool { return ct.Name == ref }), nil
}

var eventFilters = []string{
	`topic=="/tasks/create"`,
	`topic=="/tasks/exit"`,
	`topic=="/tasks/delete"`,
	`topic=="/containers/delete"`,
}

// Events streams task lifecycle events of the watched namespaces. On every
// (re)connection it first subscribes, then lists the running containers and
// emits Sync events, so nothing is lost while containerd restarts.
func (c *Containerd) Events(ctx context.Context) (<-chan Event, <-chan error) {
	out := make(chan Event, 64)
	errc := make(chan error, 16)
	go func() {
		defer close(out)
		defer close(errc)
		known := map[string]Container{} // ns/id -> running container
		backoff := c.minBackoff
		for ctx.Err() == nil {
			connected, err := c.stream(ctx, known, out)
			if ctx.Err() != nil {
				return
			}
			if connected {
				backoff = c.minBackoff
			}
			if err != nil {
				select {
				case errc <- c.wrap("events", err):
				default:
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff *= 2; backoff > c.maxBackoff {
				backoff = c.maxBackoff
			}
		}
	}()
	return out, errc
}

func send(ctx context.Context, out chan<- Event, ev Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// stream runs one subscription until it fails; connected reports whether
// the subscription and the sync succeeded (to reset the backoff).
func (c *Containerd) stream(ctx context.Context, known map[string]Container, out chan<- Event) (connected bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// IsServing waits for the connection; bound it so that a containerd
	// that is down is reported on the error channel, not waited for silently.
	pctx, pcancel := context.WithTimeout(sctx, 5*time.Second)
	_, err = c.client.IsServing(pctx)
	pcancel()
	if err != nil {
		return false, err
	}
	evs, errs := c.client.Subscribe(sctx, eventFilters...)
	// Sync after subscribing: events racing with the list are queued in evs.
	now, err := c.List(sctx)
	if err != nil {
		return false, err
	}
	seen := map[string]bool{}
	for _, ct := range now {
		k := ct.Key()
		seen[k] = true
		if old, ok := known[k]; ok && old.PID == ct.PID {
			continue
		}
		known[k] = ct
		if !send(ctx, out, Event{Type: TaskCreated, Container: ct, Sync: true}) {
			return true, nil
		}
	}
	for k, ct := range known {
		if !seen[k] {
			delete(known, k)
			if !send(ctx, out, Event{Type: TaskExited, Container: ct, Sync: true}) {
				return true, nil
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return true, errgrpc.ToNative(err)
		case env, ok := <-evs:
			if !ok {
				return true, errors.New("event stream closed")
			}
			if !c.watched(env.Namespace) {
				continue
			}
			ev, ok := c.decode(ctx, env.Namespace, env.Topic, env.Event)
			if !ok {
				continue
			}
			k := ev.Container.Key()
			if ev.Type == TaskCreated {
				known[k] = ev.Container
			} else {
				if old, ok := known[k]; ok {
					// Keep labels/PID the exit event does not carry.
					if ev.Container.PID == 0 {
						ev.Container.PID = old.PID
					}
					if len(ev.Container.Labels) == 0 {
						ev.Container.Labels = old.Labels
						ev.Container.Name = old.Name
					}
				}
				delete(known, k)
			}
			if !send(ctx, out, ev) {
				return true, nil
			}
		}
	}
}

// decode turns an envelope into an Event; ok is false for events that do
// not change a container's init task (exec processes).
func (c *Containerd) decode(ctx context.Context, ns, topic string, a typeurl.Any) (Event, bool) {
	if a == nil {
		return Event{}, false
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return Event{}, false
	}
	var (
		typ EventType
		id  string
		pid uint32
	)
	switch e := v.(type) {
	case *apievents.TaskCreate:
		typ, id, pid = TaskCreated, e.ContainerID, e.Pid
	case *apievents.TaskExit:
		if !initProcess(e.ContainerID, e.ID) {
			return Event{}, false
		}
		typ, id, pid = TaskExited, e.ContainerID, e.Pid
	case *apievents.TaskDelete:
		if !initProcess(e.ContainerID, e.ID) {
			return Event{}, false
		}
		typ, id, pid = TaskExited, e.ContainerID, e.Pid
	case *apievents.ContainerDelete:
		typ, id = TaskExited, e.ID
	default:
		return Event{}, false
	}
	ct := Container{Container: policy.Container{ID: id, Name: id, Runtime: "containerd", Namespace: ns, Labels: map[string]string{}}, PID: int(pid)}
	if typ == TaskCreated {
		// Labels decide auto-attach; the container record exists before its task.
		lctx, cancel := context.WithTimeout(namespaces.WithNamespace(ctx, ns), 5*time.Second)
		cc, err := c.client.ContainerService().Get(lctx, id)
		cancel()
		if err == nil {
			ct = toContainer(ns, cc, pid)
		}
	}
	return Event{Type: typ, Container: ct}, true
}

// initProcess reports whether an exit/delete event is about the init
// process: exec processes carry their own exec ID.
func initProcess(containerID, execID string) bool {
	return execID == "" || execID == containerID
}

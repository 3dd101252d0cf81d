package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/clawd-dev/clawd/policy"
)

// Docker watches containers of a Docker daemon (API 1.41, Docker 20.10, or
// later: the version is negotiated on first use).
type Docker struct {
	host string
	cli  *client.Client

	mu    sync.Mutex
	names map[string]Container // id -> name/labels, learned from events and lists

	minBackoff, maxBackoff time.Duration
}

// NewDocker returns a runtime for the Docker daemon at host (e.g.
// "unix:///var/run/docker.sock"). Like NewContainerd it connects lazily and
// fails only for an unusable host string.
func NewDocker(host string) (Runtime, error) {
	if host == "" {
		return nil, errors.New("docker: empty host")
	}
	if !strings.Contains(host, "://") {
		host = "unix://" + host // a bare socket path
	}
	switch scheme, _, _ := strings.Cut(host, "://"); scheme {
	case "unix", "tcp", "http", "https":
	default:
		return nil, fmt.Errorf("docker host %q: unsupported scheme %q (want unix:// or tcp://)", host, scheme)
	}
	cli, err := client.New(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker at %s: %w", host, err)
	}
	return &Docker{host: host, cli: cli, names: map[string]Container{},
		minBackoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second}, nil
}

func (d *Docker) Name() string { return "docker" }

func (d *Docker) Close() error { return d.cli.Close() }

func (d *Docker) wrap(op string, err error) error {
	return fmt.Errorf("docker at %s: %s: %w", d.host, op, err)
}

func dockerContainer(id, name string, labels map[string]string, pid int) Container {
	if labels == nil {
		labels = map[string]string{}
	}
	return Container{
		Container: policy.Container{ID: id, Name: strings.TrimPrefix(name, "/"), Runtime: "docker", Namespace: DockerNamespace, Labels: labels},
		PID:       pid,
	}
}

func (d *Docker) remember(c Container) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.names) > 10000 { // bound memory on hosts with churn
		d.names = map[string]Container{}
	}
	c.PID = 0
	d.names[c.ID] = c
}

func (d *Docker) cached(id string) (Container, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.names[id]
	return c, ok
}

// inspect returns the container with its init PID (0 unless running).
func (d *Docker) inspect(ctx context.Context, id string) (Container, error) {
	r, err := d.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return Container{}, err
	}
	ci := r.Container
	var labels map[string]string
	if ci.Config != nil {
		labels = ci.Config.Labels
	}
	pid := 0
	if ci.State != nil && (ci.State.Running || ci.State.Paused) {
		pid = ci.State.Pid
	}
	c := dockerContainer(ci.ID, ci.Name, labels, pid)
	d.remember(c)
	return c, nil
}

func (d *Docker) list(ctx context.Context, all bool) ([]container.Summary, error) {
	r, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: all})
	if err != nil {
		return nil, d.wrap("list containers", err)
	}
	return r.Items, nil
}

// List returns the running containers with their PIDs.
func (d *Docker) List(ctx context.Context) ([]Container, error) {
	items, err := d.list(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []Container
	for _, s := range items {
		c, err := d.inspect(ctx, s.ID)
		if err != nil || c.PID == 0 {
			continue // gone or stopped meanwhile
		}
		out = append(out, c)
	}
	return out, nil
}

// Resolve matches ref against IDs, names (with or without the leading "/")
// and ID prefixes. namespace must be "" or "moby".
func (d *Docker) Resolve(ctx context.Context, ref, namespace string) ([]Container, error) {
	if err := ValidateRef(ref); err != nil {
		return nil, err
	}
	if namespace != "" && namespace != DockerNamespace {
		return nil, nil
	}
	items, err := d.list(ctx, true)
	if err != nil {
		return nil, err
	}
	var all []Container
	for _, s := range items {
		name := ""
		if len(s.Names) > 0 {
			name = s.Names[0]
		}
		all = append(all, dockerContainer(s.ID, name, s.Labels, 0))
	}
	want := strings.TrimPrefix(ref, "/")
	found := match(all, want, func(c Container, ref string) bool { return c.Name == ref })
	for i, c := range found {
		if full, err := d.inspect(ctx, c.ID); err == nil {
			found[i] = full
		}
	}
	return found, nil
}

// lookup gives Multi the Docker identity of a containerd "moby" container.
func (d *Docker) lookup(ctx context.Context, id string) (Container, bool) {
	if c, ok := d.cached(id); ok {
		return c, true
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := d.inspect(ictx, id)
	return c, err == nil
}

// Events streams create/start/die/destroy as TaskCreated (on start, with
// the PID) and TaskExited, reconnecting with backoff and syncing like
// Containerd.Events.
func (d *Docker) Events(ctx context.Context) (<-chan Event, <-chan error) {
	out := make(chan Event, 64)
	errc := make(chan error, 16)
	go func() {
		defer close(out)
		defer close(errc)
		known := map[string]Container{}
		backoff := d.minBackoff
		for ctx.Err() == nil {
			connected, err := d.stream(ctx, known, out)
			if ctx.Err() != nil {
				return
			}
			if connected {
				backoff = d.minBackoff
			}
			if err != nil {
				select {
				case errc <- d.wrap("events", err):
				default:
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff *= 2; backoff > d.maxBackoff {
				backoff = d.maxBackoff
			}
		}
	}()
	return out, errc
}

func (d *Docker) stream(ctx context.Context, known map[string]Container, out chan<- Event) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pctx, pcancel := context.WithTimeout(sctx, 5*time.Second)
	_, err := d.cli.Ping(pctx, client.PingOptions{})
	pcancel()
	if err != nil {
		return false, err
	}
	f := client.Filters{}.Add("type", string(events.ContainerEventType)).Add("event", "create", "start", "die", "destroy")
	res := d.cli.Events(sctx, client.EventsListOptions{Filters: f})
	now, err := d.List(sctx)
	if err != nil {
		return false, err
	}
	seen := map[string]bool{}
	for _, c := range now {
		seen[c.ID] = true
		if old, ok := known[c.ID]; ok && old.PID == c.PID {
			continue
		}
		known[c.ID] = c
		if !send(ctx, out, Event{Type: TaskCreated, Container: c, Sync: true}) {
			return true, nil
		}
	}
	for id, c := range known {
		if !seen[id] {
			delete(known, id)
			if !send(ctx, out, Event{Type: TaskExited, Container: c, Sync: true}) {
				return true, nil
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case err := <-res.Err:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return true, err
		case m, ok := <-res.Messages:
			if !ok {
				return true, errors.New("event stream closed")
			}
			id := m.Actor.ID
			if id == "" {
				continue
			}
			switch m.Action {
			case events.ActionCreate:
				d.remember(dockerContainer(id, m.Actor.Attributes["name"], eventLabels(m.Actor.Attributes), 0))
			case events.ActionStart:
				ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
				c, err := d.inspect(ictx, id)
				cancel()
				if err != nil || c.PID == 0 {
					continue // already gone again
				}
				known[id] = c
				if !send(ctx, out, Event{Type: TaskCreated, Container: c}) {
					return true, nil
				}
			case events.ActionDie, events.ActionDestroy:
				c, ok := known[id]
				if !ok {
					if c, ok = d.cached(id); !ok {
						c = dockerContainer(id, m.Actor.Attributes["name"], eventLabels(m.Actor.Attributes), 0)
					}
				}
				delete(known, id)
				if m.Action == events.ActionDestroy {
					d.mu.Lock()
					delete(d.names, id)
					d.mu.Unlock()
				}
				if !send(ctx, out, Event{Type: TaskExited, Container: c}) {
					return true, nil
				}
			}
		}
	}
}

// eventLabels extracts the container labels Docker copies into event
// attributes (next to its own keys).
func eventLabels(attrs map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range attrs {
		switch k {
		case "name", "image", "exitCode", "signal", "execDuration":
			continue
		}
		out[k] = v
	}
	return out
}

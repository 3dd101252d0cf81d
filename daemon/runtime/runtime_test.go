package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

func TestAutoAttach(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   bool
	}{
		{nil, false},
		{map[string]string{"clawd.attach": "true"}, true},
		{map[string]string{"clawd.dev/attach": "true"}, true},
		{map[string]string{"clawd.attach": "TRUE"}, true},
		{map[string]string{"clawd.attach": "false"}, false},
		{map[string]string{"clawd.attach": "1"}, false},
		{map[string]string{"clawd.attach": ""}, false},
		{map[string]string{"clawd.attachx": "true"}, false},
		{map[string]string{"other": "true"}, false},
	}
	for _, tc := range tests {
		if got := AutoAttach(tc.labels); got != tc.want {
			t.Errorf("AutoAttach(%v) = %v, want %v", tc.labels, got, tc.want)
		}
	}
}

func TestValidateRef(t *testing.T) {
	tests := []struct {
		ref   string
		valid bool
	}{
		{"agent", true},
		{"/agent", true},
		{"3f2a9c", true},
		{"", false},
		{"a b", false},
		{"a\nb", false},
		{"a\x00b", false},
		{strings.Repeat("a", 257), false},
		{"bad\xff", false},
	}
	for _, tc := range tests {
		err := ValidateRef(tc.ref)
		if (err == nil) != tc.valid {
			t.Errorf("ValidateRef(%q) = %v, want valid=%v", tc.ref, err, tc.valid)
		}
	}
}

func ctr(rt, ns, id, name string) Container {
	return Container{Container: policy.Container{ID: id, Name: name, Runtime: rt, Namespace: ns}, PID: 100}
}

// fake is a Runtime answering Resolve from a fixed list.
type fake struct {
	name string
	cs   []Container
	err  error
}

func (f *fake) Name() string                                        { return f.name }
func (f *fake) List(context.Context) ([]Container, error)           { return f.cs, f.err }
func (f *fake) Close() error                                        { return nil }
func (f *fake) Events(context.Context) (<-chan Event, <-chan error) { return nil, nil }
func (f *fake) Resolve(_ context.Context, ref, ns string) ([]Container, error) {
	if f.err != nil {
		return nil, f.err
	}
	var all []Container
	for _, c := range f.cs {
		if ns == "" || c.Namespace == ns {
			all = append(all, c)
		}
	}
	return match(all, strings.TrimPrefix(ref, "/"), func(c Container, r string) bool { return c.Name == r }), nil
}

type nsFake struct{ fake }

func (*nsFake) Namespaces() []string { return DefaultNamespaces }

func TestMultiResolve(t *testing.T) {
	ctd := &fake{name: "containerd", cs: []Container{
		ctr("containerd", "default", "abc123", "abc123"),
		ctr("containerd", "default", "abd456", "abd456"),
		ctr("containerd", "k8s.io", "web", "web"),
		ctr("containerd", "default", "web", "web"),
		ctr("containerd", "moby", "d0cker1", "d0cker1"),
	}}
	dk := &fake{name: "docker", cs: []Container{
		ctr("docker", "moby", "d0cker1", "agent"),
	}}
	down := &fake{name: "docker", err: errors.New("dial unix /x.sock: connect: no such file or directory")}

	tests := []struct {
		name    string
		m       Multi
		ref, ns string
		wantID  string
		wantRT  string
		wantErr string
	}{
		{"exact id", Multi{ctd, dk}, "abc123", "", "abc123", "containerd", ""},
		{"unique prefix", Multi{ctd, dk}, "abc", "", "abc123", "containerd", ""},
		{"ambiguous prefix", Multi{ctd, dk}, "ab", "", "", "", `container "ab" is ambiguous: containerd/default/abc123 (abc123), containerd/default/abd456 (abd456)`},
		{"same id in two namespaces", Multi{ctd}, "web", "", "", "", "containerd/default/web (web), containerd/k8s.io/web (web)"},
		{"namespace picks one", Multi{ctd}, "web", "k8s.io", "web", "containerd", ""},
		{"docker name", Multi{ctd, dk}, "agent", "", "d0cker1", "docker", ""},
		{"docker name with slash", Multi{ctd, dk}, "/agent", "", "d0cker1", "docker", ""},
		{"docker preferred over moby duplicate", Multi{ctd, dk}, "d0cker1", "", "d0cker1", "docker", ""},
		{"unknown", Multi{&nsFake{fake{name: "containerd"}}, &fake{name: "docker"}}, "x", "", "", "", `no container "x" in containerd (namespaces default, moby, k8s.io) or docker`},
		{"one runtime down is skipped", Multi{ctd, down}, "abc", "", "abc123", "containerd", ""},
		{"all down", Multi{down}, "abc", "", "", "", "no such file or directory"},
		{"bad ref", Multi{ctd}, "a\nb", "", "", "", "invalid characters"},
		{"no runtimes", Multi{}, "abc", "", "", "", "no container runtime configured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.m.Resolve(context.Background(), tc.ref, tc.ns)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.wantID || got.Runtime != tc.wantRT {
				t.Fatalf("got %s/%s, want %s/%s", got.Runtime, got.ID, tc.wantRT, tc.wantID)
			}
		})
	}
}

func TestInitProcess(t *testing.T) {
	tests := []struct {
		ctr, exec string
		want      bool
	}{
		{"c1", "", true},
		{"c1", "c1", true},
		{"c1", "exec-1", false},
	}
	for _, tc := range tests {
		if got := initProcess(tc.ctr, tc.exec); got != tc.want {
			t.Errorf("initProcess(%q, %q) = %v", tc.ctr, tc.exec, got)
		}
	}
}

func TestDedup(t *testing.T) {
	a := ctr("docker", "moby", "a", "agent")
	a2 := a
	a2.PID = 200
	steps := []struct {
		ev   Event
		want bool
	}{
		{Event{Type: TaskCreated, Container: a}, true},
		{Event{Type: TaskCreated, Container: a}, false}, // docker start after containerd /tasks/create
		{Event{Type: TaskExited, Container: a}, true},
		{Event{Type: TaskExited, Container: a}, false},  // die, destroy, /tasks/delete...
		{Event{Type: TaskCreated, Container: a}, true},  // restarted
		{Event{Type: TaskCreated, Container: a2}, true}, // new PID
		{Event{Type: TaskExited, Container: ctr("containerd", "default", "x", "x")}, true},
	}
	d := newDedup()
	for i, s := range steps {
		if got := d.keep(s.ev); got != s.want {
			t.Errorf("step %d (%v pid %d): keep = %v, want %v", i, s.ev.Type, s.ev.Container.PID, got, s.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := NewContainerd("", nil); err == nil {
		t.Error("NewContainerd with empty address succeeded")
	}
	if _, err := NewContainerd("/run/x.sock", []string{"bad namespace!"}); err == nil {
		t.Error("NewContainerd with invalid namespace succeeded")
	}
	if _, err := NewDocker(""); err == nil {
		t.Error("NewDocker with empty host succeeded")
	}
	if _, err := NewDocker("ftp://x"); err == nil {
		t.Error("NewDocker with ftp host succeeded")
	}
}

func TestMultiList(t *testing.T) {
	ctd := &fake{name: "containerd", cs: []Container{ctr("containerd", "default", "a", "a"), ctr("containerd", "moby", "d1", "d1")}}
	dk := &fake{name: "docker", cs: []Container{ctr("docker", "moby", "d1", "agent")}}
	down := &fake{name: "docker", err: errors.New("connection refused")}
	got, err := Multi{ctd, dk}.List(context.Background())
	if err != nil || len(got) != 2 || got[1].Runtime != "docker" {
		t.Fatalf("List = %+v, %v; want a and the docker view of d1", got, err)
	}
	got, err = Multi{ctd, down}.List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "docker: connection refused") || len(got) != 2 {
		t.Fatalf("List with docker down = %+v, %v", got, err)
	}
}

func TestResolveRejectsBadNamespace(t *testing.T) {
	r, err := NewContainerd(t.TempDir()+"/none.sock", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, ns := range []string{"../etc", "a b", strings.Repeat("n", 100)} {
		if _, err := r.Resolve(context.Background(), "x", ns); err == nil || !strings.Contains(err.Error(), "namespace") {
			t.Errorf("Resolve in namespace %q: %v, want a namespace error", ns, err)
		}
	}
}

package runtime

import (
	"context"
	"errors"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

func podCtr(id, ns string, labels map[string]string) Container {
	return Container{Container: policy.Container{ID: id, Name: id, Runtime: "containerd", Namespace: ns, Labels: labels}, PID: 1}
}

func TestPodAutoAttach(t *testing.T) {
	sandbox := podCtr("sb1", "k8s.io", map[string]string{criKindLabel: criKindSandbox, kubePodUIDLabel: "uid-1", "clawd.dev/attach": "true", "clawd.dev/trust-ca": "true"})
	plain := podCtr("sb2", "k8s.io", map[string]string{criKindLabel: criKindSandbox, kubePodUIDLabel: "uid-2"})
	other := podCtr("sb3", "other", map[string]string{criKindLabel: criKindSandbox, kubePodUIDLabel: "uid-3", "clawd.dev/attach": "true"})
	list := func(context.Context) ([]Container, error) { return []Container{plain, sandbox, other}, nil }
	app := func(ns, uid string) Container {
		return podCtr("app", ns, map[string]string{criKindLabel: criKindApp, kubePodUIDLabel: uid})
	}
	cases := []struct {
		name string
		c    Container
		list func(context.Context) ([]Container, error)
		want bool
	}{
		{"app of labelled pod", app("k8s.io", "uid-1"), list, true},
		{"app of unlabelled pod", app("k8s.io", "uid-2"), list, false},
		{"app whose sandbox is gone", app("k8s.io", "uid-9"), list, false},
		{"same uid, other namespace", app("k8s.io", "uid-3"), list, false},
		{"sandbox itself is not an app", sandbox, list, false},
		{"no pod uid", podCtr("x", "k8s.io", map[string]string{criKindLabel: criKindApp}), list, false},
		{"not CRI", podCtr("x", "default", map[string]string{kubePodUIDLabel: "uid-1"}), list, false},
		{"list fails", app("k8s.io", "uid-1"), func(context.Context) ([]Container, error) { return nil, errors.New("down") }, false},
		{"one runtime down", app("k8s.io", "uid-1"), func(context.Context) ([]Container, error) {
			return []Container{sandbox}, errors.New("docker: down")
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			labels, ok := PodAutoAttach(context.Background(), tc.c, tc.list)
			if ok != tc.want {
				t.Fatalf("ok = %v, want %v", ok, tc.want)
			}
			if ok && labels["clawd.dev/trust-ca"] != "true" {
				t.Errorf("sandbox labels not returned: %v", labels)
			}
		})
	}
}

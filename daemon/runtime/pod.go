package runtime

import "context"

// Labels the CRI plugin of containerd and the kubelet put on the containers
// of a pod in the k8s.io namespace. Pod labels (such as clawd.dev/attach)
// are set only on the pod's sandbox ("pause") container; an app container
// carries the kubelet's io.kubernetes.* labels, including the pod UID.
const (
	criKindLabel    = "io.cri-containerd.kind" // "sandbox" or "container"
	criKindSandbox  = "sandbox"
	criKindApp      = "container"
	kubePodUIDLabel = "io.kubernetes.pod.uid"
)

// IsPodApp reports whether c is an app container of a Kubernetes pod (a
// candidate for PodAutoAttach).
func IsPodApp(c Container) bool {
	return c.Labels[criKindLabel] == criKindApp && c.Labels[kubePodUIDLabel] != ""
}

// PodAutoAttach decides auto-attach for a Kubernetes app container whose own
// labels do not ask for it: it reports the labels of its pod's sandbox when
// that sandbox (same containerd namespace, same pod UID) carries the attach
// label, so that every container of a labelled pod is attached. ok is false
// for anything that is not a CRI app container, or whose sandbox is not
// labelled or not running.
func PodAutoAttach(ctx context.Context, c Container, list func(context.Context) ([]Container, error)) (sandboxLabels map[string]string, ok bool) {
	uid := c.Labels[kubePodUIDLabel]
	if !IsPodApp(c) || list == nil {
		return nil, false
	}
	// Multi.List returns what the reachable runtimes listed together with
	// the error of an unreachable one (e.g. no Docker on a Kubernetes node).
	all, _ := list(ctx)
	for _, s := range all {
		if s.Namespace == c.Namespace && s.Runtime == c.Runtime && s.Labels[criKindLabel] == criKindSandbox &&
			s.Labels[kubePodUIDLabel] == uid && AutoAttach(s.Labels) {
			return s.Labels, true
		}
	}
	return nil, false
}

// Package admission is clawd's Kubernetes mutating admission webhook. For
// pods labelled clawd.dev/attach=true it adds what `clawd env` prints (the
// secrets' placeholders and the variables that point every runtime at
// clawd's CA files) to every container and init container, and the label
// clawd.dev/trust-ca=true, so the node's clawd writes those CA files into
// each container when it attaches it (before its first process runs). No
// init container, no volume and no per-namespace ConfigMap: each node's
// clawd installs its own CA.
//
// It speaks admission.k8s.io/v1 AdmissionReview JSON and answers with a
// JSONPatch; the types here are the fields of the Kubernetes API it reads
// and writes (k8s.io/api is not imported).
package admission

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/clawd-dev/clawd/proxy/ca"
)

const (
	// AttachLabel selects the pods clawd attaches (and this webhook mutates).
	AttachLabel = "clawd.dev/attach"
	// TrustLabel makes clawd install its CA into the pod's containers.
	TrustLabel = "clawd.dev/trust-ca"
	// OptOutAnnotation "false" keeps the environment out of a pod (the
	// trust label is still added).
	OptOutAnnotation = "clawd.dev/inject-env"
	// InjectedAnnotation lists the variables the webhook added.
	InjectedAnnotation = "clawd.dev/injected-env"

	// Path is where the webhook is served; the manifests' clientConfig
	// names it.
	Path = "/mutate"

	apiVersion = "admission.k8s.io/v1"
	// maxReview bounds a request (the API server's own limit for an object
	// is 1.5 MiB; reviews carry it once, or twice for updates).
	maxReview = 8 << 20
)

// Review is an admission.k8s.io/v1 AdmissionReview.
type Review struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Request    *Request  `json:"request,omitempty"`
	Response   *Response `json:"response,omitempty"`
}

// Request is the part of an AdmissionRequest the webhook reads.
type Request struct {
	UID      string           `json:"uid"`
	Kind     GroupVersionKind `json:"kind"`
	Resource struct {
		Group    string `json:"group"`
		Version  string `json:"version"`
		Resource string `json:"resource"`
	} `json:"resource"`
	SubResource string          `json:"subResource,omitempty"`
	Namespace   string          `json:"namespace,omitempty"`
	Name        string          `json:"name,omitempty"`
	Operation   string          `json:"operation"`
	Object      json.RawMessage `json:"object,omitempty"`
	DryRun      *bool           `json:"dryRun,omitempty"`
}

// GroupVersionKind names a Kubernetes type.
type GroupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// Response is an AdmissionResponse.
type Response struct {
	UID       string   `json:"uid"`
	Allowed   bool     `json:"allowed"`
	Result    *Status  `json:"status,omitempty"`
	PatchType string   `json:"patchType,omitempty"`
	Patch     []byte   `json:"patch,omitempty"` // JSON; encoding/json writes it base64, as the API expects
	Warnings  []string `json:"warnings,omitempty"`
}

// Status is a metav1.Status (only for refusals).
type Status struct {
	Code    int    `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Op is one RFC 6902 operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

type pod struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		InitContainers []container `json:"initContainers"`
		Containers     []container `json:"containers"`
	} `json:"spec"`
}

type container struct {
	Name string `json:"name"`
	Env  []struct {
		Name string `json:"name"`
	} `json:"env"`
}

// Handler answers AdmissionReviews. Env returns the variables to add (see
// daemon.AgentEnv); it is called per request, so secrets added or removed
// since the daemon started are reflected.
type Handler struct {
	Env func() []ca.EnvVar
	// Logf, if set, is told of every mutation (never values).
	Logf func(format string, args ...any)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "want Content-Type: application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReview+1))
	if err != nil || len(body) > maxReview {
		http.Error(w, "AdmissionReview too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	var rev Review
	if err := json.Unmarshal(body, &rev); err != nil || rev.Request == nil {
		http.Error(w, "not an AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	if rev.APIVersion != apiVersion || rev.Kind != "AdmissionReview" {
		http.Error(w, "want "+apiVersion+" AdmissionReview (set admissionReviewVersions: [v1])", http.StatusBadRequest)
		return
	}
	resp := h.Review(rev.Request)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(Review{APIVersion: apiVersion, Kind: "AdmissionReview", Response: resp})
}

// Review decides one request. It never refuses a pod: clawd enforces on
// the node whatever the pod's environment says; a pod it cannot read is
// let through unchanged, with a warning.
func (h *Handler) Review(req *Request) *Response {
	resp := &Response{UID: req.UID, Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != "CREATE" || req.SubResource != "" {
		return resp
	}
	var p pod
	if err := json.Unmarshal(req.Object, &p); err != nil {
		resp.Warnings = []string{"clawd: could not read the pod, left unchanged: " + err.Error()}
		return resp
	}
	if p.Metadata.Labels[AttachLabel] != "true" {
		return resp
	}
	ops, added := patch(&p, h.env())
	if len(ops) == 0 {
		return resp
	}
	b, err := json.Marshal(ops)
	if err != nil {
		resp.Warnings = []string{"clawd: " + err.Error()}
		return resp
	}
	resp.PatchType, resp.Patch = "JSONPatch", b
	if h.Logf != nil {
		name := p.Metadata.Name
		if name == "" {
			name = p.Metadata.GenerateName + "*"
		}
		h.Logf("admission: pod %s/%s: trust label and %d variables (%s)", req.Namespace, name, len(added), strings.Join(added, ","))
	}
	return resp
}

func (h *Handler) env() []ca.EnvVar {
	if h.Env == nil {
		return ca.TrustEnv()
	}
	return h.Env()
}

// patch returns the operations that label p for CA installation and add
// vars to each of its containers that does not set them itself (a
// variable in a container's env wins; envFrom values are overridden, as
// Kubernetes does for env over envFrom), and the names it added.
func patch(p *pod, vars []ca.EnvVar) ([]Op, []string) {
	var ops []Op
	if p.Metadata.Labels[TrustLabel] != "true" {
		ops = append(ops, Op{Op: "add", Path: "/metadata/labels/" + escape(TrustLabel), Value: "true"})
	}
	if p.Metadata.Annotations[OptOutAnnotation] == "false" {
		return ops, nil
	}
	var added []string
	for _, group := range []struct {
		kind string
		cs   []container
	}{{"initContainers", p.Spec.InitContainers}, {"containers", p.Spec.Containers}} {
		kind := group.kind
		for i, c := range group.cs {
			have := map[string]bool{}
			for _, e := range c.Env {
				have[e.Name] = true
			}
			var missing []map[string]string
			for _, v := range vars {
				if !have[v.Name] {
					missing = append(missing, map[string]string{"name": v.Name, "value": v.Value})
					if !slices.Contains(added, v.Name) {
						added = append(added, v.Name)
					}
				}
			}
			if len(missing) == 0 {
				continue
			}
			base := fmt.Sprintf("/spec/%s/%d/env", kind, i)
			if c.Env == nil {
				ops = append(ops, Op{Op: "add", Path: base, Value: missing})
				continue
			}
			for _, m := range missing {
				ops = append(ops, Op{Op: "add", Path: base + "/-", Value: m})
			}
		}
	}
	slices.Sort(added)
	if len(added) > 0 {
		note := strings.Join(added, ",")
		if p.Metadata.Annotations == nil {
			ops = append(ops, Op{Op: "add", Path: "/metadata/annotations", Value: map[string]string{InjectedAnnotation: note}})
		} else {
			ops = append(ops, Op{Op: "add", Path: "/metadata/annotations/" + escape(InjectedAnnotation), Value: note})
		}
	}
	return ops, added
}

// escape makes s one JSON Pointer reference token (RFC 6901).
func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

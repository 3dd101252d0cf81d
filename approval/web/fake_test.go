package web

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/policy"
)

// fakeSource is an approval core in memory: it records every Decision and
// moves a decided approval to the recent list, as the Manager does.
type fakeSource struct {
	mu        sync.Mutex
	pending   []*approval.Approval
	recent    []*approval.Approval
	decisions []approval.Decision
	links     map[string]bool // "id action exp sig"
	// result, when set, is returned by Decide instead of deciding.
	result *approval.Result
}

func newFake() *fakeSource {
	return &fakeSource{links: map[string]bool{}}
}

func (f *fakeSource) add(a *approval.Approval) *approval.Approval {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = append(f.pending, a)
	return a
}

func (f *fakeSource) addLink(id, action, exp, sig string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[id+" "+action+" "+exp+" "+sig] = true
}

func (f *fakeSource) calls() []approval.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.decisions)
}

func (f *fakeSource) List(container string) ([]*approval.Approval, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pending), uint64(len(f.decisions))
}

func (f *fakeSource) Recent(n int) []*approval.Approval {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := slices.Clone(f.recent)
	slices.Reverse(r)
	if len(r) > n {
		r = r[:n]
	}
	return r
}

func (f *fakeSource) Get(id string) (*approval.Approval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range append(slices.Clone(f.pending), f.recent...) {
		if a.ID == id {
			return a, nil
		}
	}
	return nil, approval.ErrNotFound
}

func (f *fakeSource) Decide(ctx context.Context, d approval.Decision) approval.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decisions = append(f.decisions, d)
	if f.result != nil {
		return *f.result
	}
	i := slices.IndexFunc(f.pending, func(a *approval.Approval) bool { return a.ID == d.ID })
	if i < 0 {
		return approval.Result{Outcome: approval.ResultNotFound, Message: "No such approval."}
	}
	a := *f.pending[i]
	if d.Digest != a.Digest {
		return approval.Result{Outcome: approval.ResultStale, Message: "This card is not for the current request.", Approval: &a}
	}
	f.pending = slices.Delete(f.pending, i, i+1)
	a.Status, a.By, a.Reason, a.Decided = approval.Denied, d.Identity(), d.Reason, time.Now()
	msg := "Denied."
	if d.Approve {
		a.Status, msg = approval.Approved, "Approved."
		if d.GrantFor > 0 {
			msg = "Approved for 15 minutes."
		}
	}
	f.recent = append(f.recent, &a)
	return approval.Result{Outcome: approval.ResultDecided, Message: msg, Approval: &a}
}

// CheckLink accepts the links added with addLink and, like the Manager,
// answers the digest of the approval.
func (f *fakeSource) CheckLink(id, action, exp, sig string) (string, bool) {
	f.mu.Lock()
	ok := f.links[id+" "+action+" "+exp+" "+sig]
	f.mu.Unlock()
	if !ok {
		return "", false
	}
	a, err := f.Get(id)
	if err != nil {
		return "", false
	}
	return a.Digest, true
}

var _ Source = (*fakeSource)(nil)

// pending builds a pending approval as the core shows it.
func pending(id, summary, container string) *approval.Approval {
	now := time.Now()
	return &approval.Approval{
		ID: id, Status: approval.Pending, Summary: summary,
		Container: policy.Container{ID: "c-" + id, Name: container, Runtime: "docker", Namespace: "moby"},
		Method:    "POST", URL: "https://api.github.com/repos/acme/site/pulls", Host: "api.github.com",
		Path:     "/repos/acme/site/pulls",
		Header:   map[string][]string{"Authorization": {"Bearer [redacted]"}, "Content-Type": {"application/json"}},
		Body:     `{"title":"Bump deps","head":"bump","base":"main"}`,
		BodySize: 48, Rule: "github-writes",
		Created: now, Expires: now.Add(9*time.Minute + 30*time.Second),
		Digest:   digestOf(id),
		Required: 1,
	}
}

func digestOf(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

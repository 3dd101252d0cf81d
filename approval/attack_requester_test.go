package approval

import (
	"context"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// The requester is one of the two people a two-person rule names: after
// removing them, one identity is left, and the request can only time out.
// The core knows this when it creates the approval (requesters and Asked
// are both there) but holds the request for the whole timeout and shows
// the card; nothing says why nobody can finish it.
func TestAttackRequesterLeavesRuleUnanswerable(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "DELETE", "/repos/o/r")
	h.Container.Labels = map[string]string{RequesterLabel: "rec:U1"}
	h.Timeout = time.Minute
	h.Route = &policy.Route{Required: 2, Approvers: []policy.Audience{{Channel: "rec", People: []string{"U1", "U2"}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out := e.m.Request(ctx, h)
	if out.Status == StatusCancelled {
		t.Errorf("two-person rule with only one eligible approver (the other is the requester) is held silently until it times out instead of being refused at once")
	}
}

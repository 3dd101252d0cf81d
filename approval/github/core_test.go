package github

import (
	"context"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/github/fake"
)

// The channel with the real core: a held request is commented on the
// tracking issue, a stranger's command changes nothing, the approver's
// (typed with another case) lets it through and the card shows the outcome
// without the commands.
func TestWithCore(t *testing.T) {
	r := newRig(t)
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{r.ch}
		c.Approvers = map[string][]string{"github": {"alice"}}
	})
	// The webhook decides through the real Manager.
	mgr := e.M
	r.fk.SetEndpoint(newServer(t, r.ch.Callbacks(mgr)) + approval.CallbackPath(r.ch.Name()))

	out := approvaltest.Async(mgr, context.Background(), approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := approvaltest.WaitPending(t, mgr, 1)[0]
	m, err := r.fk.WaitCard(tctx(t), a.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Body, "@alice") || strings.Contains(m.Body, "SECRET-VALUE-123") || !strings.Contains(m.Body, "/clawd approve "+a.ID) {
		t.Errorf("card:\n%s", m.Body)
	}

	reply, err := r.fk.Click(tctx(t), a.ID, approval.ActApprove, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := mgr.Get(a.ID); got.Status != approval.Pending {
		t.Fatalf("a stranger's command made it %s (reply %q)", got.Status, reply)
	}
	if !strings.Contains(reply, "nothing changed") {
		t.Errorf("stranger saw %q", reply)
	}

	reply, err = r.fk.Click(tctx(t), a.ID, approval.ActApprove, "Alice")
	if err != nil {
		t.Fatal(err)
	}
	if o := approvaltest.Recv(t, out); !o.Approved {
		t.Fatalf("outcome %+v (reply %q)", o, reply)
	}
	if reply != "@Alice Approved: the request is released." {
		t.Errorf("approver saw %q", reply)
	}
	m, err = r.fk.WaitCard(tctx(t), a.ID, func(m fake.Message) bool { return !strings.Contains(m.Body, "/clawd") })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Body, "**Approved** by ` github:alice `") || strings.Contains(m.Body, "approvals") {
		t.Errorf("decided card:\n%s", m.Body)
	}
}

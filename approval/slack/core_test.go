package slack

import (
	"context"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/slack/fake"
)

// The channel with the real core: a held request is posted to Slack, a
// stranger's click changes nothing, the approver's click lets it through
// and the card loses its buttons.
func TestWithCore(t *testing.T) {
	r := newRig(t, nil)
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{r.ch}
		c.Approvers = map[string][]string{"slack": {"U0ALICE"}}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ch.Run(ctx, e.M) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := r.fk.WaitConnected(tctx(t), 1); err != nil {
		t.Fatal(err)
	}

	out := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	m, err := r.fk.WaitCard(tctx(t), a.ID, func(m fake.Message) bool { return len(m.Buttons) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.AllText(), "<@U0ALICE>") || strings.Contains(m.AllText(), "SECRET-VALUE-123") {
		t.Errorf("card:\n%s", m.AllText())
	}

	reply, err := r.fk.Click(tctx(t), a.ID, approval.ActApprove, "U0EVE")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.M.Get(a.ID); got.Status != approval.Pending {
		t.Fatalf("a stranger's click made it %s (reply %q)", got.Status, reply)
	}
	if !strings.Contains(reply, "nothing changed") {
		t.Errorf("stranger saw %q", reply)
	}

	r.fk.SetName("U0ALICE", "alice")
	reply, err = r.fk.Click(tctx(t), a.ID, approval.ActApprove, "U0ALICE")
	if err != nil {
		t.Fatal(err)
	}
	o := approvaltest.Recv(t, out)
	if !o.Approved {
		t.Fatalf("outcome %+v (reply %q)", o, reply)
	}
	m, err = r.fk.WaitCard(tctx(t), a.ID, func(m fake.Message) bool { return len(m.Buttons) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.AllText(), "Approved by") {
		t.Errorf("decided card:\n%s", m.AllText())
	}
	if reply != "Approved: the request is released." {
		t.Errorf("approver saw %q", reply)
	}
}

package mattermost

import (
	"context"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/mattermost/fake"
)

// The channel with the real core: a held request is posted to Mattermost,
// a stranger's click changes nothing (and the card stays usable), the
// approver's click lets it through and the post loses its buttons.
func TestWithCore(t *testing.T) {
	r := newRig(t, nil)
	clk := approvaltest.NewClock()
	r.clock.t = clk.Now()
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{r.ch}
		c.Approvers = map[string][]string{"mattermost": {alice}}
		c.Now, c.AfterFunc = clk.Now, clk.AfterFunc
	})
	r.mux.set(r.ch.Callbacks(e.M))

	out := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	m, err := r.fk.WaitCard(ctxT(t), a.ID, func(m fake.Message) bool { return len(m.Actions) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Message, "@alice") || strings.Contains(m.AllText(), "SECRET-VALUE-123") {
		t.Errorf("card:\n%s", m.AllText())
	}

	reply, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, bob)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.M.Get(a.ID); got.Status != approval.Pending {
		t.Fatalf("a stranger's click made it %s (reply %q)", got.Status, reply)
	}
	if !strings.Contains(reply, "nothing changed") {
		t.Errorf("stranger saw %q", reply)
	}

	r.fk.SetName(alice, "alice")
	reply, err = r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice)
	if err != nil {
		t.Fatal(err)
	}
	o := approvaltest.Recv(t, out)
	if !o.Approved || o.By != "mattermost:"+alice {
		t.Fatalf("outcome %+v (reply %q)", o, reply)
	}
	if reply != "Approved: the request is released." {
		t.Errorf("approver saw %q", reply)
	}
	m, err = r.fk.WaitCard(ctxT(t), a.ID, func(m fake.Message) bool { return len(m.Actions) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Message, "Approved** by") {
		t.Errorf("decided card:\n%s", m.AllText())
	}
	if strings.Contains(m.AllText(), "SECRET-VALUE-123") {
		t.Errorf("a card shows the request's secret")
	}
}

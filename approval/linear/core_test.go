package linear

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/linear/fake"
	"github.com/clawd-dev/clawd/policy"
)

// TestWithCore runs the real approval core: a held request is posted as a
// comment on the issue the route names, a stranger's command changes
// nothing, the approver's command lets it through, and the card shows the
// outcome without commands.
func TestWithCore(t *testing.T) {
	s := newSetup(t)
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{s.ch}
		c.Approvers = map[string][]string{"linear": {alice}}
		c.DefaultRoute = &policy.Route{Approvers: []policy.Audience{{Channel: "linear", People: []string{alice}, Target: "ENG-123"}}, Required: 1}
	})
	srv := httptest.NewServer(s.ch.Callbacks(e.M))
	t.Cleanup(srv.Close)
	s.fk.SetEndpoint(srv.URL + approval.CallbackPath("linear"))
	s.fk.DeliverOwn(true)

	out := approvaltest.Async(e.M, ctxT(t), approvaltest.Hold("agent-1", "PUT", "/repos/acme/api/pulls/7/merge"))
	id := approvaltest.WaitPending(t, e.M, 1)[0].ID
	m, err := s.fk.WaitCard(ctxT(t), id, func(m fake.Message) bool { return len(m.Commands) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if m.Issue != "ENG-123" {
		t.Errorf("card on %s, want the route's target ENG-123", m.Issue)
	}
	if strings.Contains(m.Body, "SECRET-VALUE-123") {
		t.Errorf("the card shows the request's secret:\n%s", m.Body)
	}

	reply, err := s.fk.Click(ctxT(t), id, approval.ActApprove, bob)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.M.Get(id); got.Status != approval.Pending {
		t.Fatalf("a stranger's command made it %s (reply %q)", got.Status, reply)
	}
	if reply != "You are not asked to decide this request; nothing changed." {
		t.Errorf("stranger saw %q", reply)
	}

	s.fk.SetName(alice, "Alice")
	reply, err = s.fk.Click(ctxT(t), id, approval.ActApprove, alice)
	if err != nil {
		t.Fatal(err)
	}
	o := approvaltest.Recv(t, out)
	if !o.Approved || o.By != "linear:"+alice {
		t.Fatalf("outcome %+v (reply %q)", o, reply)
	}
	if !strings.Contains(reply, "Approved") {
		t.Errorf("approver saw %q", reply)
	}
	m, err = s.fk.WaitCard(ctxT(t), id, func(m fake.Message) bool { return len(m.Commands) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Text, "Approved") || len(m.Hazards) > 0 {
		t.Errorf("decided card (hazards %q):\n%s", m.Hazards, m.Text)
	}
}

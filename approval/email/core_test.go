package email

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/email/fake"
)

// The channel with the real core: a held request is mailed to alice (not
// to bob, who is a recipient but not an approver here), opening the link
// changes nothing, pressing the page's button releases the request, and
// alice gets the outcome in the same thread.
func TestWithCore(t *testing.T) {
	r := newRig(t, nil)
	var e *approvaltest.Env
	env := r.env()
	env.Now = func() time.Time { return e.Clock.Now() }
	ch, err := New("email", r.fk.Settings(), env)
	if err != nil {
		t.Fatal(err)
	}
	e = approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{ch}
		c.Approvers = map[string][]string{"email": {alice}}
	})
	r.mount(ch, e.M)

	out := approvaltest.Async(e.M, t.Context(), approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	m, err := r.fk.WaitFor(ctxT(t), a.ID, alice, func(m fake.Message) bool { return len(m.Links) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(m.Raw), "SECRET-VALUE-123") || !strings.Contains(m.Text, "PUT https://api.github.com/repos/acme/api/pulls/7/merge") {
		t.Errorf("card:\n%s", m.Text)
	}
	if _, ok := r.fk.CardFor(a.ID, bob); ok {
		t.Error("bob, not an approver, got the message")
	}
	if p, err := r.fk.Open(ctxT(t), http.MethodGet, m.Links[approval.ActApprove]); err != nil || p.Status != http.StatusOK {
		t.Fatalf("GET: %v %d", err, p.Status)
	}
	if got, _ := e.M.Get(a.ID); got.Status != approval.Pending {
		t.Fatalf("opening the link made it %s", got.Status)
	}

	reply, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice)
	if err != nil {
		t.Fatal(err)
	}
	if o := approvaltest.Recv(t, out); !o.Approved {
		t.Fatalf("outcome %+v (reply %q)", o, reply)
	}
	if reply != "Approved: the request is released." {
		t.Errorf("alice saw %q", reply)
	}
	f, err := r.fk.WaitFor(ctxT(t), a.ID, alice, func(f fake.Message) bool { return f.InReplyTo != "" })
	if err != nil {
		t.Fatal(err)
	}
	if f.InReplyTo != m.MessageID || !strings.Contains(f.Text, "Approved by email:"+alice) {
		t.Errorf("follow-up (in reply to %q, card %q):\n%s", f.InReplyTo, m.MessageID, f.Text)
	}
}

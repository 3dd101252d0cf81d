package whatsapp

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/whatsapp/fake"
)

// The channel with the real core: a held request reaches alice (the
// template: she has not written) and not bob (not an approver); a forged
// press changes nothing; alice's press releases it, she is told so, and
// the core's update arrives as a reply to the card.
func TestWithCore(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	// The channel checks webhook timestamps against real time, as the fake
	// stamps them; the core runs on its fake clock.
	ch, err := New("whatsapp", fk.Settings(), approval.Env{StateDir: t.TempDir(), PublicURL: "https://clawd.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{ch}
		c.Approvers = map[string][]string{"whatsapp": {alice}}
	})
	srv := httptest.NewServer(ch.Callbacks(e.M))
	defer srv.Close()
	fk.SetEndpoint(srv.URL + approval.CallbackPath("whatsapp"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	out := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	m, err := fk.WaitCard(ctx, a.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.To != alice || m.Kind != "template" || m.Params[1] != "agent1" || m.Params[2] != a.ID {
		t.Errorf("card: %+v", m)
	}
	if len(fk.To(bob)) != 0 {
		t.Error("bob, not an approver, was messaged")
	}

	if st, err := fk.Forge(ctx, a.ID, approval.ActApprove, alice, fake.ForgeBadSignature); err != nil || st != 401 {
		t.Fatalf("forged press: %d %v", st, err)
	}
	if got, _ := e.M.Get(a.ID); got.Status != approval.Pending {
		t.Fatalf("a forged press made it %s", got.Status)
	}

	reply, err := fk.Click(ctx, a.ID, approval.ActApprove, alice)
	if err != nil {
		t.Fatal(err)
	}
	if o := approvaltest.Recv(t, out); !o.Approved {
		t.Fatalf("outcome %+v (reply %q)", o, reply)
	}
	if reply != "Approved: the request is released." {
		t.Errorf("alice saw %q", reply)
	}
	m, err = fk.WaitCard(ctx, a.ID, func(m fake.Message) bool {
		for _, r := range m.Replies {
			if strings.HasPrefix(r, "Approved by whatsapp:"+alice) {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := fk.Violations(); len(v) > 0 {
		t.Errorf("violations: %q", v)
	}
}

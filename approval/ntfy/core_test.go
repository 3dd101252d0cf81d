package ntfy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/ntfy/fake"
)

// The channel with the real core: a held request reaches alice's phone
// (not bob's, who is not an approver), a forged press changes nothing,
// alice's press releases it and her notification is replaced by the
// outcome without buttons.
func TestWithCore(t *testing.T) {
	srv := fake.New()
	defer srv.Close()
	var clk func() time.Time
	ch, err := New("phone", srv.Settings(), approval.Env{StateDir: t.TempDir(), Now: func() time.Time { return clk() }})
	if err != nil {
		t.Fatal(err)
	}
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{ch}
		c.Approvers = map[string][]string{"phone": {"alice"}}
	})
	clk = e.Clock.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ch.Run(ctx, e.M) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer wcancel()

	out := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	m, err := srv.WaitCard(wctx, a.ID, func(m fake.Message) bool { return len(m.Actions) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if m.Topic != srv.Topics["alice"] || strings.Contains(m.Message, "SECRET-VALUE-123") || !strings.Contains(m.Message, "PUT https://api.github.com/repos/acme/api/pulls/7/merge") {
		t.Errorf("card on %s:\n%s", m.Topic, m.Message)
	}
	if _, ok := srv.CardFor(a.ID, "bob"); ok {
		t.Error("bob, not an approver, got the card")
	}

	if err := srv.Publish(wctx, ch.ReplyTopic(), strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Click(wctx, a.ID, approval.ActApprove, "alice"); err != nil {
		t.Fatal(err)
	}
	if o := approvaltest.Recv(t, out); !o.Approved {
		t.Fatalf("outcome %+v", o)
	}
	m, err = srv.WaitCard(wctx, a.ID, func(m fake.Message) bool { return len(m.Actions) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Message, "Approved by phone:alice") || m.SequenceID == "" {
		t.Errorf("decided card (seq %q):\n%s", m.SequenceID, m.Message)
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("violations: %q", v)
	}
}

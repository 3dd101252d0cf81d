package discord

import (
	"context"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/discord/fake"
	"github.com/clawd-dev/clawd/policy"
)

// TestWithTheRealCore: a held request, its card on Discord, a click over
// the Gateway, the request approved and the card edited to say so.
func TestWithTheRealCore(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	m, err := approval.New(approval.Config{
		DBPath:    t.TempDir() + "/a.db",
		Channels:  []approval.Channel{s.ch},
		Approvers: map[string][]string{"discord": {"111111111111111111"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Shutdown)
	ctx := ctxT(t)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go s.ch.Run(runCtx, m)

	out := make(chan approval.Outcome, 1)
	go func() {
		out <- m.Request(ctx, approval.Hold{
			Container: policy.Container{ID: "c1", Name: "agent-1", Runtime: "docker", Namespace: "moby"},
			Method:    "POST", Host: "api.github.com", Path: "/repos/o/r/issues", URL: "https://api.github.com/repos/o/r/issues",
			Rule: "github-writes", Body: []byte(`{"title":"x"}`), BodySize: 13,
		})
	}()
	card, err := s.fk.WaitMessage(ctx, func(m fake.Message) bool { return m.ApprovalID != "" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(card.Content, "<@111111111111111111>") {
		t.Errorf("card does not mention the approver: %q", card.Content)
	}
	// Someone who is not asked cannot decide.
	reply, err := s.fk.Click(ctx, card.ApprovalID, approval.ActApprove, "999999999999999999")
	if err != nil {
		t.Fatal(err)
	}
	if reply == "" {
		t.Error("the stranger saw no answer")
	}
	if a, err := m.Get(card.ApprovalID); err != nil || a.Status != approval.Pending {
		t.Fatalf("after a stranger's click: %v %+v", err, a)
	}
	reply, err = s.fk.Click(ctx, card.ApprovalID, approval.ActApprove, "111111111111111111")
	if err != nil {
		t.Fatal(err)
	}
	if reply == "" {
		t.Error("the approver saw no answer")
	}
	o := <-out
	if !o.Approved || o.By != "discord:111111111111111111" {
		t.Errorf("outcome %+v, want approved by discord:111…", o)
	}
	final, err := s.fk.WaitCard(ctx, card.ApprovalID, func(m fake.Message) bool { return len(m.Components) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if v := fieldOf(final, "Outcome"); !strings.Contains(v, "Approved") || !strings.Contains(v, "<@111111111111111111>") {
		t.Errorf("Outcome field %q", v)
	}
}

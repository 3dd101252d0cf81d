package linear

import (
	"net/http/httptest"
	"testing"

	"github.com/clawd-dev/clawd/approval"
)

// TestAttackReplayAfterRestart: the replay memory (delivery IDs and
// signatures) lives only in memory, so a delivery captured seconds before a
// restart is accepted again by the new channel on the same StateDir within
// the 60 s webhookTimestamp window.
func TestAttackReplayAfterRestart(t *testing.T) {
	dir := t.TempDir()
	s := newSetup(t, func(_ map[string]any, e *approval.Env) { e.StateDir = dir })
	a := newApproval()
	s.post(t, a, "")
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActDeny, alice); err != nil {
		t.Fatal(err)
	}
	if n := len(s.d.Calls()); n != 1 {
		t.Fatalf("genuine: %d decisions", n)
	}
	// Restart: a new channel on the same state dir and the same fake.
	ch2, err := New("linear", s.fk.Settings(), approval.Env{PublicURL: "https://clawd.example.com", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	d2 := &decider{Res: approval.Result{Outcome: approval.ResultDecided, Message: "ok"}}
	srv := httptest.NewServer(ch2.Callbacks(d2))
	t.Cleanup(srv.Close)
	s.fk.SetEndpoint(srv.URL + approval.CallbackPath("linear"))
	st, err := s.fk.Replay(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	// (Fixed: each comment is acted on once, kept in the state file; the
	// replay is answered 200 so Linear does not retry, and decides nothing.)
	if n := len(d2.Calls()); n != 0 {
		t.Errorf("invariant replays refused after a restart with the same StateDir: a byte-for-byte replay reached the Decider %d time(s) (HTTP %d); the replay set (webhook.go:97, linear.go:118 newSeen) is not persisted", n, st)
	}
}

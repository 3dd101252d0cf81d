package telegram

import (
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
)

// A two-person card lists who approved so far by Display, which for a
// Telegram user without a username is their first_name: any text the
// user chose. Mallory (an approver, ID 666) renames herself "alice (CISO)"
// and the card shows "Approvals: 1 of 2 (alice (CISO))" with no ID, so the
// second approver believes alice vouched for the request.
func TestAttackVoterDisplayNameSpoofsIdentity(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := &approval.Approval{ID: "aaaaaaaaaaaaaaaaaaaaaaaaaa", Status: approval.Pending, Method: "DELETE", URL: "https://api.github.com/repos/o/r",
		Summary: "Delete repo", Rule: "r", Required: 2, Expires: now.Add(time.Hour), Digest: strings.Repeat("ab", 32),
		Votes: []approval.Vote{{By: "tg:666", Display: "alice (CISO)", At: now}}}
	out := render(&approval.Card{Approval: a, Channel: "tg", Now: now})
	if !strings.Contains(out, "666") {
		t.Errorf("the card names a voter only by a self-chosen display name, not the identity that voted (tg:666):\n%s", out)
	}
}

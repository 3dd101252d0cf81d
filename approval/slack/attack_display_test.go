package slack

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
)

// Same as Telegram: the votes line shows Display (the clicker's Slack name)
// instead of the identity that voted, so a voter's chosen name is all the
// second approver sees.
func TestAttackVoterDisplayNameSpoofsIdentity(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := &approval.Approval{ID: "aaaaaaaaaaaaaaaaaaaaaaaaaa", Status: approval.Pending, Method: "DELETE", URL: "https://api.github.com/repos/o/r",
		Summary: "Delete repo", Rule: "r", Required: 2, Expires: now.Add(time.Hour), Digest: strings.Repeat("ab", 32),
		Votes: []approval.Vote{{By: "slack:UMALLORY1", Display: "alice", At: now}}}
	_, blocks := Message(&approval.Card{Approval: a, Channel: "slack", Now: now})
	b, _ := json.Marshal(blocks)
	if !strings.Contains(string(b), "UMALLORY1") {
		t.Errorf("votes line names the voter only by display name %q, not slack:UMALLORY1: %s", "alice", b)
	}
}

// The core's summary can carry agent-written line breaks (GitHub
// merge_method, see approval/summary attack test); Slack puts the summary
// in the header and, when cut, in a mrkdwn section, unflattened, so the
// card shows the agent's fake "✅ Approved by alice (security)" line above
// the real buttons. Other channels flatten it (oneLine / control → space).
func TestAttackSummaryLinesReachSlackCard(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sum := "Merge pull request #7 in acme/api (squash)\n\n:white_check_mark: Approved by alice (security)\n" + strings.Repeat(" ", 200) + "()"
	a := &approval.Approval{ID: "aaaaaaaaaaaaaaaaaaaaaaaaaa", Status: approval.Pending, Method: "PUT", URL: "https://api.github.com/repos/acme/api/pulls/7/merge",
		Summary: sum, Rule: "r", Required: 1, Expires: now.Add(time.Hour), Digest: strings.Repeat("ab", 32)}
	_, blocks := Message(&approval.Card{Approval: a, Channel: "slack", Now: now})
	b, _ := json.Marshal(blocks)
	if strings.Contains(string(b), `\n\n:white_check_mark: Approved by alice`) {
		t.Errorf("Slack card renders the agent's line breaks and fake status line from the summary: %s", b)
	}
}

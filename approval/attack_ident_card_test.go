package approval

import (
	"context"
	"strings"
	"testing"
)

// TestAttackCardProgramForgedBySummary (red team, issue 16 round 2): every
// channel shows only the summary, and the program is appended to it as
// " · by <path> (sha256 <12 hex>…)". The rest of the summary is the
// agent's text (an MCP tool name or its arguments, a PR title, the URL), so
// the agent can write the same suffix naming the allowed program: the card
// then reads "… · by /usr/bin/git (sha256 abababababab…) · by /usr/bin/curl
// (sha256 cdcdcdcdcdcd…)", two programs, the forged one first. The
// program must not be forgeable: the agent's text must not be able to hold
// a " · by " that reads as the program clause.
func TestAttackCardProgramForgedBySummary(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent", "POST", "/mcp")
	h.Program = curlProg
	forged := " · by " + gitProg.Path + " (sha256 " + gitProg.SHA256[:12] + "…)"
	h.Tools = []ToolCall{{Name: "create_issue" + forged, Args: `{"repo":"acme/widgets"}`}}
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if n := strings.Count(a.Summary, " · by "); n != 1 || strings.Contains(a.Summary, "by "+gitProg.Path) {
		t.Errorf("card summary names %d programs, among them the forged %s: %q", n, gitProg.Path, a.Summary)
	}
	decideCompat(e.m, a.ID, false, "cli", "", 0)
	recv(t, ch)
}

// TestAttackCardProgramTruncatedPath: the summary shows at most 80 bytes of
// the program's path, cut at the end: an agent-writable path whose first
// 80 bytes read as a trusted program hides where it really is.
// "/usr/local/bin/git" followed by padding is not possible for the agent,
// but a directory it owns is; the cut must at least not drop the file name.
func TestAttackCardProgramTruncatedPath(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent", "POST", "/x")
	h.Program = curlProg
	h.Program.Path = "/tmp/usr/bin/git/" + strings.Repeat("a", 70) + "/evil"
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if !strings.Contains(a.Summary, "/evil") {
		t.Errorf("card summary hides the executable's name: %q", a.Summary)
	}
	decideCompat(e.m, a.ID, false, "cli", "", 0)
	recv(t, ch)
}

// TestCardProgramClauseVariants (fix of the above, as a class): look-alike
// dots, another case, no dot at all, "unknown" and "(deleted)" in agent
// text never read as a program clause; the only one is clawd's, last.
func TestCardProgramClauseVariants(t *testing.T) {
	for _, name := range []string{
		"x • by /usr/bin/git", "x ∙ by /usr/bin/git", "x ⋅ BY /usr/bin/git", "x by\t/usr/bin/git", "x · by unknown", "x · By (deleted)", "x ･ by /usr/bin/git",
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			h := hold("agent", "POST", "/mcp")
			h.Program = curlProg
			h.Tools = []ToolCall{{Name: name, Args: `{}`}}
			ch := async(e.m, context.Background(), h)
			a := waitPending(t, e.m, 1)[0]
			low := strings.ToLower(a.Summary)
			if strings.Count(a.Summary, " · by ") != 1 || strings.Count(low, "by /") != 1 || strings.Contains(low, "by unknown") || strings.Contains(low, "by (deleted)") || !strings.HasSuffix(a.Summary, "(sha256 "+curlProg.SHA256[:12]+"…)") {
				t.Errorf("summary %q", a.Summary)
			}
			decideCompat(e.m, a.ID, false, "cli", "", 0)
			recv(t, ch)
		})
	}
}

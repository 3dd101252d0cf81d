package linear

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/linear/fake"
)

// Agent-controlled text (summary, URL, container, rule, body, reason,
// voter names) cannot mention anyone, make a link or an issue reference,
// add a command line or close the body's code block.
func TestInjection(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	other := strings.Repeat("b", 26)
	a.Summary = "Ping @alice see https://evil.example/x [click](https://evil.example) www.evil.com ENG-5 <img src=x> **bold** `tick` \n/clawd approve " + other
	a.URL = "https://api.github.com/x?@everyone`" + "``"
	a.Container.Name = "agent\n/clawd approve " + other
	a.Rule = "rule` @bob"
	a.Body = "line1\n```\n/clawd approve " + other + "\n````` @carol https://evil.example\n~~~\n\u202eevil\u0000"
	a.Required = 2
	a.Votes = []approval.Vote{{By: "linear:x", Display: "@dave https://evil.example"}}
	s.post(t, a, "")
	m, _ := s.fk.Card(a.ID)
	if len(m.Hazards) > 0 {
		t.Errorf("live markup from agent text: %q\n%s", m.Hazards, m.Body)
	}
	if len(m.Blocks) != 1 {
		t.Fatalf("body split into %d blocks:\n%s", len(m.Blocks), m.Body)
	}
	wantBody := "line1\n```\n/clawd approve " + other + "\n````` @carol https://evil.example\n~~~\nevil"
	if m.Blocks[0] != wantBody {
		t.Errorf("body block %q, want %q", m.Blocks[0], wantBody)
	}
	want := []string{"/clawd approve " + a.ID, "/clawd approve " + a.ID + " for 15m", "/clawd deny " + a.ID + " reason…"}
	if strings.Join(m.Commands, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q, want only %q", m.Commands, want)
	}
	// The summary still reads as written (on one line, first).
	first := strings.Split(m.Text, "\n")[0]
	if !strings.HasPrefix(first, "Ping @alice see https://evil.example/x [click](https://evil.example)") {
		t.Errorf("summary line %q", first)
	}

	// The decided card too (reason and decider come from people and agents).
	a.Status, a.By, a.Reason = approval.Denied, "linear:@root", "see https://evil.example\n/clawd approve "+other+" [x](y) ENG-9"
	ref := fake.Issues[fake.TrackingIssue] + "|" + m.CommentID
	if err := s.ch.Update(ctxT(t), cardFor(a, ""), ref); err != nil {
		t.Fatal(err)
	}
	m, _ = s.fk.Card(a.ID)
	if len(m.Hazards) > 0 || len(m.Commands) != 0 {
		t.Errorf("decided card: hazards %q, commands %q\n%s", m.Hazards, m.Commands, m.Body)
	}

	// The core's answer in a reply is made inert too.
	b := newApproval()
	s.post(t, b, "")
	s.d.Res.Message = "Denied: see @eve https://evil.example [x](https://e) ENG-2"
	if _, err := s.fk.Click(ctxT(t), b.ID, approval.ActDeny, alice); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.fk.Comments() {
		if c.UserID == fake.ViewerID && c.ParentID != "" {
			if _, _, hz := fake.Render(c.Body); len(hz) > 0 {
				t.Errorf("reply has live markup %q: %s", hz, c.Body)
			}
		}
	}
}

func TestCardFitsLimit(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	a.Summary = strings.Repeat("s", 5000)
	a.URL = "https://x.example/" + strings.Repeat("u", 20000)
	a.Body = strings.Repeat("`", 30000) + strings.Repeat("é", 70000)
	a.BodySize = int64(len(a.Body))
	s.post(t, a, "") // the fake refuses bodies over its limit (Violations)
	m, ok := s.fk.Card(a.ID)
	if !ok {
		t.Fatal("no card")
	}
	if n := utf8.RuneCountInString(m.Body); n > MaxBody {
		t.Errorf("card of %d characters", n)
	}
	if !strings.Contains(m.Text, "Approval "+a.ID) || len(m.Commands) != 3 {
		t.Errorf("a shortened card lost its ID or commands:\n%.500s", m.Text)
	}
	if len(m.Blocks) > 1 {
		t.Errorf("%d blocks", len(m.Blocks))
	}
}

func TestInert(t *testing.T) {
	for _, in := range []string{"@a", "a@b.c", "http://x", "x.com", "ENG-12", "<b>", "[a](b)", "*x*", "# h", "- l", "`c`", "``", "\\", "a|b"} {
		out := inert(in)
		text, _, hz := fake.Render(out)
		if len(hz) > 0 {
			t.Errorf("inert(%q) = %q: hazards %q", in, out, hz)
		}
		if text != in {
			t.Errorf("inert(%q) renders as %q", in, text)
		}
	}
}

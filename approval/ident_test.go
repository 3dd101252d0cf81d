package approval

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

var (
	gitProg  = policy.Program{Known: true, Path: "/usr/bin/git", SHA256: strings.Repeat("ab", 32), Cmdline: "git push origin main --token=[redacted]", PID: 4242}
	curlProg = policy.Program{Known: true, Path: "/usr/bin/curl", SHA256: strings.Repeat("cd", 32), PID: 4343}
)

// TestCardShowsProgram: the approver sees which program asked (every
// channel shows the summary; the API has the fields), and a secret on the
// command line is redacted like everywhere else.
func TestCardShowsProgram(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent", "POST", "/repos/o/r/pulls")
	h.Program = gitProg
	h.Program.Cmdline += " SECRET-VALUE-123"
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if a.Program != "/usr/bin/git" || a.ProgramSHA256 != gitProg.SHA256 || a.PID != 4242 {
		t.Fatalf("approval program fields: %q %q %d", a.Program, a.ProgramSHA256, a.PID)
	}
	if !strings.HasSuffix(a.Summary, " · by /usr/bin/git (sha256 abababababab…)") {
		t.Fatalf("summary %q does not name the program", a.Summary)
	}
	if r := e.audit.find("requested"); len(r) != 1 || r[0].Program != "/usr/bin/git" || r[0].ProgramSHA256 != gitProg.SHA256 || r[0].PID != 4242 || strings.Contains(r[0].Cmdline, "SECRET-VALUE-123") {
		t.Fatalf("requested audit line: %+v", r)
	}
	if strings.Contains(a.Cmdline, "SECRET-VALUE-123") || !strings.Contains(a.Cmdline, "[secret:github]") {
		t.Fatalf("cmdline %q", a.Cmdline)
	}
	if _, err := decideCompat(e.m, a.ID, false, "cli", "", 0); err != nil {
		t.Fatal(err)
	}
	recv(t, ch)
}

func TestCardUnknownProgram(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent", "POST", "/x")
	h.Program = policy.Program{PID: 99}
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if a.Program != "unknown" || !strings.HasSuffix(a.Summary, " · by unknown") {
		t.Fatalf("program %q summary %q", a.Program, a.Summary)
	}
	decideCompat(e.m, a.ID, false, "cli", "", 0)
	recv(t, ch)
}

// TestDecisionBoundToProgram: the same request from another program does
// not ride on a pending approval (it is its own card), and a grant given
// for git's request does not let curl's identical request through, nor an
// unknown program's.
func TestDecisionBoundToProgram(t *testing.T) {
	e := newEnv(t, nil)
	hg, hc := hold("agent", "POST", "/x"), hold("agent", "POST", "/x")
	hg.Program, hc.Program = gitProg, curlProg
	if requestDigest(&hg) == requestDigest(&hc) {
		t.Fatal("same digest for two programs")
	}
	cg := async(e.m, context.Background(), hg)
	waitPending(t, e.m, 1)
	cc := async(e.m, context.Background(), hc)
	list := waitPending(t, e.m, 2)
	var gitID, curlID string
	for _, a := range list {
		if a.Program == "/usr/bin/git" {
			gitID = a.ID
		} else {
			curlID = a.ID
		}
	}
	if _, err := decideCompat(e.m, gitID, true, "cli", "", 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	if o := recv(t, cg); !o.Approved {
		t.Fatalf("git: %+v", o)
	}
	if _, err := decideCompat(e.m, curlID, false, "cli", "", 0); err != nil {
		t.Fatal(err)
	}
	if o := recv(t, cc); o.Approved {
		t.Fatalf("curl rode on git's approval: %+v", o)
	}
	// The grant covers git again...
	if o := e.m.Request(context.Background(), hg); !o.Approved || o.Status != StatusGranted {
		t.Fatalf("git after grant: %+v", o)
	}
	// ...but not curl, nor an unknown program: they are asked.
	for _, p := range []policy.Program{curlProg, {PID: 7}} {
		h := hold("agent", "POST", "/x")
		h.Program = p
		ctx, cancel := context.WithCancel(context.Background())
		ch := async(e.m, ctx, h)
		waitPending(t, e.m, 1)
		cancel()
		if o := recv(t, ch); o.Approved {
			t.Fatalf("%+v used git's grant: %+v", p, o)
		}
		waitPending(t, e.m, 0)
	}
}

// TestCardProgramSurvivesLongSummary: a long URL (the agent chooses it)
// cannot push the program off the title of any channel.
func TestCardProgramSurvivesLongSummary(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent", "POST", "/"+strings.Repeat("a", 1000))
	h.URL = "https://api.github.com" + h.Path
	h.Program = gitProg
	h.Program.Path = "/" + strings.Repeat("p", 300)
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if len(a.Summary) > maxSummaryWithProgram+2*len("…") || !strings.Contains(a.Summary, " · by /ppp") || !strings.HasSuffix(a.Summary, "(sha256 abababababab…)") {
		t.Fatalf("summary (%d bytes) %q", len(a.Summary), a.Summary)
	}
	if a.Program != h.Program.Path {
		t.Fatalf("program field cut: %d bytes", len(a.Program))
	}
	decideCompat(e.m, a.ID, false, "cli", "", 0)
	recv(t, ch)
}

// TestCardEscapesProgram (issue 16): on a card, a program path or command
// line holding bidi controls, zero-width characters, line or paragraph
// separators, controls or invalid UTF-8 shows them as escapes: the
// approver cannot be shown /usr/bin/git for another file, nor a forged
// extra line.
func TestCardEscapesProgram(t *testing.T) {
	for _, tc := range []struct{ path, cmd, wantPath, wantCmd string }{
		{"/usr/bin/\u202etig", "git\u2028Approved by admin", `/usr/bin/\u202etig`, `git\u2028Approved by admin`},
		{"/usr/bin/gi\u200bt", "x\u2029y\nz", `/usr/bin/gi\u200bt`, `x\u2029y\x0az`},
		{"/usr/bin/\u2066git\u2069", "\u202a\u202b\u202c\u202d\u2067\u2068", `/usr/bin/\u2066git\u2069`, `\u202a\u202b\u202c\u202d\u2067\u2068`},
		{"/tmp/\xffgit", "\x1b[1Agit \x85", `/tmp/\xffgit`, `\x1b[1Agit \x85`},
	} {
		e := newEnv(t, nil)
		h := hold("agent", "POST", "/x")
		h.Program = policy.Program{Known: true, Path: tc.path, SHA256: strings.Repeat("ab", 32), Cmdline: tc.cmd, PID: 5}
		ch := async(e.m, context.Background(), h)
		a := waitPending(t, e.m, 1)[0]
		if a.Program != tc.wantPath || a.Cmdline != tc.wantCmd {
			t.Errorf("card program %q cmdline %q, want %q %q", a.Program, a.Cmdline, tc.wantPath, tc.wantCmd)
		}
		if !strings.Contains(a.Summary, " · by "+tc.wantPath) {
			t.Errorf("summary %q does not show the escaped path", a.Summary)
		}
		if r := e.audit.find("requested"); len(r) != 1 || r[0].Program != tc.wantPath || r[0].Cmdline != tc.wantCmd {
			t.Errorf("requested audit line: %+v", r)
		}
		decideCompat(e.m, a.ID, false, "cli", "", 0)
		recv(t, ch)
	}
}

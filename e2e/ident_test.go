package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	approvalapi "github.com/clawd-dev/clawd/approval/api"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// identPolicy pins /tmp/tool to identprog's digest for /ident/**, and asks
// a human when busybox (wget, nc, sh: one executable) wants /ask/**.
const identPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: pinned-tool
      cidrs: [198.51.100.10/32, "2001:db8::10/128"]
      ports: 8080
      paths: ["/ident/**"]
      binaries: ["/tmp/tool@sha256:%s"]
      action: allow
    - name: ask-busybox
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/ask/**"]
      binaries: [/bin/busybox]
      action: approve
`

// TestProgramIdentity is issue 16 at the user's level: two programs in one
// container, a policy that lets only one (by path and digest) through, and
// each handover the attribution must get right. For every case: what the
// program got, whether the upstream saw the request, and what the audit
// line says about the program.
func TestProgramIdentity(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	prog := toolBin(t, "identprog")
	b, err := os.ReadFile(prog)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	sum := hex.EncodeToString(s[:])
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(identPolicy, sum)})
	ct := ctd.Run(t, "ident-agent", harness.RunOpts{Files: map[string]string{prog: "/ident"}})
	cl.MustCLI("attach", ct.Name)
	if out, code := sh(t, ct, "cp /ident /tmp/tool && chmod 755 /tmp/tool"); code != 0 {
		t.Fatalf("cp: %s", out)
	}
	v4 := fmt.Sprintf("%s:%d", harness.UpstreamIPv4, harness.UpstreamHTTPPort)
	v6 := fmt.Sprintf("[%s]:%d", harness.UpstreamIPv6, harness.UpstreamHTTPPort)

	// auditFor waits for the decision line of path (written once the
	// answer went out).
	auditFor := func(path string) audit.Entry {
		t.Helper()
		var got audit.Entry
		eventually(t, "audit line for "+path, func() bool {
			for _, e := range cl.AuditEntries() {
				if e.Event == audit.EventDecision && e.Path == path {
					got = e
					return true
				}
			}
			return false
		})
		return got
	}
	check := func(name, script, path, wantOut string, wantUp int, wantProg, wantSum, wantRule string) audit.Entry {
		t.Helper()
		out, _ := sh(t, ct, script)
		if !strings.Contains(out, wantOut) {
			t.Errorf("%s: the program got %q, want %q", name, out, wantOut)
		}
		if n := apprUpCount(up, path); n != wantUp {
			t.Errorf("%s: upstream saw %s %d times, want %d", name, path, n, wantUp)
		}
		e := auditFor(path)
		if e.Program != wantProg || (wantSum != "*" && e.ProgramSHA256 != wantSum) || e.Rule != wantRule || e.PID == 0 {
			t.Errorf("%s: audit program=%q sha256=%q rule=%q pid=%d; want %q %q %q", name, e.Program, e.ProgramSHA256, e.Rule, e.PID, wantProg, wantSum, wantRule)
		}
		return e
	}
	id := func(p string) string { return "/ident/" + p + "-" + secRand(t) }

	// The pinned program, connecting from a thread other than its main
	// one (threads share the TGID), over IPv4 and IPv6.
	p := id("ok4")
	e := check("pinned program", "/tmp/tool get "+v4+" "+p, p, "thread=true\nstatus=200", 1, "/tmp/tool", sum, "pinned-tool")
	if e.Cmdline != "/tmp/tool get "+v4+" "+p {
		t.Errorf("audit cmdline %q", e.Cmdline)
	}
	// What the audit line shows of a hostile program: a name holding a
	// bidi override (it would read "/tmp/tool" reversed) is escaped, and
	// the credentials on its command line are redacted.
	p = id("hostile")
	const rlo = `"$(printf '\342\200\256')"`
	if out, code := sh(t, ct, "cp /ident /tmp/"+rlo+"loot"); code != 0 {
		t.Fatalf("cp: %s", out)
	}
	e = check("escaped and redacted", "/tmp/"+rlo+"loot get "+v4+" "+p+" --token=S3CR3T -u me:S3CR3T 'X-Api-Key: S3CR3T' https://me:S3CR3T@a.test/ "+rlo, p, "status=403", 0, `/tmp/\u202eloot`, sum, "default")
	if want := `/tmp/\u202eloot get ` + v4 + " " + p + ` --token=[redacted] -u [redacted] X-Api-Key: [redacted] https://[redacted]@a.test/ \u202e`; e.Cmdline != want {
		t.Errorf("audit cmdline\n got %q\nwant %q", e.Cmdline, want)
	}
	p = id("ok6")
	check("pinned program over IPv6", "/tmp/tool get "+v6+" "+p, p, "status=200", 1, "/tmp/tool", sum, "pinned-tool")

	// The same content at another path is not the pinned program.
	p = id("copy")
	check("same content, other path", "/ident get "+v4+" "+p, p, "status=403", 0, "/ident", sum, "default")

	// Another program: busybox wget, and busybox nc fed by a shell.
	p = id("wget")
	check("busybox wget", "wget -q -O - http://"+v4+p+" 2>&1", p, "403", 0, "/bin/busybox", "*", "default")
	p = id("nc")
	check("shell and nc", `printf 'GET `+p+` HTTP/1.0\r\nHost: `+v4+`\r\n\r\n' | nc `+harness.UpstreamIPv4.String()+` 8080`, p, "403 Forbidden", 0, "/bin/busybox", "*", "default")

	// A shell that execs the pinned program: the connecting program is
	// the tool, so the rule for busybox (the shell) does not apply and
	// nothing is held; the tool's own rule does not cover /ask.
	p = "/ask/exec-" + secRand(t)
	check("sh -c exec tool", "exec /tmp/tool get "+v4+" "+p, p, "status=403", 0, "/tmp/tool", sum, "default")

	// Exec after connect: the connection stays the connecting program's,
	// also for the request the exec'd (unpinned) program sends on it.
	p1, p2 := id("exec1"), id("exec2")
	out, _ := sh(t, ct, "/tmp/tool exec-after "+v4+" "+p1+" "+p2+" /ident")
	if out != "status=200\nstatus=200\n" {
		t.Errorf("exec after connect: %q", out)
	}
	if e := auditFor(p2); e.Program != "/tmp/tool" || apprUpCount(up, p2) != 1 {
		t.Errorf("exec after connect: second request attributed to %q (upstream %d)", e.Program, apprUpCount(up, p2))
	}

	// A socket handed over SCM_RIGHTS stays the connector's: /ident
	// connects, the pinned tool sends on it, and is refused.
	p = id("scm")
	check("SCM_RIGHTS handover", "/ident scm "+v4+" "+p+" /tmp/tool", p, "status=403", 0, "/ident", sum, "default")

	// The approver sees the program on the card.
	tok, err := os.ReadFile(filepath.Join(cl.StateDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	api := &approvalapi.Client{Base: "http://" + cl.API, Token: strings.TrimSpace(string(tok)), HTTP: &http.Client{Timeout: 30 * time.Second}}
	p = "/ask/card-" + secRand(t)
	done := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		o, eo, _, _ := ct.Exec(ctx, "wget", "-q", "-O", "-", "http://"+v4+p)
		done <- o + eo
	}()
	var cardID string
	eventually(t, "the approval for "+p, func() bool {
		list, err := api.List(context.Background(), "")
		if err != nil {
			return false
		}
		for _, a := range list {
			if a.Path == p {
				cardID = a.ID
				if a.Program != "/bin/busybox" || a.ProgramSHA256 == "" || !strings.Contains(a.Summary, "by /bin/busybox (sha256 "+a.ProgramSHA256[:12]) || !strings.Contains(a.Cmdline, "wget -q -O - http://"+v4+p) {
					t.Errorf("card: program %q sha %q cmdline %q summary %q", a.Program, a.ProgramSHA256, a.Cmdline, a.Summary)
				}
				return true
			}
		}
		return false
	})
	if _, err := api.Deny(context.Background(), cardID, "not this program"); err != nil {
		t.Fatal(err)
	}
	if out := <-done; !strings.Contains(out, "403") {
		t.Errorf("denied hold: the program got %q", out)
	}
	if n := apprUpCount(up, p); n != 0 {
		t.Errorf("denied hold reached the upstream %d times", n)
	}

	// Last: the agent (root in its container) replaces the pinned file
	// with other content. The path still matches; the digest does not.
	if out, code := sh(t, ct, "cp /ident /tmp/t2 && echo x >> /tmp/t2 && mv /tmp/t2 /tmp/tool"); code != 0 {
		t.Fatalf("replace: %s", out)
	}
	p = id("replaced")
	e = check("replaced content at the pinned path", "/tmp/tool get "+v4+" "+p, p, "status=403", 0, "/tmp/tool", "*", "default")
	if e.ProgramSHA256 == sum || e.ProgramSHA256 == "" {
		t.Errorf("replaced file: audit digest %q", e.ProgramSHA256)
	}
}

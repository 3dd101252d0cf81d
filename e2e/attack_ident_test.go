package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// attackIdentPolicy: only Debian's curl may fetch /ov/**.
const attackIdentPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: curl-only
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/ov/**"]
      binaries: [/usr/bin/curl]
      action: allow
`

// TestAttackIdentOverlayAndLoader (red team, issue 16 round 2): a Debian
// root on an overlay (as Docker's overlay2 and containerd's snapshotter
// give every container). The kernel's record of the executable (inode of
// mm->exe_file) must agree with stat(/proc/PID/exe) on overlayfs, or every
// program would be unknown; and the rule for curl must not be satisfied by
// curl started through the dynamic loader, by a hard link (which copies
// curl up into the upper layer) run under another name, by a shell
// wrapper, or by python.
func TestAttackIdentOverlayAndLoader(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	root := harness.AgentRoot(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: attackIdentPolicy})
	ct := ctd.Run(t, "ident-ov", harness.RunOpts{Rootfs: root, Env: []string{"HOME=/root"}})
	cl.MustCLI("attach", ct.Name)
	v4 := fmt.Sprintf("%s:%d", harness.UpstreamIPv4, harness.UpstreamHTTPPort)

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
	check := func(name, script, path string, wantUp int, wantProg string) {
		t.Helper()
		out, _ := sh(t, ct, script)
		e := auditFor(path)
		if n := apprUpCount(up, path); n != wantUp {
			t.Errorf("%s: upstream saw %s %d times, want %d (program output %q, audit %+v)", name, path, n, wantUp, out, e)
		}
		if wantProg != "*" && e.Program != wantProg {
			t.Errorf("%s: audit program %q sha256 %q rule %q, want %q", name, e.Program, e.ProgramSHA256, e.Rule, wantProg)
		}
	}
	curl := func(p string) string { return "curl -s -o /dev/null -w '%{http_code}\\n' http://" + v4 + p }

	// Held if it passes: curl from the lower layer is known on overlayfs.
	p := "/ov/plain-" + secRand(t)
	check("curl on overlay", curl(p), p, 1, "/usr/bin/curl")

	// Through the loader: the executable is ld.so, not curl.
	p = "/ov/ldso-" + secRand(t)
	check("ld.so /usr/bin/curl", "$(ls /lib64/ld-linux-*.so.* /lib/ld-linux-*.so.* 2>/dev/null | head -1) /usr/bin/"+curl(p), p, 0, "*")

	// A shell wrapper named like curl (its program is the shell, then what
	// it execs).
	p = "/ov/wrap-" + secRand(t)
	check("shell wrapper", "printf '#!/bin/sh\\nexec python3 -c \"import urllib.request as u; u.urlopen(\\\"http://"+v4+p+"\\\")\"\\n' > /tmp/curl; chmod 755 /tmp/curl; cat /tmp/curl; /tmp/curl", p, 0, "*")

	// A hard link of curl (overlay copies curl up) run as /usr/local/bin/c.
	p = "/ov/link-" + secRand(t)
	check("hard link under another name", "ln /usr/bin/curl /usr/local/bin/c 2>&1; /usr/local/bin/c -s -o /dev/null http://"+v4+p, p, 0, "/usr/local/bin/c")

	// After the copy-up, curl at its own path is still curl.
	p = "/ov/afterlink-" + secRand(t)
	check("curl after copy-up", curl(p), p, 1, "/usr/bin/curl")

	// python is not curl.
	p = "/ov/py-" + secRand(t)
	check("python", `python3 -c 'import urllib.request as u; u.urlopen("http://`+v4+p+`")'`, p, 0, "*")
}

// TestAttackIdentExeForge (red team, issue 16 round 2): in a container, a
// program replaces its own mm->exe_file with the pinned tool's file
// (prctl PR_SET_MM_MAP exe_fd after unshare(CLONE_NEWUSER), see
// daemon/procid/testdata/exeforge.c) and then connects. The connect
// hook's record, /proc/PID/exe and the digest all name /tmp/tool, so the
// rule pinning /tmp/tool@sha256 lets the forger's own code through.
func TestAttackIdentExeForge(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	prog := toolBin(t, "identprog")
	b, err := os.ReadFile(prog)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	sum := hex.EncodeToString(s[:])
	forge := filepath.Join(t.TempDir(), "exeforge")
	if out, err := exec.Command("cc", "-O1", "-static", "-nostdlib", "-fno-stack-protector", "-fPIC", "-o", forge, "../daemon/procid/testdata/exeforge.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(identPolicy, sum)})
	ct := ctd.Run(t, "ident-forge", harness.RunOpts{Files: map[string]string{prog: "/ident", forge: "/forge"}})
	cl.MustCLI("attach", ct.Name)
	if out, code := sh(t, ct, "cp /ident /tmp/tool && chmod 755 /tmp/tool"); code != 0 {
		t.Fatalf("cp: %s", out)
	}
	p := "/ident/forge-" + secRand(t)
	out, _ := sh(t, ct, "/forge /tmp/tool "+harness.UpstreamIPv4.String()+" "+fmt.Sprint(harness.UpstreamHTTPPort)+" "+p)
	var e audit.Entry
	eventually(t, "audit line for "+p, func() bool {
		for _, x := range cl.AuditEntries() {
			if x.Event == audit.EventDecision && x.Path == p {
				e = x
				return true
			}
		}
		return false
	})
	if n := apprUpCount(up, p); n != 0 || e.Rule == "pinned-tool" {
		t.Errorf("the forger's own code passed as the pinned /tmp/tool: upstream saw %s %d times, audit program %q sha256 %q rule %q; forger said %q", p, n, e.Program, e.ProgramSHA256, e.Rule, out)
	}
}

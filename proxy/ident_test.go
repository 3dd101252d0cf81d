package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

const identSum = "1111111111111111111111111111111111111111111111111111111111111111"

var identPolicy = `
default:
  rules:
    - name: git-only
      hosts: [example.com]
      binaries: ["/usr/bin/git@sha256:` + identSum + `"]
      action: allow
    - name: raw-git
      cidrs: [127.0.0.1/32]
      binaries: ["/usr/bin/git@sha256:` + identSum + `"]
      action: allow
`

var (
	identGit  = policy.Program{Known: true, Path: "/usr/bin/git", SHA256: identSum, Cmdline: "git push", PID: 10}
	identCopy = policy.Program{Known: true, Path: "/usr/bin/git", SHA256: strings.Repeat("2", 64), Cmdline: "git push", PID: 11}
	identCurl = policy.Program{Known: true, Path: "/usr/bin/curl", SHA256: strings.Repeat("3", 64), PID: 12}
)

// serveProg serves one loopback connection as prog's connection to dst.
func serveProg(t *testing.T, srv *Server, prog policy.Program, dst netip.AddrPort) net.Conn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := l.Accept()
		l.Close()
		if err == nil {
			srv.ServeConn(context.Background(), c, ConnMeta{Container: testContainer, OrigDst: dst, Program: prog})
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestBinariesHTTP: one container, the same request from four programs;
// only the pinned git reaches the upstream, and each audit line names its
// program.
func TestBinariesHTTP(t *testing.T) {
	p, err := policy.Parse([]byte(identPolicy), "ident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	for _, tc := range []struct {
		name   string
		prog   policy.Program
		status int
		audit  string
	}{
		{"git", identGit, 200, "/usr/bin/git"},
		{"a copy at git's path", identCopy, 403, "/usr/bin/git"},
		{"curl", identCurl, 403, "/usr/bin/curl"},
		{"unknown", policy.Program{PID: 13}, 403, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := up.hits.Load()
			c := serveProg(t, e.srv, tc.prog, up.addr())
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			want := hits
			if tc.status == 200 {
				want++
			}
			if up.hits.Load() != want {
				t.Fatalf("upstream hits %d, want %d", up.hits.Load(), want)
			}
			a := e.audit.next(t)
			if a.Program != tc.audit || a.ProgramSHA256 != tc.prog.SHA256 || a.PID != tc.prog.PID || a.Cmdline != tc.prog.Cmdline {
				t.Fatalf("audit program %q %q %d %q", a.Program, a.ProgramSHA256, a.PID, a.Cmdline)
			}
		})
	}
}

// TestBinariesSpliceRecheck: a raw TCP splice allowed for git survives a
// reload (the re-decision keeps the program); curl's is refused; a reload
// that unpins git closes git's splice.
func TestBinariesSpliceRecheck(t *testing.T) {
	p, err := policy.Parse([]byte(identPolicy), "ident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	dec := &atk2Swap{}
	dec.p.Store(p)
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec; c.Names = nil })

	c := serveProg(t, e.srv, identGit, dst)
	br := bufio.NewReader(c)
	io.WriteString(c, "\x00one\n")
	if l, err := br.ReadString('\n'); err != nil || l != "\x00one\n" {
		t.Fatalf("git's splice: %q %v", l, err)
	}
	p2, _ := policy.Parse([]byte(identPolicy), "ident.yaml")
	dec.p.Store(p2)
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Fatalf("reload of the same policy closed %d streams: the recheck lost the program", n)
	}
	io.WriteString(c, "\x00two\n")
	if l, err := br.ReadString('\n'); err != nil || l != "\x00two\n" {
		t.Fatalf("after reload: %q %v", l, err)
	}

	cc := serveProg(t, e.srv, identCurl, dst)
	io.WriteString(cc, "\x00one\n")
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := bufio.NewReader(cc).ReadString('\n'); err == nil {
		t.Fatalf("curl's splice open: %q", l)
	}

	p3, err := policy.Parse([]byte(strings.ReplaceAll(identPolicy, identSum, strings.Repeat("4", 64))), "ident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec.p.Store(p3)
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("reload unpinning git closed %d streams, want 1", n)
	}
}

// TestBinariesAuditEscapes (issue 16): a program's path and command line
// are the agent's choice; in the audit line, line breaks, U+2028/U+2029,
// bidi overrides and isolates, zero-width characters and invalid UTF-8
// are escapes, so a file name cannot forge a line or read as another
// program (/tmp/<U+202E>tig shown as /tmp/git).
func TestBinariesAuditEscapes(t *testing.T) {
	p, err := policy.Parse([]byte(identPolicy), "ident.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	up := newUpstream(t, false, false, nil)
	for _, tc := range []struct{ path, cmd, wantPath, wantCmd string }{
		{"/tmp/\u202etig", "\u2066git\u2069 push", `/tmp/\u202etig`, `\u2066git\u2069 push`},
		{"/tmp/x\n{\"program\":\"/usr/bin/git\"}", "a\u2028b\u2029c", `/tmp/x\x0a{"program":"/usr/bin/git"}`, `a\u2028b\u2029c`},
		{"/usr/bin/gi\u200bt", "x\r\ny", `/usr/bin/gi\u200bt`, `x\x0d\x0ay`},
		{"/tmp/\xff\xfe", "\x1b[2Jcls \u202a\u202b\u202c\u202d", `/tmp/\xff\xfe`, `\x1b[2Jcls \u202a\u202b\u202c\u202d`},
		{"/tmp/\u2067\u2068", "\u200e\u200f\u061c", `/tmp/\u2067\u2068`, `\u200e\u200f\u061c`},
	} {
		prog := policy.Program{Known: true, Path: tc.path, SHA256: identSum, Cmdline: tc.cmd, PID: 20}
		c := serveProg(t, e.srv, prog, up.addr())
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("%q: status %d, want 403 (not /usr/bin/git)", tc.path, resp.StatusCode)
		}
		a := e.audit.next(t)
		if a.Program != tc.wantPath || a.Cmdline != tc.wantCmd {
			t.Fatalf("audit program %q cmdline %q, want %q %q", a.Program, a.Cmdline, tc.wantPath, tc.wantCmd)
		}
	}
}

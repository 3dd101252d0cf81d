package policy

import "testing"

// Red team, issue 16 round 2: binaries: entries whose spelling silently
// changes what they mean.

// TestAttackBinariesDigestSpelling: "/path@SHA256:<hex>" (the digest
// prefix in upper case, as "sha256:" alone is refused in upper case) is
// taken as a path-only entry naming a file literally called
// "curl@SHA256:…": a deny rule meant for curl's content then denies
// nothing, and an allow rule meant to pin content pins none. Likewise a
// space before "@sha256:" makes the path "/usr/bin/curl " (with a trailing
// space). Each must be refused (or understood), never silently mean
// another file.
func TestAttackBinariesDigestSpelling(t *testing.T) {
	for _, pat := range []string{
		"/usr/bin/curl@SHA256:" + gitSum,
		"/usr/bin/curl@Sha256:" + gitSum,
		"/usr/bin/curl @sha256:" + gitSum,
		"/usr/bin/curl@ sha256:" + gitSum,
		"/usr/bin/curl@sha256: " + gitSum,
	} {
		t.Run(pat, func(t *testing.T) {
			y := "default:\n  rules:\n    - name: no-curl\n      hosts: a.test\n      binaries: [\"" + pat + "\"]\n      action: deny\n    - name: rest\n      hosts: a.test\n      action: allow\n"
			p, err := Parse([]byte(y), "b.yaml")
			if err != nil {
				return // refused: fine
			}
			curl := Program{Known: true, Path: "/usr/bin/curl", SHA256: gitSum}
			if d := p.Decide(Input{Host: "a.test", DstPort: 443, Program: curl}); d.Action != Deny {
				t.Fatalf("%q parsed and the program it names (path and digest) got %s by %q", pat, d.Action, d.Rule)
			}
		})
	}
}

// TestAttackBinariesLeadingWildcard: the catch-all check refuses "/**/*"
// because "the agent can put its own at any path". The same holds for any
// entry whose first segment is a wildcard: "/**/git" or "/*/bin/git" is
// satisfied by the agent's own program at /tmp/git or /tmp/bin/git
// (every container has a writable /tmp, /dev/shm, /var/tmp), so "only git
// may push" is not what such a rule says.
func TestAttackBinariesLeadingWildcard(t *testing.T) {
	for _, tc := range []struct{ pat, agentPath string }{
		{"/**/git", "/tmp/git"},
		{"/**/bin/git", "/tmp/bin/git"},
		{"/*/bin/git", "/tmp/bin/git"},
		{"/**/*git*", "/dev/shm/git"},
	} {
		t.Run(tc.pat, func(t *testing.T) {
			y := "default:\n  rules:\n    - name: git-push\n      hosts: github.com\n      binaries: [\"" + tc.pat + "\"]\n      action: allow\n"
			p, err := Parse([]byte(y), "b.yaml")
			if err != nil {
				return // refused: fine
			}
			evil := Program{Known: true, Path: tc.agentPath, SHA256: evilSum}
			if d := p.Decide(Input{Host: "github.com", DstPort: 443, Program: evil}); d.Action == Allow {
				t.Fatalf("%q parsed, and the agent's own program at %s is allowed by %q", tc.pat, tc.agentPath, d.Rule)
			}
		})
	}
}

// TestAttackBinariesGlobEdges (held: passes): case, look-alikes, "..",
// double slashes, trailing slash and NUL in the program path never match a
// rule for /usr/bin/git.
func TestAttackBinariesGlobEdges(t *testing.T) {
	y := "default:\n  rules:\n    - name: git\n      hosts: github.com\n      binaries: [/usr/bin/git, \"/usr/lib/git-core/git-*\"]\n      action: allow\n"
	p, err := Parse([]byte(y), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"/usr/bin/Git", "/usr/bin/gіt" /* Cyrillic i */, "/usr/bin/git ", "/usr/bin/git/", "/usr/bin//git", "//usr/bin/git",
		"/usr/bin/../bin/git", "/usr/bin/./git", "/usr/bin/git\x00", "usr/bin/git", "/usr/bin/git\u200b",
		"/usr/lib/git-core/git-x/../../../../tmp/evil", "/usr/lib/git-core/git-/x", "/tmp/usr/bin/git",
	} {
		prog := Program{Known: true, Path: path, SHA256: evilSum}
		if d := p.Decide(Input{Host: "github.com", DstPort: 443, Program: prog}); d.Action == Allow {
			t.Errorf("%q allowed by %q", path, d.Rule)
		}
	}
	for _, bad := range []string{"/usr/bin/git/", "/usr/bin//git", "/usr/bin/../bin/git", "/usr/bin/git\x00"} {
		if _, err := parseBinaryPattern(bad); err == nil {
			t.Errorf("pattern %q parsed", bad)
		}
	}
}

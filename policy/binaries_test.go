package policy

import (
	"strings"
	"testing"
)

const (
	gitSum  = "1111111111111111111111111111111111111111111111111111111111111111"
	evilSum = "2222222222222222222222222222222222222222222222222222222222222222"
)

var binariesYAML = `
default:
  rules:
    - name: git-push
      hosts: github.com
      binaries: ["/usr/bin/git@sha256:` + gitSum + `"]
      action: allow
    - name: pypi-read
      hosts: pypi.org
      binaries: ["/usr/bin/python3*", /usr/local/**/bin/python3]
      action: allow
    - name: no-curl
      hosts: "*.example.com"
      binaries: [/usr/bin/curl]
      action: deny
    - name: example
      hosts: "*.example.com"
      action: allow
    - name: by-digest
      hosts: digest.test
      binaries: ["sha256:` + strings.ToUpper(gitSum) + `"]
      action: approve
`

// TestBinaries is the list of attacks on a binaries rule: another
// binary, a copy renamed to the allowed path with other content, a case
// change, a shell that exec'd the program (the kernel reports the program,
// so a rule for the shell is not its), and an unknown program.
func TestBinaries(t *testing.T) {
	p, err := Parse([]byte(binariesYAML), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	git := Program{Known: true, Path: "/usr/bin/git", SHA256: gitSum}
	tests := []struct {
		name string
		host string
		prog Program
		want Action
		rule string
	}{
		{"the pinned program", "github.com", git, Allow, "git-push"},
		{"another binary", "github.com", Program{Known: true, Path: "/usr/bin/curl", SHA256: evilSum}, Deny, "default"},
		{"a copy renamed to the allowed path", "github.com", Program{Known: true, Path: "/usr/bin/git", SHA256: evilSum}, Deny, "default"},
		{"the right content at another path", "github.com", Program{Known: true, Path: "/tmp/git", SHA256: gitSum}, Deny, "default"},
		{"case", "github.com", Program{Known: true, Path: "/usr/bin/GIT", SHA256: gitSum}, Deny, "default"},
		{"deleted file (no path)", "github.com", Program{Known: true, SHA256: gitSum}, Deny, "default"},
		{"no digest (unreadable)", "github.com", Program{Known: true, Path: "/usr/bin/git"}, Deny, "default"},
		{"unknown program", "github.com", Program{}, Deny, "default"},
		{"unknown program claiming the facts", "github.com", Program{Path: "/usr/bin/git", SHA256: gitSum}, Deny, "default"},
		{"glob in a segment", "pypi.org", Program{Known: true, Path: "/usr/bin/python3.11"}, Allow, "pypi-read"},
		{"glob does not cross /", "pypi.org", Program{Known: true, Path: "/usr/bin/python3/../sh"}, Deny, "default"},
		{"** zero segments", "pypi.org", Program{Known: true, Path: "/usr/local/bin/python3"}, Allow, "pypi-read"},
		{"** many segments", "pypi.org", Program{Known: true, Path: "/usr/local/venv/x/bin/python3"}, Allow, "pypi-read"},
		{"a shell wrapper is the shell", "pypi.org", Program{Known: true, Path: "/bin/sh"}, Deny, "default"},
		{"prefix is not the program", "pypi.org", Program{Known: true, Path: "/usr/bin/python3.11/x"}, Deny, "default"},
		{"deny names curl", "a.example.com", Program{Known: true, Path: "/usr/bin/curl"}, Deny, "no-curl"},
		{"deny does not name wget", "a.example.com", Program{Known: true, Path: "/usr/bin/wget"}, Allow, "example"},
		{"deny with binaries takes an unknown program", "a.example.com", Program{}, Deny, "no-curl"},
		{"digest only, any path, upper-case in the file", "digest.test", Program{Known: true, Path: "/x/y", SHA256: gitSum}, Approve, "by-digest"},
		{"digest only, unknown", "digest.test", Program{}, Deny, "default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(Input{Host: tc.host, DstPort: 443, Program: tc.prog})
			if d.Action != tc.want || d.Rule != tc.rule {
				t.Fatalf("got %s by %q (%s), want %s by %q", d.Action, d.Rule, d.Reason, tc.want, tc.rule)
			}
		})
	}
}

func TestBinaryPatternParse(t *testing.T) {
	for _, ok := range []string{"/usr/bin/git", "/usr/bin/python3*", "/opt/**/bin/node", "sha256:" + gitSum, "/a b/c@sha256:" + gitSum, "/x@y"} {
		if _, err := parseBinaryPattern(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "git", "sha256:", "sha256:xyz", "sha256:" + gitSum + "0", "/a/@sha256:" + gitSum, "/a/**", "/a\x00b", "/usr/./bin", "SHA256:" + gitSum, "/a@sha256:" + gitSum + "@sha256:" + gitSum} {
		if _, err := parseBinaryPattern(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestBinariesCatchAllRefused: a binaries entry made only of wildcards
// matches every program (an agent can put its own at any path), so a rule
// carrying it looks restricted and is not. The parser refuses it at its
// file:line and says why; a digest makes the same path pattern harmless.
func TestBinariesCatchAllRefused(t *testing.T) {
	for _, pat := range []string{"/**/*", "/*", "/*/*", "/**/*/**/*", "/*/**/*", "**", "/**", "*", " /**/* ", "/**/**/*", "/**/git", "/**/*git*", "/*/bin/git", "/**/bin/git"} {
		t.Run(pat, func(t *testing.T) {
			y := "default:\n  rules:\n    - name: r\n      hosts: github.com\n      binaries:\n        - /usr/bin/git\n        - \"" + pat + "\"\n      action: allow\n"
			_, err := Parse([]byte(y), "b.yaml")
			if err == nil {
				t.Fatalf("%q parsed", pat)
			}
			if !strings.Contains(err.Error(), "b.yaml:7") {
				t.Fatalf("error %q does not point at b.yaml:7", err)
			}
			if strings.Trim(strings.TrimSpace(pat), "/*") == "" && strings.HasPrefix(strings.TrimSpace(pat), "/") && !strings.HasSuffix(strings.TrimSpace(pat), "**") {
				if !strings.Contains(err.Error(), "matches every program") {
					t.Fatalf("error %q does not say why", err)
				}
			}
		})
	}
	for _, ok := range []string{"/usr/bin/*", "/opt/**/bin/*", "/usr/**/git", "/usr/bin/sha256sum", "/**/git@sha256:" + gitSum, "/**/*@sha256:" + gitSum} {
		if _, err := parseBinaryPattern(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

func FuzzBinaryPattern(f *testing.F) {
	for _, s := range []string{"/usr/bin/git", "/opt/**/bin/*", "sha256:" + gitSum, "/usr/bin/git@sha256:" + gitSum, "@sha256:", "/a//b", "/**/x"} {
		f.Add(s, "/usr/bin/git")
	}
	f.Fuzz(func(t *testing.T, pat, path string) {
		b, err := parseBinaryPattern(pat)
		if err != nil {
			return
		}
		if b.sha256 != "" && b.match(Program{Known: true, Path: path}) {
			t.Fatalf("%q matched a program without a digest", pat)
		}
		if b.sha256 == "" && b.segs != nil && catchAll(b.segs) {
			t.Fatalf("%q parsed: a catch-all", pat)
		}
		if b.segs != nil && b.match(Program{Known: true, SHA256: gitSum}) {
			t.Fatalf("%q matched a program without a path", pat)
		}
	})
}

func TestExplainProgram(t *testing.T) {
	p, err := Parse([]byte(binariesYAML), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, sum, rule string
		bad             bool
	}{
		{"", "", "default", false},
		{"/usr/bin/git", gitSum, "git-push", false},
		{"/usr/bin/git", strings.ToUpper(gitSum), "git-push", false},
		{"/usr/bin/git", "", "default", false},
		{"", gitSum, "", true},
		{"git", "", "", true},
		{"/usr/bin/git", "abc", "", true},
	} {
		prog, err := ProgramFor(tc.path, tc.sum)
		if (err != nil) != tc.bad {
			t.Fatalf("ProgramFor(%q, %q) = %v", tc.path, tc.sum, err)
		}
		if tc.bad {
			continue
		}
		d, err := ExplainProgram(p, Container{}, prog, "GET", "tcp://github.com:443")
		if err != nil || d.Rule != tc.rule {
			t.Errorf("%q %q: %s %v, want rule %q", tc.path, tc.sum, FormatDecision(d), err, tc.rule)
		}
	}
}

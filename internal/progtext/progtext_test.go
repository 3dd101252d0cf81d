package progtext

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func argv(s ...string) []byte { return []byte(strings.Join(s, "\x00") + "\x00") }

// TestCmdlineRedacts: every form of credential an agent can put on its
// command line (issue 16, audit lines and cards), in the cases and quoting
// variants an agent would use. Each row shows what a person sees; the
// secret ("S3CR3T…") must never be in it.
func TestCmdlineRedacts(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"curl -u user:pass", argv("curl", "-u", "me:S3CR3T", "https://a.test/"), "curl -u [redacted] https://a.test/"},
		{"curl -uuser:pass", argv("curl", "-ume:S3CR3T", "https://a.test/"), "curl -u[redacted] https://a.test/"},
		{"curl -sSu cluster", argv("curl", "-sSu", "me:S3CR3T", "https://a.test/"), "curl -sSu [redacted] https://a.test/"},
		{"--user=", argv("curl", "--user=me:S3CR3T", "x"), "curl --user=[redacted] x"},
		{"--user v", argv("curl", "--user", "me:S3CR3T", "x"), "curl --user [redacted] x"},
		{"--proxy-user", argv("curl", "--proxy-user", "me:S3CR3T"), "curl --proxy-user [redacted]"},
		{"-U", argv("curl", "-U", "me:S3CR3T"), "curl -U [redacted]"},
		{"-E cert:pass", argv("curl", "-E", "c.pem:S3CR3T"), "curl -E [redacted]"},
		{"mysql -pPASS", argv("mysql", "-uroot", "-pS3CR3T", "db"), "mysql -u[redacted] -p[redacted] db"},
		{"mysql -p PASS", argv("mysql", "-p", "S3CR3T"), "mysql -p [redacted]"},
		{"--password v", argv("tool", "--password", "S3CR3T"), "tool --password [redacted]"},
		{"--password=v", argv("tool", "--password=S3CR3T"), "tool --password=[redacted]"},
		{"--PASSWORD upper", argv("tool", "--PASSWORD", "S3CR3T"), "tool --PASSWORD [redacted]"},
		{"--api-key v", argv("tool", "--api-key", "S3CR3T"), "tool --api-key [redacted]"},
		{"--Api-Key=v", argv("tool", "--Api-Key=S3CR3T"), "tool --Api-Key=[redacted]"},
		{"--token v", argv("gh", "--token", "S3CR3T"), "gh --token [redacted]"},
		{"--token=v", argv("gh", "--token=S3CR3T"), "gh --token=[redacted]"},
		{"--secret v", argv("tool", "--secret", "S3CR3T"), "tool --secret [redacted]"},
		{"--client-secret=v", argv("tool", "--client-secret=S3CR3T"), "tool --client-secret=[redacted]"},
		{"--github-token v", argv("tool", "--github-token", "S3CR3T"), "tool --github-token [redacted]"},
		{"--passphrase v", argv("gpg", "--passphrase", "S3CR3T"), "gpg --passphrase [redacted]"},
		{"--sshkey=v", argv("tool", "--sshkey=S3CR3T"), "tool --sshkey=[redacted]"},
		{"--auth v", argv("tool", "--auth", "S3CR3T"), "tool --auth [redacted]"},
		{"--no-password keeps the next word", argv("tool", "--no-password", "https://a.test/"), "tool --no-password https://a.test/"},
		{"-H Authorization", argv("curl", "-H", "Authorization: Bearer S3CR3T", "https://a.test/"), "curl -H Authorization: Bearer [redacted] https://a.test/"},
		{"-H authorization lower, no space", argv("curl", "-H", "authorization:S3CR3T"), "curl -H authorization: [redacted]"},
		{"-H X-Api-Key", argv("curl", "-H", "X-Api-Key: S3CR3T"), "curl -H X-Api-Key: [redacted]"},
		{"-H x-api-key:", argv("curl", "-H", "x-api-key:S3CR3T"), "curl -H x-api-key: [redacted]"},
		{"-HCookie attached", argv("curl", "-HCookie: sid=S3CR3T"), "curl -HCookie: [redacted]"},
		{"--header=Private-Token", argv("curl", "--header=Private-Token: S3CR3T"), "curl --header=Private-Token: [redacted]"},
		{"--header v", argv("curl", "--header", "Proxy-Authorization: Basic S3CR3T"), "curl --header Proxy-Authorization: Basic [redacted]"},
		{"-H Accept kept", argv("curl", "-H", "Accept: application/json"), "curl -H Accept: application/json"},
		{"httpie header arg", argv("http", "a.test", "Authorization:Bearer S3CR3T"), "http a.test Authorization: Bearer [redacted]"},
		{"httpie X-Auth-Token", argv("http", "a.test", "X-Auth-Token:S3CR3T"), "http a.test X-Auth-Token: [redacted]"},
		{"URL userinfo", argv("git", "clone", "https://me:S3CR3T@a.test/r.git"), "git clone https://[redacted]@a.test/r.git"},
		{"URL userinfo upper scheme", argv("curl", "HTTPS://me:S3CR3T@a.test/x@y"), "curl HTTPS://[redacted]@a.test/x@y"},
		{"URL userinfo with @ in the password", argv("curl", "https://me:S3@CR3T@a.test/"), "curl https://[redacted]@a.test/"},
		{"query string token", argv("curl", "https://a.test/x?access_token=S3CR3T&page=2"), "curl https://a.test/x?access_token=[redacted]&page=2"},
		{"env assignment", argv("env", "GITHUB_TOKEN=S3CR3T", "gh"), "env GITHUB_TOKEN=[redacted] gh"},
		{"env AWS secret", argv("env", "AWS_SECRET_ACCESS_KEY=S3CR3T"), "env AWS_SECRET_ACCESS_KEY=[redacted]"},
		{"env lower", argv("env", "api_key=S3CR3T"), "env api_key=[redacted]"},
		{"env harmless kept", argv("env", "LANG=C", "HOME=/root"), "env LANG=C HOME=/root"},
		{"java -D", argv("java", "-Ddb.password=S3CR3T", "-jar", "x.jar"), "java -Ddb.password=[redacted] -jar x.jar"},
		{"form body", argv("curl", "-d", "user=me&password=S3CR3T"), "curl -d user=me&password=[redacted]"},
		{"JSON body", argv("curl", "--data", `{"name":"x","password": "S3CR3T"}`), `curl --data {"name":"x","password": "[redacted]"}`},
		{"bearer anywhere", argv("tool", "Bearer S3CR3T"), "tool Bearer [redacted]"},
		{"sh -c script", argv("sh", "-c", "curl -u me:S3CR3T -H 'Authorization: Bearer S3CR3T' https://a.test/"), "sh -c curl -u [redacted] -H 'Authorization: Bearer [redacted]' https://a.test/"},
		{"sh -c double quotes", argv("sh", "-c", `curl -H "X-Api-Key: S3CR3T" --token="S3CR3T 2" x`), `sh -c curl -H "X-Api-Key: [redacted]" --token=[redacted] x`},
		{"sh -c env", argv("sh", "-c", "API_KEY=S3CR3T ./run"), "sh -c API_KEY=[redacted] ./run"},
		{"sh -c quoted env value", argv("sh", "-c", "TOKEN='S3CR3T S3CR3T' ./run"), "sh -c TOKEN=[redacted] ./run"},
		{"sh -c --password v", argv("bash", "-c", "mysql --password S3CR3T"), "bash -c mysql --password [redacted]"},
		{"sh -c -pPASS", argv("bash", "-c", "mysql -pS3CR3T db"), "bash -c mysql -p[redacted] db"},
		{"quoted flag word", argv("sh", "-c", "tool '--api-key=S3CR3T'"), "sh -c tool '--api-key=[redacted]'"},
		{"yaml-ish pair", argv("sh", "-c", "echo password: S3CR3T"), "sh -c echo password: [redacted]"},
		{"last resort", argv("tool", "{password:S3CR3T}"), "tool [redacted]"},
		{"last resort url-encoded", argv("tool", "x.password%3DS3CR3T"), "tool [redacted]"},
		{"word with token in a path kept", argv("git", "push", "https://a.test/o/token-service"), "git push https://a.test/o/token-service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Cmdline(tc.in)
			if got != tc.want {
				t.Errorf("Cmdline(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, "S3CR3T") || strings.Contains(got, "CR3T") {
				t.Errorf("secret shown: %q", got)
			}
		})
	}
}

// TestEscape (issue 16): text about a program (its path, its command line)
// cannot forge a line, reorder what a person reads, hide characters or
// carry invalid UTF-8: all of those are shown as escapes.
func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/usr/bin/git", "/usr/bin/git"},
		{"/usr/bin/gi\nt", `/usr/bin/gi\x0at`},
		{"/tmp/x\r\n{\"program\":\"/usr/bin/git\"}", `/tmp/x\x0d\x0a{"program":"/usr/bin/git"}`},
		{"/tmp/a\u2028b\u2029c", `/tmp/a\u2028b\u2029c`},
		{"/tmp/\u202etig", `/tmp/\u202etig`},
		{"/tmp/\u202a\u202b\u202c\u202d", `/tmp/\u202a\u202b\u202c\u202d`},
		{"/tmp/\u2066x\u2067\u2068\u2069", `/tmp/\u2066x\u2067\u2068\u2069`},
		{"/tmp/\u200egit\u200f\u061c", `/tmp/\u200egit\u200f\u061c`},
		{"/tmp/zero\u200bwidth\ufeff", `/tmp/zero\u200bwidth\ufeff`},
		{"/tmp/\x1b[31mred", `/tmp/\x1b[31mred`},
		{"/tmp/\x7f\u0085\u009b", `/tmp/\x7f\u0085\u009b`},
		{"/tmp/\xff\xfe", `/tmp/\xff\xfe`},
		{"/tmp/nb\u00a0sp", `/tmp/nb\u00a0sp`},
		{"/tmp/tag\U000E0041", `/tmp/tag\U000e0041`},
		{"/tmp/café ok", "/tmp/café ok"},
		{`/tmp/back\slash`, `/tmp/back\slash`},
	} {
		got := Escape(tc.in)
		if got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if Escape(got) != got {
			t.Errorf("Escape(%q) not idempotent", tc.in)
		}
	}
}

func TestCmdlineEscapesAndBounds(t *testing.T) {
	if got := Cmdline([]byte("sh\x00-c\x00echo \x1b[31mred\nx\u202e\x00")); got != `sh -c echo \x1b[31mred\x0ax\u202e` {
		t.Errorf("got %q", got)
	}
	if got := Cmdline([]byte("x\x00\xff\xfe")); got != `x \xff\xfe` {
		t.Errorf("got %q", got)
	}
	long := Cmdline([]byte(strings.Repeat("é", 2000)))
	if len(long) > MaxCmdline+len("…") || !strings.HasSuffix(long, "…") || !utf8.ValidString(long) {
		t.Errorf("long cmdline: %d bytes", len(long))
	}
}

func printable(s string) bool {
	for _, r := range s {
		if r != ' ' && !unicode.IsPrint(r) {
			return false
		}
	}
	return utf8.ValidString(s)
}

func FuzzCmdline(f *testing.F) {
	f.Add([]byte("curl\x00-H\x00Authorization: Bearer x\x00"))
	f.Add([]byte("a\x00\x00\xff\x1b"))
	f.Add([]byte("sh\x00-c\x00a 'b \"c\" d' \\\" e=f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Cmdline(b)
		if len(s) > MaxCmdline+len("…") {
			t.Fatalf("%d bytes", len(s))
		}
		if !printable(s) {
			t.Fatalf("unprintable character in %q", s)
		}
		if e := Escape(string(b)); Escape(e) != e || !printable(e) {
			t.Fatalf("Escape(%q) = %q", b, e)
		}
		// A secret after a secret flag never survives.
		s = Cmdline(append(append([]byte("x\x00--token\x00"), b...), 0))
		if v := strings.TrimRight(string(b), "\x00"); len(v) >= 6 && !strings.Contains(v, "\x00") && strings.Contains(s, v) && strings.Contains(Cmdline([]byte("x\x00"+v)), v) {
			t.Fatalf("--token value %q shown: %q", v, s)
		}
	})
}

package progtext

import (
	"strings"
	"testing"
)

// TestAttackRedactVariants (red team, issue 16, round 2): credentials in
// command-line forms the first round did not cover. The secret in every
// row is "S3CR3T"; it must not appear in what Cmdline shows.
func TestAttackRedactVariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		// git -c http.extraheader with Basic credentials (base64 user:pass).
		{"git -c extraheader Basic", argv("git", "-c", "http.extraheader=Authorization: Basic S3CR3T", "push")},
		{"git -c extraheader Bearer", argv("git", "-c", "http.extraheader=AUTHORIZATION: bearer S3CR3T", "push")},
		{"git -c extraheader token header", argv("git", "-c", "http.https://a.test/.extraheader=PRIVATE-TOKEN: S3CR3T", "push")},
		{"curl --oauth2-bearer", argv("curl", "--oauth2-bearer", "S3CR3T", "https://a.test/")},
		{"mysql -pX", argv("mysql", "-pS3CR3T")},
		{"mysql --password=X", argv("mysql", "--password=S3CR3T")},
		// Single-dash long flags (Go's flag package, Java, openssl, sqlcmd).
		{"go-style -token v", argv("vault", "login", "-token", "S3CR3T")},
		{"go-style -password v", argv("tool", "-password", "S3CR3T")},
		{"go-style -api-key v", argv("tool", "-api-key", "S3CR3T")},
		{"go-style -token=v", argv("tool", "-token=S3CR3T")},
		{"sqlcmd -P", argv("sqlcmd", "-S", "db", "-U", "sa", "-P", "S3CR3T")},
		{"redis-cli -a", argv("redis-cli", "-h", "a.test", "-a", "S3CR3T")},
		{"ldapsearch -w", argv("ldapsearch", "-D", "cn=admin", "-w", "S3CR3T")},
		{"openssl -passin pass:", argv("openssl", "rsa", "-passin", "pass:S3CR3T")},
		{"openssl -k", argv("openssl", "enc", "-k", "S3CR3T")},
		// AWS / cloud credentials as positional arguments.
		{"aws configure set secret", argv("aws", "configure", "set", "aws_secret_access_key", "S3CR3T")},
		{"git config token", argv("git", "config", "--global", "github.token", "S3CR3T")},
		{"aws presigned URL signature", argv("curl", "https://b.s3.amazonaws.test/k?X-Amz-Credential=AKIA&X-Amz-Signature=S3CR3T")},
		{"azure SAS sig", argv("curl", "https://a.blob.core.windows.test/c/b?sv=2020&sig=S3CR3T")},
		// URLs.
		{"scheme-less userinfo (curl accepts it)", argv("curl", "me:S3CR3T@a.test/")},
		{"userinfo with a quote in the password", argv("curl", "https://me:S3CR3T'x@a.test/")},
		{"userinfo with percent-encoded colon", argv("curl", "https://me%3AS3CR3T@a.test/")},
		// Code on the command line.
		{"python spaces around =", argv("python3", "-c", `import requests; token = "S3CR3T"; requests.get("https://a.test/")`)},
		{"python auth tuple", argv("python3", "-c", `requests.get("https://a.test/", auth=("me", "S3CR3T"))`)},
		{"js object member", argv("node", "-e", `fetch("https://a.test/", {headers: {token: 'S3CR3T'}})`)},
		{"sh export", argv("sh", "-c", "export GITHUB_TOKEN=S3CR3T; gh api user")},
		{"deep nesting", argv("sh", "-c", `sh -c "sh -c 'sh -c \"sh -c \\\"curl -u me:S3CR3T https://a.test/\\\"\"'"`)},
		{"tab separated -u", argv("sh", "-c", "curl\t-u\tme:S3CR3T https://a.test/")},
		{"env var in $() not value", argv("sh", "-c", `curl -H "Authorization: token S3CR3T" https://a.test/`)},
		{"-u after --", argv("curl", "--", "-u", "me:S3CR3T")},
		{"sshpass", argv("sshpass", "-pS3CR3T", "ssh", "a.test")},
		{"netrc-like", argv("sh", "-c", "printf 'machine a.test login me password S3CR3T' > ~/.netrc")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Cmdline(tc.in)
			if strings.Contains(got, "S3CR3T") {
				t.Errorf("secret shown: %s", got)
			}
		})
	}
}

// TestRedactVariantClasses (fix of the above, as classes): other case,
// other header, other program of the same family, a path to the program,
// another signature name; and words that are not secrets stay shown.
func TestRedactVariantClasses(t *testing.T) {
	for _, in := range [][]byte{
		argv("git", "-c", "http.extraheader=X-Api-Key: S3CR3T", "fetch"),
		argv("git", "-c", "credential.helper=x", "-c", "HTTP.EXTRAHEADER=cookie: S3CR3T", "fetch"),
		argv("tool", "-Secret", "S3CR3T"),
		argv("tool", "-client-secret", "S3CR3T"),
		argv("tool", "-Password=S3CR3T"),
		argv("/usr/bin/redis-cli", "-a", "S3CR3T"),
		argv("keydb-cli", "-a", "S3CR3T"),
		argv("ldapmodify", "-x", "-w", "S3CR3T"),
		argv("sh", "-c", "cd /x && sqlcmd -S db -P S3CR3T"),
		argv("aws", "configure", "set", "AWS_SECRET_ACCESS_KEY", "S3CR3T"),
		argv("git", "config", "hub.oauthtoken", "S3CR3T"),
		argv("curl", "https://s.test/o?X-Goog-Signature=S3CR3T"),
		argv("curl", "https://s.test/o?Signature=S3CR3T&Expires=1"),
		argv("curl", "'me:S3CR3T@a.test'"),
		argv("curl", `https://me:S3"CR3T@a.test/`),
		argv("python3", "-c", `password : "S3CR3T"`),
		argv("python3", "-c", `x = dict(api_key = 'S3CR3T')`),
		argv("node", "-e", `f({Authorization: 'S3CR3T'})`),
		argv("sh", "-c", `sh -c "sh -c 'sh -c \"sh -c \\\"sh -c \\\\\\\"x --token S3CR3T\\\\\\\"\\\"\"'"`),
	} {
		if got := Cmdline(in); strings.Contains(got, "S3CR3T") || strings.Contains(got, "CR3T") {
			t.Errorf("secret shown: %s", got)
		}
	}
	for in, want := range map[string]string{
		"git\x00commit\x00-a\x00-m\x00fix it":     "git commit -a -m fix it",
		"curl\x00-k\x00https://a.test/":           "curl -k https://a.test/",
		"ls\x00-la\x00/tmp":                       "ls -la /tmp",
		"git\x00push\x00git@github.com:o/r.git":   "git push git@github.com:o/r.git",
		"tool\x00--no-password\x00https://a.test": "tool --no-password https://a.test",
	} {
		if got := Cmdline([]byte(in)); got != want {
			t.Errorf("Cmdline(%q) = %q, want %q", in, got, want)
		}
	}
}

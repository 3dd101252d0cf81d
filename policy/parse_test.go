package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestParseFiles parses every file under testdata/good (must load) and
// testdata/bad (must fail, listing each "# error:" line of the file as
// file:line: message).
func TestParseFiles(t *testing.T) {
	good, _ := filepath.Glob("testdata/good/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(good) < 3 || len(bad) < 8 {
		t.Fatalf("testdata missing: %d good, %d bad files", len(good), len(bad))
	}
	for _, f := range good {
		t.Run(f, func(t *testing.T) {
			if err := Check(f); err != nil {
				t.Fatalf("Check(%s) = %v, want nil", f, err)
			}
		})
	}
	for _, f := range bad {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, line := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(line, "# error: "); ok {
					wants = append(wants, f+w)
				}
			}
			if len(wants) == 0 {
				t.Fatalf("%s has no # error: lines", f)
			}
			p, err := Load(f)
			if err == nil {
				t.Fatalf("Load(%s) succeeded with %d rules, want errors", f, p.Rules())
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError: %v", err, err)
			}
			for _, w := range wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q; got:\n%v", w, err)
				}
			}
			for _, pr := range ve.Problems {
				if pr.File != f || pr.Line == 0 {
					t.Errorf("problem without file:line: %+v", pr)
				}
			}
		})
	}
}

func TestParseInline(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error; "" means it must parse
	}{
		{"empty", "", "policy is empty"},
		{"comment only", "# nothing\n", "policy is empty"},
		{"not a mapping", "- a\n- b\n", "x.yaml:1: policy must be a mapping"},
		{"duplicate key", "default:\n  rules: []\ndefault:\n  rules: []\n", "x.yaml:3: policy: key \"default\" appears twice"},
		{"sets not list", "sets: {a: b}\n", "x.yaml:1: sets must be a list"},
		{"set needs match", "sets:\n  - name: a\n", "x.yaml:2: set \"a\": match is required"},
		{"empty match", "sets:\n  - name: a\n    match: {}\n", "x.yaml:3: set \"a\": match needs at least one of"},
		{"reserved set name", "sets:\n  - name: default\n    match: {runtime: pid}\n", "reserved"},
		{"rule needs name", "default:\n  rules:\n    - hosts: a.example.com\n      action: allow\n", "x.yaml:3: default: every rule needs a name"},
		{"bad rule name", "default:\n  rules:\n    - name: a b\n      action: allow\n", "x.yaml:3: default: rule name \"a b\""},
		{"enabled not bool", "default:\n  rules:\n    - name: a\n      enabled: maybe\n      action: allow\n", "x.yaml:4: default: rule \"a\": enabled must be true or false"},
		{"bad timeout", "default:\n  approval_timeout: 10\n", "x.yaml:2: default: approval_timeout: \"10\" is not a duration"},
		{"huge timeout", "default:\n  approval_timeout: 1000h\n", "is not a duration between 1s and 24h"},
		{"bad default action", "default:\n  default_action: maybe\n", "x.yaml:2: default: default_action: unknown action \"maybe\""},
		{"bad method", "default:\n  rules:\n    - name: a\n      methods: [\"GE T\"]\n      ports: 80\n      action: allow\n", "x.yaml:4: default: rule \"a\": methods: \"GE T\" is not an HTTP method"},
		{"readonly with methods", "default:\n  rules:\n    - name: a\n      readonly: true\n      methods: GET\n      ports: 80\n", "readonly already decides by method"},
		{"host with port", "default:\n  rules:\n    - name: a\n      hosts: a.example.com:443\n      action: allow\n", "write the host name only"},
		{"host an IPv4 parser reads as 127.0.0.1", "default:\n  rules:\n    - name: a\n      hosts: \"127.1\"\n      action: allow\n", "\"127.1\" is not a valid host name"},
		{"bracketed IP host", "default:\n  rules:\n    - name: a\n      hosts: \"[::1]\"\n      action: allow\n", "is an IP address"},
		{"empty list", "default:\n  rules:\n    - name: a\n      hosts: []\n      action: allow\n", "x.yaml:4: default: rule \"a\": hosts must not be an empty list"},
		{"path with query", "default:\n  rules:\n    - name: a\n      paths: /a?b=1\n      ports: 80\n      action: allow\n", "query string is ignored"},
		{"path with escape", "default:\n  rules:\n    - name: a\n      paths: /a%2Fb\n      ports: 80\n      action: allow\n", "write paths decoded"},
		{"path with dotdot", "default:\n  rules:\n    - name: a\n      paths: /a/../b\n      ports: 80\n      action: allow\n", ". and .. segments are not allowed"},
		{"cidr http cond over tls", "default:\n  rules:\n    - name: a\n      cidrs: 10.0.0.0/8\n      methods: GET\n      action: allow\n", "conditions on cidrs only work over plain HTTP"},
		{"intercept cidr only", "default:\n  rules:\n    - name: a\n      cidrs: 10.0.0.0/8\n      intercept: true\n      action: allow\n", "intercept works by host name"},
		{"glob intercept covers", "default:\n  rules:\n    - name: i\n      hosts: \"*.example.com\"\n      intercept: true\n      action: deny\n      methods: DELETE\n    - name: a\n      hosts: [a.example.com, \"*.b.example.com\"]\n      readonly: true\n", ""},
		{"intercept does not cover apex", "default:\n  rules:\n    - name: i\n      hosts: \"*.example.com\"\n      intercept: true\n      action: allow\n    - name: a\n      hosts: example.com\n      readonly: true\n", "on host \"example.com\" need intercept"},
		{"plain http ports ok", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      ports: [80, 8080]\n      methods: GET\n      action: allow\n", ""},
		{"disabled rule not validated for intercept", "default:\n  rules:\n    - name: a\n      enabled: false\n      hosts: a.example.com\n      methods: GET\n      action: allow\n", ""},
		{"scalar in place of map", "default: yes\n", "x.yaml:1: default must be a mapping"},
		{"labels not map", "sets:\n  - name: a\n    match:\n      labels: [a]\n", "x.yaml:4: set \"a\": match.labels must be a mapping"},
		{"set unknown key names the set", "sets:\n  - rulez: []\n    name: a\n    match: {runtime: pid}\n", "x.yaml:2: set \"a\": unknown key \"rulez\" (did you mean \"rules\"?)"},
		{"rule not a mapping", "default:\n  rules:\n    - just-a-string\n", "x.yaml:3: default: rule must be a mapping"},
		{"header bad name", "default:\n  rules:\n    - name: a\n      ports: 80\n      headers: {\"bad name\": x}\n      action: allow\n", "headers entries must be Header-Name: value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.yaml), "x.yaml")
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded (%d rules), want error containing %q", p.Rules(), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "name is required") && !strings.Contains(tt.want, "name is required") {
				t.Fatalf("follow-on error reported: %q", err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "load policy") {
		t.Fatalf("Load(missing) = %v, want load policy error", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxPolicySize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Load(big) = %v, want size error", err)
	}
}

func TestParseValues(t *testing.T) {
	p, err := Load("testdata/good/everything.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Rules(); got != 4 { // the disabled rule does not count
		t.Errorf("Rules() = %d, want 4", got)
	}
	if got := strings.Join(p.Sets(), ","); got != "by-everything,learning,default" {
		t.Errorf("Sets() = %s", got)
	}
	r := p.def.rules[0]
	if r.timeout != 2*time.Minute || r.rate == nil || r.rate.n != 5 || r.rate.per != time.Second {
		t.Errorf("rule full: timeout %v rate %+v", r.timeout, r.rate)
	}
	if got := r.methods; len(got) != 2 || got[0] != "GET" {
		t.Errorf("methods = %v, want upper case", got)
	}
	if p.def.rules[2].timeout != time.Hour {
		t.Errorf("readonly rule timeout = %v, want set default 1h", p.def.rules[2].timeout)
	}
}

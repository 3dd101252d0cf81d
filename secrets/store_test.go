package secrets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openTest(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeClock{t: t0}
	s.now = c.now
	return s, dir
}

func mustSet(t *testing.T, s *Store, spec Secret, value string) Secret {
	t.Helper()
	sec, err := s.Set(spec, []byte(value))
	if err != nil {
		t.Fatalf("Set(%s): %v", spec.Name, err)
	}
	return sec
}

func TestKeyFileCreated0600(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "sub", "key")
	if _, err := Open(filepath.Join(dir, "secrets.json"), keyPath); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %#o, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(keyPath)
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(b) {
		t.Errorf("key file is not 64 hex digits")
	}
	// Reopening uses the same key: nothing is regenerated.
	if _, err := Open(filepath.Join(dir, "secrets.json"), keyPath); err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(keyPath)
	if !bytes.Equal(b, b2) {
		t.Error("key changed on reopen")
	}
}

func TestKeyFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    string
	}{
		{"short", []byte("abc"), 0o600, "want 32 raw bytes or 64 hex digits"},
		{"world readable", bytes.Repeat([]byte{'a'}, 64), 0o644, "accessible to others"},
		{"raw 32 bytes ok", bytes.Repeat([]byte{7}, 32), 0o600, ""},
		{"hex ok", []byte(strings.Repeat("ab", 32) + "\n"), 0o400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			kp := filepath.Join(dir, "key")
			if err := os.WriteFile(kp, tt.content, tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(kp, tt.mode)
			_, err := Open(filepath.Join(dir, "s.json"), kp)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestFileHoldsNoPlaintext(t *testing.T) {
	s, dir := openTest(t)
	const value = "ghp_SuperSecretValue1234567890"
	mustSet(t, s, Secret{Name: "github", Preset: "github"}, value)
	b, err := os.ReadFile(filepath.Join(dir, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(value)) || bytes.Contains(b, []byte("SuperSecret")) {
		t.Fatal("store file holds the plaintext value")
	}
	fi, _ := os.Stat(filepath.Join(dir, "secrets.json"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store mode %#o, want 0600", fi.Mode().Perm())
	}
	// And a fresh Open decrypts it again.
	s2, err := Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	e := s2.snap.Load().byName["github"]
	if e == nil || string(e.value) != value {
		t.Fatal("reopened store lost the value")
	}
}

func TestSetValidation(t *testing.T) {
	s, _ := openTest(t)
	good := "0123456789abcdef"
	tests := []struct {
		name  string
		spec  Secret
		value string
		want  string
	}{
		{"bad name", Secret{Name: "Git Hub", Hosts: []string{"a.com"}}, good, "invalid secret name"},
		{"name too long", Secret{Name: strings.Repeat("a", 64), Hosts: []string{"a.com"}}, good, "invalid secret name"},
		{"leading dash", Secret{Name: "-x", Hosts: []string{"a.com"}}, good, "invalid secret name"},
		{"no host", Secret{Name: "x"}, good, "at least one host"},
		{"bad host", Secret{Name: "x", Hosts: []string{"exa mple.com"}}, good, "invalid host"},
		{"bare wildcard", Secret{Name: "x", Hosts: []string{"*.com"}}, good, "wildcard"},
		{"host with path", Secret{Name: "x", Hosts: []string{"a.com/x"}}, good, "invalid host"},
		{"host with port", Secret{Name: "x", Hosts: []string{"a.com:443"}}, good, "invalid host"},
		{"host with two trailing dots", Secret{Name: "x", Hosts: []string{"a.com.."}}, good, "invalid host"},
		{"numeric top-level label", Secret{Name: "x", Hosts: []string{"127.1"}}, good, "invalid host"},
		{"unknown preset", Secret{Name: "x", Preset: "gitlab"}, good, "unknown preset"},
		{"format without value", Secret{Name: "x", Hosts: []string{"a.com"}, Header: "Authorization", Format: "Bearer"}, good, "exactly once"},
		{"bad header", Secret{Name: "x", Hosts: []string{"a.com"}, Header: "Bad Header"}, good, "invalid header name"},
		{"header mode no header", Secret{Name: "x", Hosts: []string{"a.com"}, HeaderMode: true}, good, "needs a header name"},
		{"bad path", Secret{Name: "x", Hosts: []string{"a.com"}, Paths: []string{"repos/**"}}, good, "must start with /"},
		{"partial wildcard", Secret{Name: "x", Hosts: []string{"a.com"}, Paths: []string{"/re*"}}, good, "whole segments"},
		{"bad regex", Secret{Name: "x", Hosts: []string{"a.com"}, PathRegex: "("}, good, "invalid path regex"},
		{"regex without group", Secret{Name: "x", Hosts: []string{"a.com"}, PathRegex: "^/bot"}, good, "one capture group"},
		{"template without value", Secret{Name: "x", Hosts: []string{"a.com"}, PathTemplate: "/bot/x"}, good, "exactly once"},
		{"short value", Secret{Name: "x", Hosts: []string{"a.com"}}, "short", "too short"},
		{"newline in value", Secret{Name: "x", Hosts: []string{"a.com"}}, "abcdefgh\r\nX-Evil: 1", "control character"},
		{"placeholder as value", Secret{Name: "x", Hosts: []string{"a.com"}}, "clawd-ph-x-00000000000000000000000000000000", "looks like a clawd placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Set(tt.spec, []byte(tt.value))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), tt.value) && len(tt.value) >= minValueLen {
				t.Fatalf("error leaks the value: %v", err)
			}
			if len(s.List()) != 0 {
				t.Fatal("a rejected Set changed the store")
			}
		})
	}
}

func TestSetCreateReplaceRotateRemove(t *testing.T) {
	s, dir := openTest(t)
	clock := &fakeClock{t: t0}
	s.now = clock.now
	a := mustSet(t, s, Secret{Name: "api", Hosts: []string{"API.Example.com.", "*.example.org", "api.example.com"}}, "value-one-123456")
	if !regexp.MustCompile(`^clawd-ph-api-[0-9a-f]{32}$`).MatchString(a.Placeholder) {
		t.Fatalf("placeholder %q has the wrong shape", a.Placeholder)
	}
	if got := strings.Join(a.Hosts, ","); got != "*.example.org,api.example.com" {
		t.Errorf("hosts = %s, want normalized and sorted", got)
	}
	if !a.Created.Equal(t0) || !a.Rotated.IsZero() {
		t.Errorf("times = %v/%v", a.Created, a.Rotated)
	}
	b := mustSet(t, s, Secret{Name: "other", Hosts: []string{"x.com"}}, "value-other-1234")
	if a.Placeholder == b.Placeholder {
		t.Fatal("placeholders collide")
	}

	clock.advance(time.Hour)
	r, err := s.Rotate("api", []byte("value-two-7890123"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Placeholder != a.Placeholder {
		t.Error("rotate changed the placeholder")
	}
	if !r.Rotated.Equal(t0.Add(time.Hour)) || !r.Created.Equal(t0) {
		t.Errorf("rotate times = %v/%v", r.Created, r.Rotated)
	}
	if got := string(s.snap.Load().byName["api"].value); got != "value-two-7890123" {
		t.Error("rotate did not change the value")
	}
	// Survives a reopen.
	s2, err := Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(s2.snap.Load().byName["api"].value); got != "value-two-7890123" {
		t.Error("rotated value not persisted")
	}

	// Replacing Set keeps the placeholder too.
	c := mustSet(t, s, Secret{Name: "api", Hosts: []string{"new.example.com"}}, "value-three-12345")
	if c.Placeholder != a.Placeholder || !c.Created.Equal(t0) {
		t.Error("replacing Set changed placeholder or created time")
	}

	if _, err := s.Rotate("missing", []byte("value-xxxxxxxx")); !errors.Is(err, ErrNotFound) {
		t.Errorf("rotate missing: %v", err)
	}
	if err := s.Remove("missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove missing: %v", err)
	}
	if err := s.Remove("api"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("api"); ok {
		t.Error("removed secret still there")
	}
	list := s.List()
	if len(list) != 1 || list[0].Name != "other" {
		t.Errorf("List = %v", list)
	}
}

func TestListSortedAndCopies(t *testing.T) {
	s, _ := openTest(t)
	for _, n := range []string{"zeta", "alpha", "mid"} {
		mustSet(t, s, Secret{Name: n, Hosts: []string{"a.com"}}, "value-"+n+"-12345")
	}
	list := s.List()
	if list[0].Name != "alpha" || list[1].Name != "mid" || list[2].Name != "zeta" {
		t.Fatalf("not sorted: %v", list)
	}
	list[0].Hosts[0] = "evil.com"
	if g, _ := s.Get("alpha"); g.Hosts[0] != "a.com" {
		t.Fatal("List leaked internal slices")
	}
	js, _ := json.Marshal(list)
	if bytes.Contains(js, []byte("value-")) {
		t.Fatal("JSON of Secret holds a value")
	}
}

// tamper edits the store file through its JSON structure.
func tamper(t *testing.T, path string, fn func(f map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	fn(f)
	b, _ = json.Marshal(f)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTamperingDetected(t *testing.T) {
	recs := func(f map[string]any) []any { return f["secrets"].([]any) }
	meta := func(f map[string]any, i int) map[string]any {
		return recs(f)[i].(map[string]any)["meta"].(map[string]any)
	}
	tests := []struct {
		name string
		edit func(t *testing.T, path, keyPath string)
	}{
		{"flip a ciphertext byte", func(t *testing.T, path, _ string) {
			tamper(t, path, func(f map[string]any) {
				r := recs(f)[0].(map[string]any)
				ct := []byte(r["ciphertext"].(string))
				ct[2] ^= 1 // still valid base64, different bytes
				if ct[2] == '+' || ct[2] == '/' {
					ct[2] = 'A'
				}
				r["ciphertext"] = string(ct)
			})
		}},
		{"widen hosts", func(t *testing.T, path, _ string) {
			tamper(t, path, func(f map[string]any) { meta(f, 0)["hosts"] = []any{"evil.com"} })
		}},
		{"swap values between records", func(t *testing.T, path, _ string) {
			tamper(t, path, func(f map[string]any) {
				a, b := recs(f)[0].(map[string]any), recs(f)[1].(map[string]any)
				a["ciphertext"], b["ciphertext"] = b["ciphertext"], a["ciphertext"]
				a["nonce"], b["nonce"] = b["nonce"], a["nonce"]
			})
		}},
		{"swap record order", func(t *testing.T, path, _ string) {
			tamper(t, path, func(f map[string]any) {
				r := recs(f)
				r[0], r[1] = r[1], r[0]
			})
		}},
		{"remove a record", func(t *testing.T, path, _ string) {
			tamper(t, path, func(f map[string]any) { f["secrets"] = recs(f)[:1] })
		}},
		{"truncated file", func(t *testing.T, path, _ string) {
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:len(b)/2], 0o600)
		}},
		{"wrong key", func(t *testing.T, _, keyPath string) {
			os.WriteFile(keyPath, []byte(strings.Repeat("cd", 32)), 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := openTest(t)
			path, keyPath := filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key")
			mustSet(t, s, Secret{Name: "alpha", Hosts: []string{"a.example.com"}}, "alpha-value-123456")
			mustSet(t, s, Secret{Name: "beta", Hosts: []string{"b.example.com"}}, "beta-value-1234567")
			tt.edit(t, path, keyPath)
			if tt.name == "wrong key" {
				_, err := Open(path, keyPath)
				if !errors.Is(err, ErrTampered) {
					t.Fatalf("Open with wrong key: %v, want ErrTampered", err)
				}
				return
			}
			err := s.Reload()
			if err == nil {
				t.Fatal("Reload accepted a tampered file")
			}
			if strings.Contains(err.Error(), "value-123") {
				t.Fatalf("error leaks a value: %v", err)
			}
			// Last good copy stays in use.
			if e := s.snap.Load().byName["alpha"]; e == nil || string(e.value) != "alpha-value-123456" || len(s.List()) != 2 {
				t.Fatal("Reload dropped the last good secrets")
			}
			if _, err := Open(path, keyPath); err == nil {
				t.Fatal("Open accepted a tampered file")
			}
			// Writers refuse to build on a tampered file too.
			if _, err := s.Set(Secret{Name: "gamma", Hosts: []string{"c.com"}}, []byte("gamma-value-1234")); err == nil {
				t.Fatal("Set wrote over a tampered file")
			}
		})
	}
}

func TestEveryByteFlipDetected(t *testing.T) {
	s, dir := openTest(t)
	path := filepath.Join(dir, "secrets.json")
	mustSet(t, s, Secret{Name: "alpha", Hosts: []string{"a.example.com"}}, "alpha-value-123456")
	orig, _ := os.ReadFile(path)
	for i := range orig {
		b := bytes.Clone(orig)
		b[i] ^= 0x01
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		err := s.Reload()
		if err == nil {
			// Flipping whitespace or JSON-equivalent bytes can be harmless;
			// then the decrypted state must be identical.
			if e := s.snap.Load().byName["alpha"]; e == nil || string(e.value) != "alpha-value-123456" {
				t.Fatalf("byte %d: accepted and changed the secret", i)
			}
			continue
		}
		if e := s.snap.Load().byName["alpha"]; e == nil || string(e.value) != "alpha-value-123456" {
			t.Fatalf("byte %d: lost last good copy", i)
		}
	}
}

func TestCrashSafeWrite(t *testing.T) {
	s, dir := openTest(t)
	path := filepath.Join(dir, "secrets.json")
	mustSet(t, s, Secret{Name: "alpha", Hosts: []string{"a.example.com"}}, "alpha-value-123456")
	before, _ := os.ReadFile(path)

	s.beforeRename = func() error { return errors.New("simulated crash") }
	_, err := s.Set(Secret{Name: "beta", Hosts: []string{"b.com"}}, []byte("beta-value-1234567"))
	if err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("err = %v", err)
	}
	if _, err := s.Rotate("alpha", []byte("alpha-value-new-99")); err == nil {
		t.Fatal("rotate succeeded despite failing write")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("failed write changed the store file")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temp file left behind: %s", e.Name())
		}
	}
	if _, ok := s.Get("beta"); ok {
		t.Fatal("failed Set changed memory")
	}
	if string(s.snap.Load().byName["alpha"].value) != "alpha-value-123456" {
		t.Fatal("failed Rotate changed memory")
	}
}

func TestTwoStoresShareFile(t *testing.T) {
	// The daemon and a `clawd secret set` process share one file.
	daemon, dir := openTest(t)
	cli, err := Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, daemon, Secret{Name: "alpha", Hosts: []string{"a.com"}}, "alpha-value-123456")
	mustSet(t, cli, Secret{Name: "beta", Hosts: []string{"b.com"}}, "beta-value-1234567")
	if len(cli.List()) != 2 {
		t.Fatal("cli store lost the daemon's secret")
	}
	if len(daemon.List()) != 1 {
		t.Fatal("daemon saw the change before Reload")
	}
	if err := daemon.Reload(); err != nil {
		t.Fatal(err)
	}
	if len(daemon.List()) != 2 {
		t.Fatal("Reload did not pick up the change")
	}
}

func TestWatchReloadsOnRotate(t *testing.T) {
	daemon, dir := openTest(t)
	mustSet(t, daemon, Secret{Name: "alpha", Hosts: []string{"a.com"}}, "alpha-value-123456")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- daemon.Watch(ctx, nil) }()
	defer func() { cancel(); <-done }()

	cli, err := Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	// The watch may not be registered yet when the first rotate lands;
	// rotate until the daemon sees a new value (bounded by the test
	// timeout, not by a wall-clock assertion).
	for i := 0; ; i++ {
		if _, err := cli.Rotate("alpha", []byte("alpha-value-rotated")); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "http://a.com/", nil)
		req.Header.Set("Authorization", "Bearer "+daemon.List()[0].Placeholder)
		if _, err := daemon.Inject(req, "a.com"); err != nil {
			t.Fatal(err)
		}
		if req.Header.Get("Authorization") == "Bearer alpha-value-rotated" {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("Watch ended: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestConcurrentInjectDuringRotate(t *testing.T) {
	s, _ := openTest(t)
	sec := mustSet(t, s, Secret{Name: "api", Hosts: []string{"api.example.com"}}, "value-0-abcdefgh")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", "http://api.example.com/v1?k="+sec.Placeholder, strings.NewReader("x"))
				req.Header.Set("Authorization", "Bearer "+sec.Placeholder)
				inj, err := s.Inject(req, "api.example.com")
				if err != nil {
					t.Error(err)
					return
				}
				got := req.Header.Get("Authorization")
				if !regexp.MustCompile(`^Bearer value-[0-9]+-abcdefgh$`).MatchString(got) {
					t.Errorf("torn or missing value: %q", got)
					return
				}
				_ = inj.Names()
				_ = s.RedactString(got)
			}
		}()
	}
	for i := 1; i <= 20; i++ {
		if _, err := s.Rotate("api", []byte("value-"+strings.Repeat("9", i)+"-abcdefgh")); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestCloseWipesValues(t *testing.T) {
	s, _ := openTest(t)
	mustSet(t, s, Secret{Name: "alpha", Hosts: []string{"a.com"}}, "alpha-value-123456")
	e := s.snap.Load().byName["alpha"]
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.value, make([]byte, len(e.value))) {
		t.Fatal("value not wiped on Close")
	}
	if len(s.List()) != 0 || s.BoundTo("a.com") {
		t.Fatal("closed store still serves secrets")
	}
}

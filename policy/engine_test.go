package policy

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const onlyAnthropic = `
default:
  rules:
    - name: anthropic
      hosts: api.anthropic.com
      action: allow
`

const anthropicAndGitHub = onlyAnthropic + `
    - name: github
      hosts: api.github.com
      action: allow
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content next to path and renames it over path, as
// editors and config management tools do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func gh() Input {
	return Input{Container: Container{ID: "a"}, Host: "api.github.com", DstPort: 443}
}

// metric reads one sample from the registry ("" label value for gauges).
func metric(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result == "" {
				return m.GetGauge().GetValue()
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("metric %s{result=%q} not found", name, result)
	return 0
}

func TestEngineReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, onlyAnthropic)
	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	e, err := NewEngine(path, zap.New(core), reg)
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(gh()); d.Action != Deny {
		t.Fatalf("before edit: %s", FormatDecision(d))
	}
	first := e.LastReload()
	if first.IsZero() || e.LastError() != nil {
		t.Fatalf("LastReload %v LastError %v after first load", first, e.LastError())
	}

	// A good edit takes effect.
	writeFile(t, path, anthropicAndGitHub)
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(gh()); d.Action != Allow || d.Rule != "github" {
		t.Fatalf("after good edit: %s", FormatDecision(d))
	}
	if e.Current().Rules() != 2 || metric(t, reg, "clawd_policy_rules", "") != 2 {
		t.Fatalf("rules = %d, gauge %v", e.Current().Rules(), metric(t, reg, "clawd_policy_rules", ""))
	}

	// A broken edit keeps the running policy and is remembered.
	writeFile(t, path, anthropicAndGitHub+"      bogus: 1\n")
	err = e.Reload()
	if err == nil || !strings.Contains(err.Error(), path+":11: default: rule \"github\": unknown key \"bogus\"") {
		t.Fatalf("Reload(broken) = %v", err)
	}
	if e.LastError() == nil || e.LastError().Error() != err.Error() {
		t.Fatalf("LastError = %v", e.LastError())
	}
	if d := e.Decide(gh()); d.Action != Allow {
		t.Fatalf("broken edit changed the running policy: %s", FormatDecision(d))
	}
	if got := metric(t, reg, "clawd_policy_reloads_total", "failure"); got != 1 {
		t.Errorf("failures = %v, want 1", got)
	}
	if got := metric(t, reg, "clawd_policy_reloads_total", "success"); got != 2 {
		t.Errorf("successes = %v, want 2", got)
	}
	if n := logs.FilterMessage("policy reload failed; keeping the running policy").Len(); n != 1 {
		t.Errorf("logged %d reload failures, want 1", n)
	}

	// A missing file is a failure too, and fixing it clears LastError.
	os.Remove(path)
	if err := e.Reload(); err == nil || e.Current().Rules() != 2 {
		t.Fatalf("Reload(missing) = %v, rules %d", err, e.Current().Rules())
	}
	writeFile(t, path, onlyAnthropic)
	if err := e.Reload(); err != nil || e.LastError() != nil {
		t.Fatalf("Reload(fixed) = %v, LastError %v", err, e.LastError())
	}
	if logs.FilterMessage("policy reloaded").Len() != 2 {
		t.Errorf("successful reloads not logged: %v", logs.All())
	}

	// A second engine on the same registry reuses the collectors.
	if _, err := NewEngine(path, nil, reg); err != nil {
		t.Fatalf("second engine: %v", err)
	}
}

func TestNewEngineFailsOnBadPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, "default:\n  rulez: []\n")
	if _, err := NewEngine(path, nil, nil); err == nil || !strings.Contains(err.Error(), ":2:") {
		t.Fatalf("NewEngine(bad) = %v, want a line-numbered error", err)
	}
	// A missing file is not a broken one: see TestEngineMissingFileDeniesUntilItAppears.
}

// Rate-limit state survives a reload: a reload must not hand out a fresh burst.
func TestEngineRateLimitSurvivesReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	limited := "default:\n  rules:\n    - name: l\n      hosts: l.example.com\n      action: allow\n      rate_limit: 1/hour\n"
	writeFile(t, path, limited)
	e, err := NewEngine(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Container: Container{ID: "a"}, Host: "l.example.com", DstPort: 443, Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if d := e.Decide(in); d.Action != Allow {
		t.Fatalf("first: %s", FormatDecision(d))
	}
	writeFile(t, path, limited+"    - name: other\n      hosts: o.example.com\n      action: allow\n")
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(in); !d.RateLimited || d.RetryAfter != time.Hour {
		t.Fatalf("after reload: %s", FormatDecision(d))
	}
}

// waitFor polls cond until it holds or a generous bound passes; the bound
// only guards against hanging, it is not what the test measures.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startWatch(t *testing.T, e *Engine) {
	t.Helper()
	ready := make(chan struct{})
	e.onWatch = func() { close(ready) }
	e.Debounce = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Watch returned early: %v", err)
	}
}

func TestWatchRenameReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, onlyAnthropic)
	e, err := NewEngine(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, e)

	replaceFile(t, path, anthropicAndGitHub)
	waitFor(t, "rename-replace to be picked up", func() bool { return e.Decide(gh()).Action == Allow })

	// A broken replacement is reported and leaves the policy running.
	replaceFile(t, path, "default: [\n")
	waitFor(t, "broken file to be reported", func() bool { return e.LastError() != nil })
	if d := e.Decide(gh()); d.Action != Allow {
		t.Fatalf("broken file changed the policy: %s", FormatDecision(d))
	}

	// In-place writes count too.
	writeFile(t, path, onlyAnthropic)
	waitFor(t, "in-place write to be picked up", func() bool { return e.Decide(gh()).Action == Deny && e.LastError() == nil })
}

// Kubernetes mounts a ConfigMap as policy.yaml -> ..data/policy.yaml with
// ..data -> ..<timestamp>; an update re-points ..data atomically.
func TestWatchConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "..v1"), filepath.Join(dir, "..v2")
	for _, v := range []string{v1, v2} {
		if err := os.Mkdir(v, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(v1, "policy.yaml"), onlyAnthropic)
	writeFile(t, filepath.Join(v2, "policy.yaml"), anthropicAndGitHub)
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink("..data/policy.yaml", path); err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	startWatch(t, e)

	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "symlink swap to be picked up", func() bool { return e.Decide(gh()).Action == Allow })
}

// Decisions keep flowing, each from one whole policy, while reloads happen
// (run with -race).
func TestEngineConcurrentDecideAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, onlyAnthropic)
	e, err := NewEngine(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			d := e.Decide(gh())
			if (d.Action == Allow) != (d.Rule == "github") {
				t.Errorf("inconsistent decision %s", FormatDecision(d))
				return
			}
			e.MayResolve(Container{}, "api.github.com")
		}
	}()
	for i := 0; i < 50; i++ {
		content := onlyAnthropic
		if i%2 == 0 {
			content = anthropicAndGitHub
		}
		writeFile(t, path, content)
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
}

func TestEngineMissingFileDeniesUntilItAppears(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "policy.yaml")
	e, err := NewEngine(path, nil, nil)
	if err != nil {
		t.Fatalf("a missing policy file must not stop the daemon: %v", err)
	}
	if e.LastError() == nil || !strings.Contains(e.LastError().Error(), "denying everything") {
		t.Errorf("LastError = %v", e.LastError())
	}
	in := Input{Container: Container{Name: "a"}, Host: "example.com", DstIP: netip.MustParseAddr("203.0.113.1"), DstPort: 443}
	if d := e.Decide(in); d.Action != Deny {
		t.Fatalf("no policy: %+v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.Debounce = 10 * time.Millisecond
	watching := make(chan struct{})
	e.onWatch = func() { close(watching) }
	go e.Watch(ctx)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	<-watching
	if err := os.WriteFile(path, []byte("default:\n  default_action: allow\n  rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second) // guards a hang only
	for e.Decide(in).Action != Allow {
		if time.Now().After(deadline) {
			t.Fatal("the policy file appeared but was not loaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e.LastError() != nil {
		t.Errorf("LastError after load = %v", e.LastError())
	}
}

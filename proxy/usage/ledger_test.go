package usage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestLedgerWindowAndLimits(t *testing.T) {
	l, _ := Open("", nil)
	b := &policy.Budget{ID: "default/llm", Tokens: 100, Requests: 3, Per: time.Hour}
	k := Key{"containerd/default/c1", b.ID}
	if ok, _, _ := l.Admit(k, "agent", b, t0); !ok {
		t.Fatal("first request refused")
	}
	l.Settle(k, b, true, 60, t0.Add(time.Second))
	if ok, _, _ := l.Admit(k, "agent", b, t0.Add(2*time.Second)); !ok {
		t.Fatal("second request refused with 40 tokens left")
	}
	l.Settle(k, b, true, 60, t0.Add(3*time.Second)) // overshoot: 120 of 100
	ok, retry, reason := l.Admit(k, "agent", b, t0.Add(10*time.Minute))
	if ok || retry != 50*time.Minute || !strings.Contains(reason, `token budget of rule "llm" spent: 120 of 100 tokens`) {
		t.Fatalf("Admit after spending = %v, %v, %q", ok, retry, reason)
	}
	// Another container has its own budget.
	if ok, _, _ := l.Admit(Key{"containerd/default/c2", b.ID}, "other", b, t0.Add(10*time.Minute)); !ok {
		t.Fatal("another container refused")
	}
	u := l.Usage(k.Container, t0.Add(10*time.Minute))
	if len(u) != 1 || u[0].Tokens != 120 || u[0].Requests != 2 || !u[0].Spent || u[0].Window != "1h" || u[0].Name != "agent" {
		t.Fatalf("Usage = %+v", u)
	}
	// The window is fixed: it ends an hour after its first request.
	if ok, _, _ := l.Admit(k, "agent", b, t0.Add(time.Hour)); !ok {
		t.Fatal("refused in a fresh window")
	}
}

func TestLedgerRequestsCountInFlight(t *testing.T) {
	l, _ := Open("", nil)
	b := &policy.Budget{ID: "default/llm", Requests: 2, Per: time.Hour}
	k := Key{"c", b.ID}
	for i := 0; i < 2; i++ {
		if ok, _, _ := l.Admit(k, "", b, t0); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	// Two in flight: a third concurrent one is refused (no overshoot).
	if ok, _, reason := l.Admit(k, "", b, t0); ok || !strings.Contains(reason, "2 of 2 requests") {
		t.Fatalf("third concurrent request admitted (%q)", reason)
	}
	// One was never forwarded (e.g. the approver said no): its slot frees.
	l.Settle(k, b, false, 0, t0)
	if ok, _, _ := l.Admit(k, "", b, t0); !ok {
		t.Fatal("slot of an unforwarded request not freed")
	}
}

func TestLedgerSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	l, err := Open(path, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	b := &policy.Budget{ID: "default/llm", Tokens: 10, Per: 24 * time.Hour}
	k := Key{"containerd/default/c1", b.ID}
	now := time.Now()
	l.Admit(k, "agent", b, now)
	l.Settle(k, b, true, 25, now)
	l.Close()
	l2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if u := l2.Usage("", now); len(u) != 1 || u[0].Tokens != 25 || u[0].TokenLimit != 10 || u[0].Requests != 1 || u[0].Name != "agent" {
		t.Fatalf("after restart: %+v", u)
	}
	if ok, _, _ := l2.Admit(k, "agent", b, now.Add(time.Minute)); ok {
		t.Fatal("a restart reset the budget")
	}
	// A broken ledger is an error, not a silent reset.
	for _, bad := range []string{"{", `{"version":2}`, `{"version":1,"entries":[{"container":"c","budget":"b","per_ns":0}]}`, `{"version":1,"entries":[{"container":"c","budget":"b","per_ns":5,"tokens":-1}]}`} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := Open(path, nil); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Open(%q) = %v, want an error naming the file", bad, err)
		}
	}
}

// Editing a budget's numbers (a reload) keeps what was spent in the window.
func TestLedgerLimitEditKeepsUsage(t *testing.T) {
	l, _ := Open("", nil)
	b := &policy.Budget{ID: "default/llm", Tokens: 10, Per: time.Hour}
	k := Key{"c", b.ID}
	l.Admit(k, "", b, t0)
	l.Settle(k, b, true, 10, t0)
	if ok, _, _ := l.Admit(k, "", b, t0); ok {
		t.Fatal("spent budget admitted")
	}
	raised := &policy.Budget{ID: b.ID, Tokens: 15, Per: time.Hour}
	if ok, _, _ := l.Admit(k, "", raised, t0); !ok {
		t.Fatal("raised budget refused")
	}
	l.Settle(k, raised, true, 5, t0)
	if u := l.Usage("", t0); len(u) != 1 || u[0].Tokens != 15 || u[0].TokenLimit != 15 || !u[0].Spent {
		t.Fatalf("Usage = %+v", u)
	}
}

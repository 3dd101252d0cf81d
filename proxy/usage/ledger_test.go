package usage

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestLedgerWindowAndLimits(t *testing.T) {
	l, _ := Open("", nil)
	b := &policy.Budget{ID: "default/llm", Tokens: 100, Requests: 3, Per: time.Hour}
	k := Key{"containerd/default/c1", b.ID}
	if ok, _ := l.Admit(k, "agent", b, 0, t0); !ok {
		t.Fatal("first request refused")
	}
	l.Settle(k, b, 0, true, 60, t0.Add(time.Second))
	if ok, _ := l.Admit(k, "agent", b, 0, t0.Add(2*time.Second)); !ok {
		t.Fatal("second request refused with 40 tokens left")
	}
	l.Settle(k, b, 0, true, 60, t0.Add(3*time.Second)) // overshoot: 120 of 100
	ok, why := l.Admit(k, "agent", b, 0, t0.Add(10*time.Minute))
	if ok || why.Retry != 50*time.Minute || why.Busy || !strings.Contains(why.Reason, `token budget of rule "llm" spent: 120 of 100 tokens`) {
		t.Fatalf("Admit after spending = %v, %+v", ok, why)
	}
	// Another container has its own budget.
	if ok, _ := l.Admit(Key{"containerd/default/c2", b.ID}, "other", b, 0, t0.Add(10*time.Minute)); !ok {
		t.Fatal("another container refused")
	}
	u := l.Usage(k.Container, t0.Add(10*time.Minute))
	if len(u) != 1 || u[0].Tokens != 120 || u[0].Requests != 2 || !u[0].Spent || u[0].Window != "1h" || u[0].Name != "agent" {
		t.Fatalf("Usage = %+v", u)
	}
	// The window is fixed: it ends an hour after its first request.
	if ok, _ := l.Admit(k, "agent", b, 0, t0.Add(time.Hour)); !ok {
		t.Fatal("refused in a fresh window")
	}
}

func TestLedgerRequestsCountInFlight(t *testing.T) {
	l, _ := Open("", nil)
	b := &policy.Budget{ID: "default/llm", Requests: 2, Per: time.Hour}
	k := Key{"c", b.ID}
	for i := 0; i < 2; i++ {
		if ok, _ := l.Admit(k, "", b, 0, t0); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	// Two in flight: a third concurrent one is refused (no overshoot).
	if ok, why := l.Admit(k, "", b, 0, t0); ok || !why.Busy || !strings.Contains(why.Reason, "0 of 2 requests used and 2 in flight") {
		t.Fatalf("third concurrent request admitted (%+v)", why)
	}
	// One was never forwarded (e.g. the approver said no): its slot frees.
	l.Settle(k, b, 0, false, 0, t0)
	if ok, _ := l.Admit(k, "", b, 0, t0); !ok {
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
	l.Admit(k, "agent", b, 0, now)
	l.Settle(k, b, 0, true, 25, now)
	l.Close()
	l2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if u := l2.Usage("", now); len(u) != 1 || u[0].Tokens != 25 || u[0].TokenLimit != 10 || u[0].Requests != 1 || u[0].Name != "agent" {
		t.Fatalf("after restart: %+v", u)
	}
	if ok, _ := l2.Admit(k, "agent", b, 0, now.Add(time.Minute)); ok {
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
	l.Admit(k, "", b, 0, t0)
	l.Settle(k, b, 0, true, 10, t0)
	if ok, _ := l.Admit(k, "", b, 0, t0); ok {
		t.Fatal("spent budget admitted")
	}
	raised := &policy.Budget{ID: b.ID, Tokens: 15, Per: time.Hour}
	if ok, _ := l.Admit(k, "", raised, 0, t0); !ok {
		t.Fatal("raised budget refused")
	}
	l.Settle(k, raised, 0, true, 5, t0)
	if u := l.Usage("", t0); len(u) != 1 || u[0].Tokens != 15 || u[0].TokenLimit != 15 || !u[0].Spent {
		t.Fatalf("Usage = %+v", u)
	}
}

// Red team (issue 16): with 1 token left, 40 concurrent requests were all
// admitted (a 40x overshoot). Each request now reserves its estimate: the
// window admits only what fits beside the reservations of those in flight,
// refuses busy while they hold the rest, and settles each to its actual.
func TestLedgerReservesEstimates(t *testing.T) {
	l, _ := Open("", nil)
	b := &policy.Budget{ID: "default/llm", Tokens: 1000, Per: time.Hour}
	k := Key{"c", b.ID}
	admitted := 0
	for i := 0; i < 40; i++ {
		if ok, _ := l.Admit(k, "", b, 300, t0); ok {
			admitted++
		}
	}
	if admitted != 3 {
		t.Fatalf("%d of 40 concurrent requests of estimate 300 admitted under 1000 tokens, want 3", admitted)
	}
	ok, why := l.Admit(k, "", b, 300, t0)
	if ok || !why.Busy || why.Retry != BusyRetry || !strings.Contains(why.Reason, "900 are reserved by 3 requests in flight") {
		t.Fatalf("fourth: %v %+v, want busy", ok, why)
	}
	if u := l.Usage("", t0); len(u) != 1 || u[0].Reserved != 900 || u[0].InFlight != 3 {
		t.Fatalf("Usage = %+v, want 900 reserved by 3", u)
	}
	// They settle to what they cost: the reservations go.
	for i := 0; i < 3; i++ {
		l.Settle(k, b, 300, true, 100, t0)
	}
	if u := l.Usage("", t0); u[0].Tokens != 300 || u[0].Reserved != 0 || u[0].InFlight != 0 {
		t.Fatalf("after settling: %+v", u)
	}
	// 700 remain: an estimate of 701 can never fit (exhausted, not
	// busy), 700 does.
	if ok, why := l.Admit(k, "", b, 701, t0); ok || why.Busy || !strings.Contains(why.Reason, "may cost 701 tokens") || !strings.Contains(why.Reason, "700 of 1000 tokens remain") {
		t.Fatalf("701: %v %+v", ok, why)
	}
	if ok, _ := l.Admit(k, "", b, 700, t0); !ok {
		t.Fatal("700 of 700 refused")
	}
	// With 1 token left nothing with an estimate fits, however many at once.
	l.Settle(k, b, 700, true, 699, t0)
	for i := 0; i < 40; i++ {
		if ok, _ := l.Admit(k, "", b, 2, t0); ok {
			t.Fatalf("request %d admitted with 1 token left and an estimate of 2", i)
		}
	}
}

// A request count budget is exact under concurrency.
func TestLedgerRequestCountExactConcurrently(t *testing.T) {
	l, _ := Open("", nil)
	b := &policy.Budget{ID: "default/llm", Requests: 7, Per: time.Hour}
	k := Key{"c", b.ID}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := l.Admit(k, "", b, 0, t0); ok {
				admitted.Add(1)
				l.Settle(k, b, 0, true, 0, t0)
			}
		}()
	}
	wg.Wait()
	if u := l.Usage("", t0); admitted.Load() != 7 || u[0].Requests != 7 {
		t.Fatalf("%d admitted, ledger %+v; want exactly 7", admitted.Load(), u)
	}
}

// Red team (issue 16): a request settled after the ledger was closed (a
// daemon shutting down while a stream is open) was lost. It is written at
// once; and a daemon that dies with requests in flight finds them charged
// their reservations.
func TestLedgerSettleAfterCloseAndCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	l, err := Open(path, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	b := &policy.Budget{ID: "default/llm", Tokens: 10000, Requests: 10, Per: 24 * time.Hour}
	k := Key{"c", b.ID}
	now := time.Now()
	l.Admit(k, "agent", b, 4000, now) // settles after Close
	l.Admit(k, "agent", b, 3000, now) // never settles: a crash
	l.Close()
	l.Settle(k, b, 4000, true, 1234, now)
	l2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	u := l2.Usage("", now)
	if len(u) != 1 || u[0].Tokens != 1234+3000 || u[0].Requests != 2 {
		t.Fatalf("after the restart: %+v, want 4234 tokens (1234 settled after Close + 3000 reserved in flight), 2 requests", u)
	}
}

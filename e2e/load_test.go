package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	approvalapi "github.com/clawd-dev/clawd/approval/api"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// loadgenBin is the static load client (e2e/loadgen); mount it at /loadgen.
func loadgenBin(t testing.TB) string { return toolBin(t, "loadgen") }

// ldResult is one line of loadgen output.
type ldResult struct {
	I      int    `json:"i"`
	Status int    `json:"status"`
	Error  string `json:"error"`
	Err    string `json:"err"`
	Body   string `json:"body"`
	Sent   int64  `json:"sent"`
	SHA    string `json:"sha256"`
	Closed bool   `json:"closed"`
	Reply  string `json:"reply"`
}

// ldRun runs /loadgen in ct and returns its results indexed by request.
// bound stops a hung exec; loadgen's own per-request timeouts are shorter.
func ldRun(t testing.TB, ct *harness.Container, bound time.Duration, args ...string) (map[int]ldResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	out, errOut, code, err := ct.Exec(ctx, append([]string{"/loadgen"}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("exec loadgen in %s: %v (stderr %q)", ct.Name, err, tail(errOut, 500))
	}
	if code != 0 {
		return nil, fmt.Errorf("loadgen in %s exited %d: %s", ct.Name, code, tail(errOut, 500))
	}
	res := map[int]ldResult{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var r ldResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("loadgen line %q: %v", sc.Text(), err)
		}
		res[r.I] = r
	}
	return res, nil
}

// ldAsync runs ldRun in the background.
func ldAsync(t testing.TB, ct *harness.Container, bound time.Duration, args ...string) <-chan ldOut {
	ch := make(chan ldOut, 1)
	go func() {
		r, err := ldRun(t, ct, bound, args...)
		ch <- ldOut{r, err}
	}()
	return ch
}

type ldOut struct {
	res map[int]ldResult
	err error
}

// ldWait waits for an ldAsync result; the bound turns a hang into a failure.
func ldWait(t testing.TB, ch <-chan ldOut, what string) map[int]ldResult {
	t.Helper()
	select {
	case o := <-ch:
		if o.err != nil {
			t.Fatalf("%s: %v", what, o.err)
		}
		return o.res
	case <-time.After(4 * time.Minute):
		t.Fatalf("%s: loadgen did not return", what)
	}
	return nil
}

// ldPID is the daemon's process ID.
func ldPID(t testing.TB, cl *Clawd) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.cmd == nil || cl.cmd.Process == nil {
		t.Fatal("daemon not running")
	}
	return cl.cmd.Process.Pid
}

// ldRSS is the daemon's resident set size in KiB.
func ldRSS(t testing.TB, cl *Clawd) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ldPID(t, cl)))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// ldMetric reads one unlabelled metric from the daemon's metrics listener.
func ldMetric(t testing.TB, cl *Clawd, name string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + cl.Metrics + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(l[len(name):]), 64)
			if err == nil {
				return v
			}
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// ldAPI is an approval API client with the daemon's bearer token.
func ldAPI(t testing.TB, cl *Clawd) *approvalapi.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(cl.StateDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	return &approvalapi.Client{Base: "http://" + cl.API, Token: strings.TrimSpace(string(tok)), HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// ldTry polls cond until it holds or the bound passes.
func ldTry(bound time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// ldPoll is eventually with a longer bound, for work that scales with load.
func ldPoll(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for: %s", what)
}

const loadPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: load-allow
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/allow/**"]
      action: allow
    - name: load-approve
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/approve/**"]
      action: approve
`

// TestLoadThousandConnections: 4 attached containers × 250 concurrent
// connections through allow, deny and approve rules. Every request gets
// its outcome, none hangs, and the daemon's memory and goroutines return
// to their baseline afterwards.
func TestLoadThousandConnections(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	// A connection whose first bytes do not arrive within peek-timeout is
	// taken for a server-speaks-first protocol and decided on IP and port
	// (here: denied with a reset). With 1,000 clients starting at once on
	// two cores, 300ms (the suite's setting) is not always enough for a
	// client to write its request line; the product default is 1s.
	t.Setenv("CLAWD_PEEK_TIMEOUT", "5s")
	cl := StartClawd(t, ctd, ClawdOpts{Policy: loadPolicy})
	api := ldAPI(t, cl)
	const nct, per = 4, 250
	files := map[string]string{loadgenBin(t): "/loadgen"}
	var cts []*harness.Container
	for i := 0; i < nct; i++ {
		ct := ctd.Run(t, fmt.Sprintf("load%d", i), harness.RunOpts{Files: files})
		cl.MustCLI("attach", ct.Name)
		cts = append(cts, ct)
	}
	// Warm up (first connections, TLS-free paths, allocator) before the baseline.
	for _, ct := range cts {
		res, err := ldRun(t, ct, time.Minute, "-n", "5", "-timeout", "30s", "-url", upURL("/allow/warm{i}"))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Status != 200 {
				t.Fatalf("warm-up request: %+v", r)
			}
		}
	}
	// Settle and take the baseline.
	time.Sleep(2 * time.Second)
	baseRSS := ldRSS(t, cl)
	baseG := ldMetric(t, cl, "go_goroutines")
	t.Logf("baseline: VmRSS %d KiB, %v goroutines", baseRSS, baseG)

	up.Reset()
	// Request i of container c: i%10 in 0..3 allow, 4..6 deny, 7..9 approve
	// (75 held per container: under the per-container pending limit).
	kind := func(i int) string {
		switch {
		case i%10 < 4:
			return "allow"
		case i%10 < 7:
			return "deny"
		}
		return "approve"
	}
	runs := make([]<-chan ldOut, nct)
	for c, ct := range cts {
		runs[c] = ldAsync(t, ct, 4*time.Minute, "-n", strconv.Itoa(per), "-timeout", "150s", "-X", "POST",
			"-url", upURL(fmt.Sprintf("/allow/c%d/r{i}", c)), "-url", upURL(fmt.Sprintf("/allow/c%d/r{i}", c)),
			"-url", upURL(fmt.Sprintf("/allow/c%d/r{i}", c)), "-url", upURL(fmt.Sprintf("/allow/c%d/r{i}", c)),
			"-url", upURL(fmt.Sprintf("/deny/c%d/r{i}", c)), "-url", upURL(fmt.Sprintf("/deny/c%d/r{i}", c)),
			"-url", upURL(fmt.Sprintf("/deny/c%d/r{i}", c)),
			"-url", upURL(fmt.Sprintf("/approve/c%d/r{i}", c)), "-url", upURL(fmt.Sprintf("/approve/c%d/r{i}", c)),
			"-url", upURL(fmt.Sprintf("/approve/c%d/r{i}", c)))
	}
	held := 0
	for i := 0; i < per; i++ {
		if kind(i) == "approve" {
			held++
		}
	}
	// Every approve request is held: wait for all of them.
	var pending []approval.Approval
	var peakRSS int64
	ok := ldTry(2*time.Minute, func() bool {
		if r := ldRSS(t, cl); r > peakRSS {
			peakRSS = r
		}
		l, err := api.List(context.Background(), "")
		if err != nil {
			t.Logf("list approvals: %v", err)
			return false
		}
		pending = l
		return len(l) == held*nct
	})
	if !ok {
		// Show what the clients got before failing.
		t.Errorf("%d pending approvals, want %d", len(pending), held*nct)
		for c := range cts {
			for a := range pending {
				api.Deny(context.Background(), pending[a].ID, "")
			}
			res := ldWait(t, runs[c], "load")
			n := 0
			for i, r := range res {
				if kind(i) == "approve" && n < 5 {
					t.Errorf("container %d approve request %d: %+v", c, i, r)
					n++
				}
			}
		}
		t.FailNow()
	}
	t.Logf("under load: VmRSS %d KiB, %v goroutines", peakRSS, ldMetric(t, cl, "go_goroutines"))
	// Approve the held requests of even index, deny the odd ones.
	want := map[string]bool{} // path -> approved
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(pending))
	sem := make(chan struct{}, 16)
	for _, a := range pending {
		var c, i int
		if _, err := fmt.Sscanf(a.Path, "/approve/c%d/r%d", &c, &i); err != nil {
			t.Fatalf("unexpected approval for %s", a.Path)
		}
		approve := i%2 == 0
		mu.Lock()
		want[a.Path] = approve
		mu.Unlock()
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var err error
			if approve {
				_, err = api.Approve(context.Background(), id, 0)
			} else {
				_, err = api.Deny(context.Background(), id, "load test says no")
			}
			if err != nil {
				errs <- fmt.Errorf("decide %s: %v", id, err)
			}
		}(a.ID)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every client got the right answer; none timed out.
	counts := map[string]int{}
	for c := range cts {
		res := ldWait(t, runs[c], fmt.Sprintf("load in container %d", c))
		if len(res) != per {
			t.Errorf("container %d: %d results, want %d", c, len(res), per)
		}
		for i := 0; i < per; i++ {
			r, ok := res[i]
			if !ok {
				continue
			}
			if r.Err != "" {
				t.Errorf("container %d request %d (%s) failed: %s", c, i, kind(i), r.Err)
				continue
			}
			k := kind(i)
			switch {
			case k == "allow" && r.Status == 200:
			case k == "deny" && r.Status == 403 && r.Error == "blocked_by_policy":
			case k == "approve" && i%2 == 0 && r.Status == 200:
			case k == "approve" && i%2 == 1 && r.Status == 403 && r.Error == "denied_by_approver":
			default:
				t.Errorf("container %d request %d (%s): got %d %q", c, i, k, r.Status, r.Error)
				continue
			}
			counts[k]++
		}
	}
	t.Logf("outcomes: %v", counts)
	if len(want) != held*nct {
		t.Errorf("decided %d distinct held requests, want %d", len(want), held*nct)
	}
	// The upstream saw exactly the allowed and approved requests, once each.
	seen := map[string]int{}
	for _, s := range up.Requests() {
		seen[s.Path]++
	}
	for c := 0; c < nct; c++ {
		for i := 0; i < per; i++ {
			var p string
			var wantN int
			switch kind(i) {
			case "allow":
				p, wantN = fmt.Sprintf("/allow/c%d/r%d", c, i), 1
			case "deny":
				p, wantN = fmt.Sprintf("/deny/c%d/r%d", c, i), 0
			default:
				p = fmt.Sprintf("/approve/c%d/r%d", c, i)
				if i%2 == 0 {
					wantN = 1
				}
			}
			if seen[p] != wantN {
				t.Errorf("upstream saw %s %d times, want %d", p, seen[p], wantN)
			}
		}
	}
	if t.Failed() {
		return
	}
	// Memory and goroutines come back. A GC runs on its own; the bound is
	// generous, the settle period bounded.
	const marginKiB = 64 << 10
	ldPoll(t, 90*time.Second, "goroutines and RSS back near baseline", func() bool {
		g := ldMetric(t, cl, "go_goroutines")
		r := ldRSS(t, cl)
		return g <= baseG+20 && r <= baseRSS+marginKiB
	})
	t.Logf("after: VmRSS %d KiB, %v goroutines", ldRSS(t, cl), ldMetric(t, cl, "go_goroutines"))
	// And the daemon still serves.
	res, err := ldRun(t, cts[0], time.Minute, "-n", "1", "-timeout", "30s", "-url", upURL("/allow/after"))
	if err != nil || res[0].Status != 200 {
		t.Fatalf("request after the load: %+v %v", res, err)
	}
}

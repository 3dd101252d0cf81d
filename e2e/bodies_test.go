package e2e

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// Budgets of TestBodies: 4 MiB uploads, at most 4 held per container and
// 10 in all.
const (
	bodUpload = 4 << 20
	// The heads of held requests count too (bodHeads covers ten of them).
	bodHeads  = 64 << 10
	bodPerCtr = 16<<20 + bodHeads
	bodGlobal = 40<<20 + bodHeads
)

const bodPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: no-rm
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/scan/**"]
      body_contains: "rm -rf"
      action: deny
    - name: hold-uploads
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/upload/**"]
      action: approve
    - name: allow-rest
      action: allow
`

// bodMetricSum sums every series of a metric family (all label values).
func bodMetricSum(t testing.TB, cl *Clawd, name string) float64 {
	t.Helper()
	sum := 0.0
	for _, l := range strings.Split(secScrapeMetrics(t, cl), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		series, val, ok := strings.Cut(l, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func bodSeen(up *harness.Upstream, path string) []harness.Seen {
	var out []harness.Seen
	for _, s := range up.Requests() {
		if p, _, _ := strings.Cut(s.Path, "?"); p == path {
			out = append(out, s)
		}
	}
	return out
}

func bodGunzip(t testing.TB, s string) string {
	t.Helper()
	z, err := gzip.NewReader(strings.NewReader(s))
	if err != nil {
		t.Fatalf("upstream body is not gzip: %v", err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("upstream body is not gzip: %v", err)
	}
	return string(b)
}

// TestBodies: from attached containers, gzipped bodies are decided,
// injected and checked for misuse as their decoded content; and a flood
// of held uploads from three containers is admitted by bytes, within the
// global and per-container budgets, whatever the rest of the flood sends.
func TestBodies(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	extra := fmt.Sprintf("max-buffered-bytes: %d\nmax-buffered-bytes-per-container: %d\n", bodGlobal, bodPerCtr)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: bodPolicy, Extra: extra})
	files := map[string]string{agentBin(t): "/agent", loadgenBin(t): "/loadgen"}
	var cts []*harness.Container
	for i := 0; i < 3; i++ {
		ct := ctd.Run(t, fmt.Sprintf("bodies%d", i), harness.RunOpts{Files: files})
		cl.MustCLI("attach", ct.Name)
		cts = append(cts, ct)
	}
	ct := cts[0]

	t.Run("gzip body_contains deny", func(t *testing.T) {
		up.Reset()
		a := agent(t, ct, "-X", "POST", "-gzip", "-H", "Content-Type: application/json",
			"-d", `{"tool":"bash","command":"rm -rf /var/lib"}`, upURL("/scan/tool"))
		polExpectDeny(t, a, 403, "blocked_by_policy", "no-rm")
		if n := len(bodSeen(up, "/scan/tool")); n != 0 {
			t.Fatalf("upstream saw %d denied requests", n)
		}
		// Control: a gzipped body without the words goes upstream as sent.
		const ok = `{"tool":"bash","command":"ls -l"}`
		if a := agent(t, ct, "-X", "POST", "-gzip", "-d", ok, upURL("/scan/tool")); a.Status != 200 {
			t.Fatalf("clean gzipped body: %+v", a)
		}
		seen := bodSeen(up, "/scan/tool")
		if len(seen) != 1 || strings.Join(seen[0].Headers["Content-Encoding"], ",") != "gzip" || bodGunzip(t, seen[0].Body) != ok {
			t.Fatalf("upstream saw %+v, want the agent's gzipped body", seen)
		}
	})

	t.Run("gzipped placeholder injected, seen decoded by the upstream", func(t *testing.T) {
		up.Reset()
		real := "b0dy-secret-" + secRand(t)
		out, err := secCLIStdin(cl, real, "secret", "set", "bodykey", "--host", harness.UpstreamDomain, "--body")
		if err != nil {
			t.Fatalf("secret set: %v %s", err, out)
		}
		ph := secPlaceholderRE.FindString(out)
		if ph == "" {
			t.Fatalf("no placeholder in %q", out)
		}
		url := fmt.Sprintf("http://%s:%d/inject", harness.UpstreamDomain, harness.UpstreamHTTPPort)
		var a AgentAnswer
		eventually(t, "the daemon to load the secret", func() bool {
			a = agent(t, ct, "-X", "POST", "-gzip", "-d", `{"api_key":"`+ph+`"}`, url)
			s := bodSeen(up, "/inject")
			return a.Status == 200 && len(s) > 0 && strings.Contains(s[len(s)-1].Body, real)
		})
		s := bodSeen(up, "/inject")
		last := s[len(s)-1]
		if last.Body != `{"api_key":"`+real+`"}` || len(last.Headers["Content-Encoding"]) != 0 {
			t.Errorf("upstream got body %q with Content-Encoding %v; want the decoded body with the value", secRedact(last.Body, real), last.Headers["Content-Encoding"])
		}
		if strings.Contains(a.Body, real) {
			t.Error("the agent saw the real value in the echoed answer")
		}
		// Misuse inside a gzipped body: the placeholder to a host the
		// secret is not bound to.
		a = agent(t, ct, "-X", "POST", "-gzip", "-d", `{"api_key":"`+ph+`"}`, upURL("/exfil"))
		if a.Status != 403 || !strings.Contains(a.Body, "placeholder_misuse") {
			t.Fatalf("gzipped misuse answered %+v", a)
		}
		if n := len(bodSeen(up, "/exfil")); n != 0 {
			t.Fatalf("upstream saw %d misused requests", n)
		}
		eventually(t, "the exfiltration audit line", func() bool {
			for _, e := range cl.AuditEntries() {
				if e.Event == "exfiltration" && e.Path == "/exfil" {
					return true
				}
			}
			return false
		})
		cl.MustCLI("secret", "rm", "bodykey")
	})

	t.Run("flood of held uploads stays within the budget", func(t *testing.T) {
		up.Reset()
		api := ldAPI(t, cl)
		time.Sleep(time.Second)
		baseRSS := ldRSS(t, cl)
		refused0 := int(bodMetricSum(t, cl, "clawd_buffered_body_refused_total"))
		const per = 16 // 3 × 16 × 4 MiB = 192 MiB offered
		runs := make([]<-chan ldOut, len(cts))
		for c, ct := range cts {
			runs[c] = ldAsync(t, ct, 4*time.Minute, "-n", strconv.Itoa(per), "-timeout", "200s", "-X", "POST",
				"-body-size", strconv.Itoa(bodUpload), "-url", upURL(fmt.Sprintf("/upload/c%d/r{i}", c)))
		}
		// Every upload ends up held or refused: wait for that state (how
		// long it takes does not matter), then count bytes.
		wantHeld := (bodGlobal - bodHeads) / bodUpload // the global bound binds: 3 × 4 per container would be 12
		total := len(cts) * per
		var held, refused int
		var peakRSS int64
		ok := ldTry(3*time.Minute, func() bool {
			peakRSS = max(peakRSS, ldRSS(t, cl))
			l, err := api.List(context.Background(), "")
			if err != nil {
				return false
			}
			held, refused = len(l), int(bodMetricSum(t, cl, "clawd_buffered_body_refused_total"))-refused0
			return held+refused == total
		})
		if !ok {
			t.Fatalf("%d held + %d refused, want %d in all", held, refused, total)
		}
		inUse := ldMetric(t, cl, "clawd_buffered_body_bytes")
		peakRSS = max(peakRSS, ldRSS(t, cl))
		t.Logf("held %d, refused %d, clawd_buffered_body_bytes %.0f; VmRSS %d KiB before, peak %d KiB", held, refused, inUse, baseRSS, peakRSS)
		if held != wantHeld || inUse < float64(held*bodUpload) || inUse > float64(held*bodUpload+bodHeads) || inUse > bodGlobal {
			t.Errorf("%d uploads held, %.0f bytes buffered; want exactly %d uploads (and their heads) within the %d-byte budget", held, inUse, wantHeld, bodGlobal)
		}
		perCt := map[string]int{}
		pending, _ := api.List(context.Background(), "")
		for _, a := range pending {
			perCt[a.Container.Name]++
		}
		for name, n := range perCt {
			if n*bodUpload > bodPerCtr {
				t.Errorf("container %s holds %d uploads, past its budget", name, n)
			}
		}
		// Memory follows the bytes admitted, not the 192 MiB offered:
		// allow the Go heap's own slack (GOGC) on top of the budget.
		if grew := (peakRSS - baseRSS) << 10; grew > 2*bodGlobal+24<<20 {
			t.Errorf("VmRSS grew by %d MiB under a %d MiB budget", grew>>20, bodGlobal>>20)
		}
		for _, a := range pending {
			if _, err := api.Approve(context.Background(), a.ID, 0); err != nil {
				t.Errorf("approve %s: %v", a.ID, err)
			}
		}
		got := map[int]int{}
		for c := range runs {
			for _, r := range ldWait(t, runs[c], "flood") {
				got[r.Status]++
				if r.Status == 503 && r.Error != "buffer_budget_exhausted" {
					t.Errorf("503 with error %q", r.Error)
				}
			}
		}
		if got[200] != wantHeld || got[503] != total-wantHeld {
			t.Errorf("answers by status %v; want %d × 200 and %d × 503", got, wantHeld, total-wantHeld)
		}
		n := 0
		for _, s := range up.Requests() {
			if strings.HasPrefix(s.Path, "/upload/") {
				n++
			}
		}
		if n != wantHeld {
			t.Errorf("upstream saw %d uploads, want the %d approved", n, wantHeld)
		}
		eventually(t, "the budget back to 0", func() bool { return ldMetric(t, cl, "clawd_buffered_body_bytes") == 0 })
		// Not a leak of admission either: one more upload is held again.
		ch := ldAsync(t, cts[1], time.Minute, "-n", "1", "-timeout", "50s", "-X", "POST",
			"-body-size", strconv.Itoa(bodUpload), "-url", upURL("/upload/again"))
		eventually(t, "the next upload held", func() bool {
			l, _ := api.List(context.Background(), "")
			return len(l) == 1
		})
		l, _ := api.List(context.Background(), "")
		api.Deny(context.Background(), l[0].ID, "enough")
		if res := ldWait(t, ch, "again"); res[0].Status != 403 {
			t.Errorf("denied upload answered %+v", res[0])
		}
		eventually(t, "the budget back to 0", func() bool { return ldMetric(t, cl, "clawd_buffered_body_bytes") == 0 })
	})
}

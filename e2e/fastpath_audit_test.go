package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/bpf"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// cpuTicks is the user and system CPU time of process pid so far, in
// clock ticks (/proc/PID/stat fields 14 and 15).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// TestFastPathAuditsEveryConnectAndClose (issue 18, audit): each of many
// fast-path connections made one after another gets its connect line (a
// "decision") and its close line ("closed", with its bytes) in the audit
// log. It also logs clawd's CPU time per connection, the cost the fast
// path's user-space side adds to each connection.
func TestFastPathAuditsEveryConnectAndClose(t *testing.T) {
	const n = 10000
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	startFastServer(t, up)
	// CLAWD_E2E_FP_PROFILE=FILE: a CPU profile of clawd during the run.
	prof := os.Getenv("CLAWD_E2E_FP_PROFILE")
	extra := ""
	if prof != "" {
		extra = "pprof: true\n"
	}
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, fastPort), Extra: extra})
	ct := ctd.Run(t, "fpchurn", harness.RunOpts{Files: map[string]string{toolBin(t, "fpattack"): "/fpattack"}})
	cl.MustCLI("attach", ct.Name)
	dst := fmt.Sprintf("%s:%d", up.IPv4, fastPort)
	// count pairs each close line with a connect line before it, by
	// source address (a port may be used again by a later connection).
	count := func() (connects, closes, unpaired int) {
		open := map[string]int{}
		for _, e := range cl.AuditEntries() {
			if e.Path != "kernel" || e.Dst != dst {
				continue
			}
			switch {
			case e.Event == audit.EventDecision && e.Src != "":
				connects++
				open[e.Src]++
			case e.Event == audit.EventClosed && e.BytesOut == 6 && e.BytesIn == 5:
				closes++
				if open[e.Src] == 0 {
					unpaired++
				}
				open[e.Src]--
			}
		}
		return
	}
	pid := cl.cmd.Process.Pid
	c0 := cpuTicks(t, pid)
	profDone := make(chan struct{})
	if prof != "" {
		go func() {
			defer close(profDone)
			resp, err := http.Get("http://" + cl.Metrics + "/debug/pprof/profile?seconds=6")
			if err != nil {
				t.Logf("profile: %v", err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			os.WriteFile(prof, b, 0o600)
		}()
	} else {
		close(profDone)
	}
	out, code := sh(t, ct, fmt.Sprintf("/fpattack %s %d 0 churn %d", up.IPv4, fastPort, n))
	t.Logf("fpattack (%d): %s", code, out)
	var answered int
	if _, err := fmt.Sscanf(out[strings.Index(out, "churn n="):], "churn n=%d answered=%d", new(int), &answered); err != nil || answered < n*9/10 {
		t.Fatalf("fpattack: %q (%v): want most of %d connections answered", out, err, n)
	}
	var connects, closes, unpaired int
	eventually(t, "a connect line and a close line with bytes for every connection", func() bool {
		connects, closes, unpaired = count()
		return closes >= answered && connects >= answered
	})
	c1 := cpuTicks(t, pid)
	<-profDone
	t.Logf("clawd CPU: %d ticks for %d connections: %.1f µs per connection (%d connect lines, %d close lines)",
		c1-c0, n, float64(c1-c0)*1e6/100/n, connects, closes)
	if unpaired > 0 {
		t.Fatalf("%d close lines without a connect line before them", unpaired)
	}
}

// TestFastPathEvictedFlowKeepsItsConnectLine (issue 18, audit): a
// fast-path connection whose record leaves the kernel's flow map while it
// is open (what LRU eviction by other connects does; here the test removes
// it) still has its connect line, and its end, which the kernel can no
// longer report, is recorded as a "close_lost" line.
func TestFastPathEvictedFlowKeepsItsConnectLine(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	srv := startFastServer(t, up)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, fastPort)})
	ct := ctd.Run(t, "fpevicted", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	sh(t, ct, fmt.Sprintf("((echo hello; sleep 30) | { timeout 30 nc %s %d > /tmp/held 2>&1; echo rc=$? >> /tmp/held; }) </dev/null >/dev/null 2>&1 &", up.IPv4, fastPort))
	eventually(t, "the held connection to be answered", func() bool {
		o, _ := sh(t, ct, "cat /tmp/held")
		return strings.Contains(o, "world")
	})
	remote, _ := srv.seen()
	src := remote[len(remote)-1]
	if !strings.HasPrefix(src, ct.IPv4.String()+":") {
		t.Fatalf("the server saw %s, not the container: no fast path", src)
	}
	var conn audit.Entry
	eventually(t, "the held connection's connect line", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision && e.Src == src {
				conn = e
				return true
			}
		}
		return false
	})
	if conn.Rule != "direct" || conn.Action != audit.ActionAllow || conn.Container != ct.Name || conn.PID == 0 {
		t.Fatalf("connect line %+v: want allow by rule direct for %s with its pid", conn, ct.Name)
	}

	// The record goes, as the LRU would evict it.
	fl, err := ebpf.LoadPinnedMap(cl.PinRoot+"/maps/clawd_fl_v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	var (
		k, cookie uint64
		v         bpf.ClawdFlow
	)
	for it := fl.Iterate(); it.Next(&k, &v); {
		if v.Established != 0 && v.Closed == 0 && fmt.Sprintf("%s:%d", ct.IPv4, v.Sport) == src {
			cookie = k
		}
	}
	if cookie == 0 {
		t.Fatalf("no flow record for %s", src)
	}
	if err := fl.Delete(cookie); err != nil {
		t.Fatal(err)
	}
	// The daemon notices within two checks (the sweep interval, 1s here).
	var lost audit.Entry
	eventually(t, `a "close_lost" line for the evicted connection`, func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventCloseLost && e.Src == src {
				lost = e
				return true
			}
		}
		return false
	})
	if lost.Rule != "direct" || lost.Container != ct.Name || lost.Dst != conn.Dst || !strings.Contains(lost.Reason, "evicted") {
		t.Fatalf("close_lost line %+v: want the connection's rule, container and destination, and why", lost)
	}
	n := 0
	for _, e := range cl.AuditEntries() {
		if e.Path == "kernel" && e.Src == src {
			n++
			if e.Event == audit.EventClosed {
				t.Fatalf("a close line for a connection whose record was gone: %+v", e)
			}
		}
	}
	if n != 2 {
		t.Fatalf("%d kernel lines for %s, want its connect and close_lost lines", n, src)
	}
}

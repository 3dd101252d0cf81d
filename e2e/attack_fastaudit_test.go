package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/bpf"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// auditPolicy is fastPolicy for another port (port 9100 may be held by a
// benchmark in another upstream namespace's tests).
const auditPort = 9173

// tfoServer listens on 198.51.100.10:port in the upstream namespace with
// TCP Fast Open (no cookie needed) and a large backlog; it records each
// accepted connection's source and the first bytes it read.
type tfoServer struct {
	mu   sync.Mutex
	data map[string]string // remote -> first read
	n    int
}

func nsRun(t *testing.T, netns string, args ...string) {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + netns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

func startTFOServer(t *testing.T, up *harness.Upstream, port int) *tfoServer {
	t.Helper()
	nsRun(t, up.Netns, "sysctl", "-qw", "net.ipv4.tcp_fastopen=3", "net.core.somaxconn=65535", "net.ipv4.tcp_max_syn_backlog=65535")
	ln, err := harness.ListenIn(up.Netns, "tcp", net.JoinHostPort(up.IPv4.String(), fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 4096)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, tcpFastopenNoCookie, 1)
		unix.Listen(int(fd), 65535)
	})
	s := &tfoServer{data: map[string]string{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				k, _ := c.Read(buf)
				s.mu.Lock()
				s.n++
				s.data[c.RemoteAddr().String()] = string(buf[:k])
				s.mu.Unlock()
				if k > 0 {
					c.Write([]byte("world"))
				}
				buf2 := make([]byte, 4096)
				for {
					if _, err := c.Read(buf2); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *tfoServer) snapshot() (map[string]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]string, len(s.data))
	for k, v := range s.data {
		m[k] = v
	}
	return m, s.n
}

const tcpFastopenNoCookie = 34

// fastCounters sums the pinned fast-path counters (readable while the
// daemon is stopped).
func fastCounters(t *testing.T, cl *Clawd) (fast, lost uint64) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(cl.PinRoot+"/maps/clawd_fc_v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var k uint64
	var v bpf.ClawdFpCounters
	for it := m.Iterate(); it.Next(&k, &v); {
		fast += v.Fast
		lost += v.EvLost
	}
	return
}

// flowsBySport lists the container's flow records by source port.
func flowsBySport(t *testing.T, cl *Clawd) map[uint16]bpf.ClawdFlow {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(cl.PinRoot+"/maps/clawd_fl_v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := map[uint16]bpf.ClawdFlow{}
	var k uint64
	var v bpf.ClawdFlow
	for it := m.Iterate(); it.Next(&k, &v); {
		out[v.Sport] = v
	}
	return out
}

func verifyAudit(t *testing.T, cl *Clawd) {
	t.Helper()
	cl.Stop() // it signs a checkpoint as it stops
	key := ""
	if ks, _ := filepath.Glob(filepath.Join(cl.Dir, "*", "audit-key.pub")); len(ks) > 0 {
		key = ks[0]
	} else if ks, _ := filepath.Glob(filepath.Join(cl.Dir, "audit-key.pub")); len(ks) > 0 {
		key = ks[0]
	}
	out, err := exec.Command(cl.Bin, "audit", "verify", "--key", key, cl.Audit).CombinedOutput()
	t.Logf("clawd audit verify: %v: %s", err, strings.TrimSpace(string(out)))
	if err != nil {
		t.Errorf("audit chain does not verify: %v: %s", err, out)
	}
}

// Attack (issue 18, audit): "no connection passes the kernel unaudited".
// The connect hook checks the ring buffer when the connect is made; the
// open event is written when the SYN-ACK comes back. A TCP Fast Open SYN
// carries data that the server's application accepts and reads before any
// SYN-ACK. If the ring buffer fills between the two (the daemon behind:
// here stopped with SIGSTOP; the other connects' opens fill it while the
// remote's SYN-ACKs are late), the open event finds no room, sockops drops
// the record, and nothing at all reaches the audit log about a connection
// whose data the upstream has.
func TestAttackFastAuditTFODataBeforeLostOpen(t *testing.T) { tfoLostOpen(t, true) }

// The same with the daemon crashed (SIGKILL: the fast table stays
// installed) and restarted once every connect has been decided.
func TestAttackFastAuditTFODataBeforeLostOpenCrash(t *testing.T) { tfoLostOpenMode(t, true, true) }

// The same with the daemon running (the agent alone; the remote, which the
// agent's accomplice may run, is late with its SYN-ACKs): the Fast Open
// flows' SYN-ACKs are let through right after the others'.
func TestAttackFastAuditTFODataBeforeLostOpenNoStop(t *testing.T) { tfoLostOpen(t, false) }

func tfoLostOpen(t *testing.T, stop bool) { tfoLostOpenMode(t, stop, false) }

func tfoLostOpenMode(t *testing.T, stop, crash bool) {
	// Its own port and source ports for each variant: the upstream's
	// sockets of an earlier run may still hold the same 4-tuples.
	port, tfoBase := auditPort, 20000
	if !stop {
		port, tfoBase = auditPort+13, 20040
	}
	if crash {
		port, tfoBase = auditPort+15, 20080
	}
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	srv := startTFOServer(t, up, port)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, port)})
	ct := ctd.Run(t, "fptfo", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	pid := cl.cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })

	// The remote's SYN-ACKs are late (dropped once: the kernel resends).
	rule := []string{"OUTPUT", "-p", "tcp", "--sport", fmt.Sprint(port), "--tcp-flags", "SYN,ACK", "SYN,ACK", "-j", "DROP"}
	nsRun(t, up.Netns, append([]string{"iptables", "-A"}, rule...)...)
	dropped := true
	t.Cleanup(func() {
		if dropped {
			exec.Command("nsenter", append([]string{"--net=" + up.Netns, "iptables", "-D"}, rule...)...).Run()
		}
	})
	if crash {
		cl.Kill()
	} else if stop {
		syscall.Kill(pid, syscall.SIGSTOP) // the daemon falls behind
	}
	// The container's file limit is 1024: shards of 980 sockets. The
	// Fast Open ones first: each connect puts a connect event in the ring
	// buffer, so connects made once it is half full take the proxy path;
	// the Fast Open flows' opens come last (their SYN-ACKs are late), when
	// the other flows' opens have filled it.
	const shards, per, tfo = 10, 980, 20
	sh(t, ct, fmt.Sprintf(`(TFO_SPORT=%d /fpaudit burst %s %d 0 %d SECRET >/tmp/burst 2>&1 </dev/null &
		until grep -q issued /tmp/burst; do sleep 0.05; done
		for i in $(seq 1 %d); do /fpaudit burst %s %d %d 0 x >/tmp/p$i 2>&1 </dev/null & done) >/dev/null 2>&1 </dev/null &`,
		tfoBase, up.IPv4, port, tfo, shards, up.IPv4, port, per))
	var out string
	eventually(t, "the burst issued", func() bool {
		o, _ := sh(t, ct, "cat /tmp/p*")
		out, _ = sh(t, ct, "cat /tmp/burst")
		return strings.Contains(out, "issued") && strings.Count(o, "issued") == shards
	})
	if o, _ := sh(t, ct, "grep -h plain /tmp/p*"); strings.Count(o, fmt.Sprintf("plain %d", per)) != shards {
		t.Fatalf("shards: %s", o)
	}
	// The connects that took the fast path (the rest went to the proxy).
	nFast, _ := fastCounters(t, cl)
	n := int(nFast) - tfo
	t.Logf("burst: %.1500s ... %s", out, tail(out, 600))
	sports := map[string]bool{}
	for _, m := range regexp.MustCompile(`tfo \d+ sport=(\d+)`).FindAllStringSubmatch(out, -1) {
		sports[m[1]] = true
	}
	eventually(t, "the server to read the Fast Open data", func() bool {
		d, _ := srv.snapshot()
		k := 0
		for _, v := range d {
			if strings.HasPrefix(v, "SECRET") {
				k++
			}
		}
		return k > 0
	})
	// The Fast Open flows' SYN-ACKs stay late; the others' arrive: their
	// opens fill the ring buffer.
	late := []string{"OUTPUT", "-p", "tcp", "--sport", fmt.Sprint(port), "--dport", fmt.Sprintf("%d:%d", tfoBase, tfoBase+tfo-1), "--tcp-flags", "SYN,ACK", "SYN,ACK", "-j", "DROP"}
	nsRun(t, up.Netns, append([]string{"iptables", "-I"}, late...)...)
	lateOn := true
	t.Cleanup(func() {
		if lateOn {
			exec.Command("nsenter", append([]string{"--net=" + up.Netns, "iptables", "-D"}, late...)...).Run()
		}
	})
	nsRun(t, up.Netns, append([]string{"iptables", "-D"}, rule...)...)
	dropped = false
	if !stop {
		nsRun(t, up.Netns, append([]string{"iptables", "-D"}, late...)...)
		lateOn = false
	}
	// A record whose open event was lost stays (marked, its packets
	// dropped) and counts as established.
	eventually(t, "every plain fast connect established or its open event lost", func() bool {
		est := 0
		for _, f := range flowsBySport(t, cl) {
			if f.Established != 0 {
				est++
			}
		}
		return est >= n
	})
	_, lost0 := fastCounters(t, cl)
	t.Logf("plain connects done: ev_lost=%d (>0: the ring buffer is full)", lost0)
	if stop {
		nsRun(t, up.Netns, append([]string{"iptables", "-D"}, late...)...)
		lateOn = false
	}
	// Every connect either opened (an established record) or lost its open.
	eventually(t, "every fast connect established or its open event lost", func() bool {
		est := 0
		for _, f := range flowsBySport(t, cl) {
			if f.Established != 0 {
				est++
			}
		}
		return est >= n+tfo
	})
	fast, lost := fastCounters(t, cl)
	t.Logf("fast=%d ev_lost=%d", fast, lost)
	recs := flowsBySport(t, cl)
	if crash {
		cl.Start()
	} else {
		syscall.Kill(pid, syscall.SIGCONT)
	}

	data, accepted := srv.snapshot()
	// The opens that fit are read: a decision line each.
	eventually(t, "the daemon to catch up", func() bool {
		k := 0
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision {
				k++
			}
		}
		return k >= len(recs)-int(lost)-50 // a loose floor: it caught up
	})
	// Two sweeps (1s each) more: any close_lost line would be written.
	sh(t, ct, "sleep 3")
	ents := cl.AuditEntries()
	bySrc := map[string][]audit.Entry{}
	decisions := 0
	for _, e := range ents {
		if e.Path == "kernel" {
			bySrc[e.Src] = append(bySrc[e.Src], e)
			if e.Event == audit.EventDecision {
				decisions++
			}
		}
	}
	t.Logf("server accepted %d connections; audit: %d kernel decision lines", accepted, decisions)
	silent := 0
	for remote, d := range data {
		if !strings.HasPrefix(d, "SECRET") {
			continue
		}
		_, p, _ := net.SplitHostPort(remote)
		_, hasRec := recs[uint16(atoi(p))]
		if len(bySrc[remote]) == 0 {
			silent++
			t.Errorf("UNAUDITED: the upstream read %q from %s (flow record kept: %v); the audit log has no line for it", strings.TrimSpace(d), remote, hasRec)
		}
	}
	t.Logf("%d Fast Open connections delivered data with no audit line", silent)
	verifyAudit(t, cl)
	sh(t, ct, "touch /tmp/done")
}

func atoi(s string) int { i, _ := strconv.Atoi(s); return i }

var _ = os.Getpid

// Attack (issue 18, audit): "a flow whose close event was lost gets a
// close_lost line after two sweeps". The daemon only checks the flows it
// holds open; at start it adopts the established records that are not
// marked closed. Flows that close while the daemon is down, with the ring
// buffer full (nobody reads it), leave records marked closed with no close
// event: the new daemon never adopts them, so their connect lines (written
// by the previous daemon) are never followed by a closed or close_lost
// line.
func TestAttackFastAuditCloseLostWhileDaemonDown(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	startTFOServer(t, up, auditPort+1)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, auditPort+1)})
	ct := ctd.Run(t, "fpdown", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	const shards, per = 10, 980
	sh(t, ct, fmt.Sprintf(`for i in $(seq 1 %d); do /fpaudit hold %s %d %d >/tmp/h$i 2>&1 </dev/null & done`, shards, up.IPv4, auditPort+1, per))
	eventually(t, "the held connections", func() bool {
		o, _ := sh(t, ct, "cat /tmp/h*")
		return strings.Count(o, "held ") == shards
	})
	o, _ := sh(t, ct, "cat /tmp/h*")
	held := 0
	for _, m := range regexp.MustCompile(`held (\d+)`).FindAllStringSubmatch(o, -1) {
		held += atoi(m[1])
	}
	open := map[string]bool{}
	eventually(t, "a connect line for each held connection", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision && e.Src != "" {
				open[e.Src] = true
			}
		}
		return len(open) >= held
	})
	cl.Stop()
	_, lost0 := fastCounters(t, cl)
	sh(t, ct, "touch /tmp/close")
	eventually(t, "the held connections closed", func() bool {
		o, _ := sh(t, ct, "cat /tmp/h*")
		return strings.Count(o, "closed") == shards
	})
	_, lost := fastCounters(t, cl)
	t.Logf("held %d; close events lost while the daemon was down: %d", held, lost-lost0)
	cl.Start()
	ended := func() (map[string]string, int) {
		m := map[string]string{}
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && (e.Event == audit.EventClosed || e.Event == audit.EventCloseLost) && open[e.Src] {
				m[e.Src] = string(e.Event)
			}
		}
		k := 0
		for _, v := range m {
			if v == string(audit.EventCloseLost) {
				k++
			}
		}
		return m, k
	}
	eventually(t, "the queued close events read", func() bool {
		m, _ := ended()
		return len(m)+int(lost-lost0) >= len(open)
	})
	sh(t, ct, "sleep 4") // four sweeps (1s): any close_lost line is written by now
	m, nLost := ended()
	missing := 0
	for src := range open {
		if m[src] == "" {
			missing++
			if missing <= 5 {
				t.Errorf("NO END LINE: connection %s has its connect line but neither a closed nor a close_lost line", src)
			}
		}
	}
	t.Logf("%d held connections: %d end lines (%d close_lost), %d with no end line", len(open), len(m), nLost, missing)
	if missing > 0 {
		t.Errorf("%d connections left without an end line", missing)
	}
	verifyAudit(t, cl)
	sh(t, ct, "touch /tmp/done")
}

// Attack (issue 18, audit), the agent alone: 9,800 fast connections held
// open, then all reset at once by ten processes while the daemon runs. Does
// the reader keep up, or does the ring buffer overflow (close events lost,
// ev_lost)? Either way each connection must end in the audit log with a
// closed line or, for a lost close, a close_lost line.
func TestAttackFastAuditResetFloodWhileRunning(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	startTFOServer(t, up, auditPort+2)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, auditPort+2)})
	ct := ctd.Run(t, "fpflood", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	const shards, per = 10, 980
	sh(t, ct, fmt.Sprintf(`for i in $(seq 1 %d); do /fpaudit hold %s %d %d >/tmp/h$i 2>&1 </dev/null & done`, shards, up.IPv4, auditPort+2, per))
	eventually(t, "the held connections", func() bool {
		o, _ := sh(t, ct, "cat /tmp/h*")
		return strings.Count(o, "held ") == shards
	})
	open := map[string]bool{}
	eventually(t, "a connect line for each held connection", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision && e.Src != "" {
				open[e.Src] = true
			}
		}
		return len(open) >= shards*per
	})
	_, lost0 := fastCounters(t, cl)
	sh(t, ct, "touch /tmp/close")
	eventually(t, "the held connections closed", func() bool {
		o, _ := sh(t, ct, "cat /tmp/h*")
		return strings.Count(o, "closed") == shards
	})
	_, lost := fastCounters(t, cl)
	t.Logf("close events lost with the daemon running: %d", lost-lost0)
	var m map[string]string
	var nLost int
	ended := func() bool {
		m, nLost = map[string]string{}, 0
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && (e.Event == audit.EventClosed || e.Event == audit.EventCloseLost) && open[e.Src] {
				m[e.Src] = string(e.Event)
				if e.Event == audit.EventCloseLost {
					nLost++
				}
			}
		}
		return len(m) >= len(open)
	}
	eventually(t, "an end line for each connection", ended)
	t.Logf("%d connections: %d end lines, %d close_lost", len(open), len(m), nLost)
	verifyAudit(t, cl)
	sh(t, ct, "touch /tmp/done")
}

// Attack (issue 18, audit): the daemon stops (SIGTERM) while a burst of
// fast connections closes. The reader drains the ring buffer into
// batches; shutdown closes the audit log right after cancelling the
// reader. A batch read from the ring (events consumed) but logged after
// the close is gone: the next daemon neither finds those events in the ring
// nor adopts the closed records. Every held connection must end with a
// closed or close_lost line after the restart.
func TestAttackFastAuditStopDuringCloseBurst(t *testing.T) { stopDuringBurst(t, false) }

// The same with SIGKILL (a crash): events the reader took from the ring
// but had not written are gone.
func TestAttackFastAuditKillDuringCloseBurst(t *testing.T) { stopDuringBurst(t, true) }

func stopDuringBurst(t *testing.T, kill bool) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	startTFOServer(t, up, auditPort+3)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, auditPort+3)})
	ct := ctd.Run(t, "fpstop", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	// 3,200 held flows: below what the event ring holds unread before
	// new connects take the proxy (about 4,680 with three events each),
	// so every one of them is a kernel flow even on a loaded machine.
	const shards, per = 8, 400
	sh(t, ct, fmt.Sprintf(`for i in $(seq 1 %d); do CLOSE_GAP_US=500 /fpaudit hold %s %d %d >/tmp/h$i 2>&1 </dev/null & done`, shards, up.IPv4, auditPort+3, per))
	eventually(t, "the held connections", func() bool {
		o, _ := sh(t, ct, "cat /tmp/h*")
		return strings.Count(o, "held ") == shards
	})
	open := map[string]bool{}
	eventually(t, "a connect line for each held connection", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision && e.Src != "" {
				open[e.Src] = true
			}
		}
		return len(open) >= shards*per
	})
	_, lost0 := fastCounters(t, cl)
	sh(t, ct, "touch /tmp/close")
	// Stop once the first daemon is writing close lines.
	eventually(t, "close lines being written", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventClosed {
				return true
			}
		}
		return false
	})
	if kill {
		cl.Kill()
	} else {
		cl.Stop()
	}
	eventually(t, "the held connections closed", func() bool {
		o, _ := sh(t, ct, "cat /tmp/h*")
		return strings.Count(o, "closed") == shards
	})
	_, lost := fastCounters(t, cl)
	t.Logf("close events lost: %d", lost-lost0)
	pre := 0
	for _, e := range cl.AuditEntries() {
		if e.Path == "kernel" && e.Event == audit.EventClosed && open[e.Src] {
			pre++
		}
	}
	cl.Start()
	var m map[string]bool
	ended := func() bool {
		m = map[string]bool{}
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && (e.Event == audit.EventClosed || e.Event == audit.EventCloseLost) && open[e.Src] {
				m[e.Src] = true
			}
		}
		return len(m) >= len(open)
	}
	defer func() { sh(t, ct, "touch /tmp/done"); verifyAudit(t, cl) }()
	for i := 0; i < 40 && !ended(); i++ {
		sh(t, ct, "sleep 0.25")
	}
	t.Logf("%d connections: %d end lines written by the first daemon, %d in all after the restart", len(open), pre, len(m))
	if len(m) < len(open) {
		t.Errorf("%d connections have a connect line and no closed or close_lost line", len(open)-len(m))
	}
}

// Attack (issue 18, audit): a Fast Open SYN carries data the upstream
// reads; the SYN-ACK is late and the agent closes the socket before it
// comes. The connection "never got established" for the client's kernel,
// so its single line says so, with no bytes: the log denies that data left.
func TestAttackFastAuditTFONeverEstablishedCarriedData(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	port := auditPort + 4
	srv := startTFOServer(t, up, port)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, port)})
	ct := ctd.Run(t, "fptfo1", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	rule := []string{"OUTPUT", "-p", "tcp", "--sport", fmt.Sprint(port), "--tcp-flags", "SYN,ACK", "SYN,ACK", "-j", "DROP"}
	nsRun(t, up.Netns, append([]string{"iptables", "-A"}, rule...)...)
	t.Cleanup(func() {
		exec.Command("nsenter", append([]string{"--net=" + up.Netns, "iptables", "-D"}, rule...)...).Run()
	})
	sh(t, ct, fmt.Sprintf("TFO_SPORT=20100 /fpaudit burst %s %d 0 1 SECRET >/tmp/burst 2>&1 </dev/null &", up.IPv4, port))
	var remote, got string
	eventually(t, "the server to read the Fast Open data", func() bool {
		d, _ := srv.snapshot()
		for r, v := range d {
			remote, got = r, v
		}
		return strings.HasPrefix(got, "SECRET")
	})
	sh(t, ct, "touch /tmp/done") // the socket closes in SYN_SENT
	var lines []audit.Entry
	eventually(t, "the connection's line", func() bool {
		lines = lines[:0]
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && strings.HasSuffix(e.Dst, fmt.Sprint(port)) {
				lines = append(lines, e)
			}
		}
		return len(lines) > 0
	})
	for _, e := range lines {
		t.Logf("line: event=%s src=%q bytes_out=%d reason=%q", e.Event, e.Src, e.BytesOut, e.Reason)
		if e.BytesOut < int64(len(got)) {
			t.Errorf("MISLEADING: the upstream (%s) read %d bytes (%q), the audit line says %d bytes out (%s)", remote, len(got), strings.TrimSpace(got), e.BytesOut, e.Reason)
		}
		if e.Src == "" {
			t.Errorf("the line has no src: it cannot be matched to the upstream's %s", remote)
		}
	}
}

// Attack (issue 18, audit): IPv6 and IPv4-mapped destinations. The
// decision line's src must be what the upstream sees, and the closed line
// must pair with it and carry the bytes; a connect to an allowed port with
// nobody listening (reset) gets exactly one line.
func TestAttackFastAuditIPv6AndMapped(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	port := auditPort + 5
	srv4 := startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv4.String(), fmt.Sprint(port)))
	srv6 := startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv6.String(), fmt.Sprint(port)))
	pol := fmt.Sprintf(`version: 1
default:
  default_action: deny
  rules:
    - name: direct
      cidrs: [198.51.100.10, "2001:db8::10"]
      ports: [%d, %d]
      action: allow
`, port, port+1)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: pol})
	ct := ctd.Run(t, "fpv6", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	for _, c := range []struct {
		name, addr string
		srv        *fastServer
	}{{"mapped", "::ffff:" + up.IPv4.String(), srv4}, {"ipv6", up.IPv6.String(), srv6}} {
		out, _ := sh(t, ct, fmt.Sprintf("/fpaudit dial6 %s %d 0", c.addr, port))
		t.Logf("%s: %s", c.name, strings.TrimSpace(out))
		if !strings.Contains(out, `read="world"`) {
			t.Errorf("%s: no answer: %s", c.name, out)
			continue
		}
		remote, _ := c.srv.seen()
		if len(remote) == 0 {
			t.Errorf("%s: the server saw nothing", c.name)
			continue
		}
		src := remote[len(remote)-1]
		var dec, closed int
		eventually(t, c.name+": the connection's closed line", func() bool {
			dec, closed = 0, 0
			for _, e := range cl.AuditEntries() {
				if e.Path != "kernel" || e.Src != src {
					continue
				}
				switch e.Event {
				case audit.EventDecision:
					dec++
				case audit.EventClosed:
					if e.BytesOut == 6 && e.BytesIn == 5 {
						closed++
					}
				}
			}
			return closed > 0
		})
		if dec != 1 || closed != 1 {
			t.Errorf("%s: %d decision and %d closed lines with src %s, want one each", c.name, dec, closed, src)
		}
	}
	// Nobody listens on port+1: the connect is reset.
	for _, addr := range []string{"::ffff:" + up.IPv4.String(), up.IPv6.String()} {
		out, _ := sh(t, ct, fmt.Sprintf("/fpaudit dial6 %s %d 0", addr, port+1))
		t.Logf("closed port %s: %s", addr, strings.TrimSpace(out))
	}
	dst4 := fmt.Sprintf("%s:%d", up.IPv4, port+1)
	dst6 := fmt.Sprintf("[%s]:%d", up.IPv6, port+1)
	var n4, n6 int
	eventually(t, "a line for each refused connect", func() bool {
		n4, n6 = 0, 0
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Dst == dst4 {
				n4++
			}
			if e.Path == "kernel" && e.Dst == dst6 {
				n6++
			}
		}
		return n4 > 0 && n6 > 0
	})
	sh(t, ct, "sleep 2.5") // two sweeps: no more lines for them
	n4, n6 = 0, 0
	for _, e := range cl.AuditEntries() {
		if e.Path == "kernel" && (e.Dst == dst4 || e.Dst == dst6) {
			t.Logf("refused connect line: %s %s src=%q reason=%q", e.Event, e.Dst, e.Src, e.Reason)
			if e.Dst == dst4 {
				n4++
			} else {
				n6++
			}
		}
	}
	if n4 != 1 || n6 != 1 {
		t.Errorf("refused connects: %d and %d lines, want one each", n4, n6)
	}
	verifyAudit(t, cl)
}

// Attack (issue 18, revocation): held fast flows over IPv4, an AF_INET6
// socket to a v4-mapped address and IPv6, then a reload that no longer
// allows the destination. Each flow must get a revoked line and be cut
// (SOCK_DESTROY is sent with the family of the addresses, AF_INET for the
// mapped one, whose socket is AF_INET6): the upstream must see no byte of
// what the agent writes after the reload.
func TestAttackFastAuditRevokeMappedAndIPv6(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	port := auditPort + 7
	type rec struct {
		mu  sync.Mutex
		got map[string]string
	}
	r := &rec{got: map[string]string{}}
	for _, a := range []string{up.IPv4.String(), up.IPv6.String()} {
		ln, err := harness.ListenIn(up.Netns, "tcp", net.JoinHostPort(a, fmt.Sprint(port)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					buf := make([]byte, 6)
					if _, err := c.Read(buf); err != nil {
						return
					}
					c.Write([]byte("world"))
					all := make([]byte, 4096)
					for {
						k, err := c.Read(all)
						r.mu.Lock()
						r.got[c.RemoteAddr().String()] += string(all[:k])
						r.mu.Unlock()
						if err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	pol := `version: 1
default:
  default_action: deny
  rules:
    - name: direct
      cidrs: [198.51.100.10, "2001:db8::10"]
      ports: [%d]
      action: allow
`
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(pol, port)})
	ct := ctd.Run(t, "fprevoke", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	addrs := map[string]string{"v4": "::ffff:" + up.IPv4.String(), "mapped": "::ffff:" + up.IPv4.String(), "ipv6": up.IPv6.String()}
	// The plain IPv4 one through an AF_INET socket (busybox nc).
	sh(t, ct, fmt.Sprintf("((echo hello; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo more data after the reload; sleep 3) | timeout 30 nc %s %d > /tmp/v4 2>&1; echo rc=$? >> /tmp/v4) </dev/null >/dev/null 2>&1 &", up.IPv4, port))
	for _, k := range []string{"mapped", "ipv6"} {
		sh(t, ct, fmt.Sprintf("/fpaudit hold6 %s %d 0 > /tmp/%s 2>&1 </dev/null &", addrs[k], port, k))
	}
	eventually(t, "three held connections answered", func() bool {
		o, _ := sh(t, ct, "cat /tmp/v4 /tmp/mapped /tmp/ipv6")
		return strings.Count(o, "world") == 3
	})
	eventually(t, "three connect lines", func() bool {
		n := 0
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision {
				n++
			}
		}
		return n >= 3
	})
	for sp, f := range flowsBySport(t, cl) {
		t.Logf("record before the reload: sport=%d established=%d closed=%d fin_in=%d", sp, f.Established, f.Closed, f.FinIn)
	}
	cl.WritePolicy(fmt.Sprintf(pol, port+1))
	eventually(t, "three revoked lines", func() bool {
		n := 0
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventRevoked {
				n++
			}
		}
		return n >= 3
	})
	sh(t, ct, "touch /tmp/go")
	eventually(t, "the held programs done", func() bool {
		o, _ := sh(t, ct, "cat /tmp/v4 /tmp/mapped /tmp/ipv6")
		return strings.Count(o, "done") == 2 && strings.Contains(o, "rc=")
	})
	o, _ := sh(t, ct, "cat /tmp/v4; echo; cat /tmp/mapped; echo; cat /tmp/ipv6")
	t.Logf("agent side:\n%s", o)
	r.mu.Lock()
	for src, data := range r.got {
		t.Logf("upstream got from %s: %q", src, data)
		if strings.Contains(data, "after the reload") {
			t.Errorf("REVOKED FLOW CARRIED DATA: %s sent %q after the reload", src, data)
		}
	}
	r.mu.Unlock()
	for _, l := range cl.LogLines() {
		if m, _ := l["msg"].(string); strings.Contains(m, "SOCK_DESTROY") {
			t.Logf("daemon: %v", l)
		}
	}
	for _, e := range cl.AuditEntries() {
		if e.Path == "kernel" {
			t.Logf("audit: %s src=%s dst=%s out=%d in=%d %s", e.Event, e.Src, e.Dst, e.BytesOut, e.BytesIn, e.Reason)
		}
	}
	verifyAudit(t, cl)
}

// Attack (issue 18, audit chain): the reader's batches (LogBatch) and the
// proxy's own lines (denied connects, one Log each) written at the same
// time, from two containers, one of them also churning fast connections.
// The chain must verify and every fast connection must have its connect
// and closed lines, paired by src.
func TestAttackFastAuditBatchesInterleaveWithProxyLines(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	port := auditPort + 8
	srv := startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv4.String(), fmt.Sprint(port)))
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, port)})
	a := ctd.Run(t, "fpmixa", harness.RunOpts{Files: map[string]string{toolBin(t, "fpattack"): "/fpattack"}})
	b := ctd.Run(t, "fpmixb", harness.RunOpts{Files: map[string]string{toolBin(t, "fpattack"): "/fpattack"}})
	cl.MustCLI("attach", a.Name)
	cl.MustCLI("attach", b.Name)
	const n = 2000
	for _, ct := range []*harness.Container{a, b} {
		// Denied (proxy lines) in the background, fast churn in front.
		sh(t, ct, fmt.Sprintf("(i=0; while [ $i -lt 300 ]; do echo x | timeout 2 nc %s %d >/dev/null 2>&1; i=$((i+1)); done; touch /tmp/denied) </dev/null >/dev/null 2>&1 &", up.IPv4, port+1))
	}
	var wg sync.WaitGroup
	for _, ct := range []*harness.Container{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, _ := sh(t, ct, fmt.Sprintf("/fpattack %s %d 0 churn %d", up.IPv4, port, n))
			t.Logf("%s: %s", ct.Name, strings.TrimSpace(out))
		}()
	}
	wg.Wait()
	for _, ct := range []*harness.Container{a, b} {
		eventually(t, "the denied loop done", func() bool { _, c := sh(t, ct, "test -f /tmp/denied"); return c == 0 })
	}
	remote, _ := srv.seen()
	dst := fmt.Sprintf("%s:%d", up.IPv4, port)
	var dec, closed, unpaired, denied int
	eventually(t, "a connect and a closed line for each connection the server saw", func() bool {
		dec, closed, unpaired, denied = 0, 0, 0, 0
		open := map[string]int{}
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Dst == dst {
				switch e.Event {
				case audit.EventDecision:
					if e.Src != "" {
						dec++
						open[e.Src]++
					}
				case audit.EventClosed:
					closed++
					if open[e.Src] == 0 {
						unpaired++
					}
					open[e.Src]--
				}
			} else if e.Action == audit.ActionDeny {
				denied++
			}
		}
		return dec >= len(remote) && closed >= len(remote)
	})
	t.Logf("server saw %d; %d connect, %d closed lines (%d unpaired), %d deny lines", len(remote), dec, closed, unpaired, denied)
	if unpaired > 0 {
		t.Errorf("%d closed lines without a connect line before them", unpaired)
	}
	verifyAudit(t, cl)
}

// Attack (issue 18, audit): a TCP simultaneous open. The agent's fast
// connect from a known port S is in SYN_SENT; the remote (the agent's
// accomplice at the allowed address and port) ignores that SYN and
// connects to the container's S from its own port. The container's socket
// goes SYN_SENT -> SYN_RECV -> ESTABLISHED, which the kernel reports to
// sockops as PASSIVE_ESTABLISHED, not ACTIVE_ESTABLISHED: no open event,
// so no connect line while the connection carries data, no src, and the
// daemon does not follow it (no close_lost if its end is lost).
func TestAttackFastAuditSimultaneousOpen(t *testing.T) { simOpen(t, false) }

// The same, with the flow's record evicted while it is open (the test
// deletes it, as TestFastPathEvictedFlowKeepsItsConnectLine does): the
// daemon never followed the connection, so it writes no close_lost line
// either, and the connection that carried data has no line at all.
func TestAttackFastAuditSimultaneousOpenEvicted(t *testing.T) { simOpen(t, true) }

func simOpen(t *testing.T, evict bool) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	port := auditPort + 10
	if evict {
		port = auditPort + 12
	}
	sport := 20200
	if evict {
		sport = 20201
	}
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, port)})
	ct := ctd.Run(t, "fpsim", harness.RunOpts{Files: map[string]string{toolBin(t, "fpaudit"): "/fpaudit"}})
	cl.MustCLI("attach", ct.Name)
	// The remote drops the container's pure SYNs (it answers them with
	// its own SYN instead).
	rule := []string{"INPUT", "-p", "tcp", "--dport", fmt.Sprint(port), "--tcp-flags", "SYN,ACK,RST", "SYN", "-j", "DROP"}
	nsRun(t, up.Netns, append([]string{"iptables", "-A"}, rule...)...)
	t.Cleanup(func() {
		exec.Command("nsenter", append([]string{"--net=" + up.Netns, "iptables", "-D"}, rule...)...).Run()
	})
	sh(t, ct, fmt.Sprintf("/fpaudit simopen %s %d %d > /tmp/sim 2>&1 </dev/null &", up.IPv4, port, sport))
	eventually(t, "the agent's connect in SYN_SENT (a flow record)", func() bool {
		// The record has its source port from the connect on (0 with
		// programs before the connect event).
		recs := flowsBySport(t, cl)
		_, ok := recs[uint16(sport)]
		if _, ok0 := recs[0]; ok0 {
			ok = true
		}
		o, _ := sh(t, ct, "cat /tmp/sim")
		return ok && strings.Contains(o, "connect")
	})
	remote := exec.Command("nsenter", "--net="+up.Netns, toolBin(t, "fpaudit"), "simremote", ct.IPv4.String(), fmt.Sprint(sport), fmt.Sprint(port), up.IPv4.String())
	var rout strings.Builder
	remote.Stdout, remote.Stderr = &rout, &rout
	if err := remote.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Process.Kill(); remote.Wait() })
	var o string
	eventually(t, "the agent's connection to carry data", func() bool {
		o, _ = sh(t, ct, "cat /tmp/sim")
		return strings.Contains(o, `read="world"`)
	})
	t.Logf("agent: %s", strings.TrimSpace(o))
	src := fmt.Sprintf("%s:%d", ct.IPv4, sport)
	for sp, f := range flowsBySport(t, cl) {
		t.Logf("record: sport=%d established=%d closed=%d", sp, f.Established, f.Closed)
	}
	if evict {
		fl, err := ebpf.LoadPinnedMap(cl.PinRoot+"/maps/clawd_fl_v1", nil)
		if err != nil {
			t.Fatal(err)
		}
		var k uint64
		var v bpf.ClawdFlow
		var cookies []uint64
		for it := fl.Iterate(); it.Next(&k, &v); {
			cookies = append(cookies, k)
		}
		for _, c := range cookies {
			fl.Delete(c)
		}
		fl.Close()
		t.Logf("deleted %d flow records", len(cookies))
		sh(t, ct, "touch /tmp/go")
		sh(t, ct, "sleep 3.5") // three sweeps: a close_lost line would be written
		n := 0
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" {
				n++
				t.Logf("line: %s src=%q out=%d %s", e.Event, e.Src, e.BytesOut, e.Reason)
			}
		}
		if n == 0 {
			t.Errorf("UNAUDITED: a fast connection that carried data both ways (%s) has no audit line at all", src)
		}
		return
	}
	// Two sweeps, so that any line about the open connection is written.
	sh(t, ct, "sleep 2.5")
	var lines []audit.Entry
	for _, e := range cl.AuditEntries() {
		if e.Path == "kernel" {
			lines = append(lines, e)
		}
	}
	if len(lines) == 0 {
		t.Errorf("UNAUDITED WHILE OPEN: the connection %s -> %s:%d carries data in both directions and the audit log has no line for it", src, up.IPv4, port)
	}
	for _, e := range lines {
		t.Logf("line while open: %s src=%q out=%d in=%d %s", e.Event, e.Src, e.BytesOut, e.BytesIn, e.Reason)
	}
	sh(t, ct, "touch /tmp/go")
	eventually(t, "the agent done", func() bool {
		o, _ = sh(t, ct, "cat /tmp/sim")
		return strings.Contains(o, "done")
	})
	eventually(t, "a closed line for the connection's end", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventClosed {
				return true
			}
		}
		return false
	})
	decisions, closes := 0, 0
	for _, e := range cl.AuditEntries() {
		if e.Path != "kernel" {
			continue
		}
		t.Logf("line after close: %s src=%q out=%d in=%d %s", e.Event, e.Src, e.BytesOut, e.BytesIn, e.Reason)
		if e.Src != src {
			t.Errorf("the line has src %q, not the connection's %s (the upstream saw that)", e.Src, src)
		}
		switch e.Event {
		case audit.EventDecision:
			decisions++
		case audit.EventClosed:
			closes++
		default:
			t.Errorf("unexpected %q line (%s)", e.Event, e.Reason)
		}
	}
	if decisions != 1 || closes != 1 {
		t.Errorf("%d decision and %d closed lines, want one of each", decisions, closes)
	}
	t.Logf("remote: %s", rout.String())
}

// Attack (issue 18, audit attribution): a fast flow open when its
// container is detached. The detach drops the attachment before the table
// refresh, so the refresh's cut finds no container for the flow's cgroup:
// the revoked line must still name the container.
func TestAttackFastAuditDetachNamesTheContainer(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	port := auditPort + 11
	startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv4.String(), fmt.Sprint(port)))
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, port)})
	ct := ctd.Run(t, "fpdetach", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	sh(t, ct, fmt.Sprintf("((echo hello; sleep 20) | timeout 20 nc %s %d > /tmp/held 2>&1) </dev/null >/dev/null 2>&1 &", up.IPv4, port))
	eventually(t, "the held connection's connect line", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision && e.Src != "" {
				return true
			}
		}
		return false
	})
	cl.MustCLI("detach", ct.Name)
	var got []audit.Entry
	eventually(t, "the flow's last line (revoked, closed or close_lost)", func() bool {
		got = got[:0]
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event != audit.EventDecision {
				got = append(got, e)
			}
		}
		return len(got) > 0
	})
	for _, e := range got {
		t.Logf("line: %s container=%q src=%s %s", e.Event, e.Container, e.Src, e.Reason)
		if e.Container != ct.Name {
			t.Errorf("ATTRIBUTION: the %s line of %s's flow names container %q", e.Event, ct.Name, e.Container)
		}
	}
	verifyAudit(t, cl)
}

// Attack (issue 18, audit across a crash): the daemon is killed (SIGKILL:
// the fast table stays installed) while the agent churns fast connections
// and holds one open; the next daemon reads the queued events and adopts
// the held flow. Every connection the server saw must have exactly one
// connect line and one closed line, no duplicates, including the held one
// (whose connect line the first daemon wrote).
func TestAttackFastAuditCrashWhileChurning(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	port := auditPort + 14
	srv := startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv4.String(), fmt.Sprint(port)))
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, port)})
	ct := ctd.Run(t, "fpcrash", harness.RunOpts{Files: map[string]string{toolBin(t, "fpattack"): "/fpattack"}})
	cl.MustCLI("attach", ct.Name)
	sh(t, ct, fmt.Sprintf("((echo hello; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo bye) | timeout 60 nc %s %d > /tmp/held 2>&1) </dev/null >/dev/null 2>&1 &", up.IPv4, port))
	eventually(t, "the held connection's connect line", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventDecision && e.Src != "" {
				return true
			}
		}
		return false
	})
	sh(t, ct, fmt.Sprintf("/fpattack %s %d 0 churn 500", up.IPv4, port))
	cl.Kill()
	out, _ := sh(t, ct, fmt.Sprintf("/fpattack %s %d 0 churn 1500", up.IPv4, port))
	t.Logf("churn with no daemon: %s", strings.TrimSpace(out))
	cl.Start()
	sh(t, ct, fmt.Sprintf("/fpattack %s %d 0 churn 500", up.IPv4, port))
	sh(t, ct, "touch /tmp/go")
	remote, _ := srv.seen()
	var dec, closed map[string]int
	eventually(t, "a connect and a closed line for each connection", func() bool {
		dec, closed = map[string]int{}, map[string]int{}
		for _, e := range cl.AuditEntries() {
			if e.Path != "kernel" {
				continue
			}
			switch e.Event {
			case audit.EventDecision:
				dec[e.Src]++
			case audit.EventClosed, audit.EventCloseLost:
				closed[e.Src]++
			}
		}
		for _, r := range remote {
			if dec[r] == 0 || closed[r] == 0 {
				return false
			}
		}
		return true
	})
	// A source port may be used again by a later connection: compare
	// counts per source with the server's.
	seen := map[string]int{}
	for _, r := range remote {
		seen[r]++
	}
	bad := 0
	for r, n := range seen {
		if dec[r] != n || closed[r] != n {
			bad++
			if bad <= 5 {
				t.Errorf("%s: the server saw %d connections, the audit log has %d connect and %d end lines", r, n, dec[r], closed[r])
			}
		}
	}
	t.Logf("server saw %d connections (%d sources); %d sources mismatched", len(remote), len(seen), bad)
	verifyAudit(t, cl)
}

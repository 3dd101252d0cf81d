package enforce

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// fastBed gives the testbed a veth to a "server" namespace: the container
// is 203.0.113.202/30, the server 203.0.113.201.
func fastBed(t *testing.T) (*testbed, string) {
	tb := newTestbed(t)
	srv := tb.ns + "s"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", srv)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", srv).Run() })
	run("-n", tb.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "srv0", "netns", srv)
	run("-n", tb.ns, "addr", "add", "203.0.113.202/30", "dev", "eth0")
	run("-n", tb.ns, "link", "set", "eth0", "up")
	run("-n", srv, "addr", "add", "203.0.113.201/30", "dev", "srv0")
	run("-n", srv, "link", "set", "srv0", "up")
	run("-n", srv, "link", "set", "lo", "up")
	return tb, "/var/run/netns/" + srv
}

// TestFastPathPassesOnlyTableAllowedTCP: with the fast path on, a connect
// the table allows reaches the server directly (it sees the container's
// own address, the proxy sees nothing) and is reported open and closed
// with its bytes; one the table does not allow goes to the proxy; an
// empty table sends everything to the proxy; a packet socket's frames
// (arping) are still dropped; a flow whose record is forgotten is cut.
func TestFastPathPassesOnlyTableAllowedTCP(t *testing.T) {
	tb, srvNs := fastBed(t)
	e := newEnforcer(t, tb)
	proxy := listenIn(t, tb.nsPath, "tcp4", "127.0.0.1:0")
	port := uint16(proxy.Addr().(*net.TCPAddr).Port)
	proxied := make(chan string, 8)
	go func() {
		for {
			c, err := proxy.Accept()
			if err != nil {
				return
			}
			proxied <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	srv := listenIn(t, srvNs, "tcp4", "203.0.113.201:7000")
	seen := make(chan string, 8)
	late := make(chan int64, 8) // bytes a connection carried after its first line
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				seen <- c.RemoteAddr().String()
				buf := make([]byte, 6)
				io.ReadFull(c, buf)
				c.Write([]byte("world"))
				// Hold the connection while the client keeps it: the
				// test cuts it by forgetting its record.
				n, _ := io.Copy(io.Discard, c)
				late <- n
			}()
		}
	}()
	cgid := mustCgroupID(t, tb.cgroup)
	if _, err := e.Attach(Params{ID: "fp", Cgroup: tb.cgroup, Netns: tb.nsPath, ProxyPort: port, DNSPort: port + 1, FastPath: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Detach("fp", cgid) })
	ev, err := e.OpenFastEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	events := make(chan FastEvent, 16)
	go func() {
		for {
			x, err := ev.Read()
			if err != nil {
				return
			}
			events <- x
		}
	}()

	// No table yet: the proxy gets it.
	tb.run(t, "sh", "-c", "echo hello | timeout 3 nc 203.0.113.201 7000")
	select {
	case <-proxied:
	case <-time.After(5 * time.Second):
		t.Fatal("without a table the connect did not go to the proxy")
	}

	if err := e.SetFastTable(map[uint64][]FastEntry{cgid: {
		{Prefix: netip.MustParsePrefix("203.0.113.201/32"), Ports: []PortSpan{{7000, 7000}}},
	}}); err != nil {
		t.Fatal(err)
	}
	out, err := tb.run(t, "sh", "-c", "echo hello | timeout 5 nc -w 2 203.0.113.201 7000")
	if !strings.Contains(out, "world") {
		c, _ := e.Counters(cgid)
		f, _ := e.FastCounters(cgid)
		t.Fatalf("fast connect: %v %q (counters %+v, fast %+v)", err, out, c, f)
	}
	select {
	case ra := <-seen:
		if !strings.HasPrefix(ra, "203.0.113.202:") {
			t.Fatalf("server saw %s, want the container's own address", ra)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server saw nothing")
	}
	select {
	case p := <-proxied:
		t.Fatalf("a fast-path connect reached the proxy from %s", p)
	default:
	}
	var connect, open, closed *FastEvent
	for closed == nil {
		select {
		case x := <-events:
			x2 := x
			if x.Connect {
				connect = &x2
			} else if x.Open {
				open = &x2
			} else {
				closed = &x2
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no close event (open %+v)", open)
		}
	}
	if connect == nil || open == nil || !strings.HasPrefix(connect.Flow.Src.String(), "203.0.113.202:") || closed.Flow.Dst.String() != "203.0.113.201:7000" || !strings.HasPrefix(closed.Flow.Src.String(), "203.0.113.202:") ||
		closed.BytesSent != 6 || closed.BytesReceived != 5 || closed.Flow.Cgroup != cgid {
		t.Fatalf("events connect %+v open %+v close %+v", connect, open, closed)
	}
	if f, _ := e.FastCounters(cgid); f.Fast < 1 {
		t.Errorf("fast counter %+v", f)
	}

	// Another port of the same address is not in the table: proxy.
	tb.run(t, "sh", "-c", "echo hello | timeout 3 nc 203.0.113.201 7001")
	select {
	case <-proxied:
	case <-time.After(5 * time.Second):
		t.Fatal("a port outside the table did not go to the proxy")
	}

	// Attack: a packet socket's frames are dropped with the fast path on.
	if out, err := tb.run(t, "arping", "-c", "1", "-w", "2", "-I", "eth0", "203.0.113.201"); err == nil && strings.Contains(out, "Received 1") {
		t.Fatalf("arping (AF_PACKET) got an answer past the tcx layer: %s", out)
	}

	// A long-lived flow is cut when its record is forgotten.
	done := make(chan string, 1)
	go func() {
		out, _ := tb.run(t, "sh", "-c", "(echo hello; sleep 2; echo more; sleep 1; echo more) | timeout 8 nc 203.0.113.201 7000; echo rc=$?")
		done <- out
	}()
	var flows []FastFlow
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		all, _ := e.FastFlows()
		flows = flows[:0]
		for _, f := range all {
			if !f.Closed {
				flows = append(flows, f)
			}
		}
		if len(flows) == 1 && flows[0].Established {
			break
		}
	}
	if len(flows) != 1 || !flows[0].Established || flows[0].Dst.String() != "203.0.113.201:7000" {
		t.Fatalf("flows = %+v", flows)
	}
	if err := e.ForgetFastFlow(flows[0].Cookie); err != nil {
		t.Fatal(err)
	}
	if err := e.ClearFastTable(); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-done:
		t.Logf("cut client: %q", out)
	case <-time.After(30 * time.Second):
		t.Fatal("client still running")
	}
	// The first connection ended normally; the cut one must have carried
	// nothing after its record was forgotten.
	<-late
	exec.Command("ip", "netns", "exec", tb.ns, "true").Run()
	select {
	case n := <-late:
		if n != 0 {
			t.Fatalf("the server got %d bytes after the flow was cut", n)
		}
	case <-time.After(5 * time.Second):
		// The server still holds the cut connection open (no FIN could
		// pass): it received nothing more.
	}
	// The server side must have seen no byte after the cut; ensure the
	// table is empty: a new connect goes to the proxy.
	tb.run(t, "sh", "-c", "echo hello | timeout 3 nc 203.0.113.201 7000")
	select {
	case <-proxied:
	case <-time.After(5 * time.Second):
		t.Fatal(fmt.Sprint("after clearing the table the connect did not go to the proxy"))
	}
}

// Every entry a compiled table can hold installs, the shadow entries of
// IPv6 forms carrying IPv4 addresses (::ffff:0:0/96) included: a table that
// fails to install sends everything to the proxy.
func TestSetFastTableTakesEveryPrefixForm(t *testing.T) {
	tb := newTestbed(t)
	e := newEnforcer(t, tb)
	var tab []FastEntry
	for _, s := range []string{"0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", "::/96", "64:ff9b::/96", "2002::/16", "203.0.113.0/24", "2001:db8::10/128"} {
		tab = append(tab, FastEntry{Prefix: netip.MustParsePrefix(s), Ports: []PortSpan{{1, 65535}}})
	}
	if err := e.SetFastTable(map[uint64][]FastEntry{1: tab}); err != nil {
		t.Fatal(err)
	}
}

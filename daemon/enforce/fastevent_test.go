package enforce

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/bpf"
)

// TestDecodeFastEventMatchesBinaryRead: the hand decoder of struct
// fp_event agrees with binary.Read of the generated type, field by field,
// so a layout change in clawd.c cannot go unnoticed.
func TestDecodeFastEventMatchesBinaryRead(t *testing.T) {
	if n := binary.Size(bpf.ClawdFpEvent{}); n != fastEventLen {
		t.Fatalf("sizeof(struct fp_event) = %d, fastEventLen = %d", n, fastEventLen)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		b := make([]byte, fastEventLen)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		b[60] = []byte{4, 6}[i%2]                          // family
		binary.NativeEndian.PutUint32(b[88:], uint32(i%3)) // kind
		var want bpf.ClawdFpEvent
		if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &want); err != nil {
			t.Fatal(err)
		}
		got, ok := decodeFastEvent(b)
		if !ok {
			t.Fatal("decode refused a whole event")
		}
		exp := FastEvent{Open: want.Kind == 1, Flow: flowOf(want.Cookie, want.F), BytesSent: want.BytesSent, BytesReceived: want.BytesReceived, Mono: want.Ns}
		if !reflect.DeepEqual(got, exp) {
			t.Fatalf("event %d: decoded %+v, binary.Read %+v", i, got, exp)
		}
	}
	// An older program's event (no ns): decoded, time unknown.
	old := make([]byte, fastEventLenV1)
	old[60] = 4
	if got, ok := decodeFastEvent(old); !ok || got.Mono != 0 {
		t.Fatalf("an event without ns: %+v, %v", got, ok)
	}
	if _, ok := decodeFastEvent(make([]byte, fastEventLenV1-1)); ok {
		t.Fatal("a short record was decoded")
	}
}

// churn, the helper process of TestFastPathFullRingTakesTheProxy: it makes
// whole connections to addr one after another (CLAWD_TEST_CHURN_N of them)
// and prints how many were made.
func churn(addr string) {
	n, _ := strconv.Atoi(os.Getenv("CLAWD_TEST_CHURN_N"))
	ok := 0
	for range n {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err == nil {
			ok++
			c.Close()
		}
	}
	fmt.Printf("connected=%d\n", ok)
}

// TestFastPathFullRingTakesTheProxy: while nobody reads the event ring
// buffer, fast connects go on only until it is half full; then they take
// the proxy path (which audits them itself), so no fast connection's open
// or close event is lost (ev_lost stays 0). Once the events are read, the
// fast path is back.
func TestFastPathFullRingTakesTheProxy(t *testing.T) {
	tb, srvNs := fastBed(t)
	e := newEnforcer(t, tb)
	proxy := listenIn(t, tb.nsPath, "tcp4", "127.0.0.1:0")
	port := uint16(proxy.Addr().(*net.TCPAddr).Port)
	var proxied atomic.Int64
	go func() {
		for {
			c, err := proxy.Accept()
			if err != nil {
				return
			}
			proxied.Add(1)
			c.Close()
		}
	}()
	srv := listenIn(t, srvNs, "tcp4", "203.0.113.201:7000")
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cgid := mustCgroupID(t, tb.cgroup)
	if _, err := e.Attach(Params{ID: "fp", Cgroup: tb.cgroup, Netns: tb.nsPath, ProxyPort: port, DNSPort: port + 1, FastPath: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Detach("fp", cgid) })
	if err := e.SetFastTable(map[uint64][]FastEntry{cgid: {
		{Prefix: netip.MustParsePrefix("203.0.113.201/32"), Ports: []PortSpan{{7000, 7000}}},
	}}); err != nil {
		t.Fatal(err)
	}
	run := func(n int) string {
		t.Helper()
		fd, err := unix.Open(tb.cgroup, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		cmd := exec.Command("ip", "netns", "exec", tb.ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "CLAWD_TEST_CHURN=203.0.113.201:7000", fmt.Sprintf("CLAWD_TEST_CHURN_N=%d", n))
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("churn: %v: %s", err, out)
		}
		return string(out)
	}
	// Each connection makes three events (connect, open, close) of 112
	// bytes with their headers: 4000 are more than half of the 1 MiB
	// ring buffer.
	const n = 4000
	out := run(n)
	f, err := e.FastCounters(cgid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s; fast %d, proxied %d, ev_lost %d", strings.TrimSpace(out), f.Fast, proxied.Load(), f.EvLost)
	if f.EvLost != 0 {
		t.Fatalf("%d fast-path events lost while the ring buffer filled", f.EvLost)
	}
	if f.Fast >= n || proxied.Load() == 0 {
		t.Fatalf("with nobody reading the events, %d of %d connects took the fast path (%d the proxy)", f.Fast, n, proxied.Load())
	}

	// The events are read: the fast path is back.
	ev, err := e.OpenFastEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	read := 0
	for {
		evs, err := ev.ReadBatch(nil, 1024, time.Now().Add(200*time.Millisecond))
		read += len(evs)
		if err != nil || len(evs) == 0 {
			break
		}
	}
	if read != int(3*f.Fast) {
		t.Errorf("read %d events for %d fast connections, want three each", read, f.Fast)
	}
	run(1)
	if g, _ := e.FastCounters(cgid); g.Fast != f.Fast+1 {
		t.Fatalf("after the events were read the connect did not take the fast path (fast %d, was %d)", g.Fast, f.Fast)
	}
}

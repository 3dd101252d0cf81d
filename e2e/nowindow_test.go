package e2e

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// clawdPrevBin is clawd with the previous generation of its eBPF programs
// (-tags clawd_prev: bpf/testdata/clawd_prev_bpfel.o, which lets a socket
// set PACKET_QDISC_BYPASS), to upgrade from.
func clawdPrevBin(t testing.TB) string { return clawdBinTags(t, "clawd_prev") }

// No instant in which an attached container's connect, datagram or frame
// goes out unexamined: a probe loop (TCP, UDP, plain packet-socket frames,
// and frames of a PACKET_QDISC_BYPASS socket opened before attach) runs
// through 20 daemon restarts (SIGKILL and SIGTERM in turn), the first of
// which is an upgrade to a binary whose programs changed (swapped into the
// pinned links with link.Update), sweeps, and another container attached
// and detached at the same time, over and over. The upstream must see
// nothing from the container's own address.
func TestNoOpenWindowAcrossRestartsUpgradeAndRaces(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Bin: clawdPrevBin(t)})
	ct := ctd.Run(t, "nowindow", harness.RunOpts{Files: map[string]string{bypassBin(t): "/bypass"}})
	racer := ctd.Run(t, "racer", harness.RunOpts{})

	up.Reset()
	stopFrames := bypassLoop(t, ct)
	sh(t, ct, "rm -f /tmp/probe.stop; (while [ ! -e /tmp/probe.stop ]; do /bypass -gw-mac "+ct.GatewayMAC+
		" -only tcp4,udp-sendto,udp-sendmmsg,udp6-sendto,packet-raw -prefix probe- > /tmp/probe.last 2>&1; done &)")
	eventually(t, "control: the probe loop to get out before attach", func() bool {
		e := strings.Join(escaped(up), "\n")
		return strings.Contains(e, "/bypass-probe-tcp4") && strings.Contains(e, "bypass-probe-udp-sendto") &&
			strings.Contains(e, "bypass-probe-packet-raw") && strings.Contains(e, "bypass-packet-loop")
	})
	cl.MustCLI("attach", ct.Name)
	time.Sleep(300 * time.Millisecond) // what was in flight at attach
	up.Reset()
	if r := runBypass(t, ct, "-only", "packet-qdisc-bypass")["packet-qdisc-bypass"]; r.Result != "sent" {
		t.Fatalf("under the previous programs a new socket may still set PACKET_QDISC_BYPASS: %+v", r)
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	var attaches, detaches atomic.Int32
	wg.Add(1)
	go func() { // a detach racing an attach, again and again
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			var w sync.WaitGroup
			w.Add(2)
			go func() {
				defer w.Done()
				if _, err := cl.CLI("attach", racer.Name); err == nil {
					attaches.Add(1)
				}
			}()
			go func() {
				defer w.Done()
				time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
				if _, err := cl.CLI("detach", racer.Name); err == nil {
					detaches.Add(1)
				}
			}()
			w.Wait()
		}
	}()

	for i := 0; i < 20; i++ {
		if i == 0 {
			cl.Bin = clawdBin(t) // the upgrade
		}
		if i%2 == 0 {
			cl.Kill()
		} else {
			cl.Stop()
		}
		time.Sleep(150 * time.Millisecond) // down for a moment: the probe keeps trying
		cl.Start()
		a := attachment(t, cl, ct.Name)
		if a.State != daemon.StateEnforced {
			t.Fatalf("restart %d: %+v", i, a)
		}
		if i == 0 {
			if r := runBypass(t, ct, "-only", "packet-qdisc-bypass")["packet-qdisc-bypass"]; r.Result != "blocked" {
				t.Errorf("after the upgrade the new setsockopt program must refuse PACKET_QDISC_BYPASS: %+v", r)
			}
		}
	}
	time.Sleep(1500 * time.Millisecond) // a sweep or two with everything running
	close(done)
	wg.Wait()
	t.Logf("racer: %d attaches and %d detaches went through", attaches.Load(), detaches.Load())
	if attaches.Load() == 0 || detaches.Load() == 0 {
		t.Errorf("the attach/detach race never happened")
	}
	sh(t, ct, "touch /tmp/probe.stop")
	time.Sleep(500 * time.Millisecond)
	t.Logf("packet loop: %s", stopFrames())

	for _, e := range escaped(up) {
		t.Errorf("ESCAPED: %s", e)
	}
	if got := fromContainer(up, ct.IPv4.String()); len(got) != 0 {
		t.Errorf("the upstream saw the container's own address: %v", got)
	}
	if len(up.UDPPackets()) != 0 {
		t.Errorf("the upstream got datagrams: %v", up.UDPPackets())
	}
	// The probe did run, through clawd, between the restarts.
	if got := seenFrom(up, "/bypass-probe-tcp4"); len(got) == 0 {
		t.Errorf("the probe's TCP never went through clawd: %s", tail(strings.Join(escaped(up), "\n"), 500))
	}
	// The racer ended in a consistent state: listed if and only if pinned,
	// and enforced if listed.
	listed := false
	var id string
	for _, a := range cl.List() {
		if a.Container.Name == racer.Name {
			listed, id = true, a.ID
		}
	}
	ents, _ := os.ReadDir(filepath.Join(cl.PinRoot, "att"))
	pinned := 0
	for _, e := range ents {
		if strings.Contains(e.Name(), racer.Name) {
			pinned++
		}
	}
	if listed != (pinned == 1) || pinned > 1 {
		t.Errorf("racer: listed=%v (%s), pin dirs %d (%v)", listed, id, pinned, ents)
	}
	up.Reset()
	out, code := wget(t, racer, upURL("/racer"))
	if got := seenFrom(up, "/racer"); listed && (len(got) != 1 || !hostSide(got[0])) {
		t.Errorf("racer is attached but its request came from %v (%d: %s)", got, code, out)
	} else if !listed && (len(got) != 1 || got[0] != racer.IPv4.String()) {
		t.Errorf("racer is detached but its request came from %v (%d: %s)", got, code, out)
	}
}

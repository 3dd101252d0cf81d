package sockmap

import (
	"bufio"
	"errors"
	"runtime"
	"strconv"

	"bytes"
	"context"
	"crypto/sha256"
	"golang.org/x/sys/unix"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// waitLimit only guards against a hung test; no assertion depends on it.
const waitLimit = 10 * time.Second

func newRelay(t testing.TB) *Relay {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sockmap relay needs root (BPF)")
	}
	r, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// pair is client -> [a] relay [b] -> server, all on loopback.
type pair struct {
	client, server, a, b *net.TCPConn
}

func newPair(t testing.TB, onAccept func(*net.TCPConn)) pair {
	t.Helper()
	up, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	front, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	var p pair
	if p.client, err = net.DialTCP("tcp", nil, front.Addr().(*net.TCPAddr)); err != nil {
		t.Fatal(err)
	}
	if p.a, err = front.AcceptTCP(); err != nil {
		t.Fatal(err)
	}
	if p.b, err = net.DialTCP("tcp", nil, up.Addr().(*net.TCPAddr)); err != nil {
		t.Fatal(err)
	}
	if p.server, err = up.AcceptTCP(); err != nil {
		t.Fatal(err)
	}
	if onAccept != nil {
		onAccept(p.server)
	}
	t.Cleanup(func() {
		for _, c := range []*net.TCPConn{p.client, p.server, p.a, p.b} {
			c.Close()
		}
	})
	return p
}

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// exchange sends up from the client and down from the server, each followed
// by a half-close, and checks that the server received prefix+up and the
// client banner+down, each followed by EOF.
func exchange(t *testing.T, p pair, prefix, up, banner, down []byte) {
	t.Helper()
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errUp, errDown error
	wg.Add(2)
	go func() {
		defer wg.Done()
		gotUp, errUp = io.ReadAll(p.server)
		p.server.Write(down)
		p.server.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		p.client.Write(up)
		p.client.CloseWrite()
		gotDown, errDown = io.ReadAll(p.client)
	}()
	wg.Wait()
	want := append(append([]byte{}, prefix...), up...)
	if errUp != nil || !bytes.Equal(gotUp, want) {
		t.Errorf("server got %d bytes (sha %x), want %d (sha %x), err %v", len(gotUp), sha256.Sum256(gotUp), len(want), sha256.Sum256(want), errUp)
	}
	wantDown := append(append([]byte{}, banner...), down...)
	if errDown != nil || !bytes.Equal(gotDown, wantDown) {
		t.Errorf("client got %d bytes (sha %x), want %d (sha %x), err %v", len(gotDown), sha256.Sum256(gotDown), len(wantDown), sha256.Sum256(wantDown), errDown)
	}
}

func TestPipe(t *testing.T) {
	r := newRelay(t)
	tests := []struct {
		name       string
		pre        []byte
		up, down   int
		banner     []byte // sent by the server before the relay starts
		wantKernel int64  // bytes the kernel must at least have moved
	}{
		{name: "bulk both ways", up: 8 << 20, down: 24 << 20, wantKernel: 32 << 20},
		{name: "buffered hello first", pre: []byte("\x16\x03\x01hello"), up: 100 << 10, down: 1 << 20, wantKernel: 100<<10 + 1<<20},
		{name: "empty"},
		// Bytes already queued on the upstream socket before it joined the
		// sockhash must still reach the client first, in order (the kernel
		// may carry them or hand them to userspace, depending on version).
		{name: "server spoke first", banner: []byte("220 ready\r\n"), up: 1 << 20, down: 4 << 20, wantKernel: 1 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, func(s *net.TCPConn) {
				if tc.banner != nil {
					s.Write(tc.banner)
				}
			})
			if tc.banner != nil {
				time.Sleep(50 * time.Millisecond) // let the banner reach b's queue
			}
			up, down := randBytes(tc.up, 1), randBytes(tc.down, 2)
			done := make(chan Result, 1)
			// The client sends only once the pair is set up, as an agent
			// waiting for a TLS ServerHello does.
			ready := make(chan struct{})
			r.testArmed = func() { close(ready) }
			go func() {
				res, err := r.Pipe(context.Background(), p.a, p.b, tc.pre)
				if err != nil {
					t.Errorf("Pipe: %v", err)
				}
				done <- res
			}()
			<-ready
			exchange(t, p, tc.pre, up, tc.banner, down)
			res := <-done
			wantAB := int64(len(tc.pre) + len(up))
			wantBA := int64(len(tc.banner) + len(down))
			if res.AToB != wantAB || res.BToA != wantBA {
				t.Errorf("counted %d/%d bytes, want %d/%d", res.AToB, res.BToA, wantAB, wantBA)
			}
			if res.InKernel < tc.wantKernel {
				t.Errorf("InKernel = %d, want at least %d", res.InKernel, tc.wantKernel)
			}
		})
	}
}

// A server-speaks-first exchange whose greeting is already queued on the
// upstream socket before the relay starts: the client waits for it before
// saying anything, so nothing else would ever push it through.
func TestPipeQueuedGreeting(t *testing.T) {
	r := newRelay(t)
	p := newPair(t, func(s *net.TCPConn) { s.Write([]byte("SSH-2.0-test\r\n")) })
	// The greeting must be in b's receive queue before the relay starts.
	for n := 0; n == 0; {
		rc, _ := p.b.SyscallConn()
		rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		runtime.Gosched()
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Pipe(context.Background(), p.a, p.b, nil)
		done <- err
	}()
	p.client.SetReadDeadline(time.Now().Add(waitLimit)) // a hang guard only
	br := bufio.NewReader(p.client)
	line, err := br.ReadString('\n')
	if err != nil || line != "SSH-2.0-test\r\n" {
		t.Fatalf("client read %q, %v; want the greeting", line, err)
	}
	p.client.Write([]byte("SSH-2.0-client\r\n"))
	p.server.SetReadDeadline(time.Now().Add(waitLimit))
	line, err = bufio.NewReader(p.server).ReadString('\n')
	if err != nil || line != "SSH-2.0-client\r\n" {
		t.Fatalf("server read %q, %v", line, err)
	}
	p.server.Close()
	p.client.Close()
	if err := <-done; err != nil {
		t.Logf("Pipe ended with %v (a reset side)", err)
	}
}

// An upstream that resets mid-stream ends the relay and the agent's side.
func TestPipeReset(t *testing.T) {
	r := newRelay(t)
	p := newPair(t, nil)
	done := make(chan error, 1)
	go func() {
		_, err := r.Pipe(context.Background(), p.a, p.b, nil)
		done <- err
	}()
	p.server.Write(randBytes(1<<20, 3))
	p.server.SetLinger(0)
	p.server.Close()
	p.client.SetReadDeadline(time.Now().Add(waitLimit)) // a hang guard only
	if _, err := io.Copy(io.Discard, p.client); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client still connected after the upstream reset: %v", err)
	}
	<-done
}

// Cancelling the context (the daemon stopping, the container detached) ends
// an idle relay and closes both sockets.
func TestPipeCancel(t *testing.T) {
	r := newRelay(t)
	p := newPair(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Pipe(ctx, p.a, p.b, nil)
		done <- err
	}()
	cancel()
	<-done
	p.client.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := p.client.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("agent side still open after cancel")
	}
}

// As the proxy does: the first bytes were read (sniffed) from the agent's
// socket before the relay starts, more wait in its receive queue, maybe in
// the middle of a segment; the upstream must get every byte exactly once.
func TestPipeAfterPartialRead(t *testing.T) {
	r := newRelay(t)
	for _, first := range []int{1, 5, 4096, 18437} {
		t.Run(strconv.Itoa(first), func(t *testing.T) {
			p := newPair(t, nil)
			up := randBytes(2<<20, uint64(first))
			go func() {
				p.client.Write(up)
				p.client.CloseWrite()
			}()
			pre := make([]byte, first)
			if _, err := io.ReadFull(p.a, pre); err != nil {
				t.Fatal(err)
			}
			done := make(chan Result, 1)
			go func() {
				res, _ := r.Pipe(context.Background(), p.a, p.b, pre)
				done <- res
			}()
			p.server.SetReadDeadline(time.Now().Add(waitLimit)) // a hang guard only
			got, err := io.ReadAll(p.server)
			if err != nil || !bytes.Equal(got, up) {
				t.Errorf("server got %d bytes (equal %v), want %d; err %v", len(got), bytes.Equal(got, up), len(up), err)
			}
			p.server.CloseWrite()
			if res := <-done; res.AToB != int64(len(up)) {
				t.Errorf("counted %d bytes, want %d", res.AToB, len(up))
			}
		})
	}
}

// An agent that stops reading while the upstream sends as fast as it can:
// the kernel must not queue the stream without bound. Once the backlog
// passes maxBacklog the flow is copied in userspace, where the receive
// window stops the upstream.
func TestPipeSlowReaderBounded(t *testing.T) {
	r := newRelay(t)
	p := newPair(t, nil)
	ready := make(chan struct{})
	r.testArmed = func() { close(ready) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Pipe(context.Background(), p.a, p.b, nil)
	}()
	<-ready
	buf := make([]byte, 1<<20)
	var sent int64
	// Write until the upstream is blocked for good (a write deadline ends
	// it); without a bound the kernel takes hundreds of MiB a second.
	p.server.SetWriteDeadline(time.Now().Add(2 * time.Second))
	for sent < 1<<30 {
		n, err := p.server.Write(buf)
		sent += int64(n)
		if err != nil {
			break
		}
	}
	// maxBacklog, what arrives during one check, and the socket buffers of
	// the four sockets involved.
	if limit := int64(64 << 20); sent > limit {
		t.Fatalf("the upstream wrote %d MiB to an agent that reads nothing; want at most %d MiB queued", sent>>20, limit>>20)
	}
	// And what was queued still arrives, in order, once the agent reads.
	p.server.SetWriteDeadline(time.Time{})
	p.server.CloseWrite()
	p.client.SetReadDeadline(time.Now().Add(waitLimit))
	n, err := io.Copy(io.Discard, p.client)
	if err != nil || n != sent {
		t.Fatalf("agent read %d bytes (%v), want %d", n, err, sent)
	}
	p.client.CloseWrite()
	<-done
}

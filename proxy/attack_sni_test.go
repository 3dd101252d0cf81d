package proxy

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// helloWithSNI returns a Go ClientHello whose server name is sni, which
// must end in '.': crypto/tls will not send that, so a same-length name is
// captured and patched.
func helloWithSNI(t *testing.T, sni string) []byte {
	t.Helper()
	stand := sni
	if sni[len(sni)-1] == '.' {
		stand = sni[:len(sni)-1] + "q"
	}
	a, b := net.Pipe()
	go tls.Client(a, &tls.Config{ServerName: stand, InsecureSkipVerify: true}).Handshake()
	buf := make([]byte, 1<<16)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	hello := buf[:n]
	i := bytes.Index(hello, []byte(stand))
	if i < 0 {
		t.Fatal("stand-in name not in hello")
	}
	copy(hello[i:], sni)
	return hello
}

// An SNI naming the intercepted host is refused (host mismatch) on an
// address clawd has no DNS memory for. The same name with a trailing dot
// (which nginx, OpenSSL-based and many other servers accept as that name)
// makes crypto/tls reject the hello: the sniffer calls it "bad TLS", the
// gate decides by the address alone and splices it raw. The invariant says
// a destination whose SNI is covered by an intercept rule is never spliced.
func TestAttackSNITrailingDotDowngrade(t *testing.T) {
	dst, accepted := tcpUpstream(t, func(c net.Conn) {
		b := make([]byte, 1)
		c.Read(b)
	})
	p, err := policy.Parse([]byte(atkPolicy), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.Names = fakeNames{} })
	try := func(sni string) bool {
		c := e.dial(dst)
		c.Write(helloWithSNI(t, sni))
		select {
		case <-accepted:
			return true
		case <-time.After(500 * time.Millisecond):
			return false
		}
	}
	if try("strict.exampl.") { // control: a name no rule covers, spliced: fine
	} else {
		t.Log("control: unrelated name with trailing dot not spliced")
	}
	if try("strict.example") {
		t.Fatal("control: a valid SNI of the intercepted host on an unknown address was spliced")
	}
	if try("strict.example.") {
		t.Error("a ClientHello whose SNI is strict.example. (intercepted host) was spliced raw to the upstream")
	}
}

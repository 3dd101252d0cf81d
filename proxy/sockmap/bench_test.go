package sockmap

import (
	"context"
	"io"
	"testing"
)

// BenchmarkRelay compares one bulk stream client -> relay -> server on
// loopback: no relay (direct), clawd's userspace copy (io.Copy between two
// TCP conns, which is splice(2)), and the sockmap relay.
func BenchmarkRelay(b *testing.B) {
	const chunk = 1 << 20
	for _, mode := range []string{"direct", "splice", "sockmap"} {
		b.Run(mode, func(b *testing.B) {
			var r *Relay
			if mode == "sockmap" {
				r = newRelay(b)
			}
			p := newPair(b, nil)
			client, server := p.client, p.server
			done := make(chan struct{})
			switch mode {
			case "direct":
				// The client talks to a's peer directly: relay nothing,
				// read at a.
				server = p.a
				close(done)
			case "splice":
				go func() {
					defer close(done)
					io.Copy(p.b, p.a)
					p.b.CloseWrite()
				}()
			case "sockmap":
				go func() {
					defer close(done)
					r.Pipe(context.Background(), p.a, p.b, nil)
				}()
			}
			got := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, server)
				got <- n
			}()
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := client.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			client.CloseWrite()
			if n := <-got; n != int64(b.N)*chunk {
				b.Fatalf("server got %d bytes, want %d", n, int64(b.N)*chunk)
			}
			b.StopTimer()
			server.CloseWrite()
			<-done
		})
	}
}

package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// The replayed bytes are a ClientHello a TLS server parses, for the name
// asked and with ALPN: what a proxy routing by SNI reads.
func TestClientHelloIsRealTLS(t *testing.T) {
	b := clientHello("bench.test")
	cli, srv := net.Pipe()
	defer cli.Close()
	// net.Pipe does not buffer: the client side also drains the server's alert.
	go func() { cli.Write(b); io.Copy(io.Discard, cli) }()
	var got *tls.ClientHelloInfo
	stop := errors.New("seen")
	err := tls.Server(srv, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		got = h
		return nil, stop
	}}).Handshake()
	if got == nil {
		t.Fatalf("the server did not parse a ClientHello: %v", err)
	}
	if got.ServerName != "bench.test" || !slices.Contains(got.SupportedProtos, "h2") {
		t.Fatalf("ClientHello for %q with ALPN %v, want bench.test with h2", got.ServerName, got.SupportedProtos)
	}
}

// helloServe answers a whole ClientHello record, on loopback, and nothing
// that is not a handshake record.
func TestHelloServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go helloServe(c)
		}
	}()
	ask := func(send []byte) ([]byte, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(send)
		c.(*net.TCPConn).CloseWrite()
		return io.ReadAll(c)
	}
	b := clientHello("bench.test")
	if got, err := ask(b); err != nil || !bytes.Equal(got, helloReply) {
		t.Fatalf("ClientHello answered %q (%v), want %q", got, err, helloReply)
	}
	// Not a handshake record, or one cut short (the client then closes):
	// no reply.
	if got, _ := ask([]byte("x")); len(got) != 0 {
		t.Fatalf("a non-TLS byte got %q", got)
	}
	if got, _ := ask(b[:len(b)-1]); len(got) != 0 {
		t.Fatalf("a truncated record got %q", got)
	}
}

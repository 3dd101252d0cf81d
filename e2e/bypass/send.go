package main

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"strings"
	"time"
)

// sendRaw connects to addr (through clawd once attached) and writes each
// base64 part in turn, reading whatever comes back after each until the
// connection has been quiet for a moment (3s before the first byte, 0.5s
// after) or closes. It reports the whole
// answer as the detail of vector "send" (result "closed" if the peer
// closed, else "open"). With -send-tls the parts go inside TLS.
func sendRaw(addr string, parts []string) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		report("send", "blocked", err.Error())
		return
	}
	if *sendTLS != "" {
		// The bytes inside are what is being tested, not the
		// certificate: clawd's interception leaf is not verified.
		tc := tls.Client(c, &tls.Config{ServerName: *sendTLS, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			c.Close()
			report("send", "blocked", "TLS: "+err.Error())
			return
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	defer c.Close()
	var got strings.Builder
	closed := false
	buf := make([]byte, 64<<10)
	for _, p := range parts {
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil {
			report("send", "error", "bad -data: "+err.Error())
			os.Exit(2)
		}
		if closed {
			break
		}
		// "@@LONG@@" stands for 2 MiB of "a" (too big for argv).
		b = []byte(strings.ReplaceAll(string(b), "@@LONG@@", strings.Repeat("a", 2<<20)))
		c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := c.Write(b); err != nil {
			got.WriteString("\n[write error: " + err.Error() + "]")
			closed = true
			break
		}
		// Wait up to 3s for the answer to start, then until it pauses.
		wait := 3 * time.Second
		for got.Len() < 4<<20 {
			c.SetReadDeadline(time.Now().Add(wait))
			n, err := c.Read(buf)
			if n > 0 {
				wait = 500 * time.Millisecond
			}
			got.Write(buf[:n])
			if err != nil {
				var ne net.Error
				if !(errors.As(err, &ne) && ne.Timeout()) {
					closed = true
				}
				break
			}
		}
	}
	res := "open"
	if closed {
		res = "closed"
	}
	report("send", res, got.String())
}

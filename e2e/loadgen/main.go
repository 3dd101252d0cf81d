// Command loadgen is the load and abuse client for clawd's load and fault
// tests. It is built static and copied into test containers.
//
// Mode "http" (default): -n requests, all started together, each on its own
// connection and bounded by -timeout. Each -url may contain {i} (the request
// index); with several -url flags request i uses url i%len. It prints one
// JSON line per request:
//
//	{"i":3,"status":403,"error":"blocked_by_policy","err":""}
//
// where "error" is the JSON error field of the answer body and "err" a
// transport error (a timeout says "timeout").
//
// Mode "slowloris": -n connections to -addr, each sending -line then one
// header byte per -every for at most -for. It prints one line per connection:
//
//	{"i":0,"sent":12,"closed":true,"reply":"HTTP/1.1 408 ..."}
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, s); return nil }

type result struct {
	I      int    `json:"i"`
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
	Err    string `json:"err,omitempty"`
	Body   string `json:"body,omitempty"`
	Sent   int64  `json:"sent,omitempty"`
	SHA    string `json:"sha256,omitempty"`
	Closed bool   `json:"closed,omitempty"`
	Reply  string `json:"reply,omitempty"`
}

func main() {
	var us urls
	flag.Var(&us, "url", "URL ({i} = request index); repeat to rotate")
	mode := flag.String("mode", "http", "http or slowloris")
	n := flag.Int("n", 1, "requests or connections")
	method := flag.String("X", "GET", "method")
	timeout := flag.Duration("timeout", 60*time.Second, "bound of each request")
	bodySize := flag.Int64("body-size", 0, "random request body of this many bytes")
	headerSize := flag.Int("header-size", 0, "add an X-Big header of this many bytes")
	keepBody := flag.Bool("body", false, "print the answer body")
	expect := flag.Bool("expect100", false, "send Expect: 100-continue and wait for it before the body")
	addr := flag.String("addr", "", "slowloris: host:port")
	line := flag.String("line", "GET / HTTP/1.1\r\nHost: x\r\n", "slowloris: first bytes")
	every := flag.Duration("every", time.Second, "slowloris: one byte per")
	dur := flag.Duration("for", 30*time.Second, "slowloris: give up after")
	flag.Parse()

	out := make(chan result)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			if *mode == "slowloris" {
				out <- slow(i, *addr, *line, *every, *dur)
				return
			}
			u := strings.ReplaceAll(us[i%len(us)], "{i}", strconv.Itoa(i))
			out <- do(i, *method, u, *timeout, *bodySize, *headerSize, *keepBody, *expect)
		}(i)
	}
	go func() { wg.Wait(); close(out) }()
	close(start)
	enc := json.NewEncoder(os.Stdout)
	for r := range out {
		enc.Encode(r)
	}
}

// countingReader produces size random-ish bytes and hashes what it gave.
type countingReader struct {
	left int64
	h    interface {
		io.Writer
		Sum([]byte) []byte
	}
	block []byte
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > c.left {
		n = int(c.left)
	}
	if n > len(c.block) {
		n = len(c.block)
	}
	copy(p, c.block[:n])
	c.h.Write(p[:n])
	c.left -= int64(n)
	return n, nil
}

func do(i int, method, u string, timeout time.Duration, bodySize int64, headerSize int, keepBody, expect bool) result {
	r := result{I: i}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var body io.Reader
	var cr *countingReader
	if bodySize > 0 {
		block := make([]byte, 32<<10)
		rand.Read(block)
		cr = &countingReader{left: bodySize, h: sha256.New(), block: block}
		body = cr
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	if bodySize > 0 {
		req.ContentLength = bodySize
	}
	if headerSize > 0 {
		req.Header.Set("X-Big", strings.Repeat("a", headerSize))
	}
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	if expect {
		req.Header.Set("Expect", "100-continue")
		tr.ExpectContinueTimeout = timeout
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if cr != nil {
		r.Sent = bodySize - cr.left
		r.SHA = hex.EncodeToString(cr.h.Sum(nil))
	}
	if err != nil {
		r.Err = errText(err)
		return r
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		r.Err = errText(err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil {
		r.Error = e.Error
	}
	if keepBody {
		r.Body = string(b)
	}
	return r
}

func errText(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout: " + err.Error()
	}
	return err.Error()
}

// slow opens a connection and trickles a request header one byte at a time
// until the server closes it or dur passes.
func slow(i int, addr, line string, every, dur time.Duration) result {
	r := result{I: i}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer c.Close()
	closed := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		b := make([]byte, 512)
		for {
			n, err := c.Read(b)
			buf.Write(b[:n])
			if err != nil {
				closed <- buf.Bytes()
				return
			}
		}
	}()
	if _, err := io.WriteString(c, line); err != nil {
		r.Err = err.Error()
		return r
	}
	r.Sent = int64(len(line))
	deadline := time.After(dur)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case reply := <-closed:
			r.Closed, r.Reply = true, firstLine(reply)
			return r
		case <-deadline:
			return r
		case <-tick.C:
			if _, err := io.WriteString(c, string("X-Slow-"[k%7])); err != nil {
				r.Closed = true
				r.Err = err.Error()
				return r
			}
			r.Sent++
		}
	}
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(fmt.Sprintf("%.100s", s))
}

package proxy

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
)

const fuzzDecodeLimit = 256 << 10

// FuzzDecodeBody feeds arbitrary Content-Encoding values and bodies to the
// decoder: it never panics, never returns more than the limit, returns
// only bodyErrors (the agent's answers), keeps what it returns reserved,
// and leaves nothing reserved once the lease is released.
func FuzzDecodeBody(f *testing.F) {
	text := []byte(`{"model":"claude","messages":[{"role":"user","content":"hello"}]}`)
	for _, cc := range codingCases {
		f.Add(cc.ce, cc.enc(text))
	}
	f.Add("gzip", gz(make([]byte, 1<<20)))                     // bomb
	f.Add("gzip", append(gz([]byte("a")), gz([]byte("b"))...)) // two members
	f.Add("deflate", zlibRawPolyglot())
	f.Add("br", []byte{0x0b, 0x02, 0x80, 'h', 'i', 0x03})
	f.Add("zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3, 0x29, 0x00, 0x00, 's', 'm', 'a', 'l', 'l'})
	f.Add("compress", []byte("\x1f\x9d"))
	f.Add("", []byte("plain"))
	f.Fuzz(func(t *testing.T, ce string, body []byte) {
		m, _ := newMetrics(nil)
		b := newBodyBudget(0, 0, m)
		codings, err := contentCodings(http.Header{"Content-Encoding": {ce}})
		if err != nil {
			var be *bodyError
			if !errors.As(err, &be) || be.status != http.StatusUnsupportedMediaType {
				t.Fatalf("contentCodings(%q): %v", ce, err)
			}
			return
		}
		l := b.lease("k")
		out, err := decodeBody(context.Background(), nil, body, codings, fuzzDecodeLimit, l)
		if err != nil {
			var be *bodyError
			if !errors.As(err, &be) || be.status < 400 || be.code == "" {
				t.Fatalf("decode error that is not an answer: %v", err)
			}
			if total, _ := b.inUse(""); total != 0 {
				t.Fatalf("failed decode left %d bytes reserved", total)
			}
		} else {
			if len(out) > fuzzDecodeLimit {
				t.Fatalf("decoded %d bytes past the limit %d", len(out), fuzzDecodeLimit)
			}
			if len(codings) == 0 && !bytes.Equal(out, body) {
				t.Fatal("identity body changed")
			}
			if total, _ := b.inUse(""); len(codings) > 0 && len(body) > 0 && total < int64(len(out)) {
				t.Fatalf("%d decoded bytes, only %d reserved", len(out), total)
			}
		}
		l.release()
		if total, _ := b.inUse(""); total != 0 {
			t.Fatalf("%d bytes reserved after release", total)
		}
	})
}

// FuzzDecodeRoundTrip: whatever clawd's encoders of every coding produce
// from data decodes back to exactly data.
func FuzzDecodeRoundTrip(f *testing.F) {
	f.Add([]byte(`{"key":"clawd-ph-api-0123"}`), uint8(0))
	f.Add([]byte(""), uint8(3))
	f.Add(bytes.Repeat([]byte("ab"), 5000), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		if len(data) > fuzzDecodeLimit {
			return
		}
		cc := codingCases[int(which)%len(codingCases)]
		codings, err := contentCodings(http.Header{"Content-Encoding": {cc.ce}})
		if err != nil {
			t.Fatal(err)
		}
		m, _ := newMetrics(nil)
		b := newBodyBudget(0, 0, m)
		l := b.lease("k")
		defer l.release()
		out, err := decodeBody(context.Background(), nil, cc.enc(data), codings, fuzzDecodeLimit, l)
		if err != nil {
			t.Fatalf("%s: %v", cc.name, err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("%s: round trip changed the data", cc.name)
		}
	})
}

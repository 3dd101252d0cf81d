package main

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"strings"
)

// postReq is a POST to the intercepted host with the body as given and one
// Content-Encoding header per entry of encs.
func postReq(path string, encs []string, body []byte, chunked bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: hostile\r\nContent-Type: application/json\r\n", path, hostAddr(*strict, *httpPort))
	for _, e := range encs {
		fmt.Fprintf(&b, "Content-Encoding: %s\r\n", e)
	}
	if chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for i := 0; i < len(body); i += 7 {
			c := body[i:min(i+7, len(body))]
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return b.String()
}

func encodeAs(enc string, b []byte) []byte {
	switch enc {
	case "":
		return b
	case "gzip":
		return gz(b)
	case "deflate":
		return zlibEnc(b)
	case "br":
		return brotliStored(b)
	case "zstd":
		return zstdEnc(b)
	}
	panic("unknown encoding " + enc)
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// zlibEnc is "deflate" as RFC 9110 defines it: the zlib format.
func zlibEnc(b []byte) []byte {
	var out bytes.Buffer
	w := zlib.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// flateEnc is raw DEFLATE, which many servers also accept as "deflate".
func flateEnc(b []byte) []byte {
	var out bytes.Buffer
	w, _ := flate.NewWriter(&out, flate.BestCompression)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

// zstdEnc is a zstd frame (RFC 8878) of raw blocks of storedBlock bytes:
// window descriptor 128 KiB, no content size, no checksum.
func zstdEnc(b []byte) []byte {
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38}
	for {
		n := min(len(b), storedBlock)
		last := 0
		if n == len(b) {
			last = 1
		}
		h := uint32(n)<<3 | uint32(last) // block type 0: raw
		out = append(out, byte(h), byte(h>>8), byte(h>>16))
		out = append(out, b[:n]...)
		b = b[n:]
		if last == 1 {
			return out
		}
	}
}

// storedBlock is the size of the uncompressed blocks of brotliStored and
// zstdEnc: smaller than any needle ("hostile-forbidden", a placeholder), so
// a search of the encoded bytes never finds one; only a decoder does.
const storedBlock = 5

// brotliStored encodes b as a valid brotli stream made of uncompressed
// meta-blocks of storedBlock bytes (RFC 7932 §9.2: WBITS, then per
// meta-block ISLAST=0, MNIBBLES, MLEN-1, ISUNCOMPRESSED=1, padding, the
// bytes; then an empty last meta-block). No brotli library is needed.
func brotliStored(b []byte) []byte {
	var w bitWriter
	w.bits(0, 1) // WBITS = 16
	for len(b) > 0 {
		n := min(len(b), storedBlock)
		w.bits(0, 1) // ISLAST = 0
		w.bits(0, 2) // MNIBBLES = 4
		w.bits(uint64(n-1), 16)
		w.bits(1, 1) // ISUNCOMPRESSED
		w.align()
		w.out = append(w.out, b[:n]...)
		b = b[n:]
	}
	w.bits(1, 1) // ISLAST
	w.bits(1, 1) // ISLASTEMPTY
	w.align()
	return w.out
}

type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

func (w *bitWriter) align() {
	if w.nacc > 0 {
		w.out = append(w.out, byte(w.acc))
		w.acc, w.nacc = 0, 0
	}
}

// forbiddenXor hides b behind an encoding clawd cannot know ("x-hostile":
// every byte XOR 0x55), as a custom or future encoding would.
func forbiddenXor(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = c ^ 0x55
	}
	return out
}

// gzBomb is a small gzip stream that decodes to n zero bytes followed by
// the forbidden marker.
func gzBomb(n int) []byte {
	var out bytes.Buffer
	w, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for i := 0; i < n; i += len(zero) {
		w.Write(zero)
	}
	w.Write([]byte("hostile-forbidden"))
	w.Close()
	return out.Bytes()
}

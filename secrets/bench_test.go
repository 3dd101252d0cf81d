package secrets

import (
	"bytes"
	"io"
	"testing"
)

func BenchmarkStream(b *testing.B) {
	in := bytes.Repeat([]byte("hello clawd-ph-x-0123456789abcdef0123456789abcdef world "), 20000)
	m := newMatcher([]pair{{old: []byte("clawd-ph-x-0123456789abcdef0123456789abcdef"), new: []byte("secret-value-123")}, {old: []byte("clawd-ph-y-0123456789abcdef0123456789abcdef"), err: errFound}})
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		io.Copy(io.Discard, newReplaceReader(bytes.NewReader(in), m, nil))
	}
}

package secrets

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

var errFound = errors.New("found forbidden")

func pairs(kv ...string) []pair {
	var ps []pair
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, pair{old: []byte(kv[i]), new: []byte(kv[i+1])})
	}
	return ps
}

func TestMatcherReplace(t *testing.T) {
	tests := []struct {
		name  string
		pairs []pair
		in    string
		want  string
	}{
		{"no patterns", nil, "abc", "abc"},
		{"simple", pairs("ph", "VALUE"), "a ph b ph", "a VALUE b VALUE"},
		{"adjacent", pairs("ph", "V"), "phphph", "VVV"},
		{"leftmost wins", pairs("bcd", "2", "abc", "1"), "abcd", "1d"},
		{"longest at same position", pairs("ab", "1", "abc", "2"), "abcd", "2d"},
		{"replacement not rescanned", pairs("a", "aa"), "aaa", "aaaaaa"},
		{"overlapping self", pairs("aa", "X"), "aaa", "Xa"},
		{"empty input", pairs("x", "y"), "", ""},
		{"shrinking", pairs("long-placeholder", "v"), "[long-placeholder]", "[v]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(tt.pairs)
			got, err := m.replace([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("replace(%q) = %q, want %q", tt.in, got, tt.want)
			}
			// The stream form must agree with the one-shot form.
			sg, err := io.ReadAll(newReplaceReader(iotest.OneByteReader(strings.NewReader(tt.in)), m, nil))
			if err != nil {
				t.Fatal(err)
			}
			if string(sg) != tt.want {
				t.Errorf("stream(%q) = %q, want %q", tt.in, sg, tt.want)
			}
		})
	}
}

// splitReader returns its input in the given chunk boundaries.
type splitReader struct {
	chunks [][]byte
}

func (r *splitReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

func TestStreamSplitAtEveryOffset(t *testing.T) {
	ph := "clawd-ph-github-0123456789abcdef0123456789abcdef"
	in := "token=" + ph + "&again=" + ph + "&end"
	want := strings.ReplaceAll(in, ph, "REAL-SECRET-VALUE")
	m := newMatcher(pairs(ph, "REAL-SECRET-VALUE"))
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			r := &splitReader{chunks: [][]byte{[]byte(in[:i]), []byte(in[i:j]), []byte(in[j:])}}
			got, err := io.ReadAll(newReplaceReader(r, m, nil))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Fatalf("split at %d,%d: got %q, want %q", i, j, got, want)
			}
		}
	}
}

func TestStreamDetectionStopsBeforePlaceholder(t *testing.T) {
	ph := "clawd-ph-other-0123456789abcdef0123456789abcdef"
	in := "prefix-" + ph + "-suffix"
	for i := 0; i <= len(in); i++ {
		var got error
		m := newMatcher([]pair{{old: []byte(ph), err: errFound}})
		r := newReplaceReader(&splitReader{chunks: [][]byte{[]byte(in[:i]), []byte(in[i:])}}, m, func(err error) { got = err })
		out, err := io.ReadAll(r)
		if !errors.Is(err, errFound) || !errors.Is(got, errFound) {
			t.Fatalf("split %d: err %v, callback %v; want errFound", i, err, got)
		}
		if bytes.Contains(out, []byte("clawd-ph")) {
			t.Fatalf("split %d: forwarded placeholder bytes: %q", i, out)
		}
		if string(out) != "prefix-" {
			t.Fatalf("split %d: out %q, want the bytes before the placeholder", i, out)
		}
	}
}

func TestStreamPropagatesSourceError(t *testing.T) {
	boom := errors.New("boom")
	r := newReplaceReader(iotest.ErrReader(boom), newMatcher(pairs("a", "b")), nil)
	if _, err := io.ReadAll(r); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func FuzzReplace(f *testing.F) {
	f.Add([]byte("a ph b"), []byte("ph"), []byte("VALUE"), []byte("xx"), uint8(3))
	f.Add([]byte("clawd-ph-a-00000000000000000000000000000000"), []byte("clawd-ph-a-00000000000000000000000000000000"), []byte("s3cr3t-value"), []byte("s3cr3t"), uint8(1))
	f.Add([]byte("aaaaaa"), []byte("aa"), []byte("a"), []byte("aaa"), uint8(2))
	f.Add([]byte(""), []byte("x"), []byte(""), []byte("y"), uint8(0))
	f.Fuzz(func(t *testing.T, in, old1, new1, old2 []byte, chunk uint8) {
		m := newMatcher([]pair{{old: old1, new: new1}, {old: old2, new: []byte("<2>")}})
		want, err := m.replace(in)
		if err != nil {
			t.Fatal(err)
		}
		// Reference: straightforward leftmost-longest scan.
		var ref []byte
		for i := 0; i < len(in); {
			switch {
			case len(old1) > 0 && bytes.HasPrefix(in[i:], old1) && (len(old1) >= len(old2) || !bytes.HasPrefix(in[i:], old2)):
				ref = append(ref, new1...)
				i += len(old1)
			case len(old2) > 0 && bytes.HasPrefix(in[i:], old2):
				ref = append(ref, "<2>"...)
				i += len(old2)
			default:
				ref = append(ref, in[i])
				i++
			}
		}
		if !bytes.Equal(want, ref) {
			t.Fatalf("replace = %q, reference %q", want, ref)
		}
		size := int(chunk%7) + 1
		var chunks [][]byte
		for i := 0; i < len(in); i += size {
			chunks = append(chunks, bytes.Clone(in[i:min(i+size, len(in))]))
		}
		got, err := io.ReadAll(newReplaceReader(&splitReader{chunks: chunks}, m, nil))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("stream in %d-byte chunks = %q, one-shot %q", size, got, want)
		}
	})
}

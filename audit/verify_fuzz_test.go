package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
)

// FuzzVerify: any input gives a report or a problem, never a panic, and a
// report without a problem is consistent with the input's lines.
func FuzzVerify(f *testing.F) {
	seed := sha256.Sum256([]byte("fuzz"))
	key := ed25519.NewKeyFromSeed(seed[:])
	pub := key.Public().(ed25519.PublicKey)
	for _, s := range []string{
		"",
		"\n",
		"{}\n",
		"not json\n",
		`{"seq":1}` + "\n",
		`{"seq":1}` + "\n" + `{"seq":2,"prev":"00"}` + "\n",
		`{"seq":-1}` + "\n",
		`{"seq":2,"prev":"` + string(bytes.Repeat([]byte("a"), 64)) + `"}` + "\n",
		`{"event":"checkpoint","seq":1,"sig":"AAAA"}` + "\n",
		`{"event":"checkpoint","seq":1,"sig":"` + string(bytes.Repeat([]byte("A"), 86)) + `=="}` + "\n",
		"{garbage\n" + `{"event":"audit_torn","seq":1,"reason":"x"}` + "\n",
		`{"time":"2026-01-01T00:00:00Z","event":"decision","bytes_in":0,"bytes_out":0,"duration_ms":0}` + "\n" + `{"seq":1}` + "\n",
		`{"seq":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range []ed25519.PublicKey{nil, pub} {
			rep, err := Verify(bytes.NewReader(b), k)
			if err != nil {
				continue
			}
			if rep.Problem != nil {
				if rep.Problem.Line < 1 || rep.Problem.Line > rep.Lines {
					t.Fatalf("problem at line %d of %d", rep.Problem.Line, rep.Lines)
				}
				continue
			}
			if rep.Lines != bytes.Count(b, []byte("\n")) {
				t.Fatalf("OK with %d lines for %d newlines", rep.Lines, bytes.Count(b, []byte("\n")))
			}
			if rep.LastSeq < rep.FirstSeq || rep.Signed > rep.Checkpoints || (k == nil && rep.Signed != 0) {
				t.Fatalf("inconsistent report %+v", rep)
			}
		}
	})
}

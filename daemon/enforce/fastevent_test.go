package enforce

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/clawd-dev/clawd/bpf"
)

// TestDecodeFastEventMatchesBinaryRead: the hand decoder of struct
// fp_event agrees with binary.Read of the generated type, field by field,
// so a layout change in clawd.c cannot go unnoticed.
func TestDecodeFastEventMatchesBinaryRead(t *testing.T) {
	if n := binary.Size(bpf.ClawdFpEvent{}); n != fastEventLen {
		t.Fatalf("sizeof(struct fp_event) = %d, fastEventLen = %d", n, fastEventLen)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		b := make([]byte, fastEventLen)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		b[60] = []byte{4, 6}[i%2]                          // family
		binary.NativeEndian.PutUint32(b[88:], uint32(i%3)) // kind
		var want bpf.ClawdFpEvent
		if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &want); err != nil {
			t.Fatal(err)
		}
		got, ok := decodeFastEvent(b)
		if !ok {
			t.Fatal("decode refused a whole event")
		}
		exp := FastEvent{Open: want.Kind == 1, Flow: flowOf(want.Cookie, want.F), BytesSent: want.BytesSent, BytesReceived: want.BytesReceived, Mono: want.Ns}
		if !reflect.DeepEqual(got, exp) {
			t.Fatalf("event %d: decoded %+v, binary.Read %+v", i, got, exp)
		}
	}
	// An older program's event (no ns): decoded, time unknown.
	old := make([]byte, fastEventLenV1)
	old[60] = 4
	if got, ok := decodeFastEvent(old); !ok || got.Mono != 0 {
		t.Fatalf("an event without ns: %+v, %v", got, ok)
	}
	if _, ok := decodeFastEvent(make([]byte, fastEventLenV1-1)); ok {
		t.Fatal("a short record was decoded")
	}
}

package usage

import (
	"encoding/binary"
	"strings"
	"testing"
)

// frame is a websocket frame: fin, opcode, payload (masked with key when
// key is not nil).
func frame(fin bool, op byte, payload string, key []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	m := byte(0)
	if key != nil {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126, 0, 0)
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = append(b, m|127, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	p := []byte(payload)
	if key != nil {
		b = append(b, key...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(b, p...)
}

const done = `{"type":"response.done","response":{"usage":{"total_tokens":1000,"input_tokens":400,"output_tokens":600}}}`

func TestWSMeter(t *testing.T) {
	big := `{"type":"response.done","pad":"` + strings.Repeat("x", 70000) + `","response":{"usage":{"total_tokens":5000}}}`
	var stream []byte
	stream = append(stream, frame(true, 1, `{"type":"response.created"}`, nil)...)
	stream = append(stream, frame(true, 1, done, nil)...)
	// A message in three fragments with a ping between them.
	stream = append(stream, frame(false, 1, done[:10], nil)...)
	stream = append(stream, frame(true, 9, "ping", nil)...)
	stream = append(stream, frame(false, 0, done[10:50], nil)...)
	stream = append(stream, frame(true, 0, done[50:], nil)...)
	stream = append(stream, frame(true, 2, "\x00binary", nil)...)
	stream = append(stream, frame(true, 1, big, nil)...)                           // 64-bit length
	stream = append(stream, frame(true, 1, done, []byte{1, 2, 3, 4})...)           // masked (not from a server, read anyway)
	stream = append(stream, frame(true, 1, `{"type":"response.created"}`, nil)...) // in progress at the end
	for _, chunk := range []int{1, 3, 7, 4096, len(stream)} {
		m := NewWSMeter()
		for i := 0; i < len(stream); i += chunk {
			m.Write(stream[i:min(i+chunk, len(stream))])
		}
		tok, unm, _ := m.Cost(Estimate{In: 10, Out: 90}, 0)
		if want := int64(1000 + 1000 + 5000 + 1000 + 100); tok != want || unm {
			t.Errorf("fed %d bytes at a time: %d tokens (unmetered %v), want %d", chunk, tok, unm, want)
		}
	}
	// A compressed frame (RSV1): unmetered, at least the estimate.
	m := NewWSMeter()
	m.Write(frame(true, 1|0x40, "compressed", nil))
	m.Write(frame(true, 1, done, nil))
	if tok, unm, why := m.Cost(Estimate{In: 10, Out: 4096}, 0); !unm || tok < 4106 || why != ReasonUpgrade {
		t.Errorf("compressed: %d %v %q, want unmetered, at least the estimate", tok, unm, why)
	}
	// No report at all: the estimate.
	if tok, unm, _ := NewWSMeter().Cost(Estimate{In: 0, Out: 4096}, 0); !unm || tok != 4096 {
		t.Errorf("no report: %d %v", tok, unm)
	}
}

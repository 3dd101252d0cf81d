package audit

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendEntry appends e as json.Marshal would encode it, byte for byte (the
// same field order and names, omitempty, HTML-safe escaping, sorted label
// keys, ES6 number formatting), without reflection or allocations. ok is
// false for values json.Marshal refuses (NaN or infinite durations, times
// outside RFC 3339): the caller then gets json.Marshal's verdict.
// TestEncodeMatchesMarshal keeps the two in step, including for fields
// added to Entry later.
func appendEntry(b []byte, e *Entry) (_ []byte, ok bool) {
	if !rfc3339OK(e.Time) || math.IsNaN(e.DurationMS) || math.IsInf(e.DurationMS, 0) {
		return b, false
	}
	b = append(b, `{"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":`...)
	b = appendString(b, e.Event)
	b = appendField(b, `,"container":`, e.Container)
	b = appendField(b, `,"container_id":`, e.ContainerID)
	b = appendField(b, `,"runtime":`, e.Runtime)
	if len(e.Labels) > 0 {
		b = append(b, `,"labels":{`...)
		b = appendLabels(b, e.Labels)
		b = append(b, '}')
	}
	b = appendField(b, `,"dst":`, e.Dst)
	b = appendField(b, `,"src":`, e.Src)
	b = appendField(b, `,"sni":`, e.SNI)
	b = appendField(b, `,"host":`, e.Host)
	b = appendField(b, `,"proto":`, e.Proto)
	b = appendField(b, `,"method":`, e.Method)
	b = appendField(b, `,"path":`, e.Path)
	b = appendField(b, `,"rule":`, e.Rule)
	b = appendField(b, `,"action":`, e.Action)
	if e.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(e.Status), 10)
	}
	b = appendField(b, `,"reason":`, e.Reason)
	b = appendField(b, `,"by":`, e.By)
	b = appendField(b, `,"approval_id":`, e.ApprovalID)
	b = appendField(b, `,"qtype":`, e.QType)
	if e.Count != 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, e.Count, 10)
	}
	b = appendField(b, `,"program":`, e.Program)
	b = appendField(b, `,"program_sha256":`, e.ProgramSHA256)
	b = appendField(b, `,"cmdline":`, e.Cmdline)
	if e.PID != 0 {
		b = append(b, `,"pid":`...)
		b = strconv.AppendUint(b, uint64(e.PID), 10)
	}
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendFloat(b, e.DurationMS)
	b = appendField(b, `,"mode":`, e.Mode)
	b = appendField(b, `,"would":`, e.Would)
	if e.Tokens != 0 {
		b = append(b, `,"tokens":`...)
		b = strconv.AppendInt(b, e.Tokens, 10)
	}
	b = appendField(b, `,"usage":`, e.Usage)
	b = appendField(b, `,"usage_reason":`, e.UsageReason)
	b = appendField(b, `,"tool":`, e.Tool) // issue 16, "mcp"
	if e.Every != 0 {
		b = append(b, `,"every":`...)
		b = strconv.AppendInt(b, e.Every, 10)
	}
	if e.IntervalMS != 0 {
		b = append(b, `,"interval_ms":`...)
		b = strconv.AppendInt(b, e.IntervalMS, 10)
	}
	if e.FileStart {
		b = append(b, `,"file_start":true`...)
	}
	// The chain's fields, last (the Logger's chain.sealLine writes them).
	if e.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, e.Seq, 10)
	}
	b = appendField(b, `,"prev":`, e.Prev)
	b = appendField(b, `,"sig":`, e.Sig)
	return append(b, '}'), true
}

// rfc3339OK reports whether time.Time.MarshalJSON accepts t: a four-digit
// year and a zone offset under 24 hours.
func rfc3339OK(t time.Time) bool {
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off > -24*3600 && off < 24*3600
}

// appendField appends key and s unless s is empty (omitempty).
func appendField(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	return appendString(b, s)
}

// appendLabels appends the members of a non-empty map in key order, as
// json.Marshal sorts map keys.
func appendLabels(b []byte, m map[string]string) []byte {
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	return b
}

// appendFloat formats f as encoding/json does for float64.
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendString appends s as a JSON string the way json.Marshal does (HTML
// escaping on): <, >, & and control characters as \u00XX (\b \f \n \r \t
// short), invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// marshalEntry is the reflection-based reference (and fallback). It takes
// a copy, so the caller's entry does not escape to the heap.
func marshalEntry(b []byte, e Entry) ([]byte, error) {
	j, err := json.Marshal(e)
	if err != nil {
		return b, err
	}
	return append(b, j...), nil
}

package usage

import (
	"testing"
	"unicode/utf16"
)

// Red team, round 2 (issue 16): request bodies whose output cap the
// estimate misses while the upstream reads it. The estimate is what a
// request reserves (concurrent requests overshoot by what it is short) and
// what an unmetered request costs, so a missed cap is tokens given away.
// See docs/attacks/16-budget-r2.md.

func utf16LE(s string) []byte {
	var b []byte
	for _, r := range utf16.Encode([]rune(s)) {
		b = append(b, byte(r), byte(r>>8))
	}
	return b
}

// HOLE: caps written as a JSON float or a numeric string read as no cap
// (4096) although lax validators (pydantic's default mode, which coerces
// 64000.0, 6.4e4 and "64000" to an int) take them; a body with a UTF-8 BOM
// or in UTF-16 (Python's json.loads of bytes detects both) hides every
// key, as does a NaN or Infinity literal (Python reads both) before the cap;
// n > 1 choices (OpenAI chat, legacy completions' best_of) multiply
// the output the estimate counts once.
func TestAttackEstimateMissesCaps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   []byte
		out    int64
		refuse bool // refusing the request (400, Estimate.Refused) is a fix too
	}{
		{"float cap", []byte(`{"model":"m","max_tokens":64000.0}`), 64000, false},
		{"exponent cap", []byte(`{"model":"m","max_tokens":6.4e4}`), 64000, false},
		{"string cap", []byte(`{"model":"m","max_tokens":"64000"}`), 64000, false},
		{"UTF-8 BOM", []byte("\xef\xbb\xbf" + `{"model":"m","max_tokens":64000}`), 64000, true},
		{"UTF-16LE", utf16LE(`{"model":"m","max_tokens":64000}`), 64000, true},
		{"UTF-16BE BOM", append([]byte{0xfe, 0xff}, utf16LE(`{"max_tokens":64000}`)[1:]...), 64000, true},
		{"Infinity before the cap", []byte(`{"temperature":Infinity,"max_tokens":64000}`), 64000, true},
		// Python's json reads NaN and Infinity (a free-form JSON schema
		// takes them); Go's stops at the first, before the cap.
		{"NaN before the cap", []byte(`{"tools":[{"name":"t","input_schema":{"type":"object","default":NaN}}],"max_tokens":64000}`), 64000, true},
		{"n choices", []byte(`{"model":"m","n":16,"max_tokens":4000}`), 64000, false},
		{"n as a float", []byte(`{"model":"m","n":16.0,"max_tokens":4000}`), 64000, false},
		{"best_of", []byte(`{"model":"m","best_of":16,"max_tokens":4000,"prompt":"x"}`), 64000, false},
		{"legacy max_tokens_to_sample", []byte(`{"model":"m","max_tokens_to_sample":64000,"prompt":"x"}`), 64000, false},
	} {
		e := EstimateRequest(int64(len(tc.body)), false, tc.body)
		if tc.refuse && e.Refused != "" {
			continue
		}
		if e.Refused != "" {
			t.Errorf("%s: %q refused (%s), want it estimated", tc.name, tc.body, e.Refused)
		}
		if e.Out < tc.out {
			t.Errorf("%s: %q estimated %d output tokens, the upstream may generate %d", tc.name, tc.body, e.Out, tc.out)
		}
	}
}

// HELD: the key shapes a JSON parser reads the same way: an escaped key,
// a duplicate key (the largest counts, whichever the upstream keeps),
// whitespace and a key long after the start of the object; a cap nested
// elsewhere is not the request's, and a negative or zero cap is refused
// by the upstream (not a way to run for free).
func TestAttackEstimateKeyShapesHold(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		out  int64
	}{
		{"escaped key", `{"max\u005ftokens":64000}`, 64000},
		{"all escaped", `{"\u006d\u0061\u0078\u005f\u0074\u006f\u006b\u0065\u006e\u0073":64000}`, 64000},
		{"duplicate, small last", `{"max_tokens":64000,"max_tokens":1}`, 64000},
		{"duplicate, small first", `{"max_tokens":1,"max_tokens":64000}`, 64000},
		{"whitespace", " \r\n\t{ \"max_tokens\" :\n 64000 }", 64000},
		{"after nested objects", `{"messages":[{"role":"user","content":[{"type":"text","text":"{\"max_tokens\":1}"}]}],"metadata":{"max_tokens":1},"max_tokens":64000}`, 64000},
		{"max_output_tokens", `{"max_output_tokens":64000}`, 64000},
		{"max_completion_tokens over max_tokens", `{"max_tokens":10,"max_completion_tokens":64000}`, 64000},
		{"huge", `{"max_tokens":99999999999999999999999}`, DefaultOutput},
	} {
		e := EstimateRequest(int64(len(tc.body)), false, []byte(tc.body))
		if e.Out < tc.out {
			t.Errorf("%s: %s estimated %d output tokens, want at least %d", tc.name, tc.body, e.Out, tc.out)
		}
	}
}

// HELD: usage near int64's limits cannot overflow a sum into a small or
// negative charge: each count is clamped.
func TestAttackMeterHugeUsage(t *testing.T) {
	for _, body := range []string{
		`{"usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":9223372036854775807,"cache_creation_input_tokens":9223372036854775807,"output_tokens":9223372036854775807}}`,
		`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807,"total_tokens":1}}`,
		`{"usage":{"prompt_tokens":-9223372036854775808,"completion_tokens":9223372036854775807,"total_tokens":-1}}`,
	} {
		m := NewMeter("application/json", "")
		m.Write([]byte(body))
		tok, unm := m.Result(true)
		if unm || tok < 1<<40 {
			t.Errorf("%s: %d tokens (unmetered %v), want at least %d", body, tok, unm, int64(1<<40))
		}
	}
}

package usage

import (
	"bytes"
	"encoding/json"
)

// Estimates (issue 16, budget). A budgeted request is admitted against
// what it may cost, reserved while it runs and settled to what it did
// cost; a request whose usage clawd could not read is charged the
// estimate (with what it did read). The estimate is deliberately rough but
// deterministic:
//
//   - input: one token per EstimateBytesPerToken bytes of the request body
//     (rounded up). The proxy decodes a compressed body for the estimate
//     (it is buffered, bounded, like any body clawd reads); one it hands
//     over still encoded counts EncodedFactor times its bytes. The prompt travels in the body, and a token of these models is
//     rarely shorter than that.
//   - output: the request's own cap on the answer, max_tokens,
//     max_output_tokens or max_completion_tokens of a JSON body (whichever
//     is largest), else DefaultOutput. A cap clawd did not find (no JSON,
//     beyond the bytes it was given, an encoded body) is DefaultOutput; the
//     proxy gives it whole bodies.

// DefaultOutput is the output estimate of a request that names no output
// cap clawd could read.
const DefaultOutput = 4096

// EstimateBytesPerToken is the input estimate's bytes per token.
const EstimateBytesPerToken = 4

// EncodedFactor multiplies the bytes of an encoded (compressed) request
// body for the input estimate.
const EncodedFactor = 4

// Estimate is what a request may cost.
type Estimate struct {
	In  int64 // input tokens
	Out int64 // output tokens
}

// Total is In + Out.
func (e Estimate) Total() int64 { return min(e.In+e.Out, maxTokens) }

// EstimateRequest estimates a request from its body's length (n; -1:
// unknown, then the bytes seen), whether it is encoded, and the first
// bytes of its body (peek; all of it, or a prefix).
func EstimateRequest(n int64, encoded bool, peek []byte) Estimate {
	if n < int64(len(peek)) {
		n = int64(len(peek))
	}
	if encoded {
		n = min(n, maxTokens) * EncodedFactor
	}
	e := Estimate{In: min((n+EstimateBytesPerToken-1)/EstimateBytesPerToken, maxTokens), Out: DefaultOutput}
	if !encoded {
		if c, ok := outputCap(peek); ok {
			e.Out = c
		}
	}
	return e
}

// outputCap finds the output cap among the top-level keys of a JSON
// object (the largest, when repeated): the keys that come whole before b
// ends (a key cut off, or one after, is not found).
func outputCap(b []byte) (int64, bool) {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return 0, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return 0, false
	}
	best, found := int64(0), false
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			break
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		switch k {
		case "max_tokens", "max_output_tokens", "max_completion_tokens":
		default:
			continue
		}
		var num json.Number
		if json.Unmarshal(v, &num) != nil {
			continue
		}
		x, err := num.Int64()
		if err != nil || x < 0 {
			// A cap clawd cannot read as a count: the default applies
			// unless another key names one.
			continue
		}
		best, found = max(best, min(x, maxTokens)), true
	}
	return best, found
}

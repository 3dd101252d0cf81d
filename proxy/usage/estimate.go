package usage

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"strconv"
	"strings"
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
//     proxy gives it whole bodies. The cap is read as the upstream's lax
//     validators read it: 64000.0, 6.4e4 and "64000" are 64000. It counts
//     once per choice: n and best_of (the larger) multiply it.
//   - input by reference: a request that names input the provider holds
//     (previous_response_id, conversation, a stored prompt, a file_id) or
//     declares tools the provider runs itself (web search and fetch, code
//     execution, file search, MCP servers) is billed input its body does
//     not carry: ReferencedInput more is estimated, and a partial report
//     (message_start) never lowers that part (Meter.Cost).
//   - a body the upstream would read differently from clawd is refused
//     (Estimate.Refused): a byte order mark, UTF-16 or UTF-32, or a whole
//     body that starts like JSON but is not valid JSON (NaN, Infinity,
//     trailing garbage). Python's json reads all of these; a cap after them
//     would be hidden from clawd.

// DefaultOutput is the output estimate of a request that names no output
// cap clawd could read.
const DefaultOutput = 4096

// ReferencedInput is the input added to the estimate of a request whose
// input is partly held by the provider (see the package comment).
const ReferencedInput = 128000

// EstimateBytesPerToken is the input estimate's bytes per token.
const EstimateBytesPerToken = 4

// EncodedFactor multiplies the bytes of an encoded (compressed) request
// body for the input estimate.
const EncodedFactor = 4

// maxChoices bounds n / best_of (OpenAI allows up to 128 and 20).
const maxChoices = 128

// Estimate is what a request may cost.
type Estimate struct {
	In  int64 // input tokens
	Out int64 // output tokens
	// Referenced: the request's input is partly held by the provider
	// (ReferencedInput is in In).
	Referenced bool
	// Stream: a JSON body with "stream": true; UsageAsked: its
	// stream_options.include_usage is true.
	Stream, UsageAsked bool
	// Refused says why the body cannot be estimated the way the upstream
	// reads it; the proxy answers 400 instead of guessing.
	Refused string
}

// Total is In + Out.
func (e Estimate) Total() int64 { return min(e.In+e.Out, maxTokens) }

// EstimateRequest estimates a request from its body's length (n; -1:
// unknown, then the bytes seen), whether it is encoded, and the first
// bytes of its body (peek; all of it, or a prefix).
func EstimateRequest(n int64, encoded bool, peek []byte) Estimate {
	whole := n == int64(len(peek))
	if n < int64(len(peek)) {
		n = int64(len(peek))
	}
	if encoded {
		n = min(n, maxTokens) * EncodedFactor
	}
	e := Estimate{In: min((n+EstimateBytesPerToken-1)/EstimateBytesPerToken, maxTokens), Out: DefaultOutput}
	if encoded {
		return e
	}
	if why := notPlainJSON(peek, whole); why != "" {
		e.Refused = why
		return e
	}
	f := readFields(peek)
	if f.capFound {
		e.Out = f.cap
	}
	e.Out = min(e.Out*max(f.choices, 1), maxTokens)
	e.Stream, e.UsageAsked = f.stream, f.usageAsked
	if f.referenced || bytes.Contains(peek, []byte(`"file_id"`)) {
		e.Referenced = true
		e.In = min(e.In+ReferencedInput, maxTokens)
	}
	return e
}

// notPlainJSON says why a body is JSON the upstream may read while clawd
// cannot: a byte order mark, UTF-16/32 (NUL bytes among the first four,
// which UTF-8 JSON never has), or (whole: the entire body is given) a body
// that starts as a JSON object and is not valid JSON.
func notPlainJSON(b []byte, whole bool) string {
	switch {
	case bytes.HasPrefix(b, []byte("\xef\xbb\xbf")), bytes.HasPrefix(b, []byte("\xfe\xff")), bytes.HasPrefix(b, []byte("\xff\xfe")):
		return "the request body starts with a byte order mark; send UTF-8 JSON without one"
	case len(b) >= 2 && bytes.IndexByte(b[:min(len(b), 4)], 0) >= 0:
		return "the request body is not UTF-8 (UTF-16 or UTF-32); send UTF-8 JSON"
	}
	t := bytes.TrimLeft(b, " \t\r\n")
	if whole && len(t) > 0 && t[0] == '{' && !validJSONValues(t) {
		return "the request body starts as JSON but is not valid JSON (NaN, Infinity or other values JSON does not have, trailing bytes); send standard JSON"
	}
	return ""
}

// validJSONValues says whether b is one or more JSON values (a JSON body,
// or JSON Lines: batch input files) and nothing else.
func validJSONValues(b []byte) bool {
	if json.Valid(b) {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var v json.RawMessage
		switch err := dec.Decode(&v); err {
		case nil:
		case io.EOF:
			return true
		default:
			return false
		}
	}
}

// fields are what the estimate reads of a request's top-level keys.
type fields struct {
	cap        int64
	capFound   bool
	choices    int64
	stream     bool
	usageAsked bool
	referenced bool
}

// readFields reads the top-level keys of a JSON object that come whole
// before b ends (a key cut off, or one after, is not found). Repeated
// keys: the largest cap counts, the last of the others (as parsers keep).
func readFields(b []byte) fields {
	var f fields
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return f
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return f
	}
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
		case "max_tokens", "max_output_tokens", "max_completion_tokens", "max_tokens_to_sample":
			if x, ok := count(v); ok {
				f.cap, f.capFound = max(f.cap, min(x, maxTokens)), true
			}
		case "n", "best_of":
			if x, ok := count(v); ok {
				f.choices = max(f.choices, min(x, maxChoices))
			}
		case "stream":
			f.stream = string(v) == "true"
		case "stream_options":
			var o struct {
				IncludeUsage bool `json:"include_usage"`
			}
			f.usageAsked = json.Unmarshal(v, &o) == nil && o.IncludeUsage
		case "previous_response_id", "conversation", "container", "mcp_servers":
			f.referenced = f.referenced || string(v) != "null"
		case "prompt":
			f.referenced = f.referenced || len(v) > 0 && v[0] == '{'
		case "tools":
			f.referenced = f.referenced || serverTools(v)
		}
	}
	return f
}

// count reads a count the way lax validators do: a JSON number or a
// numeric string, integral (64000.0 and 6.4e4 are 64000), not negative.
func count(v json.RawMessage) (int64, bool) {
	var num json.Number
	if json.Unmarshal(v, &num) != nil {
		return 0, false
	}
	if x, err := num.Int64(); err == nil {
		return x, x >= 0
	}
	x, err := strconv.ParseFloat(string(num), 64)
	if err != nil || x < 0 || x != math.Trunc(x) || x >= 1<<62 {
		// A cap clawd cannot read as a count: the default applies
		// unless another key names one.
		return 0, false
	}
	return int64(x), true
}

// serverTools says whether a tools list declares a tool the provider runs
// itself: any typed tool other than one the client runs (OpenAI
// "function" / "custom", Anthropic tools without a type or "custom", and
// the client-executed bash, text editor, computer, memory and shell tools).
func serverTools(v json.RawMessage) bool {
	var tools []struct {
		Type *string `json:"type"`
	}
	if json.Unmarshal(v, &tools) != nil {
		return false
	}
	for _, t := range tools {
		if t.Type == nil || *t.Type == "function" || *t.Type == "custom" {
			continue
		}
		client := false
		for _, p := range []string{"bash_", "text_editor_", "computer_", "memory_", "local_shell"} {
			client = client || strings.HasPrefix(*t.Type, p)
		}
		if !client {
			return true
		}
	}
	return false
}

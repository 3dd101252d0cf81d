// Package usage keeps LLM token budgets: it reads the usage an LLM API
// reports in its answers (Meter) and keeps what each container spent per
// budget rule and window, persisted across restarts (Ledger).
//
// Dialects are told apart by the answer's shape, not by configuration:
//   - Anthropic Messages: JSON `usage` and SSE `message_start`
//     (message.usage) + `message_delta` (usage, cumulative). A request costs
//     input_tokens + cache_creation_input_tokens + cache_read_input_tokens
//   - output_tokens: every token the provider processed (and bills).
//   - OpenAI Chat Completions: JSON `usage.total_tokens`; streamed chunks
//     carry usage only in the last chunk, and only when the request asked
//     for it (stream_options.include_usage).
//   - OpenAI Responses: JSON `usage.total_tokens`; SSE `response.completed`
//     (also response.incomplete and response.failed) `response.usage`.
//
// Only a closing usage report makes an answer metered: every other
// answered request (2xx or an upgrade) is unmetered, whatever its shape:
// a stream cut off or that ended without its final usage (the proxy asks
// chat streams for theirs, and reads on when the agent hangs up), a JSON
// answer cut off, undecodable
// or without usage (a model list, a token count, an endpoint clawd does
// not know), an encoding clawd does not read, another content type (audio,
// text), an oversized JSON body, a websocket whose frames WSMeter cannot
// read (or reports no response.done), a request the agent hung up on before
// the answer's head (the provider was generating). An unmetered request costs the
// request's estimate (Estimate) with what was read (Meter.Cost): dodging
// the accounting never makes a request cheaper than asking for it. An
// error answer (3xx and up) costs what it reported, usually nothing: the
// provider generated nothing the agent got.
package usage

import (
	"bytes"
	"encoding/json"
	"mime"
	"strings"
)

// Bounds of what the Meter keeps: an SSE line, a JSON answer. Beyond them
// the answer is unmetered (charged the budget's unmetered cost).
const (
	maxLine = 1 << 20
	maxJSON = 8 << 20
	// maxTokens caps one reported count: a hostile or broken number cannot
	// overflow the sums.
	maxTokens = 1 << 40
)

// Meter reads usage from the bytes of one answer as they stream past. It
// never holds bytes back from anyone: Write copies what it needs.
type Meter struct {
	sse     bool
	json    bool
	broken  bool // encoded, or over a bound
	encoded bool // a Content-Encoding clawd does not read
	other   bool // a content type clawd reads no usage from
	inSeen  bool // the input count was read (message_start)

	buf  bytes.Buffer // the current SSE line (or its tail), or the JSON body so far
	long bool         // the current SSE line is over maxLine
	head []byte       // ... and its first longHead bytes

	in, out int64 // Anthropic-shaped: input (with cache) and output, max seen
	total   int64 // OpenAI-shaped total, max seen
	final   bool  // a closing usage was read
}

// NewMeter returns a Meter for an answer with the given Content-Type and
// Content-Encoding. Only identity-encoded JSON and event streams are read.
func NewMeter(contentType, contentEncoding string) *Meter {
	m := &Meter{}
	if ce := strings.TrimSpace(strings.ToLower(contentEncoding)); ce != "" && ce != "identity" {
		m.broken, m.encoded = true, true
		return m
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "text/event-stream":
		m.sse = true
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		m.json = true
	default:
		m.other = true
	}
	return m
}

// Write feeds answer bytes; it always succeeds.
func (m *Meter) Write(p []byte) (int, error) {
	n := len(p)
	if m.broken || m.other {
		return n, nil
	}
	if m.json {
		if m.buf.Len()+len(p) > maxJSON {
			m.broken = true
			m.buf = bytes.Buffer{}
			return n, nil
		}
		m.buf.Write(p)
		return n, nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m.lineWrite(p)
			break
		}
		m.lineWrite(p[:i])
		if m.long {
			m.longLine()
		} else {
			m.line(m.buf.Bytes())
		}
		m.buf.Reset()
		m.long, m.head = false, nil
		p = p[i+1:]
	}
	return n, nil
}

// lineWrite adds p to the current SSE line. A line over maxLine (OpenAI's
// response.completed echoes the whole response) keeps its head and its
// last longTail bytes, where the closing usage is (longLine).
func (m *Meter) lineWrite(p []byte) {
	if !m.long && m.buf.Len()+len(p) <= maxLine {
		m.buf.Write(p)
		return
	}
	m.buf.Write(p)
	if !m.long {
		m.long = true
		m.head = bytes.Clone(m.buf.Bytes()[:min(m.buf.Len(), longHead)])
	}
	if m.buf.Len() > 2*longTail {
		tail := bytes.Clone(m.buf.Bytes()[m.buf.Len()-longTail:])
		m.buf.Reset()
		m.buf.Write(tail)
	}
}

// Of a line over maxLine, what is kept: its head (for the event's type)
// and its tail (for the usage).
const (
	longHead = 512
	longTail = 64 << 10
)

// longLine reads an SSE data line over maxLine: the event's type from its
// head, and the last "usage" object in its tail. A "usage": key cannot be
// forged inside a JSON string (its quotes would be escaped), and a
// response's own usage comes after its output.
func (m *Meter) longLine() {
	data, ok := bytes.CutPrefix(m.head, []byte("data:"))
	if !ok {
		return
	}
	typ := ""
	if i := bytes.Index(data, []byte(`"type":`)); i >= 0 {
		dec := json.NewDecoder(bytes.NewReader(data[i+len(`"type":`):]))
		var s string
		if dec.Decode(&s) == nil {
			typ = s
		}
	}
	tail := m.buf.Bytes()
	i := bytes.LastIndex(tail, []byte(`"usage":`))
	if i < 0 {
		return
	}
	var u wireUsage
	if json.NewDecoder(bytes.NewReader(tail[i+len(`"usage":`):])).Decode(&u) != nil {
		return
	}
	m.apply(typ, &u)
}

// line handles one SSE line: only data fields holding JSON matter.
func (m *Meter) line(l []byte) {
	l = bytes.TrimSuffix(l, []byte("\r"))
	data, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok {
		return
	}
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '{' {
		m.event(data)
	}
}

type wireUsage struct {
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
	CacheCreation    int64 `json:"cache_creation_input_tokens"`
	CacheRead        int64 `json:"cache_read_input_tokens"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

type wireEvent struct {
	Type    string     `json:"type"`
	Usage   *wireUsage `json:"usage"`
	Message *struct {
		Usage *wireUsage `json:"usage"`
	} `json:"message"`
	Response *struct {
		Usage *wireUsage `json:"usage"`
	} `json:"response"`
}

func clamp(v int64) int64 {
	if v < 0 {
		return 0
	}
	return min(v, maxTokens)
}

// event reads one JSON object (an SSE event's data or a whole answer).
// Counts only ever grow: a later, smaller report cannot undo an earlier one.
func (m *Meter) event(data []byte) {
	var e wireEvent
	if json.Unmarshal(data, &e) != nil {
		return
	}
	u := e.Usage
	if u == nil && e.Message != nil {
		u = e.Message.Usage
	}
	if u == nil && e.Response != nil {
		u = e.Response.Usage
	}
	if u == nil {
		return
	}
	m.apply(e.Type, u)
}

// apply counts one usage report of an event of type typ.
func (m *Meter) apply(typ string, u *wireUsage) {
	e := struct{ Type string }{typ}
	if t := clamp(u.TotalTokens); t > 0 || u.PromptTokens > 0 || u.CompletionTokens > 0 {
		t = max(t, clamp(u.PromptTokens)+clamp(u.CompletionTokens))
		m.total = max(m.total, t)
	} else {
		m.in = max(m.in, clamp(u.InputTokens)+clamp(u.CacheCreation)+clamp(u.CacheRead))
		// Anthropic's message_start reports the whole input.
		m.inSeen = m.inSeen || e.Type == "message_start" && m.in > 0
		m.out = max(m.out, clamp(u.OutputTokens))
	}
	// Anthropic's message_start reports the input and a first output
	// count; every other event with a usage object closes the count
	// (message_delta, an OpenAI chat's last chunk, response.completed, a
	// whole JSON answer).
	// A closing report that counts no token at all (OpenAI's
	// transcriptions report {"type":"duration","seconds":N}) reads as
	// none: no generation of these APIs costs nothing.
	if e.Type != "message_start" && max(m.in+m.out, m.total) > 0 {
		m.final = true
	}
}

// Result is the tokens read and whether the answer is unmetered: its
// closing usage was not read (see the package comment). complete says the
// answer's body arrived whole; a closing usage read before an abort still
// counts (the provider reported its final count).
func (m *Meter) Result(complete bool) (tokens int64, unmetered bool) {
	m.finishJSON()
	return max(m.in+m.out, m.total), !m.final
}

func (m *Meter) finishJSON() {
	if m.json && !m.broken {
		// A cut-off answer does not parse; a whole one the agent
		// closed before EOF still reports its final usage.
		m.event(m.buf.Bytes())
		m.buf = bytes.Buffer{}
		m.json = false
	}
}

// Final says whether the closing usage was read.
func (m *Meter) Final() bool { return m.final }

// Unmetered reasons, for the audit line.
const (
	ReasonEncoded   = "encoded answer"
	ReasonOversized = "answer over the size clawd reads"
	ReasonType      = "content type without usage"
	ReasonCut       = "answer cut off before its usage"
	ReasonNoUsage   = "no usage in the answer"
	ReasonUpgrade   = "upgraded connection"
	ReasonAbandoned = "agent went away before the answer"
)

// Cost is what the answer costs when est was the request's estimate:
// what the closing usage says when it was read; else (unmetered, with a
// reason) the input read (Anthropic's message_start) or estimated, plus the
// larger of the output read so far and the estimated output, and at least
// floor (the rule's unmetered charge). A partial report never lowers the
// charge below the estimate.
func (m *Meter) Cost(complete bool, est Estimate, floor int64) (tokens int64, unmetered bool, reason string) {
	m.finishJSON()
	if m.final {
		return max(m.in+m.out, m.total), false, ""
	}
	in := est.In
	if m.inSeen && !est.Referenced {
		in = m.in
	} else if m.inSeen {
		// Input the provider holds or adds during the turn (server
		// tools) is not all in message_start: it lowers nothing.
		in = max(in, m.in)
	}
	tokens = min(max(in+max(m.out, est.Out), m.total, floor), maxTokens)
	switch {
	case m.encoded:
		reason = ReasonEncoded
	case m.broken:
		reason = ReasonOversized
	case m.other:
		reason = ReasonType
	case !complete:
		reason = ReasonCut
	default:
		reason = ReasonNoUsage
	}
	return tokens, true, reason
}

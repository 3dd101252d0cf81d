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
// An answer that may have been a generation whose final usage was not read
// (a stream the agent aborted, a chat stream without include_usage, a JSON
// answer cut off, an encoding clawd does not read, an oversized body) costs
// what was read plus the budget's unmetered charge (policy.Budget.Charge),
// which by default is the whole token budget: dodging the accounting
// spends the budget. A whole JSON answer without usage (a model list, a
// token count, telemetry) costs nothing. See Meter.Result.
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
	other   bool // a content type that is no generation
	wasJSON bool // the JSON body was read (Result ran)

	buf bytes.Buffer // the current SSE line, or the JSON body so far

	in, out int64 // Anthropic-shaped: input (with cache) and output, max seen
	total   int64 // OpenAI-shaped total, max seen
	final   bool  // a closing usage was read
}

// NewMeter returns a Meter for an answer with the given Content-Type and
// Content-Encoding. Only identity-encoded JSON and event streams are read.
func NewMeter(contentType, contentEncoding string) *Meter {
	m := &Meter{}
	if ce := strings.TrimSpace(strings.ToLower(contentEncoding)); ce != "" && ce != "identity" {
		m.broken = true
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
			if m.buf.Len()+len(p) > maxLine {
				m.broken = true
				m.buf = bytes.Buffer{}
				return n, nil
			}
			m.buf.Write(p)
			break
		}
		if m.buf.Len()+i > maxLine {
			m.broken = true
			m.buf = bytes.Buffer{}
			return n, nil
		}
		m.buf.Write(p[:i])
		m.line(m.buf.Bytes())
		m.buf.Reset()
		p = p[i+1:]
	}
	return n, nil
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
	if t := clamp(u.TotalTokens); t > 0 || u.PromptTokens > 0 || u.CompletionTokens > 0 {
		t = max(t, clamp(u.PromptTokens)+clamp(u.CompletionTokens))
		m.total = max(m.total, t)
	} else {
		m.in = max(m.in, clamp(u.InputTokens)+clamp(u.CacheCreation)+clamp(u.CacheRead))
		m.out = max(m.out, clamp(u.OutputTokens))
	}
	// Anthropic's message_start reports the input and a first output
	// count; every other event with a usage object closes the count
	// (message_delta, an OpenAI chat's last chunk, response.completed, a
	// whole JSON answer).
	if e.Type != "message_start" {
		m.final = true
	}
}

// Result is the tokens read and whether the answer is unmetered: it may
// have been a generation whose final usage clawd did not read, so the
// caller adds the budget's unmetered charge. complete says the answer's
// body arrived whole (the upstream ended it, not the agent or an error).
//
//   - an event stream is unmetered unless its final usage was read (an
//     aborted stream, a chat stream without include_usage);
//   - a JSON answer that arrived whole is what its usage says; one without
//     usage is no generation (model lists, token counts, telemetry) and
//     costs nothing; a JSON answer cut off before its end is unmetered;
//   - an encoded or oversized answer is unmetered; another content type
//     (text, HTML) is no generation of these APIs and costs nothing.
func (m *Meter) Result(complete bool) (tokens int64, unmetered bool) {
	if m.json && !m.broken {
		m.event(m.buf.Bytes())
		m.buf = bytes.Buffer{}
		m.json = false
		m.wasJSON = true
	}
	tokens = max(m.in+m.out, m.total)
	switch {
	case m.broken:
		return tokens, true
	case m.sse:
		return tokens, !m.final
	case m.wasJSON:
		return tokens, !complete && !m.final
	}
	return tokens, false
}

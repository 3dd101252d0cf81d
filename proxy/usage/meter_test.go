package usage

import (
	"strings"
	"testing"
)

func meter(t *testing.T, ct, ce string, chunks ...string) (int64, bool) {
	t.Helper()
	m := NewMeter(ct, ce)
	for _, c := range chunks {
		if n, err := m.Write([]byte(c)); n != len(c) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	tokens, unmetered := m.Result(true)
	return tokens, !unmetered
}

const anthropicSSE = "event: message_start\n" +
	`data: {"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":25,"cache_creation_input_tokens":5,"cache_read_input_tokens":10,"output_tokens":1}}}` + "\n\n" +
	"event: content_block_delta\n" +
	`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}` + "\n\n" +
	"event: message_delta\n" +
	`data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}` + "\n\n" +
	"event: message_stop\n" + `data: {"type":"message_stop"}` + "\n\n"

func TestMeterDialects(t *testing.T) {
	cases := []struct {
		name, ct, body string
		want           int64
		final          bool
	}{
		{"anthropic json", "application/json", `{"type":"message","usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":7}}`, 22, true},
		{"anthropic sse", "text/event-stream; charset=utf-8", anthropicSSE, 55, true},
		{"anthropic sse cut after message_start", "text/event-stream", anthropicSSE[:strings.Index(anthropicSSE, "event: message_delta")], 41, false},
		{"openai chat json", "application/json", `{"object":"chat.completion","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}`, 21, true},
		{"openai chat stream with usage", "text/event-stream", "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6,\"total_tokens\":10}}\n\ndata: [DONE]\n\n", 10, true},
		{"openai chat stream without usage", "text/event-stream", "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n", 0, false},
		// Only a closing usage report meters an answer: a whole answer
		// without one (a token count, a model list, an endpoint clawd
		// does not know, another content type) is unmetered and the
		// caller charges its estimate (red team, issue 16: unread shapes
		// cost nothing).
		{"count_tokens", "application/json", `{"input_tokens":1234}`, 0, false},
		{"no usage", "application/json", `{"type":"error","error":{"type":"overloaded_error"}}`, 0, false},
		{"not json", "application/json", `<html>`, 0, false},
		{"truncated json", "application/json", `{"usage":{"total_tokens":5`, 0, false},
		{"html", "text/html", `{"usage":{"total_tokens":5}}`, 0, false},
		{"audio", "audio/mpeg", "ID3\x04", 0, false},
		{"no content type", "", `{"usage":{"total_tokens":5}}`, 0, false},
		{"usage without tokens (transcription by duration)", "application/json", `{"text":"hi","usage":{"type":"duration","seconds":12}}`, 0, false},
		{"zero usage", "application/json", `{"usage":{"input_tokens":0,"output_tokens":0}}`, 0, false},
		{"json usage only in message_start", "application/json", `{"type":"message_start","message":{"usage":{"input_tokens":5}}}`, 5, false},
		{"openai responses json", "application/json", `{"object":"response","usage":{"input_tokens":30,"output_tokens":8,"total_tokens":38}}`, 38, true},
		{"openai responses sse", "text/event-stream", "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\nevent: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":30,\"output_tokens\":8,\"total_tokens\":38}}}\r\n\r\n", 38, true},
		// Hostile or broken numbers never subtract or overflow.
		{"negative counts", "application/json", `{"usage":{"input_tokens":-500,"output_tokens":3}}`, 3, true},
		{"huge counts", "application/json", `{"usage":{"total_tokens":99999999999999999}}`, maxTokens, true},
		{"a smaller later report does not undo", "text/event-stream", "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":50}}\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n", 50, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, final := meter(t, c.ct, "", c.body)
			if got != c.want || final != c.final {
				t.Fatalf("Result = %d, %v; want %d, %v", got, final, c.want, c.final)
			}
			// Fragmentation: byte by byte gives the same answer.
			var chunks []string
			for i := range c.body {
				chunks = append(chunks, c.body[i:i+1])
			}
			if got, final := meter(t, c.ct, "", chunks...); got != c.want || final != c.final {
				t.Fatalf("byte by byte: Result = %d, %v; want %d, %v", got, final, c.want, c.final)
			}
		})
	}
}

func TestMeterRefusesWhatItCannotRead(t *testing.T) {
	// An encoded answer is not read: it is unmetered (not final).
	for _, ce := range []string{"gzip", "br", "GZIP", "deflate"} {
		if _, final := meter(t, "application/json", ce, `{"usage":{"total_tokens":5}}`); final {
			t.Errorf("Content-Encoding %s read as final", ce)
		}
	}
	if got, final := meter(t, "application/json", "identity", `{"usage":{"total_tokens":5}}`); got != 5 || !final {
		t.Errorf("identity: %d, %v", got, final)
	}
	// A line longer than the bound (round 2: OpenAI's response.completed
	// echoes the whole response) no longer breaks the meter: its head
	// and tail are kept, the usage at its end is read, and lines after it
	// are read as ever (lines are newline-delimited: nothing loses sync).
	long := "data: " + strings.Repeat("x", maxLine+10) + "\ndata: {\"usage\":{\"total_tokens\":5}}\n"
	if got, final := meter(t, "text/event-stream", "", long); !final || got != 5 {
		t.Errorf("over-long SSE line, then a usage: %d, %v; want 5, final", got, final)
	}
	completed := "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"text\":\"" +
		strings.Repeat("\\\"usage\\\":{\\\"total_tokens\\\":1}", maxLine/20) + "\"}],\"usage\":{\"input_tokens\":70000,\"output_tokens\":30000,\"total_tokens\":100000}}}\n\n"
	if got, final := meter(t, "text/event-stream", "", completed); !final || got != 100000 {
		t.Errorf("response.completed over maxLine: %d, %v; want 100000 (its own usage, not the escaped ones in its text), final", got, final)
	}
	// Its head says which event it is: a long message_start is not final.
	start := "data: {\"type\":\"message_start\",\"message\":{\"pad\":\"" + strings.Repeat("x", maxLine) + "\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n"
	if got, final := meter(t, "text/event-stream", "", start); final || got != 10 {
		t.Errorf("long message_start: %d, %v; want 10, not final", got, final)
	}
	big := `{"pad":"` + strings.Repeat("x", maxJSON) + `","usage":{"total_tokens":5}}`
	if _, final := meter(t, "application/json", "", big); final {
		t.Error("oversized JSON read as final")
	}
}

// A JSON answer the agent cut off before its end is unmetered, whatever
// it held; the same answer whole is metered.
func TestMeterCutJSON(t *testing.T) {
	body := `{"type":"message","content":[{"type":"text","text":"long answer"}],"usage":{"input_tokens":10,"output_tokens":900}}`
	m := NewMeter("application/json", "")
	m.Write([]byte(body[:40]))
	if _, unmetered := m.Result(false); !unmetered {
		t.Fatal("cut JSON answer metered")
	}
	m = NewMeter("application/json", "")
	m.Write([]byte(body))
	if n, unmetered := m.Result(false); unmetered || n != 910 {
		// The usage was read even though the agent closed before EOF.
		t.Fatalf("whole JSON answer read before EOF: %d, %v", n, unmetered)
	}
}

func FuzzMeter(f *testing.F) {
	f.Add("text/event-stream", anthropicSSE)
	f.Add("application/json", `{"usage":{"input_tokens":1,"output_tokens":2}}`)
	f.Add("text/event-stream", "data: {\"usage\":{\"total_tokens\":3}}\r\n")
	f.Fuzz(func(t *testing.T, ct, body string) {
		m := NewMeter(ct, "")
		m.Write([]byte(body))
		n, _ := m.Result(len(body)%2 == 0)
		if n < 0 || n > 2*maxTokens {
			t.Fatalf("tokens %d out of range", n)
		}
	})
}

// Red team (issue 16): an unmetered answer costs its estimate with what
// was read; an Anthropic stream aborted after message_start is charged the
// input it reported and the larger of the output seen and the output
// estimate, never the smaller partial count.
func TestMeterCost(t *testing.T) {
	est := Estimate{In: 500, Out: 2000}
	cut := anthropicSSE[:strings.Index(anthropicSSE, "event: message_delta")]
	cases := []struct {
		name, ct, ce, body string
		complete           bool
		floor              int64
		want               int64
		unmetered          bool
		reason             string
	}{
		{"whole stream", "text/event-stream", "", anthropicSSE, true, 0, 55, false, ""},
		{"abort after message_start", "text/event-stream", "", cut, false, 0, 40 + 2000, true, ReasonCut},
		{"abort after message_start, floor", "text/event-stream", "", cut, false, 9000, 9000, true, ReasonCut},
		{"stream without usage", "text/event-stream", "", "data: {\"choices\":[]}\n\ndata: [DONE]\n\n", true, 0, 2500, true, ReasonNoUsage},
		{"gzip", "application/json", "gzip", "\x1f\x8b", true, 0, 2500, true, ReasonEncoded},
		{"br", "application/json", "br", "x", true, 0, 2500, true, ReasonEncoded},
		{"audio", "audio/mpeg", "", "ID3", true, 0, 2500, true, ReasonType},
		{"undecodable json", "application/json", "", "{nope", true, 0, 2500, true, ReasonNoUsage},
		{"truncated json", "application/json", "", `{"usage":{"input_tokens":9`, false, 0, 2500, true, ReasonCut},
		{"model list", "application/json", "", `{"data":[{"id":"m"}]}`, true, 0, 2500, true, ReasonNoUsage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewMeter(c.ct, c.ce)
			m.Write([]byte(c.body))
			got, unmetered, reason := m.Cost(c.complete, est, c.floor)
			if got != c.want || unmetered != c.unmetered || reason != c.reason {
				t.Fatalf("Cost = %d, %v, %q; want %d, %v, %q", got, unmetered, reason, c.want, c.unmetered, c.reason)
			}
		})
	}
}

func TestEstimateRequest(t *testing.T) {
	cases := []struct {
		name    string
		n       int64
		encoded bool
		peek    string
		want    Estimate
	}{
		{"anthropic", -1, false, `{"model":"m","max_tokens":64,"messages":[]}`, Estimate{In: 11, Out: 64}},
		{"openai responses", -1, false, `{"max_output_tokens":100}`, Estimate{In: 7, Out: 100}},
		{"repeated keys: the largest", -1, false, `{"max_tokens":1,"max_completion_tokens":900,"max_tokens":5}`, Estimate{In: 15, Out: 900}},
		{"no cap", -1, false, `{"model":"m"}`, Estimate{In: 4, Out: DefaultOutput}},
		{"nested cap does not count", -1, false, `{"x":{"max_tokens":1}}`, Estimate{In: 6, Out: DefaultOutput}},
		{"cap after the peek", 1 << 20, false, `{"messages":[{"role":"user","content":"aaaa`, Estimate{In: 1 << 18, Out: DefaultOutput}},
		{"a quoted number counts", -1, false, `{"max_tokens":"1"}`, Estimate{In: 5, Out: 1}},
		{"not a number", -1, false, `{"max_tokens":"lots"}`, Estimate{In: 6, Out: DefaultOutput}},
		{"float", -1, false, `{"max_tokens":1.5}`, Estimate{In: 5, Out: DefaultOutput}},
		{"encoded", 100, true, `{"max_tokens":1}`, Estimate{In: 100, Out: DefaultOutput}},
		{"no body", 0, false, "", Estimate{In: 0, Out: DefaultOutput}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := EstimateRequest(c.n, c.encoded, []byte(c.peek)); got != c.want {
				t.Fatalf("EstimateRequest = %+v, want %+v", got, c.want)
			}
		})
	}
}

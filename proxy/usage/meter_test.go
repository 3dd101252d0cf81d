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
		// Whole answers that are no generation cost nothing (metered).
		{"count_tokens", "application/json", `{"input_tokens":1234}`, 0, true},
		{"no usage", "application/json", `{"type":"error","error":{"type":"overloaded_error"}}`, 0, true},
		{"not json", "application/json", `<html>`, 0, true},
		{"html", "text/html", `{"usage":{"total_tokens":5}}`, 0, true},
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
	// A line longer than the bound breaks the meter for good: a usage
	// event after it does not count as final.
	long := "data: " + strings.Repeat("x", maxLine+10) + "\ndata: {\"usage\":{\"total_tokens\":5}}\n"
	if _, final := meter(t, "text/event-stream", "", long); final {
		t.Error("over-long SSE line: later usage read as final")
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

package proxy

// MCP tool calls (issue 16, "mcp"): carrying out what an `mcp: true` rule
// decided (the decision itself is policy.Decide's, called by gate.go):
// JSON-RPC answers for refused calls, one audit line per call of a batch,
// the tools on the approval card, and tools/list filtering of the
// server's answers, in JSON and in event streams.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/mcp"
	"github.com/clawd-dev/clawd/policy"
)

// mcpDeniedCode is the JSON-RPC error code of calls clawd refuses (the
// implementation-defined server error range, -32000 to -32099).
const mcpDeniedCode = -32010

// maxMCPResponse bounds a JSON answer clawd reads whole to filter its
// tools/list result.
const maxMCPResponse = 16 << 20

type rpcError struct {
	Code    int       `json:"code"`
	Message string    `json:"message"`
	Data    rpcDetail `json:"data"`
}

type rpcDetail struct {
	Error  string `json:"error"`
	Rule   string `json:"rule,omitempty"`
	Tool   string `json:"tool,omitempty"`
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
	// NextSteps is what a 403's next_steps is (issue 16 C): the tools
	// entry's, else the rule's, else clawd's hint for the error.
	NextSteps string `json:"next_steps,omitempty"`
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   rpcError        `json:"error"`
}

// mcpContentTypeRefused is the error of a request to an MCP host whose
// Content-Type clawd refused (mcp.ContentType).
const mcpContentTypeRefused = "mcp_content_type_refused"

// mcpRefusalStatus is the HTTP status of a JSON-RPC refusal. A Streamable
// HTTP client (its Accept lists text/event-stream, as the transport
// requires) reads a 200's body as the answer, so it gets the JSON-RPC error
// as the call's result. Any other client gets 403 with the same body: the
// legacy HTTP+SSE client reads answers only from its GET stream and
// discards the body of a 2xx POST, so a 200 left its call hanging to its
// timeout; on a 4xx it fails the call with the body ("Error POSTing to
// endpoint (HTTP 403): {...}"). A refused Content-Type is 415 to every
// client: the request was not one clawd reads.
func mcpRefusalStatus(r *http.Request, md *policy.MCPDecision) int {
	if md.ContentTypeRefused != "" {
		return http.StatusUnsupportedMediaType
	}
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := mime.ParseMediaType(part)
			if strings.EqualFold(mt, "text/event-stream") {
				return http.StatusOK
			}
		}
	}
	return http.StatusForbidden
}

// writeMCPRefusal answers every request (message with an id) of an MCP
// body that clawd does not forward with a JSON-RPC error, in the shape the
// agent sent (one message or a batch), so MCP clients show the reason for
// the call they made. why gives each call's error and reason. It returns
// false, writing nothing, when the body has no request to answer (only
// notifications or responses, or a body that is not JSON-RPC): then the
// caller answers with clawd's plain HTTP refusal. ruleSteps is the deciding
// rule's next_steps.
func writeMCPRefusal(w http.ResponseWriter, r *http.Request, md *policy.MCPDecision, rule, ruleSteps string, why func(i int, c policy.MCPCall) (code, reason, by string)) bool {
	if md == nil || md.Invalid != "" {
		return false
	}
	var out []rpcResponse
	for i, c := range md.Calls {
		if c.Kind != mcp.Request {
			continue
		}
		code, reason, by := why(i, c)
		msg := "clawd: " + reason
		steps := c.NextSteps
		if steps == "" {
			steps = ruleSteps
		}
		if steps == "" {
			steps = nextStepsFor(code)
		}
		out = append(out, rpcResponse{JSONRPC: "2.0", ID: c.ID, Error: rpcError{Code: mcpDeniedCode, Message: msg,
			Data: rpcDetail{Error: code, Rule: rule, Tool: c.Tool, Reason: reason, By: by, NextSteps: steps}}})
	}
	if len(out) == 0 {
		return false
	}
	var b []byte
	if md.Batch {
		b, _ = json.Marshal(out)
	} else {
		b, _ = json.Marshal(out[0])
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	status := mcpRefusalStatus(r, md)
	if status == http.StatusForbidden {
		h.Set("x-should-retry", "false")
	}
	w.WriteHeader(status)
	w.Write(b)
	return true
}

// mcpDenied answers a request an mcp rule denied.
func mcpDenied(w http.ResponseWriter, r *http.Request, d policy.Decision) bool {
	return writeMCPRefusal(w, r, d.MCP, d.Rule, d.NextSteps, func(i int, c policy.MCPCall) (string, string, string) {
		if d.MCP.ContentTypeRefused != "" {
			return mcpContentTypeRefused, d.MCP.ContentTypeRefused, ""
		}
		if c.Action == policy.Deny {
			return "blocked_by_policy", c.Reason, ""
		}
		return "blocked_by_policy", fmt.Sprintf("not forwarded: %s (clawd forwards a batch whole or not at all)", d.Reason), ""
	})
}

// mcpNotApproved answers a held MCP request that was not approved.
func mcpNotApproved(w http.ResponseWriter, r *http.Request, d policy.Decision, out approval.Outcome) bool {
	code := "denied_by_approver"
	switch out.Status {
	case approval.StatusTimeout:
		code = "approval_timeout"
	case approval.StatusRestarting, approval.StatusLimit:
		return false // retryable: the HTTP answer's status and Retry-After say so
	}
	reason := out.Reason
	if reason == "" {
		reason = "the approver did not allow this request"
	}
	return writeMCPRefusal(w, r, d.MCP, d.Rule, d.NextSteps, func(int, policy.MCPCall) (string, string, string) { return code, reason, out.By })
}

// holdTools are the tools/call messages shown on the approval card.
func holdTools(md *policy.MCPDecision) []approval.ToolCall {
	if md == nil {
		return nil
	}
	var out []approval.ToolCall
	for _, c := range md.Calls {
		if c.Tool != "" {
			out = append(out, approval.ToolCall{Name: c.Tool, Args: c.Args})
		}
	}
	return out
}

// recordMCP writes the audit of a request an mcp rule decided: one line
// for a single message (with its tool), one line per message of a batch,
// each with that message's tool, decision and reason, and the request's
// outcome (status, bytes) on every line.
func (s *Server) recordMCP(e audit.Entry, d policy.Decision, start time.Time) {
	md := d.MCP
	if len(md.Calls) == 0 || !md.Batch {
		if len(md.Calls) == 1 {
			e.Tool = md.Calls[0].Tool
		}
		s.record(e, d, start)
		return
	}
	for i, c := range md.Calls {
		ce, cd := e, d
		ce.Tool = c.Tool
		what := fmt.Sprintf("batch message %d of %d (%s)", i+1, len(md.Calls), describeCall(c))
		cd.Reason = what + ": " + c.Reason
		if d.Audit {
			cd.Would = c.Action // this call's own verdict, not the batch's
		}
		if d.Action == policy.Deny && c.Action != policy.Deny {
			cd.Reason += "; not forwarded: " + d.Reason
		}
		if ce.Reason != "" {
			ce.Reason = what + ": " + ce.Reason
		}
		s.record(ce, cd, start)
	}
}

func describeCall(c policy.MCPCall) string {
	switch {
	case c.Tool != "":
		return "tools/call " + c.Tool
	case c.Kind == mcp.Response:
		return "response"
	}
	return c.Method
}

// filterMCPResponse makes the tools/list results in resp list only the
// tools md lets the container call: an event stream is rewritten event by
// event as it flows (mcp.SSEFilter); any other answer is read whole (up to
// maxMCPResponse) and filtered (mcp.FilterTools), whatever its
// Content-Type says, since a lenient client may read JSON in any of them.
// clawd asks MCP servers for uncompressed answers; a gzip one is decoded,
// other codings are refused. An answer clawd cannot read and filter with
// certainty never reaches the agent: it is replaced by a JSON-RPC error for
// each request of the body (or, without one, by clawd's 502), and e gets
// the reason.
func filterMCPResponse(resp *http.Response, md *policy.MCPDecision, e *audit.Entry) {
	if resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	refuse := func(reason string) {
		if resp.Body != nil {
			resp.Body.Close()
		}
		refuseMCPResponse(resp, md, reason)
		if e != nil && e.Reason == "" {
			e.Reason = "mcp answer refused: " + reason
		}
	}
	// A client may decode the answer with the charset it names (httpx
	// does, for event streams): clawd filters UTF-8 text, so the answer
	// must be labelled as that (or not at all), in one header that
	// parses exactly.
	mt, cterr := mcp.ContentType(resp.Header.Values("Content-Type"))
	if cterr != nil {
		refuse("the server's answer " + cterr.Error())
		return
	}
	coding := strings.ToLower(strings.TrimSpace(strings.Join(resp.Header.Values("Content-Encoding"), ",")))
	body := resp.Body
	switch coding {
	case "", "identity":
	case "gzip", "x-gzip":
		z, err := gzip.NewReader(resp.Body)
		if err != nil {
			refuse("the server's gzip answer is not valid gzip")
			return
		}
		body = gzipBody{z, resp.Body}
	default:
		refuse(fmt.Sprintf("the server answered with Content-Encoding %q, which clawd cannot decode to filter tools/list", truncateReason(coding)))
		return
	}
	resp.Header.Del("Content-Encoding")
	if mt == "text/event-stream" {
		resp.Body = mcp.NewSSEFilter(body, md.Visible, func(reason string) []byte {
			// Called while the handler copies the stream, before it
			// writes the audit line.
			if e != nil && e.Reason == "" {
				e.Reason = "mcp event refused: " + reason
			}
			return mcpStreamRefusal(md, reason)
		})
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
		return
	}
	b, err := io.ReadAll(io.LimitReader(body, maxMCPResponse+1))
	body.Close()
	resp.Body = nil
	switch {
	case err != nil:
		refuse("reading the server's answer failed")
		return
	case len(b) > maxMCPResponse:
		refuse(fmt.Sprintf("the server's answer is larger than the %d MiB clawd reads to filter tools/list", maxMCPResponse>>20))
		return
	}
	if len(b) > 0 {
		out, _, ferr := mcp.FilterTools(b, md.Visible)
		switch {
		case ferr == nil:
			b = out
		case !jsonMediaType(mt) && !mentionsTools(b):
			// Not JSON and not labelled JSON (an error page): no
			// client reads a tools list in it.
		default:
			refuse("could not read the server's answer exactly, so it could not filter a tools/list in it: " + ferr.Error())
			return
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
}

type gzipBody struct {
	*gzip.Reader
	src io.Closer
}

func (g gzipBody) Close() error { g.Reader.Close(); return g.src.Close() }

func jsonMediaType(mt string) bool {
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// mentionsTools reports whether a body clawd could not read as JSON might
// still hold a tools list for some lenient reader: the word in any case,
// or a JSON escape that could spell it.
func mentionsTools(b []byte) bool {
	return bytes.Contains(bytes.ToLower(b), []byte("tools")) || bytes.Contains(b, []byte(`\u`)) || bytes.Contains(b, []byte(`\U`))
}

// mcpResponseRefused is the error of an MCP server's answer clawd would
// not forward.
const mcpResponseRefused = "mcp_response_refused"

// refuseMCPResponse replaces resp with clawd's refusal: a JSON-RPC error
// for every request of the body md decided (so the client's call ends with
// the reason), else a 502 with clawd's JSON error.
func refuseMCPResponse(resp *http.Response, md *policy.MCPDecision, reason string) {
	var out []rpcResponse
	for _, c := range md.Calls {
		if c.Kind == mcp.Request {
			out = append(out, rpcResponse{JSONRPC: "2.0", ID: c.ID, Error: rpcError{Code: mcpDeniedCode, Message: "clawd: " + reason,
				Data: rpcDetail{Error: "mcp_response_refused", Tool: c.Tool, Reason: reason, NextSteps: nextStepsFor(mcpResponseRefused)}}})
		}
	}
	var b []byte
	status := http.StatusOK
	switch {
	case len(out) == 0:
		status = http.StatusBadGateway
		b, _ = json.Marshal(errInfo{Error: "mcp_response_refused", Reason: reason, NextSteps: nextStepsFor(mcpResponseRefused)})
		b = append(b, '\n')
	case md.Batch:
		b, _ = json.Marshal(out)
	default:
		b, _ = json.Marshal(out[0])
	}
	h := http.Header{}
	if sid := resp.Header.Values("Mcp-Session-Id"); len(sid) > 0 {
		h["Mcp-Session-Id"] = sid
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	resp.StatusCode, resp.Status = status, fmt.Sprintf("%d %s", status, http.StatusText(status))
	resp.Header, resp.Trailer = h, nil
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.TransferEncoding = nil
}

// mcpStreamRefusal is the data of the event that replaces one clawd could
// not read in a server's event stream: a JSON-RPC error for the body's one
// request (the stream answers it; ending the call with the reason beats
// leaving it to hang), else with id null (clawd could not read the id).
func mcpStreamRefusal(md *policy.MCPDecision, reason string) []byte {
	id := json.RawMessage("null")
	var reqs []policy.MCPCall
	for _, c := range md.Calls {
		if c.Kind == mcp.Request {
			reqs = append(reqs, c)
		}
	}
	if len(reqs) == 1 {
		id = reqs[0].ID
	}
	b, _ := json.Marshal(rpcResponse{JSONRPC: "2.0", ID: id, Error: rpcError{Code: mcpDeniedCode, Message: "clawd: " + reason,
		Data: rpcDetail{Error: "mcp_response_refused", Reason: reason, NextSteps: nextStepsFor(mcpResponseRefused)}}})
	return b
}

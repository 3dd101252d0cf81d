package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/clawd-dev/clawd/approval"
)

// errInfo is the JSON body of every answer clawd gives instead of the
// upstream. Agents read it, so fields are stable and self-explanatory.
type errInfo struct {
	Error      string `json:"error"`
	Rule       string `json:"rule,omitempty"`
	Method     string `json:"method,omitempty"`
	Host       string `json:"host,omitempty"`
	Path       string `json:"path,omitempty"`
	Reason     string `json:"reason,omitempty"`
	By         string `json:"by,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`

	// NextSteps tells the agent what to do instead of retrying blindly
	// (issue 16 C): the deciding rule's `next_steps` for refusals by rule,
	// else clawd's hint for the error (defaultNextSteps). Always set on
	// answers clawd writes itself.
	NextSteps string `json:"next_steps,omitempty"`
}

// defaultNextSteps is clawd's hint for each error an agent can get, used
// when the policy author wrote none. Stable texts: agents and their
// prompts may key on them.
var defaultNextSteps = map[string]string{
	"blocked_by_policy":            "Do not retry: clawd's policy refuses this request and will refuse it again. Tell the user what you tried to reach and why; an operator can allow it in the policy.",
	"rate_limited":                 "Wait retry_after seconds before the next request to this destination, and send fewer requests.",
	"approval_timeout":             "No approver answered in time. Do not retry in a loop: tell the user this request needs their approval, and retry once they are there.",
	"denied_by_approver":           "A human approver refused this request. Do not retry it; ask the user how to proceed.",
	"approval_limit":               "Too many requests are waiting for approval. Wait retry_after seconds, then retry.",
	"clawd_restarting":             "clawd is restarting. Retry after retry_after seconds; nothing was refused.",
	"host_mismatch":                "The Host header or TLS server name does not match the address you connected to. Connect by the host name and let DNS resolve it.",
	"placeholder_misuse":           "The placeholder credential is bound to another host. Send it only to the host it is for; do not retry with it here.",
	"injection_failed":             "clawd could not inject the credential for this host. Do not retry; tell the user.",
	"upstream_unreachable":         "The upstream did not answer. Retry later with backoff.",
	"body_too_large":               "The body is larger than clawd inspects. Send a smaller body; retrying the same one will fail again.",
	"body_undecodable":             "Send the body uncompressed or validly encoded; clawd must read it to decide.",
	"buffer_budget_exhausted":      "clawd is holding too many bodies right now. Wait retry_after seconds, then retry.",
	"ambiguous_request":            "Send a well-formed request (one Host, one length); clawd refuses requests servers could read differently.",
	"headers_too_large":            "Send smaller request headers.",
	"budget_exhausted":             "Do not retry the same request: this container's budget for the destination is spent until retry_after seconds from now, or what remains is less than this request may cost (the reason says which; a request asking for fewer tokens, a lower max_tokens, may fit). Tell the user; an operator can raise the budget in the policy.",
	"budget_busy":                  "Wait retry_after seconds, then retry: this container's other requests in flight have reserved what remains of its token budget for the destination. If it keeps happening, send fewer requests at once or ask for fewer tokens (max_tokens).",
	"budget_unmeterable":           "Do not retry this request: this destination's LLM budget cannot meter it (an upgraded connection such as a Realtime websocket, or a batch whose requests run later). Use the plain HTTP API (a streaming or non-streaming request per response) instead; an operator can opt the rule's budget in (websocket: true, batches: true).",
	"budget_unreadable_body":       "Send the request body as plain UTF-8 JSON (no byte order mark, no UTF-16/32, no NaN or Infinity): clawd must read it the way the API does to estimate what it may cost. Retrying the same body will fail again.",
	"unsupported_content_encoding": "Send the body uncompressed (or gzip, deflate, br or zstd); clawd must read it to decide.",
	"mcp_response_refused":         "The MCP server's answer came in a form clawd cannot read exactly (so it could not filter the tools/list in it) and was not passed on. Retrying will likely fail the same way; tell the user, whose operator can check the server's answer.",
	"mcp_content_type_refused":     "Send the MCP message as UTF-8 JSON with exactly one Content-Type header: application/json, with no charset or charset=utf-8. clawd refuses other charsets because the server could decode the body into other calls than the ones clawd decided on; retrying with the same header fails the same way.",
	"bad_request":                  "clawd could not read the request body. Send the request again with a complete body of the declared length.",
}

// fallbackNextSteps is the hint for an error code defaultNextSteps lacks
// (TestEveryErrorCodeHasNextSteps keeps the table complete; this keeps the
// agent from getting none if it is not).
const fallbackNextSteps = "clawd answered instead of the upstream. Do not retry blindly: read reason, and tell the user what you tried."

// nextStepsFor is clawd's hint for an error code: never "".
func nextStepsFor(code string) string {
	if s := defaultNextSteps[code]; s != "" {
		return s
	}
	return fallbackNextSteps
}

func writeJSON(w http.ResponseWriter, status int, info errInfo) {
	if info.NextSteps == "" {
		info.NextSteps = nextStepsFor(info.Error)
	}
	b, _ := json.Marshal(info)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	h.Set("Cache-Control", "no-store")
	if status == http.StatusForbidden {
		// Tells SDKs with retry logic that trying again will not help.
		h.Set("x-should-retry", "false")
	}
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeOutcome answers a held request that was not approved.
func writeOutcome(w http.ResponseWriter, out approval.Outcome, info errInfo) {
	info.Reason, info.By = out.Reason, out.By
	switch out.Status {
	case approval.StatusRestarting:
		info.Error, info.RetryAfter = "clawd_restarting", 5
		if info.Reason == "" {
			info.Reason = "clawd is restarting; retry shortly"
		}
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, info)
	case approval.StatusLimit:
		info.Error, info.RetryAfter = "approval_limit", 30
		if info.Reason == "" {
			info.Reason = "too many requests are waiting for approval"
		}
		w.Header().Set("Retry-After", "30")
		writeJSON(w, http.StatusTooManyRequests, info)
	case approval.StatusTimeout:
		info.Error = "approval_timeout"
		if info.Reason == "" {
			info.Reason = "no approver decided in time"
		}
		writeJSON(w, http.StatusForbidden, info)
	default:
		info.Error = "denied_by_approver"
		writeJSON(w, http.StatusForbidden, info)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// sanitizeHeader keeps a configured text from breaking header syntax.
func sanitizeHeader(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

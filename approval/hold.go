// Package approval holds requests that policy marked "approve" until a human
// decides, notifies approvers (webhook, Slack, ...), and serves the approval API.
package approval

import (
	"net/http"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// Hold is a buffered request waiting for a human. The proxy fills it; nothing
// of it has reached the upstream yet.
type Hold struct {
	Container  policy.Container
	Method     string
	URL        string // scheme://host[:port]/path?query as the agent sent it
	Host       string
	Path       string
	Dst        string      // original destination ip:port
	Header     http.Header // raw request headers; redacted before being shown anywhere
	Body       []byte      // body preview, up to the configured limit; decoded when the request has a Content-Encoding
	BodySize   int64       // full size (decoded), -1 when unknown
	BodySHA256 string      // hex SHA-256 of the full body as the agent sent it (and as it is forwarded)
	Rule       string
	Timeout    time.Duration // per rule; 0 means the default (10m)
	// Route is who is asked (policy.Decision.Route); nil = the default route.
	Route *policy.Route
	// Generation is the policy generation that decided (policy.Decision.Generation).
	Generation uint64

	// Program is the process that made the connection (issue 16): shown
	// on the card, bound into the digest and grants. Zero: unknown.
	Program policy.Program

	// MCP tool calls (issue 16, "mcp"): the tools/call messages of the
	// request, in body order; shown on the card (redacted) and covered by
	// the digest.
	Tools []ToolCall
}

// programKey binds a decision to a program: its path and digest, "" for a
// hold the proxy gave no program (older callers, tests), "unknown" when
// clawd could not tell.
func programKey(p policy.Program) string {
	if !p.Known {
		if p.PID == 0 && p.Path == "" {
			return ""
		}
		return "unknown"
	}
	return p.Path + "@sha256:" + p.SHA256
}

// ToolCall is one MCP tools/call of a held request.
type ToolCall struct {
	Name string `json:"name"`
	Args string `json:"args"` // compact JSON of the arguments; redacted before being shown
	// ArgsSHA256 is, on cards, the args digest: an HMAC under the
	// Manager's key of the redacted canonical arguments (shownDigest),
	// where Args is cut value by value. Never a plain hash of them: that
	// would confirm guesses of a redacted secret.
	ArgsSHA256 string `json:"args_sha256,omitempty"`
}

// Outcome is how a hold ended.
type Outcome struct {
	Approved bool
	Status   string // "approved", "granted", "denied", "timeout", "cancelled", "restarting", "limit"
	ID       string // approval ID ("" for grant hits and limits)
	By       string // who decided: "slack:U123", "cli", "api", "link", "grant:<id>"
	Reason   string
}

// Outcome statuses.
const (
	StatusApproved   = "approved"
	StatusGranted    = "granted"
	StatusDenied     = "denied"
	StatusTimeout    = "timeout"
	StatusCancelled  = "cancelled"
	StatusRestarting = "restarting"
	StatusLimit      = "limit"
)

// Package policy decides, for every connection or HTTP request an attached
// container makes, whether it is allowed, denied or held for approval.
package policy

import (
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Action is what a rule (or the default) says to do with a request.
type Action string

const (
	Allow   Action = "allow"
	Deny    Action = "deny"
	Approve Action = "approve"
)

// Container identifies the attached container a request comes from. It is
// filled by the daemon from the container runtime, never from the agent.
type Container struct {
	ID        string            `json:"id"`        // runtime ID (containerd ID, Docker ID, or "pid-N")
	Name      string            `json:"name"`      // human name (Docker name, containerd ID)
	Runtime   string            `json:"runtime"`   // "containerd", "docker" or "pid"
	Namespace string            `json:"namespace"` // containerd namespace ("moby" for Docker)
	Labels    map[string]string `json:"labels,omitempty"`
}

// Key is a stable identity for per-container state (rate limits, DNS answers).
func (c Container) Key() string { return c.Runtime + "/" + c.Namespace + "/" + c.ID }

// BudgetKey is the identity LLM budgets are kept under (issue 16): it must
// survive a restart of the same agent and never merge two agents. A
// Kubernetes app container (containerd's CRI namespace "k8s.io", with the
// kubelet's io.kubernetes.pod.uid and io.kubernetes.container.name labels)
// is restarted by the kubelet as a new container with a new ID: its key is
// "k8s/<pod UID>/<container name>", which a pod's restarts keep and no
// other pod has (a re-created pod, e.g. by its Deployment, has a new UID and
// a fresh budget). Only containers in the CRI namespace get it: creating
// one there takes the host's containerd, not a label an image can set.
// Every other container is keyed by Key: Docker's restart policy and
// `docker restart` keep the ID (and the budget); a container removed and
// created again is another container.
func (c Container) BudgetKey() string {
	uid, name := c.Labels["io.kubernetes.pod.uid"], c.Labels["io.kubernetes.container.name"]
	if c.Runtime == "containerd" && c.Namespace == "k8s.io" && uid != "" && name != "" && !strings.Contains(uid, "/") {
		return "k8s/" + uid + "/" + name
	}
	return c.Key()
}

// Input holds the facts of one decision. Fields that are unknown stay zero:
// a raw TCP connection has no Host or Method, a TLS passthrough has only the SNI.
type Input struct {
	Container Container
	DstIP     netip.Addr // original destination the agent dialled
	DstPort   uint16
	Host      string      // SNI or Host header (lower case, no port); "" if none
	Method    string      // HTTP method; "" for non-HTTP traffic
	Path      string      // request target path as sent (may hold a query string); "" for non-HTTP
	Header    http.Header // request headers; nil for non-HTTP
	Body      []byte      // request body when the proxy buffered it (see Decision.NeedBody)
	BodyKnown bool        // Body holds the whole body (possibly empty)
	Now       time.Time   // for rate limits; zero means time.Now()
	// Recheck marks the re-decision of a stream that is already open (on
	// reload or revocation): rate limits, which admit new requests, do not
	// apply to it.
	Recheck bool

	// Program is the process that made the connection (issue 16,
	// `binaries:`); the zero value is an unknown program.
	Program Program
}

// Decision is the outcome of evaluating an Input.
type Decision struct {
	Action Action
	// Rule is the name of the rule that decided, or "default" when none matched.
	Rule string
	// Reason is a short human explanation, shown to the agent on deny.
	Reason string
	// Intercept is true when the destination host is marked for TLS
	// interception, so method and path rules can apply to HTTPS.
	Intercept bool
	// ApprovalTimeout is the rule's hold timeout for Approve decisions.
	ApprovalTimeout time.Duration
	// Route is who is asked for Approve decisions (nil = the daemon's
	// default route). Shared and read-only.
	Route *Route
	// Generation identifies the policy that decided (it changes on every
	// install); an approval is bound to it.
	Generation uint64
	// RateLimited is set (with Action Deny) when the rule matched but its
	// per-container rate limit is exhausted: answer 429 with Retry-After.
	RateLimited bool
	RetryAfter  time.Duration
	// NeedBody is set when a candidate rule has a body condition and
	// Input.BodyKnown was false: buffer the body and decide again.
	NeedBody bool
	// ByCIDR is set when the deciding rule names the destination address in
	// its `cidrs` (not only by host name): only such a decision may dial a
	// special address (loopback, private, the host's own; internal/addrclass).
	ByCIDR bool
	// UpstreamProxy is the proxy an allowed (or approved) connection or
	// request goes through (the rule's `upstream_proxy`, else its set's);
	// zero: clawd dials the destination itself.
	UpstreamProxy UpstreamProxy

	// Learn, then enforce (issue 16 C).
	//
	// Audit is set when the container's rule set is in `mode: audit`: the
	// decision above is what enforcement would do, and the proxy's gate
	// carries out allow instead (recording Would). The policy never relaxes
	// a decision itself.
	Audit bool
	// Would is set by the proxy's gate, never by the policy: the action
	// enforcement would have taken when Audit relaxed it ("" otherwise).
	Would Action
	// NextSteps is the deciding rule's `next_steps` text (the set's for
	// default decisions), written by the policy author for the agent; ""
	// lets the proxy give its generic hint.
	NextSteps string
	// LLM budgets (issue 16, budget). Budget is the deciding rule's
	// `budget:` on an allow or approve decision (nil: none; shared,
	// read-only). BudgetSpent is set by the proxy's gate, with Action Deny
	// and RetryAfter (when the window ends), when the container has spent
	// it: answer 429 budget_exhausted, which SDKs must not retry.
	Budget      *Budget
	BudgetSpent bool
	// BudgetBusy (set with BudgetSpent by the gate) says the budget is not
	// spent, but what the requests in flight reserved leaves no room for
	// this one: answer 429 budget_busy, retry soon.
	BudgetBusy bool
	// Budgets, set by the gate, is every budget the request is charged
	// to and was admitted under: Budget, and when the Host header is an
	// address, the budgets of the rules of the names living there.
	// BudgetIn and BudgetOut are its estimate (input and output tokens),
	// reserved in each.
	Budgets             []*Budget
	BudgetIn, BudgetOut int64
	// BudgetReferenced: the estimate counts input the provider holds
	// (see proxy/usage's Estimate.Referenced). BudgetAskUsage: an OpenAI
	// chat stream that did not ask for its usage; the proxy asks for it
	// (stream_options.include_usage) so that the answer is metered.
	BudgetReferenced, BudgetAskUsage bool
	// BudgetRefused (set by the gate, with Action Deny) is the error code
	// of a request a budget cannot meter or estimate: "budget_unmeterable"
	// (403: an upgrade or a batch a rule did not opt in to) or
	// "budget_unreadable_body" (400: a body the upstream would read
	// differently from clawd's estimate). Reason says why.
	BudgetRefused string
	// MCP (issue 16, "mcp") is set when an `mcp: true` rule decided: the
	// decision on each JSON-RPC message of the body (policy/mcp.go), and
	// which tools tools/list may show.
	MCP *MCPDecision
}

// Mode is how a rule set's decisions are carried out.
type Mode string

const (
	// Enforce carries out every decision (the default).
	Enforce Mode = "enforce"
	// Audit decides and audits every request, then lets it through: the
	// audit line says what enforcement would have done. clawd's own
	// refusals (its API, special addresses, host mismatch, unframable
	// traffic) still apply.
	AuditMode Mode = "audit"
)

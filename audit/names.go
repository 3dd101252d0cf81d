package audit

// Event names of audit lines. Callers use these constants, never literals:
// what a line says is part of clawd's interface (operators grep and alert
// on them).
const (
	EventDecision     = "decision"     // a connection or request was decided
	EventExfiltration = "exfiltration" // a placeholder was sent to a host it is not bound to
	EventRevoked      = "revoked"      // an open connection was closed: its verdict no longer holds
	EventApproval     = "approval"
	EventGrant        = "grant"
	EventAttach       = "attach"
	EventDetach       = "detach"
	EventTLSUntrusted = "tls_untrusted" // the agent refused clawd's certificate
)

// Actions that are not policy actions or approval statuses.
const (
	ActionDeny    = "deny"
	ActionAllow   = "allow"
	ActionCreated = "created"
	ActionRevoked = "revoked"
	ActionAttach  = "attach"
	ActionDetach  = "detach"
	ActionAborted = "aborted"
	ActionExpired = "expired"
)

package audit

// Event names of audit lines. Callers use these constants, never literals:
// what a line says is part of clawd's interface (operators grep and alert
// on them).
const (
	EventDecision     = "decision"     // a connection or request was decided
	EventExfiltration = "exfiltration" // a placeholder was sent to a host it is not bound to
	EventRevoked      = "revoked"      // an open connection was closed: its verdict no longer holds
	// The kernel fast path (path "kernel") writes a "decision" line when a
	// connection it let through is established and a "closed" line, with
	// its bytes and duration, when it ends; "close_lost" when the kernel
	// stopped following a connection before its end was reported (its
	// record was evicted from the flow map, or the event dropped), so
	// its bytes are unknown.
	EventClosed       = "closed"
	EventCloseLost    = "close_lost"
	EventApproval     = "approval"
	EventGrant        = "grant"
	EventAttach       = "attach"
	EventDetach       = "detach"
	EventTLSUntrusted = "tls_untrusted" // the agent refused clawd's certificate
	EventCutOff       = "cut_off"       // an attached container was frozen (or thawed): it could send frames clawd does not see
	EventReadopt      = "readopt"       // a restarted daemon adopted, kept (cut off, in doubt) or removed an attachment
	EventOrphanPins   = "orphan_pins"   // pins without a state record were adopted, kept or removed
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
	ActionFreeze  = "freeze"
	ActionThaw    = "thaw"
	ActionAdopt   = "adopt"
	ActionKeep    = "keep" // pins kept in place: the container stays cut off
	ActionRemove  = "remove"
)

package audit

// Values of Entry fields for DNS lines, so that writers and readers (tests,
// log pipelines) share one spelling.
const (
	// EventDNS is the event of every line about an agent's DNS query.
	EventDNS = "dns"
	// ProtoDNS is the Proto of DNS lines.
	ProtoDNS = "dns"

	// ActionDNSDeny: the query was refused (a name the policy never allows, or
	// a sender that is not the listener's container). One line per query.
	ActionDNSDeny = "deny"
	// ActionDNSForward: queries forwarded upstream. Aggregated: one line per
	// container, name, query type and upstream rcode per interval, with
	// Count; Reason holds the upstream's rcode.
	ActionDNSForward = "forward"
	// ActionDNSDropRecord: an address in an upstream answer was left out of
	// the agent's answer (Dst holds it, Reason says why). Aggregated like
	// ActionDNSForward.
	ActionDNSDropRecord = "drop-record"
)

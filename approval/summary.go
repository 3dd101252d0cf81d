package approval

import (
	"strings"
)

// Summarizer turns a held request into one line saying what it does
// ("Merge pull request #12 in acme/api"), shown first on every card. It
// returns false when it does not recognise the request. A new API is one
// small file in approval/summary implementing it; add it to summary.Default
// or Config.Summarizers.
// Output is passed through the redactors afterwards, but summarisers should
// still quote only what a human needs.
type Summarizer interface {
	Summarize(h *Hold) (string, bool)
}

// Generic is the fallback: method and URL.
type Generic struct{}

func (Generic) Summarize(h *Hold) (string, bool) {
	u := h.URL
	if u == "" {
		u = h.Host + h.Path
	}
	return strings.ToUpper(h.Method) + " " + u, true
}

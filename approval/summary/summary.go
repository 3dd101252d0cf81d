// Package summary turns held requests of known APIs into one line saying
// what they do ("Merge pull request #12 in acme/api"), shown first on every
// approval card. One file per API; each returns false for requests it does
// not recognise, and the core falls back to "METHOD URL".
package summary

import (
	"strings"

	"github.com/clawd-dev/clawd/approval"
)

// Default are the built-in summarisers, tried in order.
func Default() []approval.Summarizer {
	return []approval.Summarizer{GitHub{}, Stripe{}}
}

// splitPath splits "/a/b/c?x" into ["a","b","c"], dropping the query.
func splitPath(p string) []string {
	p, _, _ = strings.Cut(p, "?")
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

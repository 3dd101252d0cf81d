package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// LLM budgets (issue 16, budget). A rule's `budget:` caps what one
// container may spend through it in a fixed window:
//
//	budget: {tokens: 2000000, requests: 500, per: 24h, unmetered: 8000}
//
// The policy only carries the numbers: usage is counted by the proxy (it
// reads the usage the LLM API reports in its answers) and the proxy's gate
// refuses a request once the container's window is spent.

// Budget is a rule's usage budget per container. Shared and read-only.
type Budget struct {
	// ID names the rule it belongs to as "set/rule": usage is kept per
	// container and ID, so editing the numbers keeps what was spent.
	ID string
	// Tokens is the token limit per window; 0: no token limit.
	Tokens int64
	// Requests is the request limit per window; 0: no request limit.
	Requests int64
	// Per is the window: fixed, starting at the first request after the
	// previous window ended.
	Per time.Duration
	// Unmetered is the least an answered request costs when clawd could
	// not read its usage (a stream without a usage event, a stream the
	// agent aborted before it, an encoding, format or endpoint clawd does
	// not read, a websocket). Such a request costs its estimate (the
	// request body's bytes / 4 for input, plus its max_tokens, else 4096,
	// for output; what the answer did report replaces the estimated part
	// it covers) and at least Unmetered; 0: the estimate alone. See
	// proxy/usage.
	Unmetered int64
	// Websocket lets upgraded connections (OpenAI Realtime) through under
	// the budget: each session costs the sum of the usage its server
	// events report (response.done), at least its estimate. Without it an
	// upgrade under a budget is refused (403 budget_unmeterable).
	Websocket bool
	// Batches lets batch creation (POST /v1/batches, /v1/messages/batches)
	// through under the budget: each costs only its estimate at
	// submission, whatever its requests cost later (their results are not
	// metered). Without it batch creation is refused (403
	// budget_unmeterable).
	Batches bool
}

// String is the budget as `clawd ls` and reasons show it.
func (b *Budget) String() string {
	var parts []string
	if b.Tokens > 0 {
		parts = append(parts, fmt.Sprintf("%d tokens", b.Tokens))
	}
	if b.Requests > 0 {
		parts = append(parts, fmt.Sprintf("%d requests", b.Requests))
	}
	return strings.Join(parts, " and ") + " per " + FormatWindow(b.Per)
}

// FormatWindow writes a window as policies do: whole days as "7d", else a
// Go duration ("24h", "90m").
func FormatWindow(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 && d != 24*time.Hour {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Budget windows: shorter than a minute is a rate limit (use rate_limit),
// longer than 31 days outlives any billing period.
const (
	minBudgetWindow = time.Minute
	maxBudgetWindow = 31 * 24 * time.Hour
	maxBudgetCount  = 1 << 50
)

func (ps *parser) budget(n *yaml.Node, what string) *Budget {
	what += ": budget"
	f := ps.fields(n, what, "tokens", "requests", "per", "unmetered", "websocket", "batches")
	if f == nil {
		return nil
	}
	b := &Budget{}
	ok := true
	count := func(key string) int64 {
		v, has := f[key]
		if !has {
			return 0
		}
		s, good := ps.str(v, what+"."+key)
		if !good {
			ok = false
			return 0
		}
		x, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
		if err != nil || x < 1 || x > maxBudgetCount {
			ps.errf(v, "%s.%s: %q is not a whole number between 1 and %d", what, key, s, int64(maxBudgetCount))
			ok = false
			return 0
		}
		return x
	}
	b.Tokens = count("tokens")
	b.Requests = count("requests")
	b.Unmetered = count("unmetered")
	for key, dst := range map[string]*bool{"websocket": &b.Websocket, "batches": &b.Batches} {
		if v, has := f[key]; has {
			x, good := ps.boolean(v, what+"."+key)
			ok = ok && good
			*dst = x
		}
	}
	if ok && b.Tokens == 0 && b.Requests == 0 {
		ps.errf(n, "%s needs tokens, requests or both", what)
		ok = false
	}
	if v, has := f["unmetered"]; has && b.Tokens == 0 && ok {
		ps.errf(v, "%s.unmetered is a token charge; it needs tokens", what)
		ok = false
	}
	if v, has := f["per"]; !has {
		ps.errf(n, "%s needs per (the window, e.g. per: 24h or per: 7d)", what)
		ok = false
	} else if s, good := ps.str(v, what+".per"); good {
		d, err := parseWindow(s)
		if err != nil {
			ps.errf(v, "%s.per: %v", what, err)
			ok = false
		}
		b.Per = d
	} else {
		ok = false
	}
	if !ok {
		return nil
	}
	return b
}

// parseWindow reads a Go duration or a whole number of days ("7d").
func parseWindow(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, isDays := strings.CutSuffix(s, "d"); isDays {
		var n int64
		n, err = strconv.ParseInt(days, 10, 64)
		if err == nil && (n < 1 || n > 31) {
			err = fmt.Errorf("out of range")
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < minBudgetWindow || d > maxBudgetWindow {
		return 0, fmt.Errorf("%q is not a window between 1m and 31d (write e.g. 1h, 24h or 7d)", s)
	}
	return d, nil
}

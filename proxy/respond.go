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
}

func writeJSON(w http.ResponseWriter, status int, info errInfo) {
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

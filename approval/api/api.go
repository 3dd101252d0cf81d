// Package api serves the approval API: JSON over HTTP for the CLI (on the
// root-only control socket) and for tools with the bearer token (on the
// host listener), signed approve/deny links, and the mount points of the
// channels' callbacks and the web page. Every decision goes to
// approval.Manager.Decide.
package api

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/clawd-dev/clawd/approval"
)

// maxAPIBody bounds request bodies on every endpoint.
const maxAPIBody = 64 << 10

// maxWait bounds long-polls so idle clients do not pin goroutines forever.
const maxWait = 5 * time.Minute

// ListResponse is the body of GET /v1/approvals.
type ListResponse struct {
	Approvals []*approval.Approval `json:"approvals"`
	// Version changes whenever the pending set does; pass it back as
	// ?since= with ?wait= to long-poll without missing a change.
	Version uint64 `json:"version"`
}

// DecideRequest is the optional body of approve and deny.
type DecideRequest struct {
	For    string `json:"for,omitempty"`    // approve: also grant for this long ("15m")
	Reason string `json:"reason,omitempty"` // shown to the agent on deny
}

type errorBody struct {
	Error    string             `json:"error"`
	Outcome  string             `json:"outcome,omitempty"`
	Approval *approval.Approval `json:"approval,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// decisionStatus maps Decide errors to HTTP statuses.
func decisionStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, approval.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, approval.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, approval.ErrGone):
		return http.StatusGone
	case errors.Is(err, approval.ErrInvalid):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

type server struct {
	m     *approval.Manager
	token string
}

// Local serves the approval API without authentication, for the root-only
// unix control socket. Decisions made here are attributed to "cli".
func Local(m *approval.Manager) http.Handler {
	s := &server{m: m}
	mux := http.NewServeMux()
	s.routes(mux, approval.ChannelCLI)
	return mux
}

// Options configure Public.
type Options struct {
	// Token guards /v1/* ("" turns that API off: 403).
	Token string
	// Mount maps path patterns (http.ServeMux syntax) to handlers that do
	// their own authentication: channel callbacks, the web page.
	Mount map[string]http.Handler
}

// PublicHandler serves the host TCP listener: the same API behind
// "Authorization: Bearer <APIToken>" (attributed to "api"), signed links,
// Slack interactions and /healthz.
func Public(m *approval.Manager, o Options) http.Handler {
	s := &server{m: m, token: o.Token}
	api := http.NewServeMux()
	s.routes(api, approval.ChannelAPI)
	mux := http.NewServeMux()
	mux.Handle("/v1/", s.requireToken(api))
	mux.HandleFunc("GET /v1/links/{id}/{action}", s.handleLink)
	mux.HandleFunc("POST /v1/links/{id}/{action}", s.handleLink)
	for p, h := range o.Mount {
		mux.Handle(p, h)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	return mux
}

func (s *server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token == "" {
			writeErr(w, http.StatusForbidden, "the API is disabled on this listener (no api token configured)")
			return
		}
		got := r.Header.Get("Authorization")
		want := "Bearer " + s.token
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="clawd"`)
			writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) routes(mux *http.ServeMux, by string) {
	mux.HandleFunc("GET /v1/approvals", s.handleList)
	mux.HandleFunc("GET /v1/approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		a, err := s.m.Get(r.PathValue("id"))
		if err != nil {
			writeErr(w, decisionStatus(err), err.Error())
			return
		}
		writeJSON(w, http.StatusOK, a)
	})
	mux.HandleFunc("POST /v1/approvals/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		s.handleDecide(w, r, true, by)
	})
	mux.HandleFunc("POST /v1/approvals/{id}/deny", func(w http.ResponseWriter, r *http.Request) {
		s.handleDecide(w, r, false, by)
	})
	mux.HandleFunc("GET /v1/grants", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.m.ListGrants())
	})
	revoke := func(w http.ResponseWriter, r *http.Request) {
		if err := s.m.RevokeGrant(r.PathValue("id"), by); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, approval.ErrNotFound) {
				code = http.StatusNotFound
				err = errors.New("grant not found")
			}
			writeErr(w, code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"revoked": r.PathValue("id")})
	}
	mux.HandleFunc("DELETE /v1/grants/{id}", revoke)
	mux.HandleFunc("POST /v1/grants/{id}/revoke", revoke)
}

func (s *server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	container := q.Get("container")
	if ws := q.Get("wait"); ws != "" {
		d, err := time.ParseDuration(ws)
		if err != nil || d < 0 {
			writeErr(w, http.StatusBadRequest, "wait: want a duration like 30s")
			return
		}
		d = min(d, maxWait)
		var since uint64
		sinceStr := q.Get("since")
		if sinceStr != "" {
			if since, err = strconv.ParseUint(sinceStr, 10, 64); err != nil {
				writeErr(w, http.StatusBadRequest, "since: want the version of a previous answer")
				return
			}
		}
		if ch := s.m.ChangedSince(since, sinceStr != ""); ch != nil {
			t := time.NewTimer(d)
			select {
			case <-ch:
			case <-t.C:
			case <-r.Context().Done():
			}
			t.Stop()
		}
	}
	list, v := s.m.List(container)
	writeJSON(w, http.StatusOK, ListResponse{Approvals: list, Version: v})
}

func (s *server) handleDecide(w http.ResponseWriter, r *http.Request, approve bool, by string) {
	var req DecideRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	if len(body) > 0 {
		dec := json.NewDecoder(bytesReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("bad JSON body: %v", err))
			return
		}
	}
	var d time.Duration
	if req.For != "" {
		if !approve {
			writeErr(w, http.StatusBadRequest, `"for" applies to approve only`)
			return
		}
		if d, err = time.ParseDuration(req.For); err != nil || d <= 0 {
			writeErr(w, http.StatusBadRequest, `"for": want a positive duration like 15m`)
			return
		}
	}
	res := s.m.Decide(r.Context(), approval.Decision{ID: r.PathValue("id"), Approve: approve, GrantFor: d, Channel: by, Reason: req.Reason})
	writeResult(w, res)
}

// ResultStatus is the HTTP status of a decision's Result.
func ResultStatus(res approval.Result) int {
	switch res.Outcome {
	case approval.ResultDecided, approval.ResultAlready:
		return http.StatusOK
	case approval.ResultRecorded:
		return http.StatusAccepted
	case approval.ResultConflict, approval.ResultStale:
		return http.StatusConflict
	case approval.ResultExpired:
		return http.StatusGone
	case approval.ResultNotFound:
		return http.StatusNotFound
	case approval.ResultNotApprover, approval.ResultSelf:
		return http.StatusForbidden
	case approval.ResultInvalid:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// writeResult answers a decision: the approval on success (200, or 202
// when more approvals are needed), {"error", "outcome", "approval"} otherwise.
func writeResult(w http.ResponseWriter, res approval.Result) {
	code := ResultStatus(res)
	w.Header().Set("Clawd-Outcome", res.Outcome)
	if code < 300 {
		writeJSON(w, code, res.Approval)
		return
	}
	writeJSON(w, code, errorBody{Error: res.Message, Outcome: res.Outcome, Approval: res.Approval})
}

var linkPage = template.Must(template.New("link").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>clawd: {{.Verb}} request?</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>{{.Verb}} this request?</h1>
<p><b>{{.A.Summary}}</b></p>
<p><code>{{.A.Method}} {{.A.URL}}</code></p>
<p>Container: {{.A.Container.Name}} &middot; rule: {{.A.Rule}} &middot; status: {{.A.Status}}</p>
{{if .Done}}<p><b>Done: the request is {{.A.Status}}.</b></p>
{{else if .Pending}}<form method="post"><button type="submit">{{.Verb}}</button></form>
{{else}}<p>This request is no longer pending.</p>{{end}}
</body></html>`))

// handleLink serves signed approve/deny links. GET only shows a page with a
// button, so chat and mail link previewers cannot decide; POST decides.
func (s *server) handleLink(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	q := r.URL.Query()
	digest, ok := "", false
	if action == "approve" || action == "deny" {
		digest, ok = s.m.CheckLink(id, action, q.Get("exp"), q.Get("sig"))
	}
	if !ok {
		http.Error(w, "invalid or expired link", http.StatusForbidden)
		return
	}
	a, err := s.m.Get(id)
	if err != nil {
		http.Error(w, "approval not found", decisionStatus(err))
		return
	}
	if r.Method == http.MethodPost {
		res := s.m.Decide(r.Context(), approval.Decision{ID: id, Digest: digest, Approve: action == "approve", Channel: approval.ChannelLink})
		if !res.OK() {
			http.Error(w, res.Message, ResultStatus(res))
			return
		}
		a = res.Approval
	}
	verb := map[string]string{"approve": "Approve", "deny": "Deny"}[action]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Frame-Options", "DENY")
	_ = linkPage.Execute(w, map[string]any{"Verb": verb, "A": a, "Pending": a.Status == approval.Pending, "Done": r.Method == http.MethodPost})
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

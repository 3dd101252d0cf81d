// Package web serves the approvals page: one embedded HTML+JS+CSS page under
// /ui/ where a human sees the pending approvals and decides them, authenticated
// by the API bearer token (kept in the browser's sessionStorage, sent in the
// Authorization header) or by one signed approve/deny link, which lets only
// that link's action on that approval through.
//
// Everything an agent controls (URL, headers, body, summary) reaches the page
// as JSON and is rendered with textContent; the page runs under a strict CSP
// with no inline script.
package web

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Source is what the page needs from the approval core; *approval.Manager
// is one.
type Source interface {
	// List returns the pending approvals (container "" = all) and a version.
	List(container string) ([]*approval.Approval, uint64)
	// Recent returns up to n decided approvals, newest first.
	Recent(n int) []*approval.Approval
	// Get returns one approval, pending or decided.
	Get(id string) (*approval.Approval, error)
	// Decide records a human's decision.
	Decide(ctx context.Context, d approval.Decision) approval.Result
	// CheckLink verifies sig and exp (the query of an approval's ApproveURL
	// or DenyURL) for action ("approve" or "deny") on id and returns the
	// digest of the request the link was made for.
	CheckLink(id, action, exp, sig string) (digest string, ok bool)
}

// Fleet lists the held requests of every host of a fleet (issue 17): the
// page then shows them all, each with the host holding it; deciding one
// goes through Source.Decide, which passes it to that host.
type Fleet interface {
	// Self is this host's name in the fleet.
	Self() string
	// Pending is every host's held requests.
	Pending(ctx context.Context) ([]Held, error)
}

// Held is a pending approval of some host of the fleet.
type Held struct {
	HeldOn    string // the host holding the request
	HostState string // that host's state: "up", "down", "stopped"
	Approval  *approval.Approval
}

// Options tune the page.
type Options struct {
	// Fleet, when set, makes the page show the whole fleet's holds (nil:
	// this host's).
	Fleet Fleet
	// Token is the API token the login form asks for ("" = only signed
	// links work; the token calls answer 403).
	Token string
	// Recent is how many decided approvals the page shows; default 20.
	Recent int
	// Now is the clock for "time left"; nil = time.Now.
	Now func() time.Time
	Log *zap.Logger
}

// Decisions from the page are the core's built-in identities, the same as
// the approval API's: with the token, Channel approval.ChannelAPI (the host
// operator); with a signed link, approval.ChannelLink. Display says they
// came from this page.
const Display = "web page"

// Paths the handler serves. Prefix is where the lead mounts it; LinkPath is
// where an approve/deny link should land (with the link's ?exp=&sig=).
const Prefix = "/ui/"

// LinkPath is the page focused on one approval for a signed link's action
// ("approve" or "deny"); append the link's query (exp, sig).
func LinkPath(id, action string) string { return Prefix + "link/" + id + "/" + action }

// Limits on what the page's JSON calls accept.
const (
	maxBody   = 8 << 10
	maxReason = 500
)

//go:embed static
var static embed.FS

// csp allows only this origin's files: no inline script or style, no
// frames, no plugins, nothing from elsewhere.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type handler struct {
	src    Source
	fleet  Fleet
	token  string
	recent int
	now    func() time.Time
	log    *zap.Logger
	files  fs.FS
}

// Handler serves the page at /ui/ and its JSON calls at /ui/api/. Mount it
// at Prefix on the listener that serves the approval API.
func Handler(src Source, opts Options) http.Handler {
	h := &handler{src: src, fleet: opts.Fleet, token: opts.Token, recent: opts.Recent, now: opts.Now, log: opts.Log}
	if h.recent <= 0 {
		h.recent = 20
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	h.files, _ = fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", h.page)
	mux.HandleFunc("GET /ui/link/{id}/{action}", h.page)
	mux.HandleFunc("GET /ui/app.js", h.file("app.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /ui/app.css", h.file("app.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /ui/api/approvals", h.bearer(h.list))
	mux.HandleFunc("POST /ui/api/approvals/{id}/decide", h.bearer(h.decide))
	mux.HandleFunc("POST /ui/api/link", h.linkView)
	mux.HandleFunc("POST /ui/api/link/decide", h.linkDecide)
	return secure(mux)
}

// secure sets the headers every answer carries.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	h.file("index.html", "text/html; charset=utf-8")(w, r)
}

func (h *handler) file(name, ctype string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := fs.ReadFile(h.files, name)
		if err != nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Write(b)
	}
}

// View is an approval as the page shows it: what a human needs to decide,
// without the signed links (capabilities the page must not spread).
type View struct {
	ID            string              `json:"id"`
	Status        string              `json:"status"`
	Summary       string              `json:"summary"`
	Container     string              `json:"container"`
	Method        string              `json:"method"`
	URL           string              `json:"url"`
	Rule          string              `json:"rule"`
	Headers       map[string][]string `json:"headers,omitempty"`
	Body          string              `json:"body,omitempty"`
	BodySize      int64               `json:"body_size"`
	BodyTruncated bool                `json:"body_truncated,omitempty"`
	Created       time.Time           `json:"created"`
	Expires       time.Time           `json:"expires"`
	Decided       time.Time           `json:"decided,omitzero"`
	By            string              `json:"by,omitempty"`
	Reason        string              `json:"reason,omitempty"`
	Digest        string              `json:"digest"`
	GrantsAllowed bool                `json:"grants_allowed"`
	Required      int                 `json:"required"`
	Votes         []string            `json:"votes,omitempty"`
	// HeldOn is the fleet host holding the request and HostState its state
	// (fleet mode only).
	HeldOn    string `json:"held_on,omitempty"`
	HostState string `json:"host_state,omitempty"`
}

func view(a *approval.Approval) *View {
	if a == nil {
		return nil
	}
	v := &View{
		ID: a.ID, Status: a.Status, Summary: a.Summary, Container: a.Container.Name,
		Method: a.Method, URL: a.URL, Rule: a.Rule, Headers: a.Header, Body: a.Body,
		BodySize: a.BodySize, BodyTruncated: a.BodyTruncated, Created: a.Created, Expires: a.Expires,
		Decided: a.Decided, By: a.By, Reason: a.Reason, Digest: a.Digest,
		GrantsAllowed: a.GrantsAllowed, Required: a.Required,
	}
	for _, vo := range a.Votes {
		s := vo.By
		if vo.Display != "" {
			s = vo.Display + " (" + vo.By + ")"
		}
		v.Votes = append(v.Votes, s)
	}
	return v
}

func views(as []*approval.Approval) []*View {
	out := make([]*View, 0, len(as))
	for _, a := range as {
		out = append(out, view(a))
	}
	return out
}

// ListResponse is the answer of GET /ui/api/approvals.
type ListResponse struct {
	Pending []*View   `json:"pending"`
	Recent  []*View   `json:"recent"`
	Version uint64    `json:"version"`
	Now     time.Time `json:"now"` // server time, so the page counts down without trusting the browser's clock
	// Fleet is this host's name when the list is the whole fleet's;
	// FleetError says why only this host's holds are listed.
	Fleet      string `json:"fleet,omitempty"`
	FleetError string `json:"fleet_error,omitempty"`
}

// DecideRequest is the body of the decide calls.
type DecideRequest struct {
	// Act is approval.ActApprove, ActApproveFor or ActDeny.
	Act    string `json:"act"`
	Digest string `json:"digest"` // the approval's Digest as the page showed it
	Reason string `json:"reason,omitempty"`
	// Link fields (POST /ui/api/link and /ui/api/link/decide only).
	ID     string `json:"id,omitempty"`
	Action string `json:"action,omitempty"` // "approve" or "deny"
	Exp    string `json:"exp,omitempty"`
	Sig    string `json:"sig,omitempty"`
}

// DecideResponse is the answer of the decide calls.
type DecideResponse struct {
	Outcome  string `json:"outcome"`
	Message  string `json:"message"`
	Approval *View  `json:"approval,omitempty"`
}

// LinkResponse is the answer of POST /ui/api/link.
type LinkResponse struct {
	Approval *View     `json:"approval"`
	Action   string    `json:"action"`
	Now      time.Time `json:"now"`
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// bearer lets a request through only with "Authorization: Bearer <API token>".
func (h *handler) bearer(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.token == "" {
			writeErr(w, http.StatusForbidden, "the page is off on this listener (no api token configured); use a signed link")
			return
		}
		got := r.Header.Get("Authorization")
		if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+h.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="clawd"`)
			writeErr(w, http.StatusUnauthorized, "wrong or missing token")
			return
		}
		next(w, r)
	}
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	pending, v := h.src.List("")
	lr := ListResponse{Pending: views(pending), Recent: views(h.src.Recent(h.recent)), Version: v, Now: h.now().UTC()}
	if h.fleet != nil {
		h.addFleet(r.Context(), &lr)
	}
	writeJSON(w, http.StatusOK, lr)
}

// addFleet adds the other hosts' holds to lr. This host's come from its
// own Manager (the database may lag behind it); the database down, the
// page says so and shows this host's alone.
func (h *handler) addFleet(ctx context.Context, lr *ListResponse) {
	self := h.fleet.Self()
	lr.Fleet = self
	for _, v := range lr.Pending {
		v.HeldOn, v.HostState = self, "up"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	all, err := h.fleet.Pending(ctx)
	if err != nil {
		lr.FleetError = "the fleet database did not answer; only this host's held requests are shown"
		h.log.Debug("fleet holds", zap.Error(err))
		return
	}
	for _, hd := range all {
		if hd.HeldOn == self || hd.Approval == nil {
			continue
		}
		v := view(hd.Approval)
		v.HeldOn, v.HostState = hd.HeldOn, hd.HostState
		lr.Pending = append(lr.Pending, v)
	}
	sort.SliceStable(lr.Pending, func(i, j int) bool { return lr.Pending[i].Created.Before(lr.Pending[j].Created) })
}

// readRequest decodes a JSON body strictly: JSON content type (so a plain
// cross-site form cannot post one), size-bounded, no unknown fields.
func readRequest(w http.ResponseWriter, r *http.Request) (DecideRequest, error) {
	var req DecideRequest
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/json" {
		return req, errors.New("want Content-Type: application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return req, errors.New("body too large")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("bad JSON body: %v", err)
	}
	if dec.More() {
		return req, errors.New("bad JSON body: trailing data")
	}
	if len(req.Reason) > maxReason || !utf8.ValidString(req.Reason) {
		return req, fmt.Errorf("reason: at most %d bytes of UTF-8", maxReason)
	}
	for _, c := range req.Reason {
		if c < 0x20 || c == 0x7f {
			return req, errors.New("reason: no control characters")
		}
	}
	return req, nil
}

// decision builds the Decision for act; grants only where the rule allows
// them is left to the core, which refuses it.
func decision(id, act, digest, reason, channel string) (approval.Decision, error) {
	d := approval.Decision{ID: id, Digest: digest, Channel: channel, Display: Display}
	if digest == "" {
		// The page always has the digest; "" would mean "whatever the
		// request is now", which only the local CLI may ask for.
		return d, errors.New("digest: required")
	}
	switch act {
	case approval.ActApprove:
		d.Approve = true
	case approval.ActApproveFor:
		d.Approve, d.GrantFor = true, approval.GrantFor
	case approval.ActDeny:
		d.Reason = reason
	default:
		return d, errors.New(`act: want "a", "g" or "d"`)
	}
	if d.Approve && reason != "" {
		return d, errors.New("reason: applies to deny only")
	}
	return d, nil
}

func (h *handler) decide(w http.ResponseWriter, r *http.Request) {
	req, err := readRequest(w, r)
	if err == nil && (req.ID != "" || req.Action != "" || req.Exp != "" || req.Sig != "") {
		err = errors.New("link fields do not belong here")
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	d, err := decision(r.PathValue("id"), req.Act, req.Digest, req.Reason, approval.ChannelAPI)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	h.answer(w, r, d)
}

func (h *handler) answer(w http.ResponseWriter, r *http.Request, d approval.Decision) {
	res := h.src.Decide(r.Context(), d)
	code := http.StatusOK
	switch res.Outcome {
	case approval.ResultDecided, approval.ResultRecorded, approval.ResultAlready:
	case approval.ResultNotFound:
		code = http.StatusNotFound
	case approval.ResultError:
		code = http.StatusInternalServerError
		h.log.Error("web decision not recorded", zap.String("id", d.ID), zap.String("message", res.Message))
	case approval.ResultNotApprover, approval.ResultSelf:
		code = http.StatusForbidden
	case approval.ResultInvalid:
		code = http.StatusBadRequest
	default: // conflict, expired, stale
		code = http.StatusConflict
	}
	writeJSON(w, code, DecideResponse{Outcome: res.Outcome, Message: res.Message, Approval: view(res.Approval)})
}

// link checks a signed link's fields and returns the digest it signs; the
// error is all the clicker learns.
func (h *handler) link(req DecideRequest) (string, error) {
	if req.Action != "approve" && req.Action != "deny" {
		return "", errors.New(`action: want "approve" or "deny"`)
	}
	if req.ID == "" || len(req.ID) > 64 || len(req.Exp) > 20 || len(req.Sig) > 128 {
		return "", errors.New("invalid or expired link")
	}
	digest, ok := h.src.CheckLink(req.ID, req.Action, req.Exp, req.Sig)
	if !ok || digest == "" {
		return "", errors.New("invalid or expired link")
	}
	return digest, nil
}

func (h *handler) linkView(w http.ResponseWriter, r *http.Request) {
	req, err := readRequest(w, r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := h.link(req); err != nil {
		writeErr(w, http.StatusForbidden, err.Error())
		return
	}
	a, err := h.src.Get(req.ID)
	if err != nil || a == nil {
		writeErr(w, http.StatusNotFound, "approval not found")
		return
	}
	writeJSON(w, http.StatusOK, LinkResponse{Approval: view(a), Action: req.Action, Now: h.now().UTC()})
}

func (h *handler) linkDecide(w http.ResponseWriter, r *http.Request) {
	req, err := readRequest(w, r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	digest, err := h.link(req)
	if err != nil {
		writeErr(w, http.StatusForbidden, err.Error())
		return
	}
	// The link signs one request: the page must have shown that one.
	if req.Digest != digest {
		writeJSON(w, http.StatusConflict, DecideResponse{Outcome: approval.ResultStale,
			Message: "This page is not for the request the link was made for; nothing changed."})
		return
	}
	// A link signs one action: approve once, or deny. It cannot grant.
	want := map[string]string{"approve": approval.ActApprove, "deny": approval.ActDeny}[req.Action]
	if req.Act != want {
		writeErr(w, http.StatusForbidden, "this link allows only "+req.Action)
		return
	}
	d, err := decision(req.ID, req.Act, digest, req.Reason, approval.ChannelLink)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	h.answer(w, r, d)
}

var _ Source = (*approval.Manager)(nil)

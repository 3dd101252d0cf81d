package approval

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/internal/progtext"
	"github.com/clawd-dev/clawd/policy"
)

// Approval statuses as stored and shown by the API. Outcome statuses (see
// hold.go) are what a waiting request gets; an approval whose holds were cut
// short by a restart is "expired" while its holds got "restarting".
const (
	Pending   = "pending"
	Approved  = "approved"
	Denied    = "denied"
	TimedOut  = "timeout"
	Cancelled = "cancelled"
	Expired   = "expired"
)

// Defaults for zero Config fields.
const (
	DefaultTimeout                = 10 * time.Minute
	DefaultMaxPending             = 1000
	DefaultMaxPendingPerContainer = 100
	DefaultBodyPreviewLimit       = 4096
	DefaultMaxGrant               = 24 * time.Hour
)

// Errors returned by Decide and RevokeGrant; the HTTP API maps them to
// 404, 409, 410 and 400.
var (
	ErrNotFound = errors.New("approval not found")
	ErrConflict = errors.New("approval already decided otherwise")
	ErrGone     = errors.New("approval no longer pending")
	ErrInvalid  = errors.New("invalid request")
)

// Redactor replaces secrets (and the placeholders agents hold) in text that
// is about to be shown to a human. The secrets package implements it.
type Redactor interface {
	RedactString(string) string
	Redact([]byte) []byte
}

type identity struct{}

func (identity) RedactString(s string) string { return s }
func (identity) Redact(b []byte) []byte       { return b }

// Config configures a Manager. Only DBPath (or Store) is required.
type Config struct {
	DBPath string // bbolt file, e.g. /var/lib/clawd/approvals.db
	// Store, when set, is used instead of the bbolt file at DBPath: the
	// fleet's shared store (issue 17). The Manager closes it at Shutdown.
	Store Store
	// Channels are where people are asked (approval/<channel> packages);
	// names must be unique and differ from "cli" and "link".
	Channels []Channel
	// Approvers are each channel's own approvers (user IDs on it): who is
	// asked there when a route names the channel without people.
	Approvers map[string][]string
	// Platforms maps a channel name to its platform (type): channels of one
	// platform share user IDs, so one person on two of them is one person.
	// A channel not listed is a platform of its own.
	Platforms map[string]string
	// DefaultRoute is who is asked when neither rule nor set has
	// approvers; nil = every channel with its approvers, the CLI and links.
	DefaultRoute *policy.Route
	Redactor     Redactor   // nil = identity
	Audit        audit.Sink // nil = discard
	Log          *zap.Logger
	// CardsElsewhere names channels whose cards this Manager neither posts
	// nor updates: in a fleet, the host holding an Exclusive channel's
	// lease posts every host's cards there from the approvals in the
	// shared store. Decisions from these channels are judged as from any.
	CardsElsewhere map[string]bool
	// Registerer receives the approval metrics; nil = not registered.
	Registerer prometheus.Registerer
	// PublicURL is the externally reachable base of PublicHandler, used for
	// signed approve/deny links ("" = no links).
	PublicURL string
	// LinkKey is the HMAC key for signed links; nil = generated once and
	// persisted in the DB so links survive restarts.
	LinkKey []byte
	// APIToken guards /v1/* on PublicHandler; "" disables that API there.
	APIToken               string
	MaxPending             int // pending holds in total; default 1000
	MaxPendingPerContainer int // default 100
	BodyPreviewLimit       int // bytes of body shown on cards; default 4096
	DefaultTimeout         time.Duration
	MaxGrant               time.Duration // longest "approve for"; default 24h
	// Summarizers are tried in order before the generic fallback "METHOD
	// URL" (the daemon passes summary.Default()).
	Summarizers []Summarizer
	Now         func() time.Time // nil = time.Now
	// AfterFunc runs f after d and returns a stop function; nil uses
	// time.AfterFunc. Tests inject a fake clock's timers here.
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
}

// Approval is one held request as humans see it. Headers, body and URL are
// already redacted; it never holds a secret.
type Approval struct {
	ID            string           `json:"id"`
	Status        string           `json:"status"`
	Container     policy.Container `json:"container"`
	Method        string           `json:"method"`
	URL           string           `json:"url"`
	Host          string           `json:"host"`
	Path          string           `json:"path"`
	Dst           string           `json:"dst,omitempty"`
	Header        http.Header      `json:"headers,omitempty"`
	Body          string           `json:"body,omitempty"`
	BodySize      int64            `json:"body_size"`
	BodySHA256    string           `json:"body_sha256,omitempty"`
	BodyTruncated bool             `json:"body_truncated,omitempty"`
	Rule          string           `json:"rule"`
	Summary       string           `json:"summary"`
	Created       time.Time        `json:"created"`
	Expires       time.Time        `json:"expires"`
	Decided       time.Time        `json:"decided,omitzero"`
	By            string           `json:"by,omitempty"`
	Reason        string           `json:"reason,omitempty"`
	GrantID       string           `json:"grant_id,omitempty"`
	Waiters       int              `json:"waiters,omitempty"`
	ApproveURL    string           `json:"approve_url,omitempty"`
	DenyURL       string           `json:"deny_url,omitempty"`
	// Digest is the hex SHA-256 binding a decision to this exact request:
	// container, method, URL, body, rule and policy generation. Buttons
	// carry its first 16 digits (see ButtonValue).
	Digest           string `json:"digest"`
	PolicyGeneration uint64 `json:"policy_generation,omitempty"`
	// GrantsAllowed: the rule lets an approval also grant "for 15 min".
	GrantsAllowed bool `json:"grants_allowed"`
	// Required is how many different people must approve (1 or more).
	Required int `json:"required"`
	// Votes are the approvals given so far (two-person rules).
	Votes []Vote `json:"votes,omitempty"`
	// Asked lists who is asked, per channel, including escalations so far.
	Asked []Audience `json:"asked,omitempty"`
	// EscalateAt is when the escalation route is asked too (zero = none or done).
	EscalateAt time.Time `json:"escalate_at,omitzero"`
	// Refs maps notifier name to the ref its Notify returned (Slack ts, ...).
	Refs map[string]string `json:"-"`

	// The program that connected (ident, issue 16). Program is its path,
	// "unknown" or "(deleted)"; all shown on the card (Summary ends with
	// it) and bound into Digest.
	Program       string `json:"program,omitempty"`
	ProgramSHA256 string `json:"program_sha256,omitempty"`
	Cmdline       string `json:"cmdline,omitempty"`
	PID           uint32 `json:"pid,omitempty"`
	// Tools are the MCP tools/call messages of the request (issue 16,
	// "mcp"), arguments redacted.
	Tools []ToolCall `json:"tools,omitempty"`
}

func (a *Approval) clone() *Approval {
	c := *a
	c.Header = a.Header.Clone()
	c.Votes = slices.Clone(a.Votes)
	c.Tools = slices.Clone(a.Tools)
	c.Asked = make([]Audience, len(a.Asked))
	for i, au := range a.Asked {
		c.Asked[i] = Audience{Channel: au.Channel, People: slices.Clone(au.People), Target: au.Target}
	}
	if a.Refs != nil {
		c.Refs = make(map[string]string, len(a.Refs))
		for k, v := range a.Refs {
			c.Refs[k] = v
		}
	}
	return &c
}

// Vote is one approval given toward Required.
type Vote struct {
	By      string    `json:"by"` // identity, "channel:user"
	Display string    `json:"display,omitempty"`
	At      time.Time `json:"at"`
}

// Label is how cards name a voter: always the identity that voted, with
// the name they go by on the platform (which they chose) after it.
func (v Vote) Label() string {
	switch {
	case v.Display == "" || v.Display == v.By:
		return v.By
	case strings.HasPrefix(v.Display, v.By+" ("):
		return v.Display
	}
	return v.By + " (" + v.Display + ")"
}

// Audience is who is asked on one channel. People empty means anyone the
// channel's own approvers list allows.
type Audience struct {
	Channel string   `json:"channel"`
	People  []string `json:"people,omitempty"`
	Target  string   `json:"target,omitempty"` // where on the channel (policy.Audience.Target)
}

// Grant lets requests matching its scope through without asking until Expires.
type Grant struct {
	ID           string    `json:"id"`
	ContainerKey string    `json:"container_key"`
	Container    string    `json:"container"` // name, for display
	Rule         string    `json:"rule"`
	Host         string    `json:"host"`
	Method       string    `json:"method"`
	Path         string    `json:"path"` // redacted, for display
	PathSHA256   string    `json:"path_sha256"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
	By           string    `json:"by"`
	ApprovalID   string    `json:"approval_id"`
	// Program (ident, issue 16) is the program the approval was for
	// (path@sha256:digest, "unknown"); a grant covers only it.
	Program string `json:"program,omitempty"`
}

func (g *Grant) matches(key string, h *Hold) bool {
	if rt := h.Route; rt != nil && (rt.NoGrants || rt.Required > 1) {
		return false // the rule as it is now wants each request judged, or two people
	}
	return g.ContainerKey == key && g.Rule == h.Rule && g.Host == hostname.Normalize(h.Host) &&
		g.Method == strings.ToUpper(h.Method) && g.PathSHA256 == pathHash(grantScope(h)) &&
		g.Program == programKey(h.Program) && g.Program != "unknown"
}

// grantScope is what a grant covers of a request's target: the path with
// its query, exactly as sent (the URL when the proxy gave one).
func grantScope(h *Hold) string {
	if _, q, ok := strings.Cut(h.URL, "?"); ok {
		p, _, _ := strings.Cut(h.Path, "?")
		return p + "?" + q
	}
	return h.Path
}

// pathHash: grants match the exact path and query sent, but they can carry
// a placeholder or token, so only their hash is kept.
func pathHash(p string) string {
	sum := sha256.Sum256([]byte(p))
	return hex.EncodeToString(sum[:])
}

// entry is a pending approval and the holds waiting on it.
type entry struct {
	a          *Approval
	dedup      string
	rawPath    string   // Hold.Path as sent, for the grant scope; never shown
	program    string   // programKey of the hold, for the grant scope (ident)
	requesters []string // identities the agent acts for; they never decide
	grantFor   time.Duration
	waiters    int
	done       chan struct{} // closed when decided
	changed    chan struct{} // closed and replaced when a card must be updated
	outcome    Outcome
	stop       func() bool // stops the timeout timer
	stopEsc    func() bool // stops the escalation timer
}

// cardsChanged wakes the card goroutines to update their cards. Callers
// hold the Manager's lock.
func (e *entry) cardsChanged() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// Manager holds requests for approval. It is safe for concurrent use.
type Manager struct {
	cfg Config
	// digestKey keys the args digests cards show (shownDigest): drawn
	// at start, never shown.
	digestKey [32]byte
	log       *zap.Logger
	red       Redactor
	audit     audit.Sink
	now       func() time.Time
	store     Store
	linkKey   []byte
	sums      []Summarizer
	met       *metrics

	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	pending  map[string]*entry // by approval ID
	byDedup  map[string]*entry
	holds    int
	perCont  map[string]int
	grants   map[string]*Grant
	onRevoke []func()
	recent   []*Approval // ended approvals, newest first, at most keepRecent
	version  uint64
	changed  chan struct{} // closed and replaced whenever the pending set changes
}

// New opens the approval DB, expires approvals left pending by a previous
// run (updating their cards in the background) and loads grants.
func New(cfg Config) (*Manager, error) {
	if cfg.DBPath == "" && cfg.Store == nil {
		return nil, fmt.Errorf("approval: DBPath is required")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Redactor == nil {
		cfg.Redactor = identity{}
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxPendingPerContainer <= 0 {
		cfg.MaxPendingPerContainer = DefaultMaxPendingPerContainer
	}
	if cfg.BodyPreviewLimit <= 0 {
		cfg.BodyPreviewLimit = DefaultBodyPreviewLimit
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = DefaultTimeout
	}
	if cfg.MaxGrant <= 0 {
		cfg.MaxGrant = DefaultMaxGrant
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	seen := map[string]bool{ChannelCLI: true, ChannelAPI: true, ChannelLink: true}
	for _, n := range cfg.Channels {
		if seen[n.Name()] {
			return nil, fmt.Errorf("approval: channel name %q is used twice or reserved", n.Name())
		}
		seen[n.Name()] = true
	}
	met := newMetrics()
	db := cfg.Store
	if db == nil {
		var err error
		if db, err = OpenBoltStore(cfg.DBPath); err != nil {
			return nil, err
		}
	}
	m := &Manager{
		cfg: cfg, log: cfg.Log, red: cfg.Redactor, audit: cfg.Audit, now: cfg.Now,
		store: db, sums: cfg.Summarizers, met: met,
		pending: map[string]*entry{}, byDedup: map[string]*entry{}, perCont: map[string]int{},
		grants: map[string]*Grant{}, changed: make(chan struct{}),
	}
	rand.Read(m.digestKey[:])
	m.bgCtx, m.bgCancel = context.WithCancel(context.Background())
	m.linkKey = cfg.LinkKey
	if m.linkKey == nil {
		var err error
		if m.linkKey, err = db.LinkKey(); err != nil {
			db.Close()
			return nil, err
		}
	}
	stale, grants, err := db.Recover(m.now())
	if err != nil {
		db.Close()
		return nil, err
	}
	// Registered last, so a failed New leaves nothing registered behind.
	if err := met.register(cfg.Registerer); err != nil {
		db.Close()
		return nil, fmt.Errorf("approval: register metrics: %w", err)
	}
	for _, g := range grants {
		m.grants[g.ID] = g
	}
	if m.recent, err = db.RecentDecided(keepRecent); err != nil {
		m.log.Warn("read recent approvals", zap.Error(err))
	}
	for _, a := range stale {
		m.log.Info("approval expired by restart", zap.String("id", a.ID))
		m.auditApproval(a, "expired")
		m.met.decided.WithLabelValues(Expired).Inc()
		m.updateCards(a)
	}
	m.met.grants.Set(float64(len(m.grants)))
	go m.expireLoop()
	return m, nil
}

// Recovered audits approvals a shared store expired for this host after
// New: its recovery at start was put off because the store could not be
// reached (a fleet started during a database outage), and the previous
// run's pending approvals ended once it answered. As New does for those
// it finds: an "expired" audit line each, and their cards updated.
func (m *Manager) Recovered(stale []*Approval) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for _, a := range stale {
		m.log.Info("approval expired by restart (recovered late)", zap.String("id", a.ID))
		m.auditApproval(a, "expired")
		m.met.decided.WithLabelValues(Expired).Inc()
		m.updateCards(a)
	}
}

// grantSweep is how often expired grants are looked for: an expired grant
// is a revocation, so what it let through (open connections, streams) is
// re-decided by the OnRevoke hooks within this time of its expiry.
const grantSweep = time.Second

func (m *Manager) expireLoop() {
	t := time.NewTicker(grantSweep)
	defer t.Stop()
	for {
		select {
		case <-m.bgCtx.Done():
			return
		case <-t.C:
			m.expireGrants()
		}
	}
}

// expireGrants removes the grants whose time is up, audits each and runs
// the OnRevoke hooks once if any expired.
func (m *Manager) expireGrants() {
	now := m.now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	n := 0
	for id, g := range m.grants {
		if now.Before(g.Expires) {
			continue
		}
		delete(m.grants, id)
		if err := m.store.DeleteGrant(id); err != nil {
			m.log.Warn("delete expired grant", zap.String("id", id), zap.Error(err))
		}
		m.audit.Log(audit.Entry{
			Time: now.UTC(), Event: audit.EventGrant, Action: audit.ActionExpired, ApprovalID: g.ApprovalID,
			Rule: g.Rule, Container: g.Container, Method: g.Method, Host: g.Host,
		})
		n++
	}
	hooks := slices.Clone(m.onRevoke)
	if n > 0 {
		m.met.grants.Set(float64(len(m.grants)))
	}
	m.mu.Unlock()
	if n > 0 {
		for _, f := range hooks {
			f()
		}
	}
}

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// validID reports whether s looks like an ID we made; anything else is 404
// without touching the DB.
func validID(s string) bool {
	if len(s) != 26 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// Request holds h until a human decides, the timeout passes, ctx is cancelled
// (the agent went away) or the manager shuts down. It never returns an
// approved outcome unless a human or a grant approved this exact request.
func (m *Manager) Request(ctx context.Context, h Hold) Outcome {
	now := m.now()
	key := h.Container.Key()
	if ctx.Err() != nil {
		// The agent is already gone: do not bother a human.
		return Outcome{Status: StatusCancelled, Reason: "the agent disconnected"}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Outcome{Status: StatusRestarting, Reason: "clawd is restarting"}
	}
	if g := m.matchGrantLocked(key, &h, now); g != nil {
		m.mu.Unlock()
		m.met.requests.WithLabelValues(StatusGranted).Inc()
		m.audit.Log(audit.Entry{
			Time: now.UTC(), Event: audit.EventApproval, Action: StatusGranted, By: "grant:" + g.ID,
			Rule: h.Rule, Container: h.Container.Name, ContainerID: h.Container.ID, Runtime: h.Container.Runtime,
			Dst: h.Dst, Method: h.Method, Host: h.Host, Path: m.sanitize(h.Path),
		})
		return Outcome{Approved: true, Status: StatusGranted, By: "grant:" + g.ID, Reason: "approved until " + g.Expires.UTC().Format(time.RFC3339)}
	}
	dk := requestDigest(&h)
	e := m.byDedup[dk]
	if m.holds >= m.cfg.MaxPending || m.perCont[key] >= m.cfg.MaxPendingPerContainer {
		m.mu.Unlock()
		m.met.requests.WithLabelValues(StatusLimit).Inc()
		m.audit.Log(audit.Entry{
			Time: now.UTC(), Event: audit.EventApproval, Action: StatusLimit, Rule: h.Rule,
			Container: h.Container.Name, ContainerID: h.Container.ID, Runtime: h.Container.Runtime,
			Dst: h.Dst, Method: h.Method, Host: h.Host, Path: m.sanitize(h.Path),
			Reason: "too many pending approvals",
		})
		return Outcome{Status: StatusLimit, Reason: "too many pending approvals"}
	}
	if e == nil {
		var why string
		if e, why = m.createLocked(&h, dk, now); e == nil {
			m.mu.Unlock()
			m.met.requests.WithLabelValues(StatusDenied).Inc()
			m.audit.Log(audit.Entry{
				Time: now.UTC(), Event: audit.EventApproval, Action: StatusDenied, Rule: h.Rule,
				Container: h.Container.Name, ContainerID: h.Container.ID, Runtime: h.Container.Runtime,
				Dst: h.Dst, Method: h.Method, Host: h.Host, Path: m.sanitize(h.Path), Reason: why,
			})
			return Outcome{Status: StatusDenied, Reason: why}
		}
	}
	e.waiters++
	e.a.Waiters = e.waiters
	m.holds++
	m.perCont[key]++
	m.met.holds.Set(float64(m.holds))
	m.bumpLocked()
	m.mu.Unlock()

	select {
	case <-e.done:
		return e.outcome
	case <-ctx.Done():
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-e.done: // decided while we were waiting for the lock
		return e.outcome
	default:
	}
	e.waiters--
	e.a.Waiters = e.waiters
	m.holds--
	m.decContLocked(key, 1)
	m.met.holds.Set(float64(m.holds))
	m.bumpLocked()
	if e.waiters == 0 {
		m.finishLocked(e, Cancelled, Outcome{Status: StatusCancelled, ID: e.a.ID, Reason: "the agent disconnected"}, "", "the agent disconnected")
	}
	return Outcome{Status: StatusCancelled, ID: e.a.ID, Reason: "the agent disconnected"}
}

func (m *Manager) decContLocked(key string, n int) {
	m.perCont[key] -= n
	if m.perCont[key] <= 0 {
		delete(m.perCont, key)
	}
}

// createLocked makes a new pending approval for h and asks its route; it
// returns nil and why when too few people could ever approve it (a route
// nobody can answer is refused at once, not left to time out).
func (m *Manager) createLocked(h *Hold, dk string, now time.Time) (*entry, string) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = m.cfg.DefaultTimeout
	}
	a := m.view(h)
	a.ID = newID()
	a.Status = Pending
	a.Created = now.UTC()
	a.Expires = now.Add(timeout).UTC()
	a.Refs = map[string]string{}
	a.Digest = dk
	a.PolicyGeneration = h.Generation
	escalate, after := m.route(a, h)
	if after >= timeout {
		escalate, after = nil, 0 // it would come after the request ended
	}
	if after > 0 {
		a.EscalateAt = now.Add(after).UTC()
	}
	if n := m.eligible(a, escalate, requesters(h)); n < a.Required {
		return nil, fmt.Sprintf("rule %q needs %d different approvers but only %d can answer (the requester never counts)", h.Rule, a.Required, n)
	}
	if m.cfg.PublicURL != "" && slices.ContainsFunc(a.Asked, func(au Audience) bool { return au.Channel == ChannelLink }) {
		a.ApproveURL = m.linkURL(a.ID, a.Digest, "approve", a.Expires)
		a.DenyURL = m.linkURL(a.ID, a.Digest, "deny", a.Expires)
	}
	e := &entry{a: a, dedup: dk, rawPath: grantScope(h), program: programKey(h.Program), requesters: requesters(h), done: make(chan struct{}), changed: make(chan struct{})}
	m.pending[a.ID] = e
	m.byDedup[dk] = e
	if err := m.store.PutApproval(a); err != nil {
		// Holding still works; only crash recovery of this card is lost.
		m.log.Error("persist approval", zap.String("id", a.ID), zap.Error(err))
	}
	e.stop = m.cfg.AfterFunc(timeout, func() { m.expire(e, timeout) })
	if after > 0 {
		e.stopEsc = m.cfg.AfterFunc(after, func() { m.escalate(e, escalate) })
	}
	m.met.requests.WithLabelValues("held").Inc()
	m.met.pending.Set(float64(len(m.pending)))
	m.audit.Log(audit.Entry{
		Time: now.UTC(), Event: audit.EventApproval, Action: "requested", ApprovalID: a.ID, Rule: a.Rule,
		Container: a.Container.Name, ContainerID: a.Container.ID, Runtime: a.Container.Runtime,
		Dst: a.Dst, Method: a.Method, Host: a.Host, Path: a.Path,
		Program: a.Program, ProgramSHA256: a.ProgramSHA256, Cmdline: a.Cmdline, PID: a.PID,
	})
	for _, au := range a.Asked {
		if c := m.channel(au.Channel); c != nil {
			m.wg.Add(1)
			m.postLocked(c, e)
		}
	}
	return e, ""
}

// view builds the human-facing, redacted form of a hold.
func (m *Manager) view(h *Hold) *Approval {
	a := &Approval{
		Container:  h.Container,
		Method:     strings.ToUpper(h.Method),
		URL:        truncate(m.sanitize(h.URL), maxShownURL),
		Host:       hostname.Normalize(h.Host), // at most 253 bytes
		Path:       truncate(m.sanitize(h.Path), maxShownURL),
		Dst:        h.Dst,
		Header:     m.redactHeader(h.Header),
		BodySize:   h.BodySize,
		BodySHA256: h.BodySHA256,
		Rule:       h.Rule,
	}
	// Redact the whole buffered body before cutting it to the preview
	// limit, so the cut cannot split a secret.
	body := m.red.Redact(append([]byte(nil), h.Body...))
	if !bytes.Equal(body, h.Body) || m.toolsRedacted(h.Tools) {
		// The card shows everything else of the body: a plain digest
		// of it would let anyone who sees the card confirm guesses of
		// the secret it hid (the binding to the exact bytes is the
		// approval's digest, which covers it).
		a.BodySHA256 = ""
	}
	if len(body) > m.cfg.BodyPreviewLimit {
		body = body[:m.cfg.BodyPreviewLimit]
		a.BodyTruncated = true
	}
	if h.BodySize > int64(len(h.Body)) {
		a.BodyTruncated = true
	}
	a.Body = m.bodyPreview(body)
	for _, t := range h.Tools {
		kvs, ok := m.toolArgs(t.Args)
		a.Tools = append(a.Tools, ToolCall{Name: m.toolName(t.Name), Args: renderArgs(kvs, ok, maxShownArgs, false), ArgsSHA256: m.shownDigest(t.Args)})
	}
	if len(h.Tools) > 0 {
		// Every channel shows the body section: for tool calls it names
		// every argument key (see toolview.go), never a byte-cut body.
		a.Body = m.toolsBody(h.Tools)
		a.BodyTruncated = false
	}
	a.Summary = m.Summary(h)
	if k := programKey(h.Program); k != "" {
		a.Program = "unknown"
		if h.Program.Known {
			a.Program = "(deleted)"
			if h.Program.Path != "" {
				a.Program = truncate(m.sanitize(progtext.Escape(h.Program.Path)), maxShownURL)
			}
			a.ProgramSHA256 = h.Program.SHA256
		}
		a.Cmdline = truncate(m.sanitize(progtext.Escape(h.Program.Cmdline)), maxShownURL)
		a.PID = h.Program.PID
		// Every channel shows the summary: the program goes there, within
		// the shortest title a channel shows whole (Google Chat's 200).
		by := " · by " + cutMiddle(a.Program, 80)
		if a.ProgramSHA256 != "" {
			by += " (sha256 " + a.ProgramSHA256[:min(12, len(a.ProgramSHA256))] + "…)"
		}
		a.Summary = truncate(unclause(a.Summary), maxSummaryWithProgram-len(by)) + by
	}
	return a
}

// maxSummaryWithProgram bounds a summary that names the program: every
// channel's title shows that many bytes (ident, issue 16).
const maxSummaryWithProgram = 190

// maxShownURL bounds URLs on cards and in the API; the agent chooses them.
const maxShownURL = 4096

// maxShownTool and maxShownArgs bound MCP tool names and arguments on cards
// (the arguments about: every key is named, values are cut to fit).
const (
	maxShownTool = 200
	maxShownArgs = 2000
)

func (m *Manager) expire(e *entry, timeout time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	reason := fmt.Sprintf("no decision within %s", timeout)
	m.finishLocked(e, TimedOut, Outcome{Status: StatusTimeout, ID: e.a.ID, Reason: reason}, "", reason)
}

// finishLocked ends a pending approval: persists, releases every waiter with
// out, audits, and schedules card updates. No-op if already finished.
func (m *Manager) finishLocked(e *entry, status string, out Outcome, by, reason string) {
	if m.pending[e.a.ID] != e {
		return
	}
	delete(m.pending, e.a.ID)
	delete(m.byDedup, e.dedup)
	if e.stop != nil {
		e.stop()
	}
	if e.stopEsc != nil {
		e.stopEsc()
	}
	e.a.EscalateAt = time.Time{}
	m.holds -= e.waiters
	m.decContLocked(e.a.Container.Key(), e.waiters)
	e.waiters = 0
	e.a.Waiters = 0
	e.a.Status = status
	e.a.Decided = m.now().UTC()
	e.a.By = by
	e.a.Reason = reason
	if err := m.store.PutApproval(e.a); err != nil {
		m.log.Error("persist approval decision", zap.String("id", e.a.ID), zap.Error(err))
	}
	e.outcome = out
	close(e.done)
	m.recent = append([]*Approval{e.a.clone()}, m.recent...)
	if len(m.recent) > keepRecent {
		m.recent = m.recent[:keepRecent]
	}
	m.met.holds.Set(float64(m.holds))
	m.met.pending.Set(float64(len(m.pending)))
	m.met.decided.WithLabelValues(status).Inc()
	m.bumpLocked()
	m.auditApproval(e.a, status)
}

func (m *Manager) auditApproval(a *Approval, action string) {
	m.audit.Log(audit.Entry{
		Time: m.now().UTC(), Event: audit.EventApproval, Action: action, By: a.By, Reason: a.Reason,
		ApprovalID: a.ID, Rule: a.Rule, Container: a.Container.Name, ContainerID: a.Container.ID,
		Runtime: a.Container.Runtime, Dst: a.Dst, Method: a.Method, Host: a.Host, Path: a.Path,
	})
}

func (m *Manager) bumpLocked() {
	m.version++
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Manager) matchGrantLocked(key string, h *Hold, now time.Time) *Grant {
	for _, g := range m.grants {
		if !now.Before(g.Expires) {
			continue // expireGrants removes it and runs the revocation hooks
		}
		if g.matches(key, h) {
			return g
		}
	}
	return nil
}

// Get returns a copy of an approval, pending or decided.
func (m *Manager) Get(id string) (*Approval, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.pending[id]; e != nil {
		return e.a.clone(), nil
	}
	return m.store.GetApproval(id)
}

// List returns the pending approvals, oldest first, optionally only those of
// one container (matched by name, ID or key), and the set's version.
func (m *Manager) List(container string) ([]*Approval, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Approval, 0, len(m.pending))
	for _, e := range m.pending {
		c := e.a.Container
		if container != "" && container != c.Name && container != c.ID && container != c.Key() {
			continue
		}
		out = append(out, e.a.clone())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, m.version
}

// ChangedSince returns a channel closed at the next change of the pending
// set, or nil if the set is already at a version other than since.
func (m *Manager) ChangedSince(since uint64, haveSince bool) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if haveSince && since != m.version {
		return nil
	}
	return m.changed
}

// keepRecent is how many ended approvals Recent can show.
const keepRecent = 100

// Recent returns up to n ended approvals (decided, timed out, cancelled,
// expired), newest first, with who decided and why.
func (m *Manager) Recent(n int) []*Approval {
	m.mu.Lock()
	defer m.mu.Unlock()
	n = min(max(n, 0), len(m.recent))
	out := make([]*Approval, n)
	for i := range out {
		out[i] = m.recent[i].clone()
	}
	return out
}

// ListGrants returns the unexpired grants, soonest expiry first.
func (m *Manager) ListGrants() []Grant {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Grant{}
	for _, g := range m.grants {
		if now.Before(g.Expires) {
			out = append(out, *g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expires.Before(out[j].Expires) })
	return out
}

// RevokeGrant deletes a grant; requests matching it are asked again, and
// the OnRevoke hooks run (connections it let through are re-decided).
func (m *Manager) RevokeGrant(id, by string) error {
	if !validID(id) {
		return ErrNotFound
	}
	hooks, err := m.revokeGrant(id, by)
	if err != nil {
		return err
	}
	for _, f := range hooks {
		f()
	}
	return nil
}

func (m *Manager) revokeGrant(id, by string) ([]func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.grants[id]
	if g == nil {
		// A grant another host of the fleet made a moment ago.
		if _, shared := m.store.(GrantLister); shared {
			m.syncGrantsLocked()
			g = m.grants[id]
		}
	}
	if g == nil {
		return nil, ErrNotFound
	}
	if err := m.store.DeleteGrant(id); err != nil {
		return nil, fmt.Errorf("revoke grant: %w", err)
	}
	delete(m.grants, id)
	m.met.grants.Set(float64(len(m.grants)))
	m.audit.Log(audit.Entry{
		Time: m.now().UTC(), Event: audit.EventGrant, Action: audit.ActionRevoked, By: by, ApprovalID: g.ApprovalID,
		Rule: g.Rule, Container: g.Container, Method: g.Method, Host: g.Host,
	})
	return slices.Clone(m.onRevoke), nil
}

// SyncGrants makes the grants of a shared store (GrantLister) this
// Manager's: grants other hosts gave apply here at once, grants they
// revoked stop applying, and the OnRevoke hooks run when any was removed
// (connections they let through are re-decided). On a store error the
// current grants stay. Without a shared store it does nothing.
func (m *Manager) SyncGrants() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	removed, err := m.syncGrantsLocked()
	hooks := slices.Clone(m.onRevoke)
	m.mu.Unlock()
	if removed > 0 {
		for _, f := range hooks {
			f()
		}
	}
	return err
}

// syncGrantsLocked replaces the grants with the shared store's and returns
// how many went away. Callers hold m.mu and run the OnRevoke hooks.
func (m *Manager) syncGrantsLocked() (removed int, err error) {
	gl, ok := m.store.(GrantLister)
	if !ok {
		return 0, nil
	}
	gs, err := gl.Grants()
	if err != nil {
		return 0, err
	}
	now := m.now()
	next := make(map[string]*Grant, len(gs))
	for _, g := range gs {
		if g != nil && validID(g.ID) && now.Before(g.Expires) {
			next[g.ID] = g
		}
	}
	for id, g := range m.grants {
		ng := next[id]
		if ng == nil {
			removed++
			m.log.Info("grant ended on another host", zap.String("grant", id), zap.String("approval", g.ApprovalID))
		} else if ng.Expires.Before(g.Expires) {
			removed++ // shortened: what it let through is re-decided
		}
	}
	for id := range next {
		if m.grants[id] == nil {
			m.log.Info("grant from another host", zap.String("grant", id))
		}
	}
	m.grants = next
	m.met.grants.Set(float64(len(m.grants)))
	return removed, nil
}

// OnRevoke registers f to run after every grant revocation, outside the
// Manager's lock (the proxy re-decides the connections grants let through).
func (m *Manager) OnRevoke(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onRevoke = append(m.onRevoke, f)
}

// GrantActive reports whether the grant id exists and has not expired.
func (m *Manager) GrantActive(id string) bool {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.grants[id]
	return g != nil && now.Before(g.Expires)
}

// Shutdown releases every pending hold with "restarting", marks their
// approvals expired, waits (bounded) for card updates and closes the DB.
// Request after Shutdown returns "restarting" at once.
func (m *Manager) Shutdown() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	for _, e := range m.pending {
		m.finishLocked(e, Expired, Outcome{Status: StatusRestarting, ID: e.a.ID, Reason: "clawd is restarting"}, "", "clawd restarting")
	}
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// Slow notifiers must not hold up a restart; give up on them.
		m.bgCancel()
		<-done
	}
	m.bgCancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.store.Close(); err != nil {
		m.log.Warn("close approval db", zap.Error(err))
	}
}

// card posts e's card on channel c, then updates it after every change
// until the approval ends (and once more for the end).
//
// The caller holds m.mu (the first card shows the approval as it was when
// the channel was asked) and has done m.wg.Add(1).
func (m *Manager) postLocked(c Channel, e *entry) {
	go m.card(c, e, m.cardFor(c.Name(), e.a), e.changed, c.Name())
}

// card keeps one card: refKey is where its ref is kept in Approval.Refs
// (the channel's name, or name#N for a second card on a Personal channel);
// its updates show the people it was posted to.
func (m *Manager) card(c Channel, e *entry, snap *Card, changed <-chan struct{}, refKey string) {
	people, target := snap.People, snap.Target
	defer m.wg.Done()
	ctx, cancel := context.WithTimeout(m.bgCtx, 2*time.Minute)
	ref, err := c.Post(ctx, snap)
	cancel()
	if err != nil {
		m.met.notifyErrors.WithLabelValues(c.Name()).Inc()
		m.log.Warn("post approval card", zap.String("channel", c.Name()), zap.String("id", snap.ID), zap.Error(err))
		return // never delivered, nothing to update
	}
	m.mu.Lock()
	e.a.Refs[refKey] = ref
	// The DB is open: Shutdown closes it only after wg is done.
	if perr := m.store.PutApproval(e.a); perr != nil {
		m.log.Warn("persist card ref", zap.Error(perr))
	}
	if m.pending[e.a.ID] == e {
		m.bumpLocked() // lets tests (and watchers) see the card was sent
	}
	m.mu.Unlock()
	for {
		select {
		case <-e.done:
		case <-changed:
		case <-m.bgCtx.Done():
			return
		}
		m.mu.Lock()
		final := m.pending[e.a.ID] != e
		snap := m.cardFor(c.Name(), e.a)
		if refKey != c.Name() {
			snap.People, snap.Target = people, target
		}
		changed = e.changed
		m.mu.Unlock()
		m.update(c, snap, ref)
		if final {
			return
		}
	}
}

// cardFor builds the card of a for one channel. Callers hold m.mu.
func (m *Manager) cardFor(channel string, a *Approval) *Card {
	c := &Card{Approval: a.clone(), Channel: channel, Now: m.now()}
	for _, au := range a.Asked {
		if au.Channel == channel {
			c.People = slices.Clone(au.People)
			c.Target = au.Target
		}
	}
	return c
}

func (m *Manager) update(c Channel, card *Card, ref string) {
	ctx, cancel := context.WithTimeout(m.bgCtx, 2*time.Minute)
	defer cancel()
	if err := c.Update(ctx, card, ref); err != nil {
		m.met.notifyErrors.WithLabelValues(c.Name()).Inc()
		m.log.Warn("update approval card", zap.String("channel", c.Name()), zap.String("id", card.ID), zap.Error(err))
	}
}

// updateCards updates the cards of an approval decided outside the normal
// flow (expired by restart), using the refs stored with it.
func (m *Manager) updateCards(a *Approval) {
	for key, ref := range a.Refs {
		name, _, _ := strings.Cut(key, "#")
		n := m.channel(name)
		if n == nil {
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.update(n, m.cardFor(n.Name(), a), ref)
		}()
	}
}

// wait blocks until background notifications started so far are done
// (they finish once their approvals do); for tests.
func (m *Manager) wait() { m.wg.Wait() }

// cutMiddle bounds a program path to about n bytes by cutting its middle:
// the executable's name (the last segment, itself cut at its start when
// very long) always shows.
func cutMiddle(s string, n int) string {
	if len(s) <= n {
		return s
	}
	tail := len(s) - strings.LastIndexByte(s, '/') // "/name"
	tail = min(tail, n*3/4)
	k := len(s) - tail
	for k < len(s) && !utf8RuneStart(s[k]) {
		k++
	}
	h := n - tail - len("…")
	for h > 0 && !utf8RuneStart(s[h]) {
		h--
	}
	return s[:h] + "…" + s[k:]
}

// clauseDots are characters that read as the middle dot of the program
// clause (" · by /path").
var clauseDots = strings.NewReplacer("·", "-", "\u0387", "-", "\u2022", "-", "\u2027", "-", "\u2219", "-", "\u22c5", "-", "\u30fb", "-", "\uff65", "-", "\u00b7", "-")

// byProgram is "by" followed by what a program clause names.
var byProgram = regexp.MustCompile(`(?i)\bby(\s+)(/|unknown\b|\(deleted\))`)

// unclause makes agent text unable to read as the card's program clause
// (" · by /usr/bin/git (sha256 …)", which clawd appends last): middle
// dots become "-" and "by /…" becomes "(by) /…". The only clause that
// reads so is clawd's own.
func unclause(s string) string {
	return byProgram.ReplaceAllString(clauseDots.Replace(s), "(by)$1$2")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

package approval

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"go.uber.org/zap"
)

// Channel is one place where humans are asked: a chat platform, a push
// service, a webhook. Each lives in its own package (approval/slack,
// approval/telegram, …); the core knows none of them.
//
// Post is called once per new approval (and once more per escalation that
// reaches this channel), from its own goroutine; the returned ref (a message
// ID, "" if the platform has none) is persisted and handed back to Update
// whenever the approval changes: a first approval of two, the decision, a
// timeout, a cancel, a restart. The *Card is a copy the channel may keep; it
// holds no secrets.
type Channel interface {
	Name() string
	Post(ctx context.Context, c *Card) (ref string, err error)
	Update(ctx context.Context, c *Card, ref string) error
}

// Listener is a Channel that receives clicks over a connection it opens
// itself (Slack Socket Mode, Telegram getUpdates, the Discord Gateway, an
// ntfy subscription), so clawd needs no public URL. Run returns when ctx is
// done; it reconnects on its own and never gives up while ctx lives.
type Listener interface {
	Run(ctx context.Context, d Decider) error
}

// Exclusive is a Listener of which only one process may receive the clicks
// at a time (Telegram getUpdates, Slack Socket Mode, the Discord Gateway):
// a second consumer of the same bot or app takes the clicks away from the
// first. In a fleet only the host holding the channel's lease runs it, and
// that host posts and updates its cards (fleet package).
type Exclusive interface {
	Exclusive() bool
}

// IsExclusive reports whether c is an Exclusive Listener in its current
// mode.
func IsExclusive(c Channel) bool {
	if _, ok := c.(Listener); !ok {
		return false
	}
	x, ok := c.(Exclusive)
	return ok && x.Exclusive()
}

// Callbacks is a Channel that receives clicks as HTTP requests. The handler
// is mounted on the public listener at CallbackPath(name) (and at any legacy
// path the channel documents); it must verify each request exactly as the
// platform signs it before calling d.
type Callbacks interface {
	Callbacks(d Decider) http.Handler
}

// Personal is a Channel that sends each asked person a message of their
// own (e-mail, ntfy, WhatsApp): when an escalation adds people to it, the
// core posts them a card of their own rather than updating the first.
type Personal interface {
	Personal() bool
}

// CallbackPath is where a channel's callback handler is mounted on the
// public listener: "/v1/channels/NAME/" (the handler sees the full path).
func CallbackPath(name string) string { return "/v1/channels/" + name + "/" }

// Card is what a channel shows: the (redacted) approval, who on this
// channel is asked, and which buttons to offer.
type Card struct {
	*Approval
	// Channel is the name of the channel the card is for.
	Channel string `json:"channel"`
	// People are the user IDs on this channel that may decide (the route's
	// people, groups expanded, plus escalations). A channel that can address
	// people (mentions, direct messages) should; it must not widen it.
	People []string `json:"people,omitempty"`
	// Target is where on the channel the route wants the card (a GitHub
	// "owner/repo#N", a Linear issue key, a chat ID); "" = the channel's
	// configured default. Channels without places ignore it.
	Target string `json:"target,omitempty"`
	// Now is when the card was built, for "time left".
	Now time.Time `json:"now"`
}

// Actions a card offers; Buttons lists the ones this approval allows.
const (
	ActApprove    = "a" // approve once
	ActApproveFor = "g" // approve and grant for GrantFor (15 min)
	ActDeny       = "d"
)

// GrantFor is how long the "approve for" button grants.
const GrantFor = 15 * time.Minute

// Button is one action on a card.
type Button struct {
	Act   string // ActApprove, ActApproveFor, ActDeny
	Label string // "Approve", "Approve 15 min", "Deny"
	// Value binds the click to this approval and its exact request: put it
	// in the button's payload (callback_data, custom_id, value) unchanged.
	// It is at most 45 bytes of [a-z0-9:].
	Value string
	Style string // "primary" or "danger"
}

// Buttons are the actions the card for c offers while it is pending: no
// "approve for" when the rule forbids grants. Decided cards have none.
func (c *Card) Buttons() []Button {
	if c.Approval == nil || c.Status != Pending {
		return nil
	}
	b := []Button{{Act: ActApprove, Label: "Approve", Value: ButtonValue(ActApprove, c.Approval), Style: "primary"}}
	if c.GrantsAllowed {
		b = append(b, Button{Act: ActApproveFor, Label: "Approve 15 min", Value: ButtonValue(ActApproveFor, c.Approval)})
	}
	return append(b, Button{Act: ActDeny, Label: "Deny", Value: ButtonValue(ActDeny, c.Approval), Style: "danger"})
}

// digestShown is how much of the request digest buttons carry: with the
// approval ID it binds a click to one request (Telegram allows 64 bytes).
const digestShown = 16

// ButtonValue is "ACT:ID:DIGEST16".
func ButtonValue(act string, a *Approval) string {
	d := a.Digest
	if len(d) > digestShown {
		d = d[:digestShown]
	}
	return act + ":" + a.ID + ":" + d
}

// ParseButton reads a ButtonValue back into a Decision (without who made
// it). Anything else is an error; the caller answers it and changes nothing.
func ParseButton(v string) (Decision, error) {
	parts := strings.Split(v, ":")
	if len(parts) != 3 || !validID(parts[1]) || len(parts[2]) != digestShown || !isHex(parts[2]) {
		return Decision{}, fmt.Errorf("%w: not a clawd button", ErrInvalid)
	}
	d := Decision{ID: parts[1], Digest: parts[2]}
	switch parts[0] {
	case ActApprove:
		d.Approve = true
	case ActApproveFor:
		d.Approve, d.GrantFor = true, GrantFor
	case ActDeny:
	default:
		return Decision{}, fmt.Errorf("%w: unknown action", ErrInvalid)
	}
	return d, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Decider is what channels (and the API) call when a human decides.
type Decider interface {
	Decide(ctx context.Context, d Decision) Result
}

// Decision is one human's answer to one approval.
type Decision struct {
	ID string
	// Digest is the request digest (or its first 16 hex digits) the human
	// saw; a decision whose digest does not match the approval's is refused.
	// "" is accepted only from the local CLI/API, which show the full
	// request by ID.
	Digest   string
	Approve  bool
	GrantFor time.Duration // approve only; refused when the rule has grants: false
	// Channel and User say who decided: the channel's name and the
	// platform's stable user ID (Slack U…, Telegram numeric ID, Discord
	// snowflake, Teams AAD object ID). The core checks them against the
	// approval's route; the channel must take them only from a verified
	// callback.
	Channel string
	User    string
	// Display is a human name for cards and the audit log (optional).
	Display string
	Reason  string
}

// Identity is "channel:user", how routes, groups and the audit log name a
// person.
func (d Decision) Identity() string { return Identity(d.Channel, d.User) }

// Identity joins a channel name and a user ID.
func Identity(channel, user string) string {
	if user == "" {
		return channel
	}
	return channel + ":" + user
}

// Result outcomes, one per way a decision can end. Channels show Message to
// the person who clicked (ephemerally where the platform can) and update
// the card from Approval.
const (
	ResultDecided     = "decided"      // this decision ended the approval
	ResultRecorded    = "recorded"     // counted; more approvals are required
	ResultAlready     = "already"      // the same decision was made before (idempotent)
	ResultConflict    = "conflict"     // decided the other way; nothing changed
	ResultExpired     = "expired"      // timed out, cancelled or expired by restart
	ResultNotFound    = "not_found"    // no such approval
	ResultNotApprover = "not_approver" // this person is not asked for this approval
	ResultSelf        = "self"         // the requester cannot approve their own request
	ResultStale       = "stale"        // the digest does not match: the card is not for this request
	ResultInvalid     = "invalid"      // malformed (bad grant, grants not allowed, …)
	ResultError       = "error"        // clawd could not record it (storage); try again
)

// Result is what a decision did.
type Result struct {
	Outcome  string
	Message  string    // one sentence for the person who clicked
	Approval *Approval // the approval after the decision (nil when not found)
}

// OK reports whether the decision took effect or had already been made.
func (r Result) OK() bool {
	return r.Outcome == ResultDecided || r.Outcome == ResultRecorded || r.Outcome == ResultAlready
}

// Env is what a channel gets from the daemon when it is built.
type Env struct {
	Log *zap.Logger
	// HTTP is the client for platform APIs; nil = a client with a 30 s timeout.
	HTTP *http.Client
	Now  func() time.Time
	// PublicURL is the externally reachable base of the public listener
	// ("" = none: channels use their no-URL mode).
	PublicURL string
	// StateDir is a directory the channel may keep small files in (poll
	// offsets, one-time tokens); created by the caller.
	StateDir string
	// Secret returns the value of a clawd-owned credential from the secret
	// store (`clawd secret set NAME --clawd`); see Credential.
	Secret func(name string) (string, error)
}

// Credential resolves a credential setting: "secret:NAME" from the secret
// store, "file:PATH" from a file (trailing newline trimmed), "env:VAR" from
// the environment, anything else is the value itself. Errors never contain
// the value.
func (e Env) Credential(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "secret:"):
		if e.Secret == nil {
			return "", errors.New("no secret store")
		}
		v, err := e.Secret(strings.TrimPrefix(ref, "secret:"))
		if err != nil {
			return "", err
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(ref, "file:"))
		if err != nil {
			return "", fmt.Errorf("credential file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case strings.HasPrefix(ref, "env:"):
		v, ok := os.LookupEnv(strings.TrimPrefix(ref, "env:"))
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set", strings.TrimPrefix(ref, "env:"))
		}
		return v, nil
	}
	return ref, nil
}

// Client returns e.HTTP or a default client.
func (e Env) Client() *http.Client {
	if e.HTTP != nil {
		return e.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// Clock returns e.Now or time.Now.
func (e Env) Clock() func() time.Time {
	if e.Now != nil {
		return e.Now
	}
	return time.Now
}

// Logger returns e.Log or a no-op logger.
func (e Env) Logger() *zap.Logger {
	if e.Log != nil {
		return e.Log
	}
	return zap.NewNop()
}

// DecodeSettings decodes a channel's clawd.yaml settings (a map) into out,
// a struct with mapstructure tags; unknown keys are errors, so a typo is
// reported instead of ignored.
func DecodeSettings(in map[string]any, out any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		ErrorUnused:      true,
		WeaklyTypedInput: true,
		DecodeHook:       mapstructure.StringToTimeDurationHookFunc(),
		Result:           out,
	})
	if err != nil {
		return err
	}
	return dec.Decode(in)
}

// SecureScheme reports whether a platform URL may carry a channel's
// credentials: the secure scheme ("https", "wss"), or the plain one ("http",
// "ws") only to a loopback address (a local fake or relay). Tokens, secrets
// and signing keys never travel in clear over a network. Every channel
// checks its base URLs with it.
func SecureScheme(u *url.URL, secure, plain string) bool {
	if u == nil || u.Host == "" {
		return false
	}
	switch u.Scheme {
	case secure:
		return true
	case plain:
		h := u.Hostname()
		ip := net.ParseIP(h)
		return h == "localhost" || ip != nil && ip.IsLoopback()
	}
	return false
}

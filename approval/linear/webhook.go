package linear

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Webhook limits: Linear documents that a receiver should refuse a
// delivery whose webhookTimestamp is more than a minute from now.
const (
	maxWebhook = 1 << 20
	Window     = 60 * time.Second
)

// Payload is the part of a Linear webhook delivery clawd reads.
type Payload struct {
	Action           string      `json:"action"`
	Type             string      `json:"type"`
	Data             CommentData `json:"data"`
	URL              string      `json:"url"`
	CreatedAt        string      `json:"createdAt"`
	WebhookTimestamp int64       `json:"webhookTimestamp"`
	WebhookID        string      `json:"webhookId"`
	OrganizationID   string      `json:"organizationId"`
	Actor            *Actor      `json:"actor,omitempty"`
}

// CommentData is a Comment as webhooks carry it.
type CommentData struct {
	ID             string          `json:"id"`
	Body           string          `json:"body"`
	IssueID        string          `json:"issueId"`
	UserID         string          `json:"userId"`
	ParentID       string          `json:"parentId,omitempty"`
	BotActor       json.RawMessage `json:"botActor,omitempty"`
	ExternalUserID string          `json:"externalUserId,omitempty"`
}

// Actor is who caused the event.
type Actor struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Name string `json:"name"`
}

// Callbacks is the Linear webhook receiver: deliveries signed with the
// webhook secret, within a minute of now, each once; comment creations on
// an issue that carries a card become decisions.
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST Linear webhooks here", http.StatusMethodNotAllowed)
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhook))
		if err != nil {
			http.Error(w, "delivery too large", http.StatusRequestEntityTooLarge)
			return
		}
		// Authenticate the raw bytes before reading anything in them.
		if !c.signed(data, r.Header.Get("Linear-Signature")) {
			c.refuse(w, http.StatusUnauthorized, "bad signature", "missing or wrong Linear-Signature")
			return
		}
		var p Payload
		if err := json.Unmarshal(data, &p); err != nil {
			c.refuse(w, http.StatusBadRequest, "not a webhook payload", "malformed JSON")
			return
		}
		now := c.now()
		ts := time.UnixMilli(p.WebhookTimestamp)
		if p.WebhookTimestamp <= 0 || now.Sub(ts) > Window || ts.Sub(now) > Window {
			c.refuse(w, http.StatusUnauthorized, "stale delivery", "webhookTimestamp is not within a minute of now")
			return
		}
		delivery := r.Header.Get("Linear-Delivery")
		if delivery == "" || len(delivery) > 100 || !headerSafe(delivery) {
			c.refuse(w, http.StatusBadRequest, "no delivery id", "missing Linear-Delivery")
			return
		}
		// Linear-Delivery is not signed: the signature (of a body that
		// holds the timestamp) is remembered too, so a captured delivery
		// cannot be resent under a new delivery id.
		keys := []string{"d:" + delivery, "s:" + strings.ToLower(strings.TrimSpace(r.Header.Get("Linear-Signature")))}
		if !c.replay.add(keys, now, now.Add(3*Window)) {
			c.refuse(w, http.StatusUnauthorized, "replayed delivery", "delivery id or signature seen before")
			return
		}
		if p.Type != "Comment" || p.Action != "create" {
			w.WriteHeader(http.StatusOK) // other events need no answer
			return
		}
		// A decision once started is finished even if Linear hangs up.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
		defer cancel()
		status := c.comment(ctx, d, &p)
		if status != http.StatusOK {
			c.replay.forget(keys) // nothing was decided: Linear's retry may come in
		}
		w.WriteHeader(status)
	})
}

// signed reports whether sig is the hex HMAC-SHA256 of body with the
// webhook secret (compared in constant time).
func (c *Channel) signed(body []byte, sig string) bool {
	got, err := hex.DecodeString(strings.TrimSpace(sig))
	if err != nil || len(got) != sha256.Size {
		return false
	}
	m := hmac.New(sha256.New, c.secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

func (c *Channel) refuse(w http.ResponseWriter, code int, msg, why string) {
	c.log.Warn("linear: webhook refused", zap.String("why", why))
	http.Error(w, msg, code)
}

// comment handles a verified comment creation: a clawd command by a
// person on an issue that carries that approval's card is decided, and the
// answer is posted as a reply.
func (c *Channel) comment(ctx context.Context, d approval.Decider, p *Payload) int {
	cm := p.Data
	cmd, ok := parseCommand(cm.Body)
	if !ok {
		return http.StatusOK // an ordinary comment
	}
	if !validID(cm.ID) || !validID(cm.IssueID) {
		c.log.Warn("linear: comment without id or issue ignored")
		return http.StatusOK
	}
	self, err := c.viewerID(ctx)
	if err != nil {
		// Without knowing clawd's own user a command cannot be told from
		// clawd's own text: decide nothing, let Linear retry.
		c.log.Warn("linear: cannot read clawd's own user", zap.Error(err))
		return http.StatusServiceUnavailable
	}
	if cm.UserID == self {
		return http.StatusOK
	}
	if cm.UserID == "" || !validID(cm.UserID) || len(cm.BotActor) > 0 && string(cm.BotActor) != "null" || cm.ExternalUserID != "" {
		// Comments synced from integrations (Slack, e-mail, bots) carry no
		// Linear user whose identity Linear vouches for.
		c.log.Info("linear: a command from an integration or external user ignored")
		return http.StatusOK
	}
	parent := cm.ID
	if cm.ParentID != "" && validID(cm.ParentID) {
		parent = cm.ParentID // Linear threads are one level deep
	}
	msg, ours := c.decide(ctx, d, p, cmd)
	if !ours {
		msg = inert(clip(msg, maxReason)) // the core's sentence may quote request text
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.createComment(rctx, cm.IssueID, parent, msg); err != nil {
		c.log.Warn("linear: reply to a command failed", zap.Error(err))
	}
	return http.StatusOK
}

// decide turns a command into a decision bound to the card clawd posted.
// It returns the answer for the commenter and whether that answer is
// clawd's own markdown (else it is the core's plain sentence).
func (c *Channel) decide(ctx context.Context, d approval.Decider, p *Payload, cmd command) (string, bool) {
	if cmd.err != "" {
		return cmd.err, true
	}
	digest, ok := c.state.lookup(cmd.id, p.Data.IssueID)
	if !ok {
		return "clawd: there is no approval " + code(clip(cmd.id, 40)) + " on this issue; nothing changed.", true
	}
	if !c.state.firstComment(cmd.id, p.Data.ID) {
		return "clawd: this comment was already acted on; nothing changed.", true
	}
	act := approval.ActDeny
	if cmd.approve {
		act = approval.ActApprove
	}
	dec, err := approval.ParseButton(approval.ButtonValue(act, &approval.Approval{ID: cmd.id, Digest: digest}))
	if err != nil {
		return "clawd: that is not a clawd approval ID; nothing changed.", true
	}
	dec.GrantFor = cmd.grant
	dec.Reason = cmd.reason
	dec.Channel = c.name
	dec.User = p.Data.UserID
	if p.Actor != nil && p.Actor.ID == p.Data.UserID {
		dec.Display = clip(clean(oneLine(p.Actor.Name)), 100)
	}
	res := d.Decide(ctx, dec)
	if res.Message == "" {
		return "clawd: " + res.Outcome, false
	}
	return res.Message, false
}

// command is one parsed clawd command; err is the answer when it is
// malformed.
type command struct {
	id      string
	approve bool
	grant   time.Duration
	reason  string
	err     string
}

const usage = "clawd: use `/clawd approve ID`, `/clawd approve ID for 15m` or `/clawd deny ID reason`; nothing changed."

// parseCommand reads a comment whose first line is a clawd command
// (optionally in backticks). ok is false for any other comment.
func parseCommand(body string) (command, bool) {
	body = strings.TrimSpace(strings.ReplaceAll(body, "\r\n", "\n"))
	first, rest, _ := strings.Cut(body, "\n")
	first = strings.TrimSpace(strings.Trim(strings.TrimSpace(first), "`"))
	f := strings.Fields(first)
	if len(f) == 0 || f[0] != "/clawd" {
		return command{}, false
	}
	if len(f) < 3 {
		return command{err: usage}, true
	}
	cmd := command{id: strings.ToLower(f[2])}
	switch strings.ToLower(f[1]) {
	case "approve":
		cmd.approve = true
		switch {
		case len(f) == 3:
		case len(f) == 5 && strings.EqualFold(f[3], "for"):
			g, err := time.ParseDuration(strings.ToLower(f[4]))
			if err != nil || g <= 0 {
				return command{err: "clawd: `for` takes a duration like 15m or 1h; nothing changed."}, true
			}
			cmd.grant = g
		default:
			return command{err: usage}, true
		}
	case "deny":
		reason := strings.Join(f[3:], " ")
		if r := strings.TrimSpace(rest); r != "" {
			reason = strings.TrimSpace(reason + " " + r)
		}
		cmd.reason = clip(clean(oneLine(reason)), maxReason)
	default:
		return command{err: usage}, true
	}
	return cmd, true
}

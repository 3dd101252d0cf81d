package webex

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Webhook constants.
const (
	SignatureHeader = "X-Spark-Signature"
	Resource        = "attachmentActions"
	Event           = "created"
	maxNotification = 64 << 10
	// actionWindow: an action older than this (by its created time, as
	// Webex reports it) is refused, so action ids need only be
	// remembered this long.
	actionWindow = time.Hour
	clockSkew    = 5 * time.Minute
)

// notification is the part of a webhook notification clawd reads. It is
// only a pointer: the action itself is fetched by data.id, so nothing
// else in it is trusted.
type notification struct {
	Resource string `json:"resource"`
	Event    string `json:"event"`
	Data     struct {
		ID string `json:"id"`
	} `json:"data"`
}

// Action is an attachment action as GET /v1/attachment/actions/{id}
// returns it.
type Action struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	MessageID string          `json:"messageId"`
	PersonID  string          `json:"personId"`
	RoomID    string          `json:"roomId"`
	Inputs    json.RawMessage `json:"inputs"`
	Created   time.Time       `json:"created"`
}

// Callbacks takes the attachmentActions webhook: a notification whose
// X-Spark-Signature is the HMAC-SHA1 of its body under webhook-secret.
// Without webhook-secret it is nil (not mounted).
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	if c.secret == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST Webex webhook notifications here", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNotification))
		if err != nil {
			http.Error(w, "notification too large", http.StatusRequestEntityTooLarge)
			return
		}
		if !c.signed(body, r.Header.Get(SignatureHeader)) {
			c.refuse(w, http.StatusUnauthorized, "bad signature", "missing or wrong "+SignatureHeader)
			return
		}
		var n notification
		if err := json.Unmarshal(body, &n); err != nil || n.Resource != Resource || n.Event != Event || !validID(n.Data.ID) {
			c.refuse(w, http.StatusBadRequest, "not an attachmentActions/created notification", "malformed notification")
			return
		}
		if !c.replay.add(n.Data.ID, c.now(), c.now().Add(actionWindow+clockSkew)) {
			c.refuse(w, http.StatusConflict, "action already handled", "replayed action id")
			return
		}
		var act Action
		status, err := c.call(r.Context(), http.MethodGet, "/v1/attachment/actions/"+url.PathEscape(n.Data.ID), nil, &act)
		switch {
		case status == http.StatusNotFound:
			c.refuse(w, http.StatusNotFound, "no such action", "the notification names an action Webex does not have")
			return
		case err != nil:
			c.replay.drop(n.Data.ID) // Webex may deliver it again
			c.log.Warn("webex: could not read a click", zap.Error(err))
			http.Error(w, "could not read the action from Webex", http.StatusBadGateway)
			return
		}
		c.handle(r.Context(), d, &act)
		w.WriteHeader(http.StatusOK)
	})
}

// signed checks the body's HMAC-SHA1 in constant time.
func (c *Channel) signed(body []byte, sig string) bool {
	got, err := hex.DecodeString(strings.TrimSpace(sig))
	if err != nil || len(got) != sha1.Size {
		return false
	}
	m := hmac.New(sha1.New, c.secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

func (c *Channel) refuse(w http.ResponseWriter, code int, msg, why string) {
	c.log.Warn("webex: notification refused", zap.String("why", why))
	http.Error(w, msg, code)
}

// handle decides a verified action on one of this clawd's cards and
// replies to the clicker in the card's thread. Actions on other messages
// or in other rooms, stale actions and non-clawd inputs are ignored.
func (c *Channel) handle(ctx context.Context, d approval.Decider, act *Action) {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ref, ok := c.cardWait(wctx, act.MessageID)
	cancel()
	switch {
	case act.ID == "" || act.Type != "submit":
		c.log.Warn("webex: ignored an action that is not a submit")
		return
	case !ok:
		c.log.Warn("webex: ignored an action on a message that is not a pending clawd card")
		return
	case act.RoomID != ref.room:
		c.log.Warn("webex: ignored an action from another room")
		return
	case act.Created.IsZero() || c.now().Sub(act.Created) > actionWindow || act.Created.Sub(c.now()) > clockSkew:
		c.log.Warn("webex: ignored a stale action", zap.Time("created", act.Created))
		return
	case !validID(act.PersonID):
		c.log.Warn("webex: ignored an action without a person")
		return
	}
	var in struct {
		V string `json:"v"`
	}
	_ = json.Unmarshal(act.Inputs, &in)
	var res approval.Result
	dec, err := approval.ParseButton(in.V)
	if err != nil || dec.ID != ref.approval {
		res = approval.Result{Outcome: approval.ResultInvalid, Message: "This is not a button of this clawd card; nothing changed."}
	} else {
		dec.Channel, dec.User = c.name, act.PersonID
		dec.Display = c.displayName(ctx, act.PersonID)
		res = d.Decide(ctx, dec)
		c.log.Info("webex decision", zap.String("id", dec.ID), zap.String("user", dec.User),
			zap.Bool("approve", dec.Approve), zap.String("outcome", res.Outcome))
	}
	msg := res.Message
	if msg == "" {
		msg = "clawd: " + res.Outcome
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	reply := message{RoomID: ref.room, ParentID: ref.head,
		Markdown: clipBytes("<@personId:"+act.PersonID+"> "+esc(clip(oneLine(msg), maxField)), MaxText)}
	if _, err := c.send(rctx, reply); err != nil {
		c.log.Warn("webex: reply to a click failed", zap.Error(err))
	}
}

// displayName is the person's Webex display name ("" if unknown).
func (c *Channel) displayName(ctx context.Context, person string) string {
	var p struct {
		DisplayName string `json:"displayName"`
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.call(pctx, http.MethodGet, "/v1/people/"+url.PathEscape(person), nil, &p); err != nil {
		c.log.Debug("webex: no display name", zap.Error(err))
		return ""
	}
	return clip(oneLine(p.DisplayName), 100)
}

// seen remembers action ids until "until", so a replayed notification is
// refused; bounded, dropping expired then oldest entries.
type seen struct {
	mu  sync.Mutex
	ids map[string]time.Time
}

func newSeen() *seen { return &seen{ids: map[string]time.Time{}} }

const maxSeen = 100000

func (s *seen) add(id string, now, until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, ok := s.ids[id]; ok && now.Before(exp) {
		return false
	}
	if len(s.ids) >= maxSeen/2 {
		for k, exp := range s.ids {
			if !now.Before(exp) {
				delete(s.ids, k)
			}
		}
	}
	for len(s.ids) >= maxSeen {
		var oldK string
		var oldT time.Time
		for k, exp := range s.ids {
			if oldK == "" || exp.Before(oldT) {
				oldK, oldT = k, exp
			}
		}
		delete(s.ids, oldK)
	}
	s.ids[id] = until
	return true
}

func (s *seen) drop(id string) {
	s.mu.Lock()
	delete(s.ids, id)
	s.mu.Unlock()
}

// --- webhook registration ---

// resync is how often a registered webhook is checked again (Webex turns
// a webhook "inactive" after repeated delivery failures; clawd turns it
// back on).
const resync = 30 * time.Minute

// Run registers the attachmentActions webhook when register-webhook is
// set, retrying with backoff until it succeeds and checking it again every
// 30 minutes, until ctx is done. Clicks themselves arrive at Callbacks.
// Without register-webhook it just waits.
func (c *Channel) Run(ctx context.Context, _ approval.Decider) error {
	if !c.cfg.RegisterWebhook {
		<-ctx.Done()
		return nil
	}
	backoff := time.Second
	for {
		wait := resync
		if err := c.RegisterWebhook(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn("webex: webhook registration failed; retrying", zap.Error(err), zap.Duration("in", backoff))
			wait = backoff
			backoff = min(backoff*2, 5*time.Minute)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Webhook is a Webex webhook as the API lists it.
type Webhook struct {
	ID        string `json:"id,omitempty"`
	Name      string `json:"name"`
	TargetURL string `json:"targetUrl"`
	Resource  string `json:"resource,omitempty"`
	Event     string `json:"event,omitempty"`
	Secret    string `json:"secret,omitempty"`
	Status    string `json:"status,omitempty"`
}

// WebhookName is the name clawd gives the channel's webhook.
func (c *Channel) WebhookName() string { return "clawd " + c.name }

// RegisterWebhook makes sure the bot has exactly one webhook named
// WebhookName for attachmentActions/created pointing at clawd with the
// secret, active: created if missing, updated in place if it differs,
// replaced if its resource or event is another.
func (c *Channel) RegisterWebhook(ctx context.Context) error {
	if c.hookURL == "" || c.secret == nil {
		return errors.New("webex: register-webhook is not set")
	}
	var list struct {
		Items []Webhook `json:"items"`
	}
	if _, err := c.call(ctx, http.MethodGet, "/v1/webhooks?max=100", nil, &list); err != nil {
		return err
	}
	want := Webhook{Name: c.WebhookName(), TargetURL: c.hookURL, Secret: string(c.secret), Status: "active"}
	var keep *Webhook
	for i, h := range list.Items {
		if h.Name != want.Name && h.TargetURL != want.TargetURL {
			continue
		}
		if keep == nil && h.Resource == Resource && h.Event == Event && validID(h.ID) {
			keep = &list.Items[i]
			continue
		}
		// A duplicate, or one for other events: remove it.
		if validID(h.ID) {
			if _, err := c.call(ctx, http.MethodDelete, "/v1/webhooks/"+url.PathEscape(h.ID), nil, nil); err != nil {
				return err
			}
		}
	}
	if keep == nil {
		want.Resource, want.Event = Resource, Event
		want.Status = ""
		var out Webhook
		if _, err := c.call(ctx, http.MethodPost, "/v1/webhooks", want, &out); err != nil {
			return err
		}
		c.log.Info("webex: webhook created", zap.String("target", c.hookURL))
		return nil
	}
	// The secret is not always listed; PUT it every time so it matches.
	if _, err := c.call(ctx, http.MethodPut, "/v1/webhooks/"+url.PathEscape(keep.ID), want, nil); err != nil {
		return err
	}
	if keep.TargetURL != want.TargetURL || keep.Status != "active" {
		c.log.Info("webex: webhook updated", zap.String("target", c.hookURL), zap.String("was", keep.Status))
	}
	return nil
}

package slack

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// click turns a verified block_actions payload into a Decision, asks the
// Decider, and returns what to show the clicker; ok is false for payloads
// that are not a click on a clawd button (nothing to answer).
func (c *Channel) click(ctx context.Context, dec approval.Decider, cb *slack.InteractionCallback) (reply string, ok bool) {
	if cb.Type != slack.InteractionTypeBlockActions {
		return "", false
	}
	var act *slack.BlockAction
	for _, a := range cb.ActionCallback.BlockActions {
		if a != nil && strings.HasPrefix(a.ActionID, ActionPrefix) {
			act = a
			break
		}
	}
	if act == nil {
		return "", false
	}
	d, err := approval.ParseButton(act.Value)
	if err != nil || act.ActionID != ActionPrefix+act.Value[:strings.IndexByte(act.Value, ':')] {
		c.log.Warn("refused slack click: not a clawd button", zap.String("action_id", short(act.ActionID, 64, escape)))
		return "This is not a valid clawd button. Nothing was changed.", true
	}
	if !slackUserID.MatchString(cb.User.ID) {
		c.log.Warn("refused slack click: no user ID", zap.String("id", d.ID))
		return "clawd could not tell who clicked. Nothing was changed.", true
	}
	d.Channel, d.User = c.name, cb.User.ID
	d.Display = cb.User.Name
	if d.Display == "" {
		d.Display = cb.User.Username
	}
	d.Display = plain(d.Display, 80)
	if cb.ResponseURL != "" {
		c.rememberResponse(d.ID, cb.ResponseURL)
	}
	res := dec.Decide(ctx, d)
	c.log.Info("slack decision", zap.String("id", d.ID), zap.String("user", d.User), zap.Bool("approve", d.Approve), zap.String("outcome", res.Outcome))
	if res.Message == "" {
		return "clawd: " + res.Outcome, true
	}
	return res.Message, true
}

// --- Socket Mode ---

// Run receives clicks over Socket Mode (apps.connections.open with the
// app-level token, then a WebSocket): it acks every envelope, decides the
// block_actions ones and answers the clicker ephemerally through the
// payload's response_url. It reconnects on a dropped socket or a
// "disconnect" envelope (slack-go does) and after any other failure (here,
// with backoff), until ctx is done. Without an app-token it just waits.
func (c *Channel) Run(ctx context.Context, dec approval.Decider) error {
	if c.appToken == "" {
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sm := socketmode.New(c.api, socketmode.OptionLog(c.stdLog()), socketmode.OptionReadLimit(1<<20))
	var wg sync.WaitGroup
	wg.Go(func() { c.events(ctx, sm, dec) })
	backoff := time.Second
	for {
		err := sm.RunContext(ctx)
		if ctx.Err() != nil {
			break
		}
		c.log.Warn("slack socket mode failed; retrying", zap.Error(scrub(err)), zap.Duration("in", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(backoff*2, time.Minute)
	}
	cancel()
	wg.Wait()
	return nil
}

// events reads the socketmode client's events until ctx is done.
func (c *Channel) events(ctx context.Context, sm *socketmode.Client, dec approval.Decider) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, 8)
	for {
		var ev socketmode.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-sm.Events:
		}
		envelope := ""
		if ev.Request != nil {
			envelope = ev.Request.EnvelopeID
		}
		switch ev.Type {
		case socketmode.EventTypeConnected:
			c.log.Info("slack socket mode connected")
		case socketmode.EventTypeConnectionError:
			if e, ok := ev.Data.(*slack.ConnectionErrorEvent); ok {
				c.log.Warn("slack socket mode connection failed", zap.Error(scrub(e.ErrorObj)))
			}
		case socketmode.EventTypeInvalidAuth:
			c.log.Error("slack refused the app-token")
		case socketmode.EventTypeErrorBadMessage:
			// Unparsable for slack-go; still ack it so Slack does not resend.
			if e, ok := ev.Data.(*socketmode.ErrorBadMessage); ok {
				var env struct {
					EnvelopeID string `json:"envelope_id"`
				}
				if json.Unmarshal(e.Message, &env) == nil {
					envelope = env.EnvelopeID
				}
			}
			c.log.Warn("slack socket mode: unreadable envelope")
		}
		if envelope == "" {
			continue
		}
		c.ack(ctx, sm, envelope)
		if ev.Type != socketmode.EventTypeInteractive || !c.firstEnvelope(envelope) {
			continue
		}
		cb, ok := ev.Data.(slack.InteractionCallback)
		if !ok {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			reply, ok := c.click(ctx, dec, &cb)
			if ok {
				c.ephemeral(ctx, cb.ResponseURL, reply)
			}
		})
	}
}

func (c *Channel) ack(ctx context.Context, sm *socketmode.Client, envelope string) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sm.AckCtx(actx, envelope, nil); err != nil {
		c.log.Warn("slack socket mode: ack failed", zap.Error(err))
	}
}

// firstEnvelope reports whether this envelope ID is new: Slack resends an
// envelope it thinks was not acked, and a click is decided once.
func (c *Channel) firstEnvelope(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for k, at := range c.envelopes {
		if now.Sub(at) > 2*window {
			delete(c.envelopes, k)
		}
	}
	if _, seen := c.envelopes[id]; seen {
		return false
	}
	c.envelopes[id] = now
	return true
}

// ephemeral shows text to the clicker only, through response_url.
func (c *Channel) ephemeral(ctx context.Context, responseURL, text string) {
	if !c.allowedResponseURL(responseURL) {
		c.log.Warn("slack click without a usable response_url; the clicker sees only the card update")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, _, _, err := c.api.SendMessageContext(ctx, "", slack.MsgOptionResponseURL(responseURL, slack.ResponseTypeEphemeral),
		slack.MsgOptionText(escape(text), false)); err != nil {
		c.log.Warn("slack ephemeral reply", zap.Error(scrub(err)))
	}
}

// --- HTTP interactivity ---

// Callbacks serves Slack's interactivity Request URL (mount it at
// approval.CallbackPath(name) and LegacyPath). Every request must carry a
// valid v0 signature made with the signing secret over a timestamp within
// five minutes, and each signature is accepted once; then the click is
// decided and the answer goes back in the 200 response as an ephemeral
// message.
func (c *Channel) Callbacks(dec approval.Decider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.secret == "" {
			http.Error(w, "slack interactivity is not configured (no signing-secret)", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := c.verify(r.Header, body); err != nil {
			c.log.Warn("refused slack callback", zap.Error(err))
			http.Error(w, "invalid slack request: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			http.Error(w, "want a form body", http.StatusUnsupportedMediaType)
			return
		}
		form, err := url.ParseQuery(string(body))
		if err != nil || form.Get("payload") == "" {
			http.Error(w, "no payload", http.StatusBadRequest)
			return
		}
		var cb slack.InteractionCallback
		if err := json.Unmarshal([]byte(form.Get("payload")), &cb); err != nil {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		reply, ok := c.click(r.Context(), dec, &cb)
		if !ok {
			w.WriteHeader(http.StatusOK) // nothing for us; Slack wants a 200
			return
		}
		// Slack may ignore the body of a block_actions answer; the same text
		// also goes to the clicker through response_url, as in Socket Mode.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c.ephemeral(ctx, cb.ResponseURL, reply)
		}()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"response_type": slack.ResponseTypeEphemeral, "replace_original": false, "text": escape(reply),
		})
	})
}

// verify checks the signature and timestamp with slack-go and refuses a
// signature seen before (a replay inside the window).
func (c *Channel) verify(h http.Header, body []byte) error {
	sv, err := slack.NewSecretsVerifier(h, c.secret)
	switch {
	case errors.Is(err, slack.ErrMissingHeaders):
		return errors.New("missing signature headers")
	case errors.Is(err, slack.ErrExpiredTimestamp):
		return errors.New("timestamp outside the 5 minute window")
	case err != nil:
		return errors.New("malformed signature headers")
	}
	sv.Write(body)
	if sv.Ensure() != nil {
		return errors.New("bad signature")
	}
	sig := strings.ToLower(h.Get("X-Slack-Signature"))
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for s, at := range c.sigs {
		if now.Sub(at) > 2*window {
			delete(c.sigs, s)
		}
	}
	if _, seen := c.sigs[sig]; seen {
		return errors.New("replayed request")
	}
	c.sigs[sig] = now
	return nil
}

// Interface checks.
var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Listener  = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
)

// Exclusive: with an app token the clicks come over Socket Mode, which
// hands each one to one of the app's connections: in a fleet one host
// holds them (docs/fleet.md).
func (c *Channel) Exclusive() bool { return c.appToken != "" }

package gchat

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Event is the part of a Chat interaction event clawd reads. A button
// click is type CARD_CLICKED; its function and parameters come in
// common (invokedFunction, parameters) and, in the older form, in action
// (actionMethodName, parameters).
type Event struct {
	Type      string `json:"type"`
	EventTime string `json:"eventTime"`
	Space     struct {
		Name string `json:"name"`
	} `json:"space"`
	Message struct {
		Name string `json:"name"`
	} `json:"message"`
	User struct {
		Name        string `json:"name"`
		DisplayName string `json:"displayName"`
		Type        string `json:"type"`
	} `json:"user"`
	Action *struct {
		ActionMethodName string        `json:"actionMethodName"`
		Parameters       []ActionParam `json:"parameters"`
	} `json:"action,omitempty"`
	Common *struct {
		InvokedFunction string            `json:"invokedFunction"`
		Parameters      map[string]string `json:"parameters"`
	} `json:"common,omitempty"`
}

// Reply is clawd's synchronous answer to a click: a private message to
// the clicker (only they see it) with what their click did.
type Reply struct {
	ActionResponse struct {
		Type string `json:"type"`
	} `json:"actionResponse"`
	PrivateMessageViewer *struct {
		Name string `json:"name"`
	} `json:"privateMessageViewer,omitempty"`
	Text string `json:"text"`
}

// replayWindow is how old a click's eventTime may be; a click seen once is
// remembered that long (plus skew) and refused again.
const replayWindow = 5 * time.Minute

// maxEvent bounds an event body (the event carries the clicked message).
const maxEvent = 256 << 10

// Callbacks is the handler for Chat's interaction events at
// approval.CallbackPath(name).
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	path := approval.CallbackPath(c.name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path && r.URL.Path != strings.TrimSuffix(path, "/") {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			c.refuse(w, http.StatusUnauthorized, "no bearer token")
			return
		}
		if err := c.verifier.verify(r.Context(), strings.TrimSpace(tok)); err != nil {
			c.refuse(w, http.StatusUnauthorized, "bearer token: "+err.Error())
			return
		}
		raw, err := io.ReadAll(io.LimitReader(r.Body, maxEvent+1))
		if err != nil || len(raw) > maxEvent {
			c.refuse(w, http.StatusBadRequest, "event unreadable or too large")
			return
		}
		var ev Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			c.refuse(w, http.StatusBadRequest, "event is not JSON")
			return
		}
		if ev.Type != "CARD_CLICKED" {
			// Added to a space, a message to the app, …: nothing to do.
			writeJSON(w, map[string]any{})
			return
		}
		if ev.Space.Name != c.space || !strings.HasPrefix(ev.Message.Name, c.space+"/messages/") {
			c.refuse(w, http.StatusForbidden, "event for another space")
			return
		}
		if !userRe.MatchString(ev.User.Name) || ev.User.Type == "BOT" || !messageRe.MatchString(ev.Message.Name) {
			c.refuse(w, http.StatusBadRequest, "event without a human user or a message")
			return
		}
		at, err := time.Parse(time.RFC3339Nano, ev.EventTime)
		if err != nil {
			c.refuse(w, http.StatusBadRequest, "event without an eventTime")
			return
		}
		now := c.now()
		if at.Before(now.Add(-replayWindow)) || at.After(now.Add(skew)) {
			c.refuse(w, http.StatusUnauthorized, "eventTime outside the replay window")
			return
		}
		fn, value, err := clicked(&ev)
		if err != nil {
			c.refuse(w, http.StatusBadRequest, err.Error())
			return
		}
		// Google's token does not sign the body: the replay key holds the
		// token, so a captured request sent again with its eventTime nudged
		// is still the same click.
		sum := sha256.Sum256([]byte(tok + "\x00" + ev.Message.Name + "\x00" + ev.User.Name + "\x00" + ev.EventTime + "\x00" + fn + "\x00" + value))
		// Google may hand several events the same token (it is not per
		// event), so a token is not single use; the user is in the unsigned
		// body: see README "Limits".
		tokSum := sha256.Sum256([]byte(tok + "\x00" + ev.Message.Name + "\x00" + ev.User.Name + "\x00" + fn + "\x00" + value))
		if !c.replays.first(hex.EncodeToString(tokSum[:]), now, now.Add(time.Hour+skew)) {
			c.refuse(w, http.StatusUnauthorized, "replayed event")
			return
		}
		if !c.replays.first(hex.EncodeToString(sum[:]), now, at.Add(replayWindow+skew)) {
			c.refuse(w, http.StatusUnauthorized, "replayed event")
			return
		}
		if fn != Function {
			c.reply(w, ev.User.Name, "This button is not one of clawd's.")
			return
		}
		dec, err := approval.ParseButton(value)
		if err != nil {
			c.reply(w, ev.User.Name, "This button is not a valid clawd approval button.")
			return
		}
		if card, ok := c.cardOf(r.Context(), dec.ID); !ok || card != ev.Message.Name {
			// A button counts only on the card clawd posted for its approval.
			c.reply(w, ev.User.Name, "This button is not on this approval's card; nothing changed.")
			return
		}
		dec.Channel, dec.User = c.name, ev.User.Name
		dec.Display = cut(oneLine(ev.User.DisplayName), 100)
		res := d.Decide(r.Context(), dec)
		c.log.Info("google chat decision", zap.String("id", dec.ID), zap.String("user", dec.User), zap.String("outcome", res.Outcome))
		msg := res.Message
		if msg == "" {
			msg = "Recorded: " + res.Outcome
		}
		c.reply(w, ev.User.Name, msg)
	})
}

// clicked returns the function and the "v" parameter of a click, from
// common or action; when both are present they must agree.
func clicked(ev *Event) (fn, value string, err error) {
	var have bool
	if ev.Common != nil && ev.Common.InvokedFunction != "" {
		fn, value, have = ev.Common.InvokedFunction, ev.Common.Parameters["v"], true
	}
	if ev.Action != nil && ev.Action.ActionMethodName != "" {
		var v string
		for _, p := range ev.Action.Parameters {
			if p.Key == "v" {
				v = p.Value
			}
		}
		if have && (fn != ev.Action.ActionMethodName || value != v) {
			return "", "", errors.New("event's common and action disagree")
		}
		fn, value, have = ev.Action.ActionMethodName, v, true
	}
	if !have {
		return "", "", errors.New("click without a function")
	}
	return fn, value, nil
}

func (c *Channel) refuse(w http.ResponseWriter, code int, why string) {
	c.log.Info("google chat callback refused", zap.Int("status", code), zap.String("why", why))
	http.Error(w, http.StatusText(code), code)
}

func (c *Channel) reply(w http.ResponseWriter, user, text string) {
	var rp Reply
	rp.ActionResponse.Type = "NEW_MESSAGE"
	rp.PrivateMessageViewer = &struct {
		Name string `json:"name"`
	}{user}
	rp.Text = cut(text, MaxText)
	writeJSON(w, rp)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

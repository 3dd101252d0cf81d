package mattermost

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"go.uber.org/zap"
)

// maxCallback bounds an incoming action request.
const maxCallback = 64 << 10

// postWait is how long a click waits for the create call of its post to
// return (Mattermost waits up to 30 s for the integration's answer).
const postWait = 10 * time.Second

// ActionRequest is what the Mattermost server POSTs to an action's
// integration URL when a button is clicked.
type ActionRequest struct {
	UserID     string         `json:"user_id"`
	UserName   string         `json:"user_name"`
	ChannelID  string         `json:"channel_id"`
	TeamID     string         `json:"team_id"`
	PostID     string         `json:"post_id"`
	TriggerID  string         `json:"trigger_id"`
	Type       string         `json:"type"`
	DataSource string         `json:"data_source"`
	Context    map[string]any `json:"context"`
}

// ActionResponse is the integration's answer: a message only the clicker
// sees, and optionally a new version of the post.
type ActionResponse struct {
	Update           *UpdatePost `json:"update,omitempty"`
	EphemeralText    string      `json:"ephemeral_text,omitempty"`
	SkipSlackParsing bool        `json:"skip_slack_parsing,omitempty"`
}

// UpdatePost is the post as the click answer replaces it.
type UpdatePost struct {
	Message string         `json:"message"`
	Props   map[string]any `json:"props"`
}

// Refusals shown to the clicker (Mattermost shows ephemeral_text).
const (
	msgUsed     = "This button is no longer valid (already used, replaced or expired); nothing changed."
	msgNotReady = "This card is still being posted; try again in a moment."
)

// Callbacks takes button clicks: only a request carrying a live secret
// clawd issued, for the channel and post that secret was issued for,
// reaches the Decider, and each secret does so once.
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST Mattermost action requests here", http.StatusMethodNotAllowed)
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			c.refuse(w, http.StatusUnsupportedMediaType, "not JSON", errors.New("content type is not application/json"))
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCallback))
		if err != nil {
			c.refuse(w, http.StatusRequestEntityTooLarge, "request too large", err)
			return
		}
		var req ActionRequest
		if err := json.Unmarshal(data, &req); err != nil {
			c.refuse(w, http.StatusBadRequest, "not an action request", err)
			return
		}
		value, _ := req.Context["v"].(string)
		secret, _ := req.Context["t"].(string)
		if value == "" || secret == "" {
			c.refuse(w, http.StatusBadRequest, "not a clawd button", errors.New("no clawd context"))
			return
		}
		if !validSecret(secret) {
			c.refuse(w, http.StatusForbidden, "forbidden", errors.New("malformed secret"))
			return
		}
		if !validUserID(req.UserID) {
			c.refuse(w, http.StatusBadRequest, "no user", errors.New("user_id is not a Mattermost ID"))
			return
		}
		now := c.now()
		b, ok := c.secrets.lookup(secret, now)
		if !ok {
			c.log.Info("mattermost: click with an unknown, used or expired button secret", zap.String("user", req.UserID))
			c.answer(w, ActionResponse{EphemeralText: msgUsed})
			return
		}
		// A live secret sent for another button, channel or post is not
		// what Mattermost sends: forged. The secret stays usable.
		if value != b.Value || req.ChannelID != b.Channel || (b.Post != "" && req.PostID != b.Post) {
			c.refuse(w, http.StatusForbidden, "forbidden", errors.New("button secret presented for another button, channel or post"))
			return
		}
		if b.Post == "" {
			// Mattermost can deliver a click before the create call that
			// made the post has returned: wait for it (or its failure).
			t := time.NewTimer(postWait)
			select {
			case <-c.secrets.waitPost(b.Issue):
			case <-t.C:
			case <-r.Context().Done():
			}
			t.Stop()
			if b, ok = c.secrets.lookup(secret, now); !ok {
				c.answer(w, ActionResponse{EphemeralText: msgUsed})
				return
			}
			if b.Post == "" {
				c.answer(w, ActionResponse{EphemeralText: msgNotReady})
				return
			}
			if req.PostID != b.Post {
				c.refuse(w, http.StatusForbidden, "forbidden", errors.New("button secret presented for another post"))
				return
			}
		}
		b, ok, err = c.secrets.take(secret, now)
		if err != nil {
			c.log.Warn("mattermost: button secrets not persisted", zap.Error(err))
		}
		if !ok { // another request used it first
			c.answer(w, ActionResponse{EphemeralText: msgUsed})
			return
		}
		dec, err := approval.ParseButton(b.Value)
		if err != nil || dec.ID != b.Approval {
			c.answer(w, ActionResponse{EphemeralText: "This is not a clawd button; nothing changed."})
			return
		}
		dec.Channel = c.name
		dec.User = req.UserID
		if validUsername(req.UserName) {
			dec.Display = req.UserName
		}
		res := d.Decide(r.Context(), dec)
		out := ActionResponse{EphemeralText: clip(res.Message, maxField), SkipSlackParsing: true}
		if res.Approval != nil {
			// The click used up this card's buttons: answer with the card
			// as it is now (fresh buttons while it is pending).
			if up, err := c.reissue(res.Approval, b); err == nil {
				out.Update = up
			} else {
				c.log.Warn("mattermost: card not re-rendered after a click", zap.Error(err))
			}
		}
		c.answer(w, out)
	})
}

// reissue renders the post after a click on it.
func (c *Channel) reissue(a *approval.Approval, b binding) (*UpdatePost, error) {
	card := &approval.Card{Approval: a, Channel: c.name, Now: c.now()}
	if last := c.lastCard(a.ID); last != nil {
		card.People, card.Target = last.People, last.Target
		// The core's edit may have come first: never show an older state.
		if last.Status != approval.Pending {
			card.Approval = last.Approval
		}
	}
	r, err := c.render(card, b.Channel, b.Post)
	if err != nil {
		return nil, err
	}
	if err := c.secrets.add(r.Secrets, c.now()); err != nil {
		c.log.Warn("mattermost: button secrets not persisted", zap.Error(err))
	}
	return &UpdatePost{Message: r.Message, Props: map[string]any{"attachments": r.Attachments}}, nil
}

func (c *Channel) answer(w http.ResponseWriter, out ActionResponse) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// refuse answers a request that is not a genuine click (the secret itself
// is never logged).
func (c *Channel) refuse(w http.ResponseWriter, code int, msg string, err error) {
	c.log.Warn("mattermost: action request refused", zap.String("why", err.Error()))
	http.Error(w, msg, code)
}

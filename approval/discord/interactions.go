package discord

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Interaction and callback types.
const (
	interactionPing      = 1
	interactionComponent = 3
	callbackPong         = 1
	callbackMessage      = 4
	flagEphemeral        = 64
)

// window is how far X-Signature-Timestamp may be off; answered interaction
// IDs are remembered for twice that to refuse replays.
const window = 5 * time.Minute

// maxSeen bounds the replay memory; only Discord-signed (or Gateway)
// interactions are ever remembered.
const maxSeen = 100000

// interaction is the part of Discord's Interaction object clawd reads.
type interaction struct {
	ID            string `json:"id"`
	ApplicationID string `json:"application_id"`
	Type          int    `json:"type"`
	Token         string `json:"token"`
	ChannelID     string `json:"channel_id"`
	GuildID       string `json:"guild_id"`
	Data          struct {
		CustomID      string `json:"custom_id"`
		ComponentType int    `json:"component_type"`
	} `json:"data"`
	Member *struct {
		User *user `json:"user"`
	} `json:"member"`
	User *user `json:"user"`
}

type user struct {
	ID         string `json:"id"`
	Username   string `json:"username"`
	GlobalName string `json:"global_name"`
}

type response struct {
	Type int           `json:"type"`
	Data *responseData `json:"data,omitempty"`
}

type responseData struct {
	Content         string   `json:"content"`
	Flags           int      `json:"flags"`
	AllowedMentions mentions `json:"allowed_mentions"`
}

func ephemeral(text string) *response {
	return &response{Type: callbackMessage, Data: &responseData{
		Content: cut(text, maxContent), Flags: flagEphemeral, AllowedMentions: mentions{Parse: []string{}},
	}}
}

var (
	errForeign = errors.New("interaction for another application")
	errReplay  = errors.New("interaction already answered")
	errUnknown = errors.New("unsupported interaction")
)

// answer is what clawd says to one interaction that came over a verified
// transport; it calls the Decider only for a valid click on our card.
func (c *Channel) answer(ctx context.Context, in *interaction, d approval.Decider) (*response, error) {
	if in.ApplicationID != c.appID {
		return nil, errForeign
	}
	if !snowflake(in.ID) {
		return nil, errUnknown
	}
	if !c.firstTime(in.ID) {
		return nil, errReplay
	}
	switch in.Type {
	case interactionPing:
		return &response{Type: callbackPong}, nil
	case interactionComponent:
	default:
		return nil, errUnknown
	}
	if !c.clickable(in.ChannelID) {
		return ephemeral("This card is not in clawd's approval channel; nothing was decided."), nil
	}
	var u *user
	if in.Member != nil && in.Member.User != nil {
		u = in.Member.User
	} else if in.User != nil {
		u = in.User
	}
	if u == nil || !snowflake(u.ID) {
		return ephemeral("Discord did not say who you are; nothing was decided."), nil
	}
	if in.Data.ComponentType != componentButton {
		return ephemeral("This is not a clawd button; nothing was decided."), nil
	}
	dec, err := approval.ParseButton(in.Data.CustomID)
	if err != nil {
		return ephemeral("This is not a clawd button; nothing was decided."), nil
	}
	dec.Channel, dec.User, dec.Display = c.name, u.ID, cut(u.Username, 100)
	res := d.Decide(ctx, dec)
	c.log.Info("discord decision", zap.String("approval", dec.ID), zap.String("user", u.ID),
		zap.Bool("approve", dec.Approve), zap.String("outcome", res.Outcome))
	msg := res.Message
	if msg == "" {
		msg = res.Outcome
	}
	return ephemeral(msg), nil
}

// firstTime records id and reports whether it was new.
func (c *Channel) firstTime(id string) bool {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[id]; ok {
		return false
	}
	if len(c.seen) >= maxSeen/2 {
		for k, t := range c.seen {
			if now.Sub(t) > 2*window {
				delete(c.seen, k)
			}
		}
	}
	if len(c.seen) >= maxSeen {
		for k := range c.seen { // full of fresh IDs: forget an arbitrary one
			delete(c.seen, k)
			break
		}
	}
	c.seen[id] = now
	return true
}

// Callbacks is the interactions endpoint (mode interactions), mounted at
// approval.CallbackPath(name); set the application's Interactions Endpoint
// URL to PublicURL + that path. In gateway mode it answers 404.
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	path := approval.CallbackPath(c.name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.mode != ModeInteractions || r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := c.verify(r.Header, body); err != nil {
			c.log.Warn("discord interaction refused", zap.Error(err))
			http.Error(w, "invalid request signature", http.StatusUnauthorized)
			return
		}
		var in interaction
		if err := json.Unmarshal(body, &in); err != nil {
			http.Error(w, "malformed interaction", http.StatusBadRequest)
			return
		}
		resp, err := c.answer(r.Context(), &in, d)
		switch {
		case errors.Is(err, errReplay):
			c.log.Warn("discord interaction refused", zap.Error(err))
			http.Error(w, "replayed interaction", http.StatusUnauthorized)
			return
		case err != nil:
			c.log.Warn("discord interaction refused", zap.Error(err))
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b, _ := json.Marshal(resp)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
}

// verify checks X-Signature-Ed25519 over X-Signature-Timestamp + body and
// the timestamp window.
func (c *Channel) verify(h http.Header, body []byte) error {
	sig, err := hex.DecodeString(h.Get("X-Signature-Ed25519"))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("missing or malformed signature")
	}
	ts := h.Get("X-Signature-Timestamp")
	if !ed25519.Verify(c.pub, append([]byte(ts), body...), sig) {
		return errors.New("bad signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("malformed timestamp")
	}
	if off := c.now().Sub(time.Unix(sec, 0)); off > window || off < -window {
		return errors.New("timestamp more than 5 minutes off")
	}
	return nil
}

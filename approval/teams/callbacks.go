package teams

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"go.uber.org/zap"
)

// maxActivityIn bounds an incoming activity.
const maxActivityIn = 256 << 10

// Activity is the part of a Bot Framework activity clawd reads.
type Activity struct {
	Type         string          `json:"type"`
	Name         string          `json:"name,omitempty"`
	ID           string          `json:"id"`
	ChannelID    string          `json:"channelId"`
	ServiceURL   string          `json:"serviceUrl"`
	From         Account         `json:"from"`
	Recipient    Account         `json:"recipient"`
	Conversation Conversation    `json:"conversation"`
	ReplyToID    string          `json:"replyToId,omitempty"`
	Value        json.RawMessage `json:"value,omitempty"`
	Text         string          `json:"text,omitempty"`
}

// Account is a Bot Framework channel account.
type Account struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	AADObjectID string `json:"aadObjectId,omitempty"`
}

// Conversation is a Bot Framework conversation account.
type Conversation struct {
	ID string `json:"id"`
}

// InvokeResponse is the body of the HTTP answer to an adaptiveCard/action
// invoke (Universal Actions).
type InvokeResponse struct {
	StatusCode int    `json:"statusCode"`
	Type       string `json:"type"`
	Value      any    `json:"value"`
}

// Invoke response types.
const (
	InvokeCard    = ContentTypeAC
	InvokeMessage = "application/vnd.microsoft.activity.message"
)

// Callbacks is the bot's messaging endpoint: Bot Connector activities
// whose JWT verifies, for this conversation and this bot, each once.
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST Bot Framework activities here", http.StatusMethodNotAllowed)
			return
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxActivityIn))
		if err != nil {
			http.Error(w, "activity too large", http.StatusRequestEntityTooLarge)
			return
		}
		// Authenticate before reading anything else of the activity.
		var act Activity
		if err := json.Unmarshal(data, &act); err != nil {
			c.refuse(w, "not an activity", err)
			return
		}
		until, err := c.auth.verify(r.Context(), r.Header.Get("Authorization"), act.ServiceURL)
		if err != nil {
			c.refuse(w, "unauthorized", err)
			return
		}
		if act.ChannelID != ChannelID {
			c.refuse(w, "unauthorized", errors.New("activity is not from msteams"))
			return
		}
		if act.Recipient.ID != "28:"+c.cfg.AppID && act.Recipient.ID != c.cfg.AppID {
			c.refuse(w, "unauthorized", errors.New("activity is for another bot"))
			return
		}
		if !c.ours(act.Conversation.ID) {
			c.refuse(w, "unauthorized", errors.New("activity is from another conversation"))
			return
		}
		if act.ID == "" || len(act.ID) > 256 {
			c.refuse(w, "unauthorized", errors.New("activity has no id"))
			return
		}
		if !c.replay.add(act.Conversation.ID+"\x00"+act.ID, c.now(), until) {
			c.refuse(w, "unauthorized", errors.New("replayed activity"))
			return
		}
		switch {
		case act.Type == "invoke" && act.Name == "adaptiveCard/action":
			c.execute(w, r.Context(), d, &act)
		case act.Type == "message" && len(act.Value) > 0:
			c.submit(w, r.Context(), d, &act)
		default:
			// Other activities (conversationUpdate, typing, plain
			// messages) need no answer.
			w.WriteHeader(http.StatusOK)
		}
	})
}

// refuse answers 401 and logs why (the token itself is never logged).
func (c *Channel) refuse(w http.ResponseWriter, msg string, err error) {
	c.log.Warn("teams: activity refused", zap.String("why", err.Error()))
	code := http.StatusUnauthorized
	if msg == "not an activity" {
		code = http.StatusBadRequest
	}
	http.Error(w, msg, code)
}

// ours: the configured conversation, or a reply thread in it.
func (c *Channel) ours(conv string) bool {
	return conv == c.cfg.ConversationID || strings.HasPrefix(conv, c.cfg.ConversationID+";messageid=")
}

// decide turns a verified activity's button value into a decision.
func (c *Channel) decide(ctx context.Context, d approval.Decider, act *Activity, value string) approval.Result {
	dec, err := approval.ParseButton(value)
	if err != nil {
		return approval.Result{Outcome: approval.ResultInvalid, Message: "This is not a clawd button; nothing changed."}
	}
	dec.Channel = c.name
	dec.User = act.From.AADObjectID
	if dec.User == "" {
		dec.User = act.From.ID
	}
	if dec.User == "" {
		return approval.Result{Outcome: approval.ResultInvalid, Message: "Teams did not say who clicked; nothing changed."}
	}
	dec.Display = clip(oneLine(act.From.Name), 100)
	return d.Decide(ctx, dec)
}

// execute answers an Action.Execute with the refreshed card showing the
// result (or a message when the approval is gone).
func (c *Channel) execute(w http.ResponseWriter, ctx context.Context, d approval.Decider, act *Activity) {
	var v struct {
		Action struct {
			Type string `json:"type"`
			Verb string `json:"verb"`
			Data struct {
				V string `json:"v"`
			} `json:"data"`
		} `json:"action"`
	}
	var res approval.Result
	if json.Unmarshal(act.Value, &v) != nil || v.Action.Type != "Action.Execute" || v.Action.Verb != Verb {
		res = approval.Result{Outcome: approval.ResultInvalid, Message: "This is not a clawd button; nothing changed."}
	} else {
		res = c.decide(ctx, d, act, v.Action.Data.V)
	}
	out := InvokeResponse{StatusCode: http.StatusOK, Type: InvokeMessage, Value: clip(res.Message, maxFieldText)}
	if res.Approval != nil {
		card := &approval.Card{Approval: res.Approval, Channel: c.name, Now: c.now()}
		out = InvokeResponse{StatusCode: http.StatusOK, Type: InvokeCard, Value: cardContent(card, res.Message)}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(out)
}

// submit handles an Action.Submit (clients without Universal Actions):
// decide, then reply in the card's thread with the result.
func (c *Channel) submit(w http.ResponseWriter, ctx context.Context, d approval.Decider, act *Activity) {
	var v struct {
		V string `json:"v"`
	}
	if json.Unmarshal(act.Value, &v) != nil || v.V == "" {
		w.WriteHeader(http.StatusOK) // not a clawd card's submit
		return
	}
	res := c.decide(ctx, d, act, v.V)
	w.WriteHeader(http.StatusOK)
	// The reply goes to the configured service URL, never to one an
	// activity names.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	reply := map[string]any{
		"type": "message", "text": esc(clip(res.Message, maxFieldText)), "textFormat": "markdown",
		"replyToId": act.ID,
	}
	if err := c.call(rctx, http.MethodPost, c.activitiesURL(act.Conversation.ID, act.ID), reply, nil); err != nil {
		c.log.Warn("teams: reply to a click failed", zap.Error(err))
	}
}

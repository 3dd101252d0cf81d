package whatsapp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

const (
	// freshness is how old (or how far ahead) a message's timestamp may be
	// for its press to count. Meta retries undelivered webhooks for days; a
	// press that arrives later than this is ignored, and the approver sees
	// no answer and can press again.
	freshness = 10 * time.Minute
	// maxWebhook is the largest webhook body read (Meta sends up to 3 MB).
	maxWebhook = 3 << 20
)

// webhook is the part of Meta's "messages" webhook this channel reads.
type webhook struct {
	Object string `json:"object"`
	Entry  []struct {
		Changes []struct {
			Field string `json:"field"`
			Value struct {
				Product  string `json:"messaging_product"`
				Metadata struct {
					PhoneNumberID string `json:"phone_number_id"`
				} `json:"metadata"`
				Contacts []struct {
					WaID    string `json:"wa_id"`
					Profile struct {
						Name string `json:"name"`
					} `json:"profile"`
				} `json:"contacts"`
				Messages []inMessage `json:"messages"`
				Statuses []struct {
					Status      string `json:"status"`
					RecipientID string `json:"recipient_id"`
					Errors      []struct {
						Code  int    `json:"code"`
						Title string `json:"title"`
					} `json:"errors"`
				} `json:"statuses"`
			} `json:"value"`
		} `json:"changes"`
	} `json:"entry"`
}

type inMessage struct {
	From        string `json:"from"`
	ID          string `json:"id"`
	Timestamp   string `json:"timestamp"`
	Type        string `json:"type"`
	Interactive *struct {
		Type        string `json:"type"`
		ButtonReply *struct {
			ID    string `json:"id"`
			Title string `json:"title"`
		} `json:"button_reply"`
	} `json:"interactive"`
	Button *struct {
		Payload string `json:"payload"`
		Text    string `json:"text"`
	} `json:"button"`
}

// press is one verified button press to decide.
type press struct {
	from, display, value, msgID string
}

// Callbacks serves the WhatsApp webhook (the app's Callback URL,
// PublicURL + approval.CallbackPath(name)): the GET verification handshake
// with verify-token, and POSTed events, each of which must carry
// X-Hub-Signature-256, the HMAC-SHA256 of the raw body with the app secret.
// Signed events are answered 200 once read; presses in them are decided
// first, and the clicker gets the answer as a text message.
func (c *Channel) Callbacks(dec approval.Decider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			c.handshake(w, r)
		case http.MethodPost:
			c.event(w, r, dec)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "GET or POST only", http.StatusMethodNotAllowed)
		}
	})
}

// handshake answers Meta's subscription check: hub.challenge is echoed
// only for hub.mode=subscribe with the verify token.
func (c *Channel) handshake(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tok := q.Get("hub.verify_token")
	challenge := q.Get("hub.challenge")
	good := subtle.ConstantTimeCompare([]byte(tok), []byte(c.verifyToken)) == 1
	if q.Get("hub.mode") != "subscribe" || !good || challenge == "" || len(challenge) > 256 || !printable(challenge) {
		c.log.Warn("refused whatsapp webhook verification")
		http.Error(w, "verification refused", http.StatusForbidden)
		return
	}
	c.log.Info("whatsapp webhook verified")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	io.WriteString(w, challenge)
}

// printable: Meta's challenge is a number; clawd echoes only word
// characters.
func printable(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *Channel) event(w http.ResponseWriter, r *http.Request, dec approval.Decider) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhook))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if !c.signed(r.Header.Get("X-Hub-Signature-256"), body) {
		c.log.Warn("refused whatsapp webhook", zap.Error(errNotSigned))
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	// From here on the event is Meta's: answer 200 whatever it holds, or
	// Meta keeps resending it.
	var ev webhook
	if err := json.Unmarshal(body, &ev); err != nil || ev.Object != "whatsapp_business_account" {
		c.log.Warn("whatsapp webhook: not a WhatsApp Business event; ignored")
		w.WriteHeader(http.StatusOK)
		return
	}
	presses := c.read(&ev)
	for _, p := range presses {
		reply := c.decide(r.Context(), dec, p)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := c.send(ctx, textMessage(p.from, reply, p.replyTo())); err != nil {
				c.log.Warn("whatsapp: could not answer the clicker", zap.String("to", p.from), zap.Error(err))
			}
		}()
	}
	w.WriteHeader(http.StatusOK)
}

// replyTo is the message the answer replies to: the press itself (so the
// answer shows under the button the approver pressed).
func (p press) replyTo() string { return p.msgID }

// signed checks "sha256=<hex>" against the HMAC of body, in constant time.
func (c *Channel) signed(h string, body []byte) bool {
	hexSig, ok := strings.CutPrefix(h, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	m := hmac.New(sha256.New, c.secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// read takes the messages addressed to this phone number out of a signed
// event: every fresh one opens its sender's window; presses on buttons are
// returned, unless their ID was seen before or they are stale.
func (c *Channel) read(ev *webhook) []press {
	now := c.now()
	var out []press
	changed := false
	for _, e := range ev.Entry {
		for _, ch := range e.Changes {
			v := ch.Value
			if ch.Field != "messages" {
				continue
			}
			for _, st := range v.Statuses {
				// A card WhatsApp accepted but could not deliver (template
				// paused, number not on WhatsApp, window closed, …).
				if st.Status == "failed" && v.Metadata.PhoneNumberID == c.phoneID {
					for _, e := range st.Errors {
						c.log.Warn("whatsapp could not deliver a message", zap.String("to", oneLine(st.RecipientID, 20)),
							zap.Int("code", e.Code), zap.String("error", oneLine(e.Title, 200)))
					}
				}
			}
			if len(v.Messages) == 0 {
				continue
			}
			if v.Metadata.PhoneNumberID != c.phoneID {
				c.log.Warn("whatsapp webhook: messages for another phone number id; ignored",
					zap.String("phone_number_id", oneLine(v.Metadata.PhoneNumberID, 40)))
				continue
			}
			for _, m := range v.Messages {
				if !waIDRe.MatchString(m.From) || !messageIDRe.MatchString(m.ID) {
					c.log.Warn("whatsapp webhook: message without a valid sender or id; ignored")
					continue
				}
				sec, err := strconv.ParseInt(m.Timestamp, 10, 64)
				if err != nil {
					c.log.Warn("whatsapp webhook: message without a timestamp; ignored", zap.String("from", m.From))
					continue
				}
				at := time.Unix(sec, 0)
				if at.Before(now.Add(-freshness)) || at.After(now.Add(freshness)) {
					c.log.Warn("whatsapp webhook: stale message; ignored", zap.String("from", m.From), zap.Time("sent", at))
					continue
				}
				if !c.state.record(m.From, m.ID, at, now, 2*freshness) {
					c.log.Warn("whatsapp webhook: replayed message id; ignored", zap.String("from", m.From))
					continue
				}
				changed = true
				p := press{from: m.From, msgID: m.ID}
				switch {
				case m.Type == "interactive" && m.Interactive != nil && m.Interactive.Type == "button_reply" && m.Interactive.ButtonReply != nil:
					p.value = m.Interactive.ButtonReply.ID
				case m.Type == "button" && m.Button != nil:
					p.value = m.Button.Payload
				default:
					continue // a text or other message: it only opened the window
				}
				for _, ct := range v.Contacts {
					if ct.WaID == m.From {
						p.display = oneLine(ct.Profile.Name, 80)
					}
				}
				out = append(out, p)
			}
		}
	}
	if changed {
		if err := c.state.save(now); err != nil {
			c.log.Warn("whatsapp: could not save state", zap.Error(err))
		}
	}
	return out
}

// decide turns a verified press into a Decision and returns the answer
// for the clicker.
func (c *Channel) decide(ctx context.Context, dec approval.Decider, p press) string {
	d, err := approval.ParseButton(p.value)
	if err != nil {
		c.log.Warn("refused whatsapp press: not a clawd button", zap.String("from", p.from))
		return "This is not a valid clawd button. Nothing was changed."
	}
	d.Channel, d.User, d.Display = c.name, p.from, p.display
	res := dec.Decide(ctx, d)
	c.log.Info("whatsapp decision", zap.String("id", d.ID), zap.String("user", d.User), zap.Bool("approve", d.Approve), zap.String("outcome", res.Outcome))
	if res.Message == "" {
		return "clawd: " + res.Outcome
	}
	return res.Message
}

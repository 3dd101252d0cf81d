package telegram

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// retention is how long Telegram keeps an update it has not been told was
// handled; an offset older than that protects nothing (and after a week
// without updates Telegram may number new ones lower), so it is dropped.
const retention = 24 * time.Hour

// recentKept bounds the update IDs remembered to refuse replays.
const recentKept = 1024

// state is what the state directory keeps across restarts: the next
// update_id to take (the getUpdates offset) for one bot.
type state struct {
	Bot    string    `json:"bot"`
	Offset int64     `json:"offset"`
	At     time.Time `json:"at"`
}

// seenSet tells new updates from repeated ones: anything below the offset
// or among the recent IDs was handled already.
type seenSet struct {
	next   int64
	at     time.Time
	recent map[int64]bool
	order  []int64
}

func (s *seenSet) load(st state, bot string, now time.Time) {
	s.recent = map[int64]bool{}
	if st.Bot == bot && st.Offset > 0 && now.Sub(st.At) < retention {
		s.next, s.at = st.Offset, st.At
	}
}

func (s *seenSet) offset(now time.Time) int64 {
	if now.Sub(s.at) >= retention {
		return 0
	}
	return s.next
}

// take reports whether update id is new and, if so, records it.
func (s *seenSet) take(id int64, now time.Time) bool {
	if id <= 0 || id < s.offset(now) || s.recent[id] {
		return false
	}
	s.recent[id] = true
	s.order = append(s.order, id)
	if len(s.order) > recentKept {
		delete(s.recent, s.order[0])
		s.order = s.order[1:]
	}
	if id >= s.next || now.Sub(s.at) >= retention {
		s.next = id + 1
	}
	s.at = now
	return true
}

func (c *Channel) statePath() string {
	if c.stateDir == "" {
		return ""
	}
	return filepath.Join(c.stateDir, "state.json")
}

func (c *Channel) readState() state {
	var st state
	p := c.statePath()
	if p == "" {
		return st
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("telegram: cannot read the kept update offset; starting without it", zap.Error(err))
		}
		return st
	}
	if err := json.Unmarshal(b, &st); err != nil {
		c.log.Warn("telegram: the kept update offset is malformed; starting without it")
		return state{}
	}
	return st
}

func (c *Channel) writeState(st state) {
	p := c.statePath()
	if p == "" {
		return
	}
	b, _ := json.Marshal(st)
	if err := writeFile(p, b); err != nil {
		c.log.Warn("telegram: cannot keep the update offset; a restart may show a click again", zap.Error(err))
	}
}

// Run receives clicks: it long-polls getUpdates in poll mode; in webhook
// mode it registers the webhook (the clicks then come to Callbacks) and
// waits. It returns when ctx is done.
func (c *Channel) Run(ctx context.Context, d approval.Decider) error {
	if c.mode == ModeWebhook {
		c.runWebhook(ctx)
		return nil
	}
	c.runPoll(ctx, d)
	return nil
}

func (c *Channel) runWebhook(ctx context.Context) {
	req := map[string]any{
		"url": c.hookURL, "secret_token": c.secret, "allowed_updates": []string{"callback_query"},
		"drop_pending_updates": false,
		// One connection: updates arrive in order, so the offset also
		// refuses replays.
		"max_connections": 1,
	}
	for n := 1; ctx.Err() == nil; n++ {
		err := c.call(ctx, c.http, "setWebhook", req, nil)
		if err == nil {
			c.log.Info("telegram: webhook set", zap.String("url", c.hookURL))
			break
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Error("telegram: setWebhook failed; Telegram must reach this URL over https on port 443, 80, 88 or 8443 (or use mode: poll)",
			zap.String("url", c.hookURL), zap.Error(err))
		if c.sleep(ctx, backoff(n)) != nil {
			return
		}
	}
	<-ctx.Done()
}

func (c *Channel) deleteWebhook(ctx context.Context) {
	if err := c.call(ctx, c.http, "deleteWebhook", map[string]any{"drop_pending_updates": false}, nil); err != nil && ctx.Err() == nil {
		c.log.Warn("telegram: deleteWebhook failed", zap.Error(err))
	}
}

func (c *Channel) runPoll(ctx context.Context, d approval.Decider) {
	// getUpdates does not work while a webhook is set.
	c.deleteWebhook(ctx)
	fails := 0
	for ctx.Err() == nil {
		ups, err := c.getUpdates(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			wait := backoff(fails)
			var ae *apiError
			switch {
			case errors.As(err, &ae) && ae.Code == http.StatusConflict:
				c.log.Warn("telegram: 409 Conflict: another clawd or bot program is polling this bot token, or a webhook is set; "+
					"only one may receive its updates. Retrying.", zap.String("telegram", ae.Description), zap.Duration("backoff", wait))
				if strings.Contains(ae.Description, "webhook") {
					c.deleteWebhook(ctx)
				}
			case errors.As(err, &ae) && ae.Code == http.StatusTooManyRequests && ae.RetryAfter > 0:
				wait = time.Duration(min(ae.RetryAfter, 3600)) * time.Second
				c.log.Warn("telegram: rate limited; waiting", zap.Duration("backoff", wait))
			case errors.As(err, &ae) && (ae.Code == http.StatusUnauthorized || ae.Code == http.StatusNotFound):
				c.log.Error("telegram: the Bot API refused the bot token; check bot-token", zap.Error(err), zap.Duration("backoff", wait))
			default:
				c.log.Warn("telegram: getUpdates failed; retrying", zap.Error(err), zap.Duration("backoff", wait))
			}
			if c.sleep(ctx, wait) != nil {
				return
			}
			continue
		}
		fails = 0
		for _, u := range ups {
			c.handle(ctx, d, u)
		}
	}
}

func (c *Channel) getUpdates(ctx context.Context) ([]update, error) {
	c.mu.Lock()
	off := c.seen.offset(c.now())
	c.mu.Unlock()
	// A long poll outlasts the usual client timeout: the context bounds it.
	hc := *c.http
	hc.Timeout = 0
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.pollTimeout+15)*time.Second)
	defer cancel()
	var ups []update
	err := c.call(ctx, &hc, "getUpdates", map[string]any{
		"offset": off, "timeout": c.pollTimeout, "limit": 100, "allowed_updates": []string{"callback_query"},
	}, &ups)
	return ups, err
}

// handle takes one update once: repeated update IDs are refused.
func (c *Channel) handle(ctx context.Context, d approval.Decider, u update) bool {
	now := c.now()
	c.mu.Lock()
	fresh := c.seen.take(u.UpdateID, now)
	st := state{Bot: c.botID, Offset: c.seen.next, At: c.seen.at}
	c.mu.Unlock()
	if !fresh {
		c.log.Warn("telegram: update seen before; ignored", zap.Int64("update_id", u.UpdateID))
		return false
	}
	c.writeState(st)
	cq := u.CallbackQuery
	if cq == nil || cq.ID == "" {
		return false
	}
	text, alert := c.decide(ctx, d, cq)
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.call(actx, c.http, "answerCallbackQuery", map[string]any{
		"callback_query_id": cq.ID, "text": cut16(text, 200), "show_alert": alert,
	}, nil); err != nil {
		c.log.Warn("telegram: answerCallbackQuery failed", zap.Error(err))
	}
	return true
}

// decide turns a verified callback query into a decision; it returns what
// the clicker is shown and whether as an alert (refusals).
func (c *Channel) decide(ctx context.Context, d approval.Decider, cq *callbackQuery) (string, bool) {
	if cq.Message == nil || cq.Message.Chat.ID != c.chatID {
		c.log.Warn("telegram: click from outside the approval chat refused")
		return "This card is not in the approval chat; nothing changed.", true
	}
	if cq.From == nil || cq.From.ID <= 0 || cq.From.IsBot {
		return "Unknown user; nothing changed.", true
	}
	dec, err := approval.ParseButton(cq.Data)
	if err != nil {
		return "Not a clawd button; nothing changed.", true
	}
	dec.Channel = c.name
	dec.User = strconv.FormatInt(cq.From.ID, 10)
	dec.Display = cq.From.Username
	if dec.Display == "" {
		dec.Display = cq.From.FirstName
	}
	res := d.Decide(ctx, dec)
	msg := res.Message
	if msg == "" {
		msg = "Nothing changed."
	}
	return msg, !res.OK()
}

// cut16 cuts s to n UTF-16 units (answerCallbackQuery takes 0-200).
func cut16(s string, n int) string {
	k := 0
	for i, r := range s {
		k += utf16.RuneLen(r)
		if k > n {
			return s[:i]
		}
	}
	return s
}

// maxWebhookBody bounds one webhook update.
const maxWebhookBody = 1 << 20

// Callbacks is the webhook endpoint in webhook mode; nil in poll mode, so
// nothing is mounted.
// Telegram authenticates each delivery only by the secret_token clawd set,
// sent back in X-Telegram-Bot-Api-Secret-Token; it is compared in constant
// time, and an update_id seen before is not decided again.
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	if c.mode != ModeWebhook {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != approval.CallbackPath(c.name) {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		got := r.Header.Get("X-Telegram-Bot-Api-Secret-Token")
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(c.secret)) != 1 {
			c.log.Warn("telegram: webhook call without the right secret token refused", zap.String("remote", r.RemoteAddr))
			http.Error(w, "bad secret token", http.StatusUnauthorized)
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			http.Error(w, "want application/json", http.StatusUnsupportedMediaType)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
		if err != nil || len(body) > maxWebhookBody {
			http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		var u update
		if err := json.Unmarshal(body, &u); err != nil || u.UpdateID <= 0 {
			http.Error(w, "not a Telegram update", http.StatusBadRequest)
			return
		}
		// A replay is answered 200 so Telegram stops resending; it decides
		// nothing.
		c.handle(r.Context(), d, u)
		w.WriteHeader(http.StatusOK)
	})
}

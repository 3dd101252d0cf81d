// Package webex is the Webex approval channel: a Webex bot that posts each
// held request as an editable text message (the thread's head, mentioning
// the people asked) with an Adaptive Card carrying the buttons in its
// thread, and takes clicks from an attachmentActions webhook whose
// X-Spark-Signature verifies, reading the click itself back from the Webex
// API by its id.
//
// Webex cannot edit a message that has an attachment, so the card itself is
// never edited: Update edits the head's text to the current state and, once
// the approval is decided, deletes the card (its buttons go with it) and
// posts the outcome card, without buttons, in the thread.
package webex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "webex"

// DefaultAPIBase is the Webex REST API.
const DefaultAPIBase = "https://webexapis.com"

// Config is the channel's clawd.yaml settings.
type Config struct {
	BotToken        string `mapstructure:"bot-token"`      // credential
	WebhookSecret   string `mapstructure:"webhook-secret"` // credential
	RoomID          string `mapstructure:"room-id"`
	APIBase         string `mapstructure:"api-base"`
	RegisterWebhook bool   `mapstructure:"register-webhook"`
}

// Channel is one Webex room a bot posts approval cards to.
type Channel struct {
	name    string
	cfg     Config
	token   string
	secret  []byte // nil: no webhook, clicks are not taken
	base    string // api-base without a trailing slash
	hookURL string // where the webhook points (registration only)
	http    *http.Client
	now     func() time.Time
	log     *zap.Logger

	mu       sync.Mutex
	cards    map[string]cardRef // card message id -> where it is
	order    []string           // card ids, oldest first (bounds cards)
	inflight int                // Posts under way
	posted   chan struct{}      // closed (and replaced) when a Post ends

	replay *seen
}

// cardRef is one card this process posted.
type cardRef struct {
	room, head, approval string
}

// maxCards bounds the cards remembered for clicks.
const maxCards = 10000

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	cfg := Config{APIBase: DefaultAPIBase}
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, err
	}
	if cfg.BotToken == "" {
		return nil, errors.New("bot-token is required (e.g. secret:webex-bot-token)")
	}
	tok, err := env.Credential(cfg.BotToken)
	if err != nil {
		return nil, fmt.Errorf("bot-token: %w", err)
	}
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return nil, errors.New("bot-token: the credential is empty or has spaces")
	}
	if !validID(cfg.RoomID) {
		return nil, errors.New("room-id is required: the Webex room (space) ID, Y2lzY29zcGFyazovL…")
	}
	base, err := baseURL("api-base", cfg.APIBase)
	if err != nil {
		return nil, err
	}
	c := &Channel{
		name: name, cfg: cfg, token: tok, base: base,
		http: env.Client(), now: env.Clock(), log: env.Logger().With(zap.String("channel", name)),
		cards: map[string]cardRef{}, replay: newSeen(), posted: make(chan struct{}),
	}
	if cfg.WebhookSecret != "" {
		sec, err := env.Credential(cfg.WebhookSecret)
		if err != nil {
			return nil, fmt.Errorf("webhook-secret: %w", err)
		}
		if len(sec) < 16 {
			return nil, errors.New("webhook-secret: use at least 16 characters")
		}
		c.secret = []byte(sec)
	}
	if cfg.RegisterWebhook {
		if c.secret == nil {
			return nil, errors.New("register-webhook needs webhook-secret: clawd registers the webhook with it")
		}
		if env.PublicURL == "" {
			return nil, errors.New("register-webhook needs clawd's public URL: Webex POSTs clicks there")
		}
		pu, err := url.Parse(strings.TrimSuffix(env.PublicURL, "/"))
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			return nil, errors.New("register-webhook: clawd's public URL is not an http(s) URL")
		}
		c.hookURL = pu.String() + approval.CallbackPath(name)
	}
	switch {
	case c.secret == nil:
		c.log.Warn("webex: no webhook-secret: buttons cannot reach clawd; decide from the web page or the CLI")
	case env.PublicURL == "":
		c.log.Warn("webex: clawd has no public URL: Webex cannot deliver clicks; decide from the web page or the CLI")
	}
	return c, nil
}

// Build is New for the channel registry (approval/channels).
func Build(name string, settings map[string]any, env approval.Env) (approval.Channel, error) {
	c, err := New(name, settings, env)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Name is the channel's name.
func (c *Channel) Name() string { return c.name }

// Post sends the head message to the room (card.Target, or room-id) and
// the card in its thread. The ref is "roomId|headId|cardId".
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	// A click can arrive before Webex's answer to the post does; clicks
	// on unknown cards wait for the posts under way (see cardWait).
	c.mu.Lock()
	c.inflight++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inflight--
		close(c.posted)
		c.posted = make(chan struct{})
		c.mu.Unlock()
	}()
	room := c.cfg.RoomID
	if card.Target != "" {
		if !validID(card.Target) {
			return "", errors.New("webex: the route's target is not a Webex room ID")
		}
		room = card.Target
	}
	head, err := c.send(ctx, message{RoomID: room, Markdown: headMarkdown(card)})
	if err != nil {
		return "", err
	}
	id, err := c.send(ctx, cardMessage(room, head, card))
	if err != nil {
		// Without its card the head would ask for a decision nobody
		// can make here; take it back.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if _, derr := c.call(dctx, http.MethodDelete, "/v1/messages/"+url.PathEscape(head), nil, nil); derr != nil {
			c.log.Warn("webex: could not delete the head of a card that failed", zap.Error(derr))
		}
		return "", err
	}
	c.remember(id, cardRef{room: room, head: head, approval: card.ID})
	return room + "|" + head + "|" + id, nil
}

// Update edits the head to the approval's state; once it is decided it
// deletes the card with the buttons and posts the outcome card in the
// thread (once: if the card is already gone, nothing is posted again).
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	parts := strings.Split(ref, "|")
	if len(parts) != 3 || !validID(parts[0]) || !validID(parts[1]) || !validID(parts[2]) {
		return fmt.Errorf("webex: ref %q is not a clawd card", clip(ref, 80))
	}
	room, head, id := parts[0], parts[1], parts[2]
	var errs []error
	if _, err := c.call(ctx, http.MethodPut, "/v1/messages/"+url.PathEscape(head),
		message{RoomID: room, Markdown: headMarkdown(card)}, nil); err != nil {
		errs = append(errs, err)
	}
	if card.Approval != nil && card.Status != approval.Pending {
		status, err := c.call(ctx, http.MethodDelete, "/v1/messages/"+url.PathEscape(id), nil, nil)
		switch {
		case status == http.StatusNotFound:
			// Deleted by an earlier Update: the outcome card is there.
		case err != nil:
			errs = append(errs, err)
		default:
			if _, err := c.send(ctx, cardMessage(room, head, card)); err != nil {
				errs = append(errs, err)
			}
		}
		c.forget(id)
	}
	return errors.Join(errs...)
}

// remember records a posted card for clicks, dropping the oldest past
// maxCards.
func (c *Channel) remember(id string, r cardRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cards[id] = r
	c.order = append(c.order, id)
	for len(c.order) > maxCards {
		delete(c.cards, c.order[0])
		c.order = c.order[1:]
	}
}

func (c *Channel) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cards, id)
}

// cardWait is the card with message id id; while Posts are under way it
// waits for them (a click can overtake the answer to its card's post).
func (c *Channel) cardWait(ctx context.Context, id string) (cardRef, bool) {
	for {
		c.mu.Lock()
		r, ok := c.cards[id]
		busy, ch := c.inflight > 0, c.posted
		c.mu.Unlock()
		if ok || !busy {
			return r, ok
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return r, false
		}
	}
}

// message is a Webex message as clawd sends it.
type message struct {
	RoomID      string       `json:"roomId"`
	ParentID    string       `json:"parentId,omitempty"`
	Markdown    string       `json:"markdown"`
	Attachments []attachment `json:"attachments,omitempty"`
}

type attachment struct {
	ContentType string `json:"contentType"`
	Content     obj    `json:"content"`
}

// send posts a message and returns its id.
func (c *Channel) send(ctx context.Context, m message) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	if _, err := c.call(ctx, http.MethodPost, "/v1/messages", m, &out); err != nil {
		return "", err
	}
	if !validID(out.ID) {
		return "", errors.New("webex: the API returned no message id")
	}
	return out.ID, nil
}

// call sends one request to the Webex API with the bot token and returns
// the HTTP status (0 when there was no answer).
func (c *Channel) call(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	what := method + " " + pathLabel(path)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("webex: %s: %w", what, scrubErr(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("webex: %s: HTTP %d: %s", what, resp.StatusCode, apiError(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("webex: %s: answer: %w", what, err)
		}
	}
	return resp.StatusCode, nil
}

// pathLabel is path for errors and logs: ids become {id}, no query.
func pathLabel(path string) string {
	path, _, _ = strings.Cut(path, "?")
	seg := strings.Split(path, "/")
	for i, p := range seg {
		if len(p) > 24 {
			seg[i] = "{id}"
		}
	}
	return strings.Join(seg, "/")
}

// apiError is the API's error message and tracking id.
func apiError(data []byte) string {
	var e struct {
		Message    string `json:"message"`
		TrackingID string `json:"trackingId"`
	}
	if json.Unmarshal(data, &e) == nil && e.Message != "" {
		s := clip(oneLine(e.Message), 300)
		if e.TrackingID != "" {
			s += " (trackingId " + clip(e.TrackingID, 100) + ")"
		}
		return s
	}
	return "(no error detail)"
}

// scrubErr drops the URL from a client error.
func scrubErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// baseURL checks an http(s) URL setting and returns it without a trailing
// slash.
func baseURL(key, v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || !approval.SecureScheme(u, "https", "http") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%s must be an https URL (http only to a loopback address) without credentials, query or fragment", key)
	}
	u.RawPath = ""
	return strings.TrimSuffix(u.String(), "/"), nil
}

// validID: a Webex API id (rooms, messages, people, actions, webhooks):
// base64 of a ciscospark:// URI, so letters, digits and + / = - _.
func validID(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+/=-_", c)) {
			return false
		}
	}
	return true
}

var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
	_ approval.Listener  = (*Channel)(nil)
)

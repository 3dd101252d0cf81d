// Package mattermost is the Mattermost approval channel: a bot account
// posts each held request to a channel as a message with interactive
// buttons, edits the post as the approval changes, and takes clicks at
// clawd's public listener. Mattermost does not sign those callbacks, so
// every button carries a one-time 256-bit secret in its (server-side,
// client-hidden) integration context; clawd keeps only its hash.
package mattermost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"go.uber.org/zap"
)

// Type is the channel type in clawd.yaml.
const Type = "mattermost"

// Config is the channel's clawd.yaml settings.
type Config struct {
	// Server is the Mattermost site URL (https://chat.example.com).
	Server string `mapstructure:"server"`
	// BotToken is the bot account's access token: secret:NAME, file:PATH,
	// env:VAR or literal.
	BotToken string `mapstructure:"bot-token"`
	// ChannelID is the ID (26 characters) of the channel cards go to.
	ChannelID string `mapstructure:"channel-id"`
	// Usernames maps approvers' user IDs to their usernames, for
	// @mentions (a user ID cannot be mentioned as such).
	Usernames map[string]string `mapstructure:"usernames"`
}

// Channel posts approval cards to one Mattermost channel (or the one a
// route names).
type Channel struct {
	name      string
	cfg       Config
	token     string
	api       string // {server}/api/v4
	callback  string // integration URL: PublicURL + CallbackPath(name); "" = no buttons
	usernames map[string]string
	http      *http.Client
	now       func() time.Time
	log       *zap.Logger
	secrets   *secrets

	mu    sync.Mutex
	cards map[string]*approval.Card // last card per approval, for re-rendering after a click
}

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	var cfg Config
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, err
	}
	srv, err := baseURL("server", cfg.Server)
	if err != nil {
		return nil, err
	}
	if cfg.BotToken == "" {
		return nil, errors.New("bot-token is required (e.g. secret:mattermost-bot)")
	}
	tok, err := env.Credential(cfg.BotToken)
	if err != nil {
		return nil, fmt.Errorf("bot-token: %w", err)
	}
	if tok == "" || strings.ContainsAny(tok, " \r\n\t") {
		return nil, errors.New("bot-token: the credential is empty or not a token")
	}
	if !validID(cfg.ChannelID) {
		return nil, errors.New("channel-id is required: the channel's ID (26 characters, channel → View Info)")
	}
	names := map[string]string{}
	for id, n := range cfg.Usernames {
		n = strings.TrimPrefix(n, "@")
		if !validUserID(id) {
			return nil, fmt.Errorf("usernames: %q is not a Mattermost user ID (26 characters)", clip(id, 40))
		}
		if !validUsername(n) {
			return nil, fmt.Errorf("usernames: %q is not a Mattermost username", clip(n, 70))
		}
		names[id] = n
	}
	c := &Channel{
		name: name, cfg: cfg, token: tok, api: strings.TrimRight(srv.String(), "/") + "/api/v4",
		usernames: names, http: env.Client(), now: env.Clock(),
		log: env.Logger().With(zap.String("channel", name)), cards: map[string]*approval.Card{},
	}
	if env.PublicURL != "" {
		pu, err := url.Parse(env.PublicURL)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			return nil, errors.New("the public URL is not an http(s) URL")
		}
		c.callback = strings.TrimRight(env.PublicURL, "/") + approval.CallbackPath(name)
	} else {
		c.log.Warn("mattermost: clawd has no public URL: cards have no buttons; decide from the web page or the CLI")
	}
	if c.secrets, err = openSecrets(env.StateDir, name, c.now()); err != nil {
		return nil, err
	}
	if env.StateDir == "" && c.callback != "" {
		c.log.Warn("mattermost: no state directory: button secrets are kept in memory and cards posted before a restart lose their buttons")
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

// post is the part of a Mattermost post clawd sends and reads.
type post struct {
	ID        string         `json:"id,omitempty"`
	ChannelID string         `json:"channel_id,omitempty"`
	Message   string         `json:"message"`
	Props     map[string]any `json:"props"`
}

// target is the channel a card goes to: card.Target when set (a channel
// ID), else the configured one.
func (c *Channel) target(card *approval.Card) (string, error) {
	if card.Target == "" {
		return c.cfg.ChannelID, nil
	}
	if !validID(card.Target) {
		return "", fmt.Errorf("mattermost: target %q is not a channel ID", clip(card.Target, 40))
	}
	return card.Target, nil
}

// Post creates the card's post; the ref is the post ID.
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	ch, err := c.target(card)
	if err != nil {
		return "", err
	}
	r, err := c.render(card, ch, "")
	if err != nil {
		return "", err
	}
	if err := c.secrets.add(r.Secrets, c.now()); err != nil {
		c.log.Warn("mattermost: button secrets not persisted", zap.Error(err))
	}
	var out post
	body := post{ChannelID: ch, Message: r.Message, Props: map[string]any{"attachments": r.Attachments}}
	if err := c.call(ctx, http.MethodPost, c.api+"/posts", body, &out); err != nil {
		c.drop(r)
		return "", err
	}
	if !validID(out.ID) {
		c.drop(r)
		return "", errors.New("mattermost: the server returned no post id")
	}
	if r.Issue != "" {
		if err := c.secrets.setPost(r.Issue, out.ID, c.now()); err != nil {
			c.log.Warn("mattermost: button secrets not persisted", zap.Error(err))
		}
	}
	c.remember(card)
	return out.ID, nil
}

// Update edits the post in place: fresh buttons while pending, the
// outcome and no buttons once decided.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	if !validID(ref) {
		return fmt.Errorf("mattermost: ref %q is not a post ID", clip(ref, 40))
	}
	ch, err := c.target(card)
	if err != nil {
		return err
	}
	r, err := c.render(card, ch, ref)
	if err != nil {
		return err
	}
	if err := c.secrets.add(r.Secrets, c.now()); err != nil {
		c.log.Warn("mattermost: button secrets not persisted", zap.Error(err))
	}
	c.remember(card)
	if card.Approval != nil && card.Status != approval.Pending {
		// No button of this approval may decide anything any more.
		if err := c.secrets.revoke(card.ID, c.now()); err != nil {
			c.log.Warn("mattermost: button secrets not persisted", zap.Error(err))
		}
	}
	body := post{Message: r.Message, Props: map[string]any{"attachments": r.Attachments}}
	if err := c.call(ctx, http.MethodPut, c.api+"/posts/"+ref+"/patch", body, nil); err != nil {
		c.drop(r)
		return err
	}
	return nil
}

// drop forgets the secrets of a rendering that never reached Mattermost.
func (c *Channel) drop(r rendered) {
	if r.Issue == "" {
		return
	}
	if err := c.secrets.drop(r.Issue, c.now()); err != nil {
		c.log.Warn("mattermost: button secrets not persisted", zap.Error(err))
	}
}

// remember keeps the latest card of a pending approval (for the people to
// mention when a click re-renders it); a decided one is kept as it is
// final.
func (c *Channel) remember(card *approval.Card) {
	if card.Approval == nil {
		return
	}
	cp := *card
	a := *card.Approval
	cp.Approval = &a
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cards[a.ID] = &cp
	// Bound the memory: forget decided cards once there are many.
	if len(c.cards) > 2000 {
		for id, k := range c.cards {
			if k.Status != approval.Pending {
				delete(c.cards, id)
			}
		}
	}
}

func (c *Channel) lastCard(id string) *approval.Card {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cards[id]
}

// call sends one request to the REST API v4 with the bot's token.
func (c *Channel) call(ctx context.Context, method, u string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	what := "create post"
	if method == http.MethodPut {
		what = "patch post"
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("mattermost: %s: %w", what, scrubErr(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		hint := ""
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			hint = "; check bot-token"
		case http.StatusForbidden:
			hint = "; is the bot a member of the channel?"
		}
		return fmt.Errorf("mattermost: %s: HTTP %d: %s%s", what, resp.StatusCode, apiError(data), hint)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("mattermost: %s: answer: %w", what, err)
		}
	}
	return nil
}

// apiError is the server's error id and message.
func apiError(data []byte) string {
	var e struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &e) == nil && (e.ID != "" || e.Message != "") {
		return clip(oneLine(e.ID+": "+e.Message), 300)
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

// baseURL checks the server setting: https, or http only to a loopback
// address (the bot token never travels in clear over a network).
func baseURL(key, v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if v == "" {
		return nil, fmt.Errorf("%s is required: the Mattermost site URL (https://chat.example.com)", key)
	}
	if err != nil || !okScheme(u) || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s must be an https URL (http only to a loopback address) without credentials, query or fragment", key)
	}
	u.RawPath = ""
	return u, nil
}

func okScheme(u *url.URL) bool {
	if u.Host == "" {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	if u.Scheme != "http" {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// validID: a Mattermost ID is 26 characters of [a-z0-9].
func validID(s string) bool {
	if len(s) != 26 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func validUserID(s string) bool { return validID(s) }

// validUsername: Mattermost usernames are 1–64 of [a-z0-9.-_], starting
// with a letter.
func validUsername(s string) bool {
	if s == "" || len(s) > 64 || !(s[0] >= 'a' && s[0] <= 'z') {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
)

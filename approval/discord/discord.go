// Package discord asks for approvals in a Discord channel: a bot posts a
// card with buttons and learns of clicks either over the Gateway WebSocket
// (no public URL needed) or at an interactions endpoint that verifies
// Discord's Ed25519 signature.
package discord

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "discord"

// DefaultAPIBase is Discord's REST API (version 10).
const DefaultAPIBase = "https://discord.com/api/v10"

// Modes: how clicks reach clawd.
const (
	ModeGateway      = "gateway"      // clawd holds a Gateway WebSocket; no public URL
	ModeInteractions = "interactions" // Discord POSTs to PublicURL + CallbackPath(name)
)

// userAgent is the form Discord requires of bots.
const userAgent = "DiscordBot (https://github.com/clawd-dev/clawd, 1)"

// Config is the channel's clawd.yaml settings.
type Config struct {
	BotToken      string `mapstructure:"bot-token"`      // credential reference
	ApplicationID string `mapstructure:"application-id"` // snowflake
	PublicKey     string `mapstructure:"public-key"`     // hex Ed25519 key (interactions mode)
	ChannelID     string `mapstructure:"channel-id"`     // snowflake
	APIBase       string `mapstructure:"api-base"`
	Mode          string `mapstructure:"mode"`
}

// Channel is a Discord approval channel.
type Channel struct {
	name   string
	token  string
	appID  string
	chanID string
	pub    ed25519.PublicKey
	api    string
	mode   string
	http   *http.Client
	now    func() time.Time
	log    *zap.Logger

	state string // file of the route-target channels cards went to ("" = memory only)

	mu      sync.Mutex
	seen    map[string]time.Time // interaction IDs answered, for replays
	targets map[string]bool      // channels other than chanID that cards were posted to
}

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	var cfg Config
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, fmt.Errorf("discord %s: %w", name, err)
	}
	fail := func(format string, a ...any) (*Channel, error) {
		return nil, fmt.Errorf("discord %s: "+format, append([]any{name}, a...)...)
	}
	if cfg.BotToken == "" {
		return fail("bot-token is required")
	}
	token, err := env.Credential(cfg.BotToken)
	if err != nil {
		return fail("bot-token: %v", err)
	}
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return fail("bot-token: empty or contains white space")
	}
	if !snowflake(cfg.ApplicationID) {
		return fail("application-id must be the application's numeric ID")
	}
	if !snowflake(cfg.ChannelID) {
		return fail("channel-id must be the channel's numeric ID")
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeGateway
	}
	if cfg.Mode != ModeGateway && cfg.Mode != ModeInteractions {
		return fail("mode must be %q or %q", ModeGateway, ModeInteractions)
	}
	var pub ed25519.PublicKey
	if cfg.PublicKey != "" {
		b, err := hex.DecodeString(cfg.PublicKey)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return fail("public-key must be the application's 64 hex digit public key")
		}
		pub = b
	}
	if cfg.Mode == ModeInteractions {
		if pub == nil {
			return fail("mode interactions needs public-key")
		}
		if env.PublicURL == "" {
			return fail("mode interactions needs clawd's public URL; use mode gateway without one")
		}
	}
	if cfg.APIBase == "" {
		cfg.APIBase = DefaultAPIBase
	}
	u, err := url.Parse(cfg.APIBase)
	if err != nil || !approval.SecureScheme(u, "https", "http") || u.User != nil || u.RawQuery != "" {
		return fail("api-base must be an https URL (http only to a loopback address)")
	}
	c := &Channel{
		name: name, token: token, appID: cfg.ApplicationID, chanID: cfg.ChannelID, pub: pub,
		api: strings.TrimRight(cfg.APIBase, "/"), mode: cfg.Mode,
		http: env.Client(), now: env.Clock(), log: env.Logger().With(zap.String("channel", name)),
		seen: map[string]time.Time{}, targets: map[string]bool{},
	}
	if env.StateDir != "" {
		c.state = filepath.Join(env.StateDir, "target-channels")
		if b, err := os.ReadFile(c.state); err == nil {
			for _, id := range strings.Fields(string(b)) {
				if snowflake(id) {
					c.targets[id] = true
				}
			}
		}
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

// clickable reports whether clicks from channel id are accepted: the
// configured channel and the route targets cards were posted to.
func (c *Channel) clickable(id string) bool {
	if id == c.chanID {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.targets[id]
}

// remember adds a route-target channel (persisted in the state directory,
// so clicks there are accepted after a restart).
func (c *Channel) remember(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == c.chanID || c.targets[id] {
		return
	}
	c.targets[id] = true
	if c.state == "" {
		return
	}
	ids := make([]string, 0, len(c.targets))
	for t := range c.targets {
		ids = append(ids, t)
	}
	sort.Strings(ids)
	if err := atomicfile.WriteFile(c.state, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
		c.log.Warn("discord: cannot save the target channels", zap.Error(err))
	}
}

// Name is the channel's name.
func (c *Channel) Name() string { return c.name }

// Mode is ModeGateway or ModeInteractions.
func (c *Channel) Mode() string { return c.mode }

// Post sends the card to the configured channel, or to the route's target
// (a channel ID); ref is "channel_id|message_id".
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	if card == nil || card.Approval == nil {
		return "", fmt.Errorf("discord %s: no approval on the card", c.name)
	}
	channel := c.chanID
	if card.Target != "" {
		if !snowflake(card.Target) {
			return "", fmt.Errorf("discord %s: route target %q is not a Discord channel ID", c.name, cut(card.Target, 40))
		}
		channel = card.Target
		c.remember(channel) // before the post: a click may come at once
	}
	var m struct {
		ID        string `json:"id"`
		ChannelID string `json:"channel_id"`
	}
	if err := c.call(ctx, "POST", "/channels/"+channel+"/messages", message(card), &m); err != nil {
		return "", err
	}
	if !snowflake(m.ID) {
		return "", fmt.Errorf("discord %s: post: no message ID in the answer", c.name)
	}
	return channel + "|" + m.ID, nil
}

// Update edits the card in place: the outcome, votes, and no buttons once
// it is decided.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	if card == nil || card.Approval == nil {
		return fmt.Errorf("discord %s: no approval on the card", c.name)
	}
	ch, id, ok := strings.Cut(ref, "|")
	if !ok || !snowflake(ch) || !snowflake(id) {
		return fmt.Errorf("discord %s: bad message ref", c.name)
	}
	return c.call(ctx, "PATCH", "/channels/"+ch+"/messages/"+id, message(card), nil)
}

// call sends one REST request with the bot token; one 429 is waited out.
func (c *Channel) call(ctx context.Context, method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	for try := 0; ; try++ {
		status, body, hdr, err := c.do(ctx, method, c.api+path, b, true)
		if err != nil {
			return fmt.Errorf("discord %s: %s %s: %w", c.name, method, redactPath(path), err)
		}
		if status == http.StatusTooManyRequests && try == 0 {
			if err := sleepCtx(ctx, retryAfter(body, hdr)); err != nil {
				return err
			}
			continue
		}
		if status/100 != 2 {
			return fmt.Errorf("discord %s: %s %s: %s", c.name, method, redactPath(path), apiError(status, body))
		}
		if out != nil {
			if err := json.Unmarshal(body, out); err != nil {
				return fmt.Errorf("discord %s: %s %s: bad answer: %v", c.name, method, redactPath(path), err)
			}
		}
		return nil
	}
}

func (c *Channel) do(ctx context.Context, method, u string, body []byte, auth bool) (int, []byte, http.Header, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return 0, nil, nil, errors.New("bad request URL")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		req.Header.Set("Authorization", "Bot "+c.token)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold an interaction token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, rb, resp.Header, nil
}

// redactPath hides the interaction token in /interactions/ID/TOKEN/callback.
func redactPath(p string) string {
	if strings.HasPrefix(p, "/interactions/") {
		return "/interactions/…/callback"
	}
	return p
}

// apiError is Discord's {"code", "message"} error, cut short.
func apiError(status int, body []byte) string {
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return fmt.Sprintf("HTTP %d: %s (code %d)", status, cut(e.Message, 200), e.Code)
	}
	return fmt.Sprintf("HTTP %d", status)
}

func retryAfter(body []byte, h http.Header) time.Duration {
	var e struct {
		RetryAfter float64 `json:"retry_after"`
	}
	d := time.Second
	if json.Unmarshal(body, &e) == nil && e.RetryAfter > 0 {
		d = time.Duration(e.RetryAfter * float64(time.Second))
	} else if s, err := strconv.ParseFloat(h.Get("Retry-After"), 64); err == nil && s > 0 {
		d = time.Duration(s * float64(time.Second))
	}
	return min(d, 10*time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// snowflake reports whether s is a Discord ID: 1 to 20 decimal digits.
func snowflake(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Package telegram is the approval channel that posts cards with inline
// buttons to one Telegram chat through the Bot API and takes the clicks as
// callback queries, by long polling (getUpdates, no public URL) or by a
// webhook whose secret token clawd generates.
//
// The Bot API is a handful of JSON POSTs, written here with net/http: the
// libraries that let the API base point at another server are not served
// to this project, and the one that is (go-telegram-bot-api) is stale.
package telegram

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "telegram"

// Modes of receiving clicks.
const (
	ModePoll    = "poll"
	ModeWebhook = "webhook"
)

// DefaultAPIBase is the Bot API server.
const DefaultAPIBase = "https://api.telegram.org"

// Settings are the channel's clawd.yaml keys.
type Settings struct {
	BotToken    string `mapstructure:"bot-token"` // credential
	ChatID      string `mapstructure:"chat-id"`
	APIBase     string `mapstructure:"api-base"`
	Mode        string `mapstructure:"mode"`
	PollTimeout int    `mapstructure:"poll-timeout"` // seconds
}

// Channel is one Telegram chat with a bot.
type Channel struct {
	name        string
	token       string
	botID       string // the token's part before ':', not secret
	chatID      int64
	apiBase     string
	mode        string
	pollTimeout int
	hookURL     string
	secret      string // webhook secret_token
	stateDir    string
	http        *http.Client
	now         func() time.Time
	log         *zap.Logger

	// sleep waits between retries; tests make it instant.
	sleep func(ctx context.Context, d time.Duration) error

	mu   sync.Mutex
	seen seenSet
}

var (
	tokenRE  = regexp.MustCompile(`^[0-9]+:[A-Za-z0-9_-]+$`)
	secretRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)
)

// Build is New for the channel registry.
func Build(name string, settings map[string]any, env approval.Env) (approval.Channel, error) {
	return New(name, settings, env)
}

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	var s Settings
	if err := approval.DecodeSettings(settings, &s); err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	if s.BotToken == "" {
		return nil, errors.New("bot-token is required (the token @BotFather gave, e.g. secret:telegram-bot)")
	}
	token, err := env.Credential(s.BotToken)
	if err != nil {
		return nil, fmt.Errorf("bot-token: %w", err)
	}
	token = strings.TrimSpace(token)
	if !tokenRE.MatchString(token) {
		return nil, errors.New("bot-token does not look like a Telegram bot token (digits, ':', then letters, digits, '_' or '-')")
	}
	chatID, err := strconv.ParseInt(strings.TrimSpace(s.ChatID), 10, 64)
	if err != nil || chatID == 0 {
		return nil, errors.New(`chat-id must be the numeric ID of the chat to post in (a group is negative, e.g. "-1001234567890")`)
	}
	base := s.APIBase
	if base == "" {
		base = DefaultAPIBase
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("api-base must be an absolute http(s) URL without query (default " + DefaultAPIBase + ")")
	}
	if s.PollTimeout == 0 {
		s.PollTimeout = 30
	}
	if s.PollTimeout < 1 || s.PollTimeout > 50 {
		return nil, errors.New("poll-timeout must be between 1 and 50 seconds")
	}
	c := &Channel{
		name: name, token: token, botID: token[:strings.IndexByte(token, ':')], chatID: chatID,
		apiBase: strings.TrimRight(base, "/"), pollTimeout: s.PollTimeout, stateDir: env.StateDir,
		http: env.Client(), now: env.Clock(), log: env.Logger().With(zap.String("channel", name)),
		sleep: sleepCtx,
	}
	switch s.Mode {
	case "":
		c.mode = defaultMode(env.PublicURL)
	case ModePoll, ModeWebhook:
		c.mode = s.Mode
	default:
		return nil, fmt.Errorf("mode %q: use %q or %q", s.Mode, ModePoll, ModeWebhook)
	}
	if c.mode == ModeWebhook {
		if env.PublicURL == "" {
			return nil, errors.New("mode webhook needs clawd's public URL (public.url); use mode poll without one")
		}
		c.hookURL = strings.TrimRight(env.PublicURL, "/") + approval.CallbackPath(name)
		if c.secret, err = c.loadSecret(); err != nil {
			return nil, err
		}
	}
	c.seen.load(c.readState(), c.botID, c.now())
	return c, nil
}

// defaultMode: a webhook when the public URL is one Telegram can deliver
// to (https on port 443, 80, 88 or 8443), long polling otherwise.
func defaultMode(public string) string {
	u, err := url.Parse(public)
	if public == "" || err != nil || u.Scheme != "https" {
		return ModePoll
	}
	switch u.Port() {
	case "", "443", "80", "88", "8443":
		return ModeWebhook
	}
	return ModePoll
}

// Name is the channel's name.
func (c *Channel) Name() string { return c.name }

// Mode is how clicks are received: ModePoll or ModeWebhook.
func (c *Channel) Mode() string { return c.mode }

func (c *Channel) chat() string { return strconv.FormatInt(c.chatID, 10) }

// Post sends the card; the ref is "chat_id|message_id".
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	if card == nil || card.Approval == nil {
		return "", errors.New("telegram: empty card")
	}
	var m message
	err := c.call(ctx, c.http, "sendMessage", textRequest{
		ChatID: c.chat(), Text: render(card), ParseMode: "HTML",
		LinkPreview: linkPreview{IsDisabled: true}, ReplyMarkup: markup(card),
	}, &m)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(m.Chat.ID, 10) + "|" + strconv.FormatInt(m.MessageID, 10), nil
}

// Update edits the card in place: the outcome and no buttons once decided,
// the votes and the buttons while still pending.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	if card == nil || card.Approval == nil {
		return errors.New("telegram: empty card")
	}
	chatS, msgS, ok := strings.Cut(ref, "|")
	chatID, err1 := strconv.ParseInt(chatS, 10, 64)
	msgID, err2 := strconv.ParseInt(msgS, 10, 64)
	if !ok || err1 != nil || err2 != nil || msgID <= 0 {
		return fmt.Errorf("telegram: ref %q is not chat_id|message_id", clip(ref, 60))
	}
	err := c.call(ctx, c.http, "editMessageText", textRequest{
		ChatID: strconv.FormatInt(chatID, 10), MessageID: msgID, Text: render(card), ParseMode: "HTML",
		LinkPreview: linkPreview{IsDisabled: true}, ReplyMarkup: markup(card),
	}, nil)
	if notModified(err) {
		return nil
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff is the wait before retry n (from 1): 1s doubling to 1m.
func backoff(n int) time.Duration { return min(time.Second<<min(n-1, 6), time.Minute) }

// loadSecret returns the webhook secret_token kept in the state directory,
// making one on first use.
func (c *Channel) loadSecret() (string, error) {
	path := ""
	if c.stateDir != "" {
		path = filepath.Join(c.stateDir, "webhook-secret")
		if b, err := os.ReadFile(path); err == nil {
			if s := strings.TrimSpace(string(b)); secretRE.MatchString(s) && len(s) >= 32 {
				return s, nil
			}
			c.log.Warn("telegram: the kept webhook secret is malformed; making a new one")
		}
	}
	var rnd [32]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	s := hex.EncodeToString(rnd[:])
	if path != "" {
		if err := writeFile(path, []byte(s+"\n")); err != nil {
			return "", fmt.Errorf("keeping the webhook secret: %w", err)
		}
	}
	return s, nil
}

func writeFile(path string, b []byte) error { return atomicfile.WriteFile(path, b, 0o600) }

// Exclusive: in poll mode only one getUpdates consumer of a bot token may
// run at a time (Telegram answers a second one 409 Conflict).
func (c *Channel) Exclusive() bool { return c.mode == ModePoll }

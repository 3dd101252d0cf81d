// Package slack is the Slack approval channel: Block Kit cards posted and
// edited through the Web API (or an incoming webhook), and button clicks
// received over Socket Mode or signed HTTP interactivity, all with
// github.com/slack-go/slack.
package slack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "slack"

// LegacyPath is where Slack interactivity was served before channels had
// their own path; the daemon mounts Callbacks here too so existing Slack
// apps keep working.
const LegacyPath = "/v1/slack/interactions"

// DefaultAPIBase is Slack's Web API.
const DefaultAPIBase = "https://slack.com/api/"

// Config is the clawd.yaml settings of a Slack channel. Set bot-token and
// channel (cards are posted with chat.postMessage and edited with
// chat.update) or webhook-url (an incoming webhook: cards are posted, and
// edited only through the response_url of a click). Clicks arrive over
// Socket Mode when app-token is set and over HTTP interactivity when
// signing-secret is set. Tokens, the secret and the webhook URL are
// credentials ("secret:NAME", "file:PATH", "env:VAR" or the value).
type Config struct {
	BotToken      string `mapstructure:"bot-token"`
	AppToken      string `mapstructure:"app-token"`
	SigningSecret string `mapstructure:"signing-secret"`
	Channel       string `mapstructure:"channel"`
	WebhookURL    string `mapstructure:"webhook-url"`
	APIBase       string `mapstructure:"api-base"`
}

// Channel is one Slack approval channel.
type Channel struct {
	name      string
	api       *slack.Client
	bot       bool
	channel   string
	webhook   string
	appToken  string
	secret    string
	apiOrigin string // scheme://host of api-base: where response_url may also point
	env       approval.Env
	log       *zap.Logger
	now       func() time.Time

	mu        sync.Mutex
	sigs      map[string]time.Time // seen HTTP signatures → their timestamp
	envelopes map[string]time.Time // seen Socket Mode envelope IDs
	responses map[string]response  // approval ID → a response_url to edit a webhook card
}

// response is a response_url from a verified click: Slack accepts up to
// five uses within 30 minutes.
type response struct {
	url  string
	at   time.Time
	uses int
}

const (
	responseTTL  = 30 * time.Minute
	responseUses = 5
	// window is how far an HTTP callback's timestamp may be off (Slack's
	// documented 5 minutes, checked by slack.NewSecretsVerifier); seen
	// signatures are remembered for twice that.
	window = 5 * time.Minute
)

var channelRE = regexp.MustCompile(`^#?[A-Za-z0-9._-]{1,80}$`)

// New builds a Slack channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	if name == "" {
		name = Type
	}
	var cfg Config
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, fmt.Errorf("slack channel %s: %w", name, err)
	}
	c := &Channel{
		name: name, env: env, log: env.Logger().With(zap.String("channel", name)), now: env.Clock(),
		sigs: map[string]time.Time{}, envelopes: map[string]time.Time{}, responses: map[string]response{},
	}
	cred := func(key, ref, prefix string) (string, error) {
		if ref == "" {
			return "", nil
		}
		v, err := env.Credential(ref)
		if err != nil {
			return "", fmt.Errorf("slack channel %s: %s: %w", name, key, err)
		}
		if v == "" {
			return "", fmt.Errorf("slack channel %s: %s is empty", name, key)
		}
		if prefix != "" && !strings.HasPrefix(v, prefix) {
			return "", fmt.Errorf("slack channel %s: %s is not a %s… token", name, key, prefix)
		}
		return v, nil
	}
	var err error
	bot, err := cred("bot-token", cfg.BotToken, "xoxb-")
	if err != nil {
		return nil, err
	}
	if c.appToken, err = cred("app-token", cfg.AppToken, "xapp-"); err != nil {
		return nil, err
	}
	if c.secret, err = cred("signing-secret", cfg.SigningSecret, ""); err != nil {
		return nil, err
	}
	if c.webhook, err = cred("webhook-url", cfg.WebhookURL, ""); err != nil {
		return nil, err
	}
	switch {
	case bot == "" && c.webhook == "":
		return nil, fmt.Errorf("slack channel %s: set bot-token and channel, or webhook-url", name)
	case bot != "" && c.webhook != "":
		return nil, fmt.Errorf("slack channel %s: set either bot-token or webhook-url, not both", name)
	case bot != "" && !channelRE.MatchString(cfg.Channel):
		return nil, fmt.Errorf("slack channel %s: bot-token needs channel, a channel ID like C0123456789", name)
	case bot == "" && cfg.Channel != "":
		return nil, fmt.Errorf("slack channel %s: channel is for bot-token; an incoming webhook posts to its own channel", name)
	}
	if c.webhook != "" {
		u, err := url.Parse(c.webhook)
		if err != nil || !approval.SecureScheme(u, "https", "http") {
			// The URL is a credential: do not echo it.
			return nil, fmt.Errorf("slack channel %s: webhook-url must be an https URL", name)
		}
	}
	base := cfg.APIBase
	if base == "" {
		base = DefaultAPIBase
	}
	bu, err := url.Parse(base)
	if err != nil || !approval.SecureScheme(bu, "https", "http") || bu.RawQuery != "" || bu.Fragment != "" {
		return nil, fmt.Errorf("slack channel %s: api-base %q must be an https URL", name, base)
	}
	if !strings.HasSuffix(base, "/") {
		base += "/" // slack-go appends the method name
	}
	c.apiOrigin = bu.Scheme + "://" + bu.Host
	c.bot, c.channel = bot != "", cfg.Channel
	c.api = slack.New(bot,
		slack.OptionAPIURL(base),
		slack.OptionHTTPClient(env.Client()),
		slack.OptionAppLevelToken(c.appToken),
		slack.OptionLog(c.stdLog()),
	)
	if c.secret != "" && env.PublicURL == "" {
		c.log.Warn("signing-secret is set but clawd has no public URL: Slack cannot reach the interactivity endpoint")
	}
	if c.appToken == "" && c.secret == "" {
		c.log.Warn("neither app-token nor signing-secret is set: Slack buttons cannot be answered, decide from the web page or the CLI")
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

// Name is the channel's name in clawd.yaml.
func (c *Channel) Name() string { return c.name }

// Post posts the card, to the route's target channel when it names one
// (bot token only) or the configured channel; with a bot token the ref is
// "channel|ts" for Update, with an incoming webhook it is "".
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	text, blocks := Message(card)
	if !c.bot {
		err := slack.PostWebhookCustomHTTPContext(ctx, c.webhook, c.env.Client(), &slack.WebhookMessage{
			Text: text, Blocks: &slack.Blocks{BlockSet: blocks},
		})
		if err != nil {
			return "", fmt.Errorf("slack incoming webhook: %w", scrub(err))
		}
		return "", nil
	}
	channel := c.channel
	if card.Target != "" {
		// The route names another Slack channel (a channel ID or #name).
		if !channelRE.MatchString(card.Target) {
			return "", fmt.Errorf("slack: route target %q is not a Slack channel", card.Target)
		}
		channel = card.Target
	}
	ch, ts, err := c.api.PostMessageContext(ctx, channel,
		slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
	if err != nil {
		return "", fmt.Errorf("slack chat.postMessage: %w", scrub(err))
	}
	if ch == "" || ts == "" {
		return "", errors.New("slack chat.postMessage: no channel or ts in the answer")
	}
	return ch + "|" + ts, nil
}

// Update edits the card in place: with chat.update when it was posted with
// the bot token, through the response_url of a click on it otherwise (an
// incoming-webhook card nobody clicked cannot be edited).
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	text, blocks := Message(card)
	if c.bot {
		ch, ts, ok := strings.Cut(ref, "|")
		if !ok || !channelRE.MatchString(ch) || ts == "" {
			return fmt.Errorf("slack chat.update: bad message ref %q", ref)
		}
		if _, _, _, err := c.api.UpdateMessageContext(ctx, ch, ts,
			slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
			return fmt.Errorf("slack chat.update: %w", scrub(err))
		}
		return nil
	}
	u, ok := c.takeResponse(card.ID)
	if !ok {
		return nil
	}
	if _, _, _, err := c.api.SendMessageContext(ctx, "", slack.MsgOptionReplaceOriginal(u),
		slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
		return fmt.Errorf("slack response_url: %w", scrub(err))
	}
	return nil
}

// scrub drops the URL from a transport error: webhook and response URLs
// are credentials.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// allowedResponseURL: response_url comes inside the payload, so even from a
// verified callback clawd only follows Slack's own hooks host (or, for a
// local fake, the host of api-base).
func (c *Channel) allowedResponseURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.User != nil || u.Fragment != "" {
		return false
	}
	if u.Scheme == "https" && u.Host == "hooks.slack.com" {
		return true
	}
	return c.apiOrigin != "https://slack.com" && u.Scheme+"://"+u.Host == c.apiOrigin
}

// rememberResponse keeps a verified click's response_url so Update can
// edit an incoming-webhook card.
func (c *Channel) rememberResponse(id, u string) {
	if c.bot || !c.allowedResponseURL(u) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for k, r := range c.responses {
		if now.Sub(r.at) > responseTTL {
			delete(c.responses, k)
		}
	}
	c.responses[id] = response{url: u, at: now}
}

func (c *Channel) takeResponse(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.responses[id]
	if !ok || c.now().Sub(r.at) > responseTTL || r.uses >= responseUses-1 {
		// Keep one use for the clicker's own ephemeral answer.
		return "", false
	}
	r.uses++
	c.responses[id] = r
	return r.url, true
}

// stdLog routes slack-go's own log lines (debug output is off) to zap at
// debug level.
func (c *Channel) stdLog() *log.Logger {
	l, err := zap.NewStdLogAt(c.log, zap.DebugLevel)
	if err != nil {
		return log.New(io.Discard, "", 0)
	}
	return l
}

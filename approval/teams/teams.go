// Package teams is the Microsoft Teams approval channel: a Bot Framework bot
// that posts an Adaptive Card with Action.Execute buttons (Action.Submit as
// fallback) to one configured conversation, edits it in place as the
// approval changes, and takes clicks at its messaging endpoint only when
// the Bot Framework JWT on them verifies.
package teams

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

	"github.com/clawd-dev/clawd/approval"
	"go.uber.org/zap"
)

// Type is the channel type in clawd.yaml.
const Type = "teams"

// Defaults are the real Bot Framework endpoints.
const (
	DefaultOpenIDMetadata = "https://login.botframework.com/v1/.well-known/openidconfiguration"
	DefaultTokenURL       = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
	// Scope is what the bot's token is for (the Bot Connector).
	Scope = "https://api.botframework.com/.default"
	// Issuer is the issuer of the tokens the Bot Connector sends.
	Issuer = "https://api.botframework.com"
	// ChannelID is the Bot Framework channel id of Teams.
	ChannelID = "msteams"
)

// Config is the channel's clawd.yaml settings.
type Config struct {
	AppID          string `mapstructure:"app-id"`
	AppPassword    string `mapstructure:"app-password"` // credential: secret:NAME, file:PATH, env:VAR or literal
	ServiceURL     string `mapstructure:"service-url"`
	ConversationID string `mapstructure:"conversation-id"`
	OpenIDMetadata string `mapstructure:"openid-metadata"`
	TokenURL       string `mapstructure:"token-url"`
}

// Channel is one Teams conversation a bot posts approval cards to.
type Channel struct {
	name     string
	cfg      Config
	password string
	service  *url.URL // service-url with a trailing slash
	http     *http.Client
	now      func() time.Time
	log      *zap.Logger
	public   string

	tokMu  sync.Mutex
	tok    string
	tokExp time.Time

	auth   *verifier
	replay *seen
}

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	cfg := Config{OpenIDMetadata: DefaultOpenIDMetadata, TokenURL: DefaultTokenURL}
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, err
	}
	if !validAppID(cfg.AppID) {
		return nil, errors.New("app-id is required: the bot's Microsoft App ID (a GUID)")
	}
	if cfg.AppPassword == "" {
		return nil, errors.New("app-password is required (e.g. secret:teams-app-password)")
	}
	pw, err := env.Credential(cfg.AppPassword)
	if err != nil {
		return nil, fmt.Errorf("app-password: %w", err)
	}
	if pw == "" {
		return nil, errors.New("app-password: the credential is empty")
	}
	su, err := baseURL("service-url", cfg.ServiceURL)
	if err != nil {
		return nil, err
	}
	if !validConversation(cfg.ConversationID) {
		return nil, errors.New("conversation-id is required: the Teams channel or chat conversation ID (19:…@thread.tacv2)")
	}
	if _, err := baseURL("openid-metadata", cfg.OpenIDMetadata); err != nil {
		return nil, err
	}
	if _, err := baseURL("token-url", cfg.TokenURL); err != nil {
		return nil, err
	}
	c := &Channel{
		name: name, cfg: cfg, password: pw, service: su,
		http: env.Client(), now: env.Clock(), log: env.Logger().With(zap.String("channel", name)),
		public: env.PublicURL, replay: newSeen(),
	}
	c.auth = newVerifier(cfg.OpenIDMetadata, cfg.AppID, c.http, c.now, c.log)
	if env.PublicURL == "" {
		c.log.Warn("teams: clawd has no public URL: Teams buttons cannot reach clawd; decide from the web page or the CLI")
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

// Post sends the card to the conversation; the ref is
// "conversationId|activityId".
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	act := activity(cardContent(card, ""))
	var out struct {
		ID string `json:"id"`
	}
	if err := c.call(ctx, http.MethodPost, c.activitiesURL(c.cfg.ConversationID, ""), act, &out); err != nil {
		return "", err
	}
	if out.ID == "" || len(out.ID) > 256 {
		return "", errors.New("teams: the connector returned no activity id")
	}
	return c.cfg.ConversationID + "|" + out.ID, nil
}

// Update replaces the card in place with its current state (no buttons
// once decided).
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	conv, id, ok := strings.Cut(ref, "|")
	if !ok || conv != c.cfg.ConversationID || id == "" {
		return fmt.Errorf("teams: ref %q is not a message of this channel's conversation", ref)
	}
	act := activity(cardContent(card, ""))
	act["id"] = id
	return c.call(ctx, http.MethodPut, c.activitiesURL(conv, id), act, nil)
}

// activitiesURL is {serviceUrl}/v3/conversations/{conv}/activities[/{id}].
func (c *Channel) activitiesURL(conv, id string) string {
	u := c.service.String() + "v3/conversations/" + url.PathEscape(conv) + "/activities"
	if id != "" {
		u += "/" + url.PathEscape(id)
	}
	return u
}

// call sends one request to the Bot Connector with the bot's token,
// fetching a fresh token once if the connector refuses the cached one.
func (c *Channel) call(ctx context.Context, method, u string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		tok, err := c.token(ctx)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := c.http.Do(req)
		if err != nil {
			return fmt.Errorf("teams: %s activity: %w", strings.ToLower(method), scrubErr(err))
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			c.dropToken(tok)
			continue
		}
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("teams: %s activity: HTTP %d: %s", strings.ToLower(method), resp.StatusCode, apiError(data))
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("teams: connector answer: %w", err)
			}
		}
		return nil
	}
}

// apiError is the connector's error message (code and message only).
func apiError(data []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error.Code != "" {
		return clip(e.Error.Code+": "+e.Error.Message, 300)
	}
	return "(no error detail)"
}

// scrubErr drops the URL from a client error (it holds no secret here,
// but keeps messages short and uniform).
func scrubErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// token returns the bot's access token, cached until 5 minutes before it
// expires.
func (c *Channel) token(ctx context.Context) (string, error) {
	c.tokMu.Lock()
	defer c.tokMu.Unlock()
	if c.tok != "" && c.now().Before(c.tokExp) {
		return c.tok, nil
	}
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {c.cfg.AppID},
		"client_secret": {c.password},
		"scope":         {Scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("teams: token: %w", scrubErr(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var t struct {
		TokenType   string          `json:"token_type"`
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.Number     `json:"expires_in"`
		Error       string          `json:"error"`
		Desc        json.RawMessage `json:"error_description"`
	}
	_ = json.Unmarshal(data, &t)
	if resp.StatusCode != http.StatusOK {
		msg := t.Error
		if msg == "" {
			msg = "no error code"
		}
		// error_description is not echoed: it can quote the request.
		return "", fmt.Errorf("teams: token: HTTP %d (%s); check app-id and app-password", resp.StatusCode, clip(msg, 80))
	}
	secs, err := t.ExpiresIn.Int64()
	if t.AccessToken == "" || !strings.EqualFold(t.TokenType, "bearer") || err != nil || secs <= 0 {
		return "", errors.New("teams: token: the token endpoint answered without a bearer token")
	}
	life := time.Duration(secs) * time.Second
	margin := 5 * time.Minute
	if life < 2*margin {
		margin = life / 2
	}
	c.tok, c.tokExp = t.AccessToken, c.now().Add(life-margin)
	return c.tok, nil
}

// dropToken forgets tok if it is still the cached one.
func (c *Channel) dropToken(tok string) {
	c.tokMu.Lock()
	if c.tok == tok {
		c.tok = ""
	}
	c.tokMu.Unlock()
}

// baseURL checks an http(s) URL setting and returns it with a trailing
// slash.
func baseURL(key, v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if err != nil || !approval.SecureScheme(u, "https", "http") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s must be an https URL (http only to a loopback address) without credentials, query or fragment", key)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath = ""
	return u, nil
}

func validAppID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func validConversation(s string) bool {
	if s == "" || len(s) > 512 || strings.ContainsAny(s, "|/?#") {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// Close stops the background refresh of the Bot Framework signing keys.
func (c *Channel) Close() { c.auth.close() }

var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
)

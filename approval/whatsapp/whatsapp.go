// Package whatsapp asks approvers one by one in WhatsApp through the Cloud
// API: each asked phone number gets the card as an interactive reply-button
// message while its 24-hour customer-service window is open, or as the
// operator's pre-approved template with quick-reply buttons otherwise. The
// presses come back as Meta webhooks signed with the app secret; the sender's
// wa_id is the identity. Messages cannot be edited, so changes are sent as
// short replies to the card.
package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "whatsapp"

// Defaults of the Graph API.
const (
	DefaultAPIBase          = "https://graph.facebook.com"
	DefaultAPIVersion       = "v21.0"
	DefaultTemplateLanguage = "en_US"
)

const (
	// serviceWindow is WhatsApp's customer-service window: free-form
	// (interactive, text) messages only within 24 h of the user's last
	// message. clawd keeps a margin so a message is not sent at the edge.
	serviceWindow = 24 * time.Hour
	windowMargin  = 5 * time.Minute
	// errReengagement is the Cloud API error for a free-form message outside
	// the window.
	errReengagement = 131047
)

var (
	// waIDRe is a wa_id: an E.164 number's digits, no "+".
	waIDRe = regexp.MustCompile(`^[1-9][0-9]{6,14}$`)
	// messageIDRe is a WhatsApp message ID ("wamid." + base64).
	messageIDRe  = regexp.MustCompile(`^[A-Za-z0-9._=+/-]{1,512}$`)
	phoneIDRe    = regexp.MustCompile(`^[0-9]{1,32}$`)
	versionRe    = regexp.MustCompile(`^v[0-9]{1,3}\.[0-9]{1,3}$`)
	templateRe   = regexp.MustCompile(`^[a-z0-9_]{1,512}$`)
	languageRe   = regexp.MustCompile(`^[a-z]{2,3}(_[A-Za-z0-9]{2,8})?$`)
	errNoWindow  = errors.New("outside the 24-hour window and no template-name is set")
	errNotSigned = errors.New("missing or bad X-Hub-Signature-256")
)

// Config is the clawd.yaml settings of a WhatsApp channel. access-token,
// app-secret and verify-token are credentials ("secret:NAME", "file:PATH",
// "env:VAR" or the value).
type Config struct {
	AccessToken      string `mapstructure:"access-token"`
	AppSecret        string `mapstructure:"app-secret"`
	VerifyToken      string `mapstructure:"verify-token"`
	PhoneNumberID    string `mapstructure:"phone-number-id"`
	APIBase          string `mapstructure:"api-base"`
	APIVersion       string `mapstructure:"api-version"`
	TemplateName     string `mapstructure:"template-name"`
	TemplateLanguage string `mapstructure:"template-language"`
}

// Channel is one WhatsApp approval channel.
type Channel struct {
	name        string
	token       string
	secret      []byte
	verifyToken string
	phoneID     string
	endpoint    string // {api-base}/{version}/{phone-number-id}/messages
	template    string
	language    string

	http  *http.Client
	now   func() time.Time
	log   *zap.Logger
	state *state

	wg sync.WaitGroup // replies sent after a webhook was answered
}

// New builds a WhatsApp channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	if name == "" {
		name = Type
	}
	var cfg Config
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, fmt.Errorf("whatsapp channel %s: %w", name, err)
	}
	cred := func(key, ref string) (string, error) {
		if ref == "" {
			return "", fmt.Errorf("whatsapp channel %s: %s is required", name, key)
		}
		v, err := env.Credential(ref)
		if err != nil {
			return "", fmt.Errorf("whatsapp channel %s: %s: %w", name, key, err)
		}
		if v == "" || strings.ContainsAny(v, "\r\n\t ") {
			return "", fmt.Errorf("whatsapp channel %s: %s is empty or not a single word", name, key)
		}
		return v, nil
	}
	c := &Channel{name: name, http: env.Client(), now: env.Clock(), log: env.Logger().With(zap.String("channel", name))}
	var err error
	if c.token, err = cred("access-token", cfg.AccessToken); err != nil {
		return nil, err
	}
	secret, err := cred("app-secret", cfg.AppSecret)
	if err != nil {
		return nil, err
	}
	c.secret = []byte(secret)
	if c.verifyToken, err = cred("verify-token", cfg.VerifyToken); err != nil {
		return nil, err
	}
	if !phoneIDRe.MatchString(cfg.PhoneNumberID) {
		return nil, fmt.Errorf("whatsapp channel %s: phone-number-id must be the numeric Phone number ID from WhatsApp Manager / API Setup (not the phone number)", name)
	}
	c.phoneID = cfg.PhoneNumberID
	base := cfg.APIBase
	if base == "" {
		base = DefaultAPIBase
	}
	bu, err := url.Parse(base)
	if err != nil || !approval.SecureScheme(bu, "https", "http") || bu.RawQuery != "" || bu.Fragment != "" || bu.User != nil {
		return nil, fmt.Errorf("whatsapp channel %s: api-base %q must be an https URL", name, base)
	}
	version := cfg.APIVersion
	if version == "" {
		version = DefaultAPIVersion
	}
	if !versionRe.MatchString(version) {
		return nil, fmt.Errorf("whatsapp channel %s: api-version %q must look like v21.0", name, version)
	}
	c.endpoint = strings.TrimRight(base, "/") + "/" + version + "/" + c.phoneID + "/messages"
	if cfg.TemplateName != "" && !templateRe.MatchString(cfg.TemplateName) {
		return nil, fmt.Errorf("whatsapp channel %s: template-name %q: WhatsApp template names are lowercase letters, digits and _", name, cfg.TemplateName)
	}
	c.template = cfg.TemplateName
	c.language = cfg.TemplateLanguage
	if c.language == "" {
		c.language = DefaultTemplateLanguage
	}
	if !languageRe.MatchString(c.language) {
		return nil, fmt.Errorf("whatsapp channel %s: template-language %q is not a language code like en_US", name, c.language)
	}
	if env.StateDir == "" {
		return nil, fmt.Errorf("whatsapp channel %s: needs a state directory (it remembers when each approver last wrote)", name)
	}
	if c.state, err = openState(env.StateDir, name); err != nil {
		return nil, fmt.Errorf("whatsapp channel %s: %w", name, err)
	}
	if env.PublicURL == "" {
		c.log.Warn("clawd has no public URL: WhatsApp cannot deliver button presses; decide from the web page or the CLI")
	}
	if c.template == "" {
		c.log.Warn("no template-name: approvers who have not written to the business number in the last 24 hours cannot be asked")
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

// Personal: each asked person gets a message of their own.
func (c *Channel) Personal() bool { return true }

// Close waits for the replies still being sent.
func (c *Channel) Close() { c.wg.Wait() }

// Post sends the card to every asked approver (card.People: the route's
// people or the channel's approvers): an interactive message inside their
// 24-hour window, the template outside it. The ref lists "wa_id:message-id"
// per approver reached. It fails only when nobody could be reached.
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	var refs []string
	var errs []error
	for _, to := range recipients(card.People) {
		id, err := c.postTo(ctx, card, to)
		if err != nil {
			c.log.Warn("whatsapp: could not ask approver", zap.String("id", card.ID), zap.String("to", to), zap.Error(err))
			errs = append(errs, fmt.Errorf("%s: %w", to, err))
			continue
		}
		refs = append(refs, to+":"+id)
	}
	if len(refs) == 0 {
		if len(errs) == 0 {
			return "", errors.New("whatsapp: no approver to ask: list the approvers' phone numbers (digits only, like 15551234567) as the channel's approvers")
		}
		return "", fmt.Errorf("whatsapp: nobody could be asked: %w", errors.Join(errs...))
	}
	return strings.Join(refs, ","), nil
}

// recipients are the valid, distinct wa_ids among people.
func recipients(people []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range people {
		if waIDRe.MatchString(p) && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func (c *Channel) postTo(ctx context.Context, card *approval.Card, to string) (string, error) {
	if c.state.windowOpen(to, c.now(), serviceWindow-windowMargin) {
		id, err := c.send(ctx, interactiveMessage(card, to))
		var ae *apiError
		if err == nil || !errors.As(err, &ae) || ae.Code != errReengagement {
			return id, err
		}
		c.log.Info("whatsapp: window closed after all; sending the template", zap.String("to", to))
	}
	if c.template == "" {
		return "", errNoWindow
	}
	return c.send(ctx, templateMessage(card, to, c.template, c.language))
}

// Update cannot edit WhatsApp messages: it sends each approver whose window
// is open a short text in reply to their card saying what changed (votes
// while pending, then the outcome).
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	text := followUp(card)
	if text == "" || ref == "" {
		return nil
	}
	var errs []error
	for _, part := range strings.Split(ref, ",") {
		to, id, ok := strings.Cut(part, ":")
		if !ok || !waIDRe.MatchString(to) || !messageIDRe.MatchString(id) {
			return fmt.Errorf("whatsapp: bad message ref %q", cutBytes(ref, 200))
		}
		if !c.state.windowOpen(to, c.now(), serviceWindow-windowMargin) {
			c.log.Debug("whatsapp: no follow-up outside the 24-hour window", zap.String("id", card.ID), zap.String("to", to))
			continue
		}
		if _, err := c.send(ctx, textMessage(to, text, id)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", to, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("whatsapp follow-up: %w", errors.Join(errs...))
	}
	return nil
}

// apiError is the Graph API's error object.
type apiError struct {
	Status  int
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("graph API HTTP %d, error %d: %s", e.Status, e.Code, e.Message)
}

// send POSTs one message to the messages endpoint and returns its ID.
func (c *Channel) send(ctx context.Context, msg any) (string, error) {
	body, err := json.Marshal(msg)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return "", errors.New("whatsapp: bad api-base")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is not secret, but keep errors short
		}
		return "", fmt.Errorf("whatsapp messages: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("whatsapp messages: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error apiError `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		e.Error.Status = resp.StatusCode
		e.Error.Message = oneLine(strings.ReplaceAll(e.Error.Message, c.token, "…"), 200)
		return "", &e.Error
	}
	var ok struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(raw, &ok); err != nil || len(ok.Messages) != 1 || !messageIDRe.MatchString(ok.Messages[0].ID) {
		return "", errors.New("whatsapp messages: no message id in the answer")
	}
	return ok.Messages[0].ID, nil
}

// Interface checks.
var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
)

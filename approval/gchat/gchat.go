// Package gchat is the Google Chat approval channel: a Chat app that posts
// an approval card (cards v2) with buttons into a space through the Chat
// REST API, as its service account, and takes the button clicks as HTTP
// interaction events whose bearer token it verifies as Google documents.
package gchat

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
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
const Type = "gchat"

// Defaults of the settings, the real Google endpoints.
const (
	DefaultAPIBase        = "https://chat.googleapis.com"
	DefaultTokenURL       = "https://oauth2.googleapis.com/token"
	DefaultCertsURL       = "https://www.googleapis.com/service_accounts/v1/metadata/x509/chat@system.gserviceaccount.com"
	DefaultGoogleCertsURL = "https://www.googleapis.com/oauth2/v3/certs"
)

// Audience types, as the Chat app's connection settings name them.
const (
	AudienceProjectNumber = "project-number"
	AudienceEndpointURL   = "endpoint-url"
)

// ChatIssuer is the account Google Chat signs its requests as.
const ChatIssuer = "chat@system.gserviceaccount.com"

// Scope is the OAuth scope of a Chat app acting as itself.
const Scope = "https://www.googleapis.com/auth/chat.bot"

// Function is the action function name clawd's buttons invoke.
const Function = "clawd"

// Config is the channel's clawd.yaml settings.
type Config struct {
	// Credentials is a credential reference whose value is the service
	// account's JSON key (client_email, private_key, token_uri).
	Credentials string `mapstructure:"credentials"`
	// Space is where cards go: "spaces/AAAA…".
	Space          string `mapstructure:"space"`
	APIBase        string `mapstructure:"api-base"`
	TokenURL       string `mapstructure:"token-url"`
	AudienceType   string `mapstructure:"audience-type"`
	Audience       string `mapstructure:"audience"`
	CertsURL       string `mapstructure:"certs-url"`
	GoogleCertsURL string `mapstructure:"google-certs-url"`
}

// Channel is one Google Chat app posting into one space.
type Channel struct {
	name     string
	cfg      Config
	space    string
	apiBase  string
	http     *http.Client
	now      func() time.Time
	log      *zap.Logger
	tokens   *tokenSource
	verifier *verifier
	replays  *replayCache
	cards    sync.Map // approval ID → the message name of its card: clicks count only there
	posting  sync.Map // approval ID → chan closed when its Post returned (a click can beat the answer)
}

var (
	spaceRe   = regexp.MustCompile(`^spaces/[A-Za-z0-9_-]{1,128}$`)
	messageRe = regexp.MustCompile(`^spaces/[A-Za-z0-9_-]{1,128}/messages/[A-Za-z0-9._-]{1,256}$`)
	userRe    = regexp.MustCompile(`^users/[0-9]{1,32}$`)
	projectRe = regexp.MustCompile(`^[0-9]{1,32}$`)
)

// serviceAccount is the part of a JSON key clawd uses.
type serviceAccount struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
	TokenURI     string `json:"token_uri"`
}

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	var cfg Config
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, err
	}
	if !spaceRe.MatchString(cfg.Space) {
		return nil, errors.New(`space: must be a space resource name like "spaces/AAAAxxxx"`)
	}
	if cfg.Credentials == "" {
		return nil, errors.New("credentials: required (a reference to the service account's JSON key, e.g. secret:gchat-key)")
	}
	raw, err := env.Credential(cfg.Credentials)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	sa, key, err := parseKey(raw)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	apiBase, err := baseURL("api-base", cfg.APIBase, DefaultAPIBase)
	if err != nil {
		return nil, err
	}
	tokenURL := cfg.TokenURL
	if tokenURL == "" {
		tokenURL = sa.TokenURI
	}
	if tokenURL, err = baseURL("token-url", tokenURL, DefaultTokenURL); err != nil {
		return nil, err
	}
	certsURL, err := baseURL("certs-url", cfg.CertsURL, DefaultCertsURL)
	if err != nil {
		return nil, err
	}
	googleCertsURL, err := baseURL("google-certs-url", cfg.GoogleCertsURL, DefaultGoogleCertsURL)
	if err != nil {
		return nil, err
	}
	if env.PublicURL == "" {
		return nil, errors.New("Google Chat sends button clicks to an HTTPS endpoint: clawd needs a public URL (server.public-url) for this channel")
	}
	v := &verifier{now: env.Clock()}
	switch cfg.AudienceType {
	case AudienceProjectNumber:
		if !projectRe.MatchString(cfg.Audience) {
			return nil, errors.New("audience: the Google Cloud project number (digits) for audience-type project-number")
		}
		v.keys = newKeySet(certsURL, parseX509Certs, env.Client(), env.Clock())
	case AudienceEndpointURL:
		if cfg.Audience == "" {
			cfg.Audience = strings.TrimRight(env.PublicURL, "/") + approval.CallbackPath(name)
		}
		u, err := url.Parse(cfg.Audience)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("audience: the HTTP endpoint URL configured for the Chat app")
		}
		v.keys = newKeySet(googleCertsURL, parseJWKS, env.Client(), env.Clock())
	default:
		return nil, fmt.Errorf("audience-type: %q: use %q or %q, as the Chat app's connection settings say", cfg.AudienceType, AudienceProjectNumber, AudienceEndpointURL)
	}
	v.audType, v.audience = cfg.AudienceType, cfg.Audience
	return &Channel{
		name: name, cfg: cfg, space: cfg.Space, apiBase: apiBase,
		http: env.Client(), now: env.Clock(), log: env.Logger(),
		tokens:   &tokenSource{email: sa.ClientEmail, keyID: sa.PrivateKeyID, key: key, url: tokenURL, http: env.Client(), now: env.Clock()},
		verifier: v,
		replays:  &replayCache{seen: map[string]time.Time{}},
	}, nil
}

// Build is New as a channels.Builder.
func Build(name string, settings map[string]any, env approval.Env) (approval.Channel, error) {
	return New(name, settings, env)
}

// parseKey reads a service-account JSON key. Errors never quote it.
func parseKey(raw string) (*serviceAccount, *rsa.PrivateKey, error) {
	var sa serviceAccount
	if err := json.Unmarshal([]byte(raw), &sa); err != nil {
		return nil, nil, errors.New("not a service account JSON key")
	}
	if sa.Type != "" && sa.Type != "service_account" {
		return nil, nil, errors.New(`the JSON key is not of type "service_account"`)
	}
	if sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, nil, errors.New("the JSON key has no client_email or private_key")
	}
	key, err := parsePrivateKey(sa.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return &sa, key, nil
}

func baseURL(setting, v, def string) (string, error) {
	if v == "" {
		v = def
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%s: %q is not an http(s) URL", setting, v)
	}
	return strings.TrimRight(v, "/"), nil
}

// Name is the channel's name.
func (c *Channel) Name() string { return c.name }

// Post creates the card message in the space; ref is the message name.
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	done := make(chan struct{})
	c.posting.Store(card.ID, done)
	defer func() { close(done); c.posting.Delete(card.ID) }()
	msg := c.message(card)
	var out struct {
		Name string `json:"name"`
	}
	if err := c.call(ctx, http.MethodPost, c.apiBase+"/v1/"+c.space+"/messages", msg, &out); err != nil {
		return "", fmt.Errorf("post card: %w", err)
	}
	if !messageRe.MatchString(out.Name) || !strings.HasPrefix(out.Name, c.space+"/messages/") {
		return "", errors.New("post card: Chat answered without a message name in the space")
	}
	c.cards.Store(card.ID, out.Name)
	return out.Name, nil
}

// Update replaces the card's text and cards with its current state.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	if !messageRe.MatchString(ref) || !strings.HasPrefix(ref, c.space+"/messages/") {
		return fmt.Errorf("update card: %q is not a message of %s", ref, c.space)
	}
	u := c.apiBase + "/v1/" + ref + "?updateMask=text,cardsV2"
	if err := c.call(ctx, http.MethodPatch, u, c.message(card), nil); err != nil {
		return fmt.Errorf("update card: %w", err)
	}
	return nil
}

// call sends one authenticated JSON request to the Chat API.
func (c *Channel) call(ctx context.Context, method, u string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		tok, err := c.tokens.token(ctx)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := c.http.Do(req)
		if err != nil {
			return fmt.Errorf("chat api: %w", redactURLError(err))
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			// The token was revoked or expired early: get a new one once.
			resp.Body.Close()
			c.tokens.drop(tok)
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("chat api: %s%s", resp.Status, googleError(resp))
		}
		if out == nil {
			return nil
		}
		if err := json.NewDecoder(limitBody(resp)).Decode(out); err != nil {
			return fmt.Errorf("chat api: unreadable answer: %w", err)
		}
		return nil
	}
}

// googleError is the status and message of a Google API error body, short.
func googleError(resp *http.Response) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	if json.NewDecoder(limitBody(resp)).Decode(&e) != nil || (e.Error.Status == "" && e.Error.Message == "") {
		return ""
	}
	return ": " + cut(strings.TrimSpace(e.Error.Status+" "+e.Error.Message), 300)
}

// errURL drops the URL from transport errors (it has no secrets, but keeps
// errors short); the operation is named by the caller.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // key → forget after
}

// maxReplay bounds the memory of seen events.
const maxReplay = 50000

// first records key until forget and reports whether it was new.
func (r *replayCache) first(key string, now, forget time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until, ok := r.seen[key]; ok && now.Before(until) {
		return false
	}
	if len(r.seen) >= maxReplay {
		for k, until := range r.seen {
			if !now.Before(until) {
				delete(r.seen, k)
			}
		}
		if len(r.seen) >= maxReplay {
			return false // flooded: refuse rather than forget what was seen
		}
	}
	r.seen[key] = forget
	return true
}

// cardOf is the message name of the card posted for approval id, waiting
// (bounded) for a Post still in flight: Chat can deliver a click on the
// new message before it answered the post.
func (c *Channel) cardOf(ctx context.Context, id string) (string, bool) {
	if v, ok := c.cards.Load(id); ok {
		return v.(string), true
	}
	if ch, ok := c.posting.Load(id); ok {
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-ch.(chan struct{}):
		case <-t.C:
		case <-ctx.Done():
		}
	}
	v, ok := c.cards.Load(id)
	if !ok {
		return "", false
	}
	return v.(string), true
}

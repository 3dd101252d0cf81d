// Package linear is the Linear approval channel: the card is a comment on
// a Linear issue (the one the route names, or the configured tracking
// issue), edited in place as the approval changes, and an approver decides
// by commenting `/clawd approve ID` or `/clawd deny ID reason` on that
// issue; the comment reaches clawd as a Linear webhook that must carry a
// valid Linear-Signature.
package linear

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
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "linear"

// DefaultAPIBase is Linear's API; GraphQL is at {api-base}/graphql.
const DefaultAPIBase = "https://api.linear.app"

// Auth modes: a personal API key goes in Authorization as is, an OAuth
// access token as "Bearer <token>".
const (
	AuthAPIKey = "api-key"
	AuthOAuth  = "oauth"
)

// Config is the channel's clawd.yaml settings.
type Config struct {
	APIKey        string `mapstructure:"api-key"`        // credential
	WebhookSecret string `mapstructure:"webhook-secret"` // credential
	Issue         string `mapstructure:"issue"`          // tracking issue, "ENG-123"
	APIBase       string `mapstructure:"api-base"`
	Auth          string `mapstructure:"auth"`
}

// Channel posts approval cards as comments on Linear issues.
type Channel struct {
	name     string
	cfg      Config
	authz    string // the Authorization header value
	secret   []byte // webhook signing secret
	endpoint string // {api-base}/graphql
	http     *http.Client
	now      func() time.Time
	log      *zap.Logger

	mu     sync.Mutex
	issues map[string]string // identifier (upper case) -> issue id
	viewer string            // clawd's own Linear user id, once known

	state  *store
	replay *seen
}

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	cfg := Config{APIBase: DefaultAPIBase, Auth: AuthAPIKey}
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, err
	}
	if cfg.APIKey == "" {
		return nil, errors.New("api-key is required (e.g. secret:linear-api-key)")
	}
	key, err := env.Credential(cfg.APIKey)
	if err != nil {
		return nil, fmt.Errorf("api-key: %w", err)
	}
	if cfg.Auth == AuthAPIKey && strings.HasPrefix(strings.ToLower(key), "bearer") {
		return nil, errors.New(`api-key: a personal API key has no "Bearer" prefix; for an OAuth token set auth: oauth (and give the token alone)`)
	}
	if key == "" || !headerSafe(key) {
		return nil, errors.New("api-key: the credential is empty or has spaces or control characters")
	}
	var authz string
	switch cfg.Auth {
	case AuthAPIKey:
		authz = key
	case AuthOAuth:
		authz = "Bearer " + key
	default:
		return nil, fmt.Errorf("auth must be %q (personal API key) or %q (OAuth access token)", AuthAPIKey, AuthOAuth)
	}
	if cfg.WebhookSecret == "" {
		return nil, errors.New("webhook-secret is required: the signing secret of the Linear webhook (e.g. secret:linear-webhook)")
	}
	sec, err := env.Credential(cfg.WebhookSecret)
	if err != nil {
		return nil, fmt.Errorf("webhook-secret: %w", err)
	}
	if sec == "" {
		return nil, errors.New("webhook-secret: the credential is empty")
	}
	if cfg.Issue != "" && !validIssue(cfg.Issue) {
		return nil, errors.New(`issue must be a Linear issue identifier like "ENG-123"`)
	}
	base, err := baseURL(cfg.APIBase)
	if err != nil {
		return nil, err
	}
	c := &Channel{
		name: name, cfg: cfg, authz: authz, secret: []byte(sec), endpoint: base + "graphql",
		http: env.Client(), now: env.Clock(), log: env.Logger().With(zap.String("channel", name)),
		issues: map[string]string{}, replay: newSeen(),
	}
	c.state = openStore(env.StateDir, name, c.now, c.log)
	if env.PublicURL == "" {
		c.log.Warn("linear: clawd has no public URL: Linear cannot deliver the approvers' comments; decide from the web page or the CLI")
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

// Post comments the card on the card's target issue (or the configured
// one); the ref is "issueId|commentId".
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	if card == nil || card.Approval == nil {
		return "", errors.New("linear: no approval to post")
	}
	ident := card.Target
	if ident == "" {
		ident = c.cfg.Issue
	}
	if ident == "" {
		return "", errors.New("linear: the route names no issue and the channel has no issue setting")
	}
	if !validIssue(ident) {
		return "", fmt.Errorf("linear: target %q is not a Linear issue identifier like ENG-123", clip(ident, 40))
	}
	issue, err := c.issueID(ctx, ident)
	if err != nil {
		return "", err
	}
	// Remember the digest and the issue before the comment exists: a
	// command can arrive before Linear has answered commentCreate.
	c.state.posted(card.Approval, issue, "")
	id, err := c.createComment(ctx, issue, "", render(card))
	if err != nil {
		return "", err
	}
	c.state.posted(card.Approval, issue, id)
	return issue + "|" + id, nil
}

// Update edits the card's comment to show the approval as it is now.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	if card == nil || card.Approval == nil {
		return errors.New("linear: no approval to update")
	}
	issue, id, ok := strings.Cut(ref, "|")
	if !ok || !validID(issue) || !validID(id) {
		return fmt.Errorf("linear: ref %q is not issueId|commentId", clip(ref, 80))
	}
	var out struct {
		CommentUpdate struct {
			Success bool `json:"success"`
		} `json:"commentUpdate"`
	}
	err := c.graphql(ctx, qCommentUpdate, map[string]any{"id": id, "input": map[string]any{"body": render(card)}}, &out)
	if err != nil {
		return err
	}
	if !out.CommentUpdate.Success {
		return errors.New("linear: commentUpdate did not succeed")
	}
	c.state.posted(card.Approval, issue, id)
	return nil
}

// The GraphQL operations clawd uses (and the fake understands).
const (
	qIssue         = `query ClawdIssue($id: String!) { issue(id: $id) { id identifier } }`
	qViewer        = `query ClawdViewer { viewer { id } }`
	qCommentCreate = `mutation ClawdCommentCreate($input: CommentCreateInput!) { commentCreate(input: $input) { success comment { id } } }`
	qCommentUpdate = `mutation ClawdCommentUpdate($id: String!, $input: CommentUpdateInput!) { commentUpdate(id: $id, input: $input) { success comment { id } } }`
)

// issueID resolves an issue identifier to the issue's id (cached).
func (c *Channel) issueID(ctx context.Context, ident string) (string, error) {
	key := strings.ToUpper(ident)
	c.mu.Lock()
	id, ok := c.issues[key]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	var out struct {
		Issue *struct {
			ID         string `json:"id"`
			Identifier string `json:"identifier"`
		} `json:"issue"`
	}
	if err := c.graphql(ctx, qIssue, map[string]any{"id": ident}, &out); err != nil {
		return "", err
	}
	if out.Issue == nil || !validID(out.Issue.ID) {
		return "", fmt.Errorf("linear: issue %s not found (or the api-key cannot see it)", ident)
	}
	c.mu.Lock()
	c.issues[key] = out.Issue.ID
	c.mu.Unlock()
	return out.Issue.ID, nil
}

// createComment posts body on the issue (as a reply to parent when set)
// and returns the comment's id.
func (c *Channel) createComment(ctx context.Context, issue, parent, body string) (string, error) {
	input := map[string]any{"issueId": issue, "body": body}
	if parent != "" {
		input["parentId"] = parent
	}
	var out struct {
		CommentCreate struct {
			Success bool `json:"success"`
			Comment *struct {
				ID string `json:"id"`
			} `json:"comment"`
		} `json:"commentCreate"`
	}
	if err := c.graphql(ctx, qCommentCreate, map[string]any{"input": input}, &out); err != nil {
		return "", err
	}
	if !out.CommentCreate.Success || out.CommentCreate.Comment == nil || !validID(out.CommentCreate.Comment.ID) {
		return "", errors.New("linear: commentCreate returned no comment")
	}
	return out.CommentCreate.Comment.ID, nil
}

// viewerID is clawd's own Linear user, fetched once.
func (c *Channel) viewerID(ctx context.Context) (string, error) {
	c.mu.Lock()
	v := c.viewer
	c.mu.Unlock()
	if v != "" {
		return v, nil
	}
	var out struct {
		Viewer struct {
			ID string `json:"id"`
		} `json:"viewer"`
	}
	if err := c.graphql(ctx, qViewer, nil, &out); err != nil {
		return "", err
	}
	if !validID(out.Viewer.ID) {
		return "", errors.New("linear: viewer has no id")
	}
	c.mu.Lock()
	c.viewer = out.Viewer.ID
	c.mu.Unlock()
	return out.Viewer.ID, nil
}

// graphql runs one operation and decodes its data into out.
func (c *Channel) graphql(ctx context.Context, query string, vars map[string]any, out any) error {
	payload := map[string]any{"query": query}
	if vars != nil {
		payload["variables"] = vars
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", c.authz)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("linear: %s: %w", opName(query), err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message    string `json:"message"`
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	_ = json.Unmarshal(data, &r)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("linear: %s: HTTP %d: check api-key and auth", opName(query), resp.StatusCode)
	}
	if len(r.Errors) > 0 {
		e := r.Errors[0]
		msg := e.Message
		if e.Extensions.Code != "" {
			msg = e.Extensions.Code + ": " + msg
		}
		return fmt.Errorf("linear: %s: %s", opName(query), clip(oneLine(msg), 200))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("linear: %s: HTTP %d", opName(query), resp.StatusCode)
	}
	if len(r.Data) == 0 || string(r.Data) == "null" {
		return fmt.Errorf("linear: %s: no data in the answer", opName(query))
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("linear: %s: unexpected answer: %w", opName(query), err)
	}
	return nil
}

// opName is the operation's name, for errors.
func opName(q string) string {
	f := strings.Fields(q)
	if len(f) > 1 {
		return strings.SplitN(f[1], "(", 2)[0]
	}
	return "graphql"
}

var (
	issueRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,9}-[1-9][0-9]{0,8}$`)
	idRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$`)
)

// validIssue: an issue identifier like ENG-123.
func validIssue(s string) bool { return issueRE.MatchString(s) }

// validID: a Linear object id (a UUID in practice).
func validID(s string) bool { return idRE.MatchString(s) }

func headerSafe(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return len(s) < 4096
}

// baseURL checks api-base: https (http only to loopback, for a local fake
// or relay), no credentials, query or fragment; returned with a trailing
// slash.
func baseURL(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !okScheme(u) {
		return "", errors.New("api-base must be an https URL (http only to a loopback address) without credentials, query or fragment")
	}
	s := u.Scheme + "://" + u.Host + u.EscapedPath()
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	return s, nil
}

func okScheme(u *url.URL) bool {
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

var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
)

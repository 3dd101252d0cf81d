// Package github is the GitHub approval channel for agents that work on a
// repository: the card is a comment on an issue or pull request, an
// allow-listed login decides by commenting "/clawd approve ID" (or
// "… for 15m", or "/clawd deny ID reason"), the issue_comment webhook is
// verified by its X-Hub-Signature-256, and clawd edits its comment with the
// outcome. It speaks the REST API with net/http: four endpoints and an
// HMAC do not need a client library.
package github

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "github"

// DefaultAPIBase is GitHub's REST API (GitHub Enterprise Server:
// https://HOST/api/v3).
const DefaultAPIBase = "https://api.github.com"

// APIVersion is the REST API version clawd speaks.
const APIVersion = "2022-11-28"

// Config is the clawd.yaml settings of a GitHub channel. token and
// webhook-secret are credentials ("secret:NAME", "file:PATH", "env:VAR" or
// the value).
type Config struct {
	// Token is a fine-grained personal access token or a GitHub App
	// installation token with Issues (and Pull requests) write access.
	Token string `mapstructure:"token"`
	// WebhookSecret is the secret of the repository or organization webhook
	// that sends issue_comment events to clawd.
	WebhookSecret string `mapstructure:"webhook-secret"`
	// Issue is where cards go when the route names no target:
	// "owner/repo#N".
	Issue   string `mapstructure:"issue"`
	APIBase string `mapstructure:"api-base"`
}

// Channel is one GitHub approval channel.
type Channel struct {
	name     string
	tokenRef string // resolved again for every call: an installation token is refreshed by whoever writes the file or secret
	token    string // as resolved at start (and used when a later resolution fails)
	secret   string
	issue    string // default target, "" = routes must name one
	base     string
	env      approval.Env
	http     *http.Client
	log      *zap.Logger
	now      func() time.Time
	path     string // state file, "" = memory only

	mu sync.Mutex
	st *state
}

// target is an issue or pull request: "owner/repo#N".
type target struct {
	Owner, Repo string
	Number      int
}

func (t target) full() string   { return t.Owner + "/" + t.Repo }
func (t target) String() string { return t.full() + "#" + strconv.Itoa(t.Number) }

var (
	ownerRE = regexp.MustCompile(`^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$`)
	repoRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// parseTarget reads "owner/repo#N".
func parseTarget(s string) (target, error) {
	full, num, ok := strings.Cut(s, "#")
	owner, repo, ok2 := strings.Cut(full, "/")
	n, err := strconv.Atoi(num)
	if !ok || !ok2 || err != nil || n <= 0 || n > 1<<31-1 || strconv.Itoa(n) != num ||
		!ownerRE.MatchString(owner) || !repoRE.MatchString(repo) || repo == "." || repo == ".." {
		return target{}, fmt.Errorf("%q is not an issue like owner/repo#123", cut(s, 120))
	}
	return target{Owner: owner, Repo: repo, Number: n}, nil
}

// New builds a GitHub channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	if name == "" {
		name = Type
	}
	var cfg Config
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, fmt.Errorf("github channel %s: %w", name, err)
	}
	c := &Channel{name: name, env: env, http: env.Client(), log: env.Logger().With(zap.String("channel", name)), now: env.Clock()}
	cred := func(key, ref string) (string, error) {
		if ref == "" {
			return "", nil
		}
		v, err := env.Credential(ref)
		if err != nil {
			return "", fmt.Errorf("github channel %s: %s: %w", name, key, err)
		}
		if v == "" || strings.ContainsAny(v, " \t\r\n") {
			return "", fmt.Errorf("github channel %s: %s is empty or has blanks", name, key)
		}
		return v, nil
	}
	var err error
	if c.token, err = cred("token", cfg.Token); err != nil {
		return nil, err
	}
	c.tokenRef = cfg.Token
	if c.token == "" {
		return nil, fmt.Errorf("github channel %s: token is required (a fine-grained token or app installation token with Issues: write)", name)
	}
	if c.secret, err = cred("webhook-secret", cfg.WebhookSecret); err != nil {
		return nil, err
	}
	if cfg.Issue != "" {
		t, err := parseTarget(cfg.Issue)
		if err != nil {
			return nil, fmt.Errorf("github channel %s: issue: %w", name, err)
		}
		c.issue = t.String()
	}
	base := cfg.APIBase
	if base == "" {
		base = DefaultAPIBase
	}
	bu, err := url.Parse(base)
	if err != nil || !okScheme(bu) || bu.RawQuery != "" || bu.Fragment != "" || bu.User != nil {
		return nil, fmt.Errorf("github channel %s: api-base %q must be an https URL", name, cut(base, 200))
	}
	c.base = strings.TrimRight(base, "/")
	c.path = statePath(env.StateDir, name)
	if c.st, err = loadState(c.path); err != nil {
		return nil, fmt.Errorf("github channel %s: %w", name, err)
	}
	if c.secret == "" {
		c.log.Warn("no webhook-secret: GitHub comments cannot decide, use the web page or the CLI")
	} else if env.PublicURL == "" {
		c.log.Warn("webhook-secret is set but clawd has no public URL: GitHub cannot deliver comments")
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

// okScheme accepts https, and http only to a loopback address (a local
// fake); a token never travels in clear over a network.
func okScheme(u *url.URL) bool {
	if u.Host == "" {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return u.Scheme == "http" && (h == "localhost" || ip != nil && ip.IsLoopback())
}

// Name is the channel's name in clawd.yaml.
func (c *Channel) Name() string { return c.name }

// comment is the part of a GitHub issue comment clawd reads.
type comment struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
	User struct {
		Login string `json:"login"`
		ID    int64  `json:"id"`
		Type  string `json:"type"`
	} `json:"user"`
}

// Post comments the card on the route's target issue or the configured
// one; the ref is "owner/repo#N|comment_id".
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	where := card.Target
	if where == "" {
		where = c.issue
	}
	if where == "" {
		return "", errors.New("github: the route names no issue and the channel has no issue setting")
	}
	t, err := parseTarget(where)
	if err != nil {
		return "", fmt.Errorf("github: route target: %w", err)
	}
	// Remember the card before GitHub has it: a command may arrive (and its
	// webhook be handled) before the POST's answer does.
	c.mu.Lock()
	r := c.st.Cards[card.ID]
	if r == nil {
		r = &record{}
		c.st.Cards[card.ID] = r
	}
	r.Digest, r.Grants, r.Expires = card.Digest, card.GrantsAllowed, card.Expires
	pending := location{Repo: t.full(), Issue: t.Number}
	r.At = append(r.At, pending)
	c.mu.Unlock()

	var cm comment
	path := fmt.Sprintf("/repos/%s/%s/issues/%d/comments", t.Owner, t.Repo, t.Number)
	err = c.call(ctx, http.MethodPost, path, Body(card), http.StatusCreated, &cm)
	if err == nil && cm.ID <= 0 {
		err = errors.New("github: the new comment has no id")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	loc := slices.Index(r.At, pending) // this post's, or an identical one's
	if err != nil {
		if loc >= 0 {
			r.At = slices.Delete(r.At, loc, loc+1)
		}
		if len(r.At) == 0 && c.st.Cards[card.ID] == r {
			delete(c.st.Cards, card.ID)
		}
		return "", err
	}
	if l := strings.ToLower(cm.User.Login); l != "" {
		c.st.Self = l
	}
	if loc >= 0 {
		r.At[loc].Comment = cm.ID
	} else {
		r.At = append(r.At, location{Repo: t.full(), Issue: t.Number, Comment: cm.ID})
	}
	c.st.prune(c.now())
	if err := c.st.save(c.path); err != nil {
		c.log.Warn("github: could not save state; commands for this card work until clawd restarts", zap.Error(err))
	}
	return t.String() + "|" + strconv.FormatInt(cm.ID, 10), nil
}

// parseRef reads "owner/repo#N|comment_id".
func parseRef(ref string) (target, int64, error) {
	where, id, ok := strings.Cut(ref, "|")
	t, err := parseTarget(where)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if !ok || err != nil || err2 != nil || n <= 0 {
		return target{}, 0, fmt.Errorf("github: bad comment ref %q", cut(ref, 200))
	}
	return t, n, nil
}

// Update edits the card comment with the approval as it is now: votes
// while pending, then the outcome without the commands.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	t, id, err := parseRef(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if r := c.st.Cards[card.ID]; r != nil {
		r.Expires = card.Expires
		if card.Status != approval.Pending && r.Expires.After(c.now()) {
			r.Expires = c.now()
		}
	}
	c.mu.Unlock()
	path := fmt.Sprintf("/repos/%s/%s/issues/comments/%d", t.Owner, t.Repo, id)
	return c.call(ctx, http.MethodPatch, path, Body(card), http.StatusOK, nil)
}

// reply comments text on the issue, marked as clawd's answer to comment
// inReplyTo.
func (c *Channel) reply(ctx context.Context, t target, inReplyTo int64, text string) error {
	body := replyMarker + strconv.FormatInt(inReplyTo, 10) + " -->\n" + cut(text, 4000)
	path := fmt.Sprintf("/repos/%s/%s/issues/%d/comments", t.Owner, t.Repo, t.Number)
	var cm comment
	if err := c.call(ctx, http.MethodPost, path, body, http.StatusCreated, &cm); err != nil {
		return err
	}
	if l := strings.ToLower(cm.User.Login); l != "" {
		c.mu.Lock()
		c.st.Self = l
		c.mu.Unlock()
	}
	return nil
}

// call sends {"body": body} to the REST API and decodes the answer into out.
// Errors carry GitHub's message, never the token.
func (c *Channel) call(ctx context.Context, method, path, body string, want int, out any) error {
	if len(body) > MaxComment {
		body = cut(body, MaxComment)
	}
	payload, err := json.Marshal(map[string]string{"body": body})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("github %s %s: %w", method, path, err)
	}
	token := c.currentToken()
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", APIVersion)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "clawd")
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("github %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("github %s %s: %w", method, path, err)
	}
	if resp.StatusCode != want {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(raw, &e)
		msg := strings.ReplaceAll(cut(e.Message, 300), token, "[token]")
		return fmt.Errorf("github %s %s: HTTP %d %s", method, path, resp.StatusCode, strconv.Quote(msg))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("github %s %s: unreadable answer: %w", method, path, err)
		}
	}
	return nil
}

// currentToken resolves the token setting again ("file:" and "secret:"
// credentials may be rotated underneath clawd), keeping the last good value
// when that fails.
func (c *Channel) currentToken() string {
	v, err := c.env.Credential(c.tokenRef)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || v == "" || strings.ContainsAny(v, " \t\r\n") {
		if err != nil {
			c.log.Warn("github: could not resolve the token again; using the last one", zap.Error(err))
		}
		return c.token
	}
	c.token = v
	return v
}

// Interface checks.
var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
)

// Package webhook is the approval channel that POSTs JSON events signed per
// Standard Webhooks to a URL the operator runs (a chat bridge, a ticket
// system, an automation). It receives no clicks: its events carry signed
// approve/deny links when the route lets links decide.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/approval"
)

// Webhook event types.
const (
	EventRequested = "approval.requested"
	EventDecided   = "approval.decided" // approved or denied
	EventExpired   = "approval.expired" // timeout, cancelled, expired by restart
	EventUpdated   = "approval.updated" // still pending: a first approval of two, an escalation
)

// Config configures the generic webhook notifier.
type Config struct {
	Name string // notifier name, default "webhook"; must be unique per Manager
	URL  string
	// Secret is the Standard Webhooks signing secret, "whsec_<base64>".
	Secret string
	HTTP   *http.Client
	// MaxAttempts bounds deliveries per event (default 5).
	MaxAttempts int
	// Backoff gives the wait before attempt n+1 (n from 1); default
	// 1s·2^(n-1) capped at 1m.
	Backoff func(n int) time.Duration
	// Sleep waits d or until ctx is done; tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time
}

// Webhook POSTs approval events as JSON signed per Standard Webhooks
// (webhook-id, webhook-timestamp, webhook-signature: v1,<base64>).
type Webhook struct {
	cfg Config
	key []byte
}

// Event is the body of every delivery.
type Event struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      Payload   `json:"data"`
}

// Payload is the approval as sent to webhooks.
type Payload struct {
	ID            string            `json:"id"`
	Status        string            `json:"status"`
	Summary       string            `json:"summary"`
	Container     Container         `json:"container"`
	Method        string            `json:"method"`
	URL           string            `json:"url"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          string            `json:"body,omitempty"`
	BodySize      int64             `json:"body_size"`
	BodyTruncated bool              `json:"body_truncated,omitempty"`
	Rule          string            `json:"rule"`
	Created       time.Time         `json:"created"`
	Expires       time.Time         `json:"expires"`
	Decided       *time.Time        `json:"decided,omitempty"`
	By            string            `json:"by,omitempty"`
	Reason        string            `json:"reason,omitempty"`
	Links         *Links            `json:"links,omitempty"`
}

type Container struct {
	Name    string            `json:"name"`
	ID      string            `json:"id"`
	Runtime string            `json:"runtime"`
	Labels  map[string]string `json:"labels,omitempty"`
}

type Links struct {
	Approve string `json:"approve"`
	Deny    string `json:"deny"`
}

// NewWebhook validates cfg.
func New(cfg Config) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("webhook: URL must be an absolute http(s) URL")
	}
	b64, ok := strings.CutPrefix(cfg.Secret, "whsec_")
	if !ok {
		return nil, errors.New(`webhook: secret must look like "whsec_<base64>"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 16 {
		return nil, errors.New("webhook: secret is not base64 of at least 16 bytes")
	}
	if cfg.Name == "" {
		cfg.Name = "webhook"
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func(n int) time.Duration {
			return min(time.Second<<min(n-1, 10), time.Minute)
		}
	}
	if cfg.Sleep == nil {
		cfg.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Webhook{cfg: cfg, key: key}, nil
}

func (w *Webhook) Name() string { return w.cfg.Name }

func (w *Webhook) Post(ctx context.Context, c *approval.Card) (string, error) {
	a := c.Approval
	return a.ID, w.send(ctx, EventRequested, a)
}

func (w *Webhook) Update(ctx context.Context, c *approval.Card, _ string) error {
	a := c.Approval
	typ := EventExpired
	switch a.Status {
	case approval.Approved, approval.Denied:
		typ = EventDecided
	case approval.Pending:
		typ = EventUpdated // a first approval of two, an escalation
	}
	return w.send(ctx, typ, a)
}

func payload(a *approval.Approval) Payload {
	v := Payload{
		ID: a.ID, Status: a.Status, Summary: a.Summary,
		Container: Container{Name: a.Container.Name, ID: a.Container.ID, Runtime: a.Container.Runtime, Labels: a.Container.Labels},
		Method:    a.Method, URL: a.URL, Body: a.Body, BodySize: a.BodySize, BodyTruncated: a.BodyTruncated,
		Rule: a.Rule, Created: a.Created, Expires: a.Expires, By: a.By, Reason: a.Reason,
	}
	if len(a.Header) > 0 {
		v.Headers = make(map[string]string, len(a.Header))
		for k, vs := range a.Header {
			v.Headers[k] = strings.Join(vs, ", ")
		}
	}
	if !a.Decided.IsZero() {
		d := a.Decided
		v.Decided = &d
	}
	if a.ApproveURL != "" && a.Status == approval.Pending {
		v.Links = &Links{Approve: a.ApproveURL, Deny: a.DenyURL}
	}
	return v
}

func (w *Webhook) send(ctx context.Context, typ string, a *approval.Approval) error {
	body, err := json.Marshal(Event{Type: typ, Timestamp: w.cfg.Now().UTC(), Data: payload(a)})
	if err != nil {
		return fmt.Errorf("webhook: encode: %w", err)
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	msgID := "msg_" + hex.EncodeToString(rnd[:])
	var last error
	for n := 1; n <= w.cfg.MaxAttempts; n++ {
		retry, err := w.attempt(ctx, msgID, body)
		if err == nil {
			return nil
		}
		last = err
		if !retry || n == w.cfg.MaxAttempts {
			break
		}
		if err := w.cfg.Sleep(ctx, w.cfg.Backoff(n)); err != nil {
			return fmt.Errorf("webhook %s: %w (after %v)", typ, err, last)
		}
	}
	return fmt.Errorf("webhook %s: %w", typ, last)
}

// attempt delivers once; retry says whether trying again may help.
func (w *Webhook) attempt(ctx context.Context, msgID string, body []byte) (retry bool, err error) {
	ts := strconv.FormatInt(w.cfg.Now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, "POST", w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "clawd-approval")
	req.Header.Set("webhook-id", msgID)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", "v1,"+SignWebhook(w.key, msgID, ts, body))
	resp, err := w.cfg.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // keep the URL (it may hold a token) out of logs
		}
		return ctx.Err() == nil, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	switch {
	case resp.StatusCode/100 == 2:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return true, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return false, fmt.Errorf("HTTP %d (not retried)", resp.StatusCode)
}

// SignWebhook returns the base64 HMAC-SHA256 of "id.timestamp.body".
func SignWebhook(key []byte, id, ts string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Type is the channel type in clawd.yaml.
const Type = "webhook"

// Settings are the clawd.yaml keys of a webhook channel.
type Settings struct {
	URL         string `mapstructure:"url"`
	Secret      string `mapstructure:"secret"` // whsec_…; a credential reference ("secret:NAME", "file:PATH")
	MaxAttempts int    `mapstructure:"max-attempts"`
}

// Build makes a webhook channel from its clawd.yaml settings.
func Build(name string, settings map[string]any, env approval.Env) (approval.Channel, error) {
	var st Settings
	if err := approval.DecodeSettings(settings, &st); err != nil {
		return nil, fmt.Errorf("webhook %s: %w", name, err)
	}
	secret, err := env.Credential(st.Secret)
	if err != nil {
		return nil, fmt.Errorf("webhook %s: secret: %w", name, err)
	}
	return New(Config{Name: name, URL: st.URL, Secret: secret, MaxAttempts: st.MaxAttempts, HTTP: env.HTTP, Now: env.Now})
}

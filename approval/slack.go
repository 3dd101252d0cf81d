package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
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

	"go.uber.org/zap"
)

// Slack action IDs on card buttons; the button value is the approval ID.
const (
	SlackActionApprove    = "clawd_approve"
	SlackActionApprove15m = "clawd_approve_15m"
	SlackActionDeny       = "clawd_deny"
)

// slackWindow is how far a callback timestamp may be off, and how long seen
// signatures are remembered to refuse replays.
const slackWindow = 5 * time.Minute

// SlackConfig configures the Slack notifier. Set either WebhookURL (incoming
// webhook: cards cannot be edited later except from a button's response_url)
// or BotToken+Channel (chat.postMessage, cards updated with chat.update).
type SlackConfig struct {
	WebhookURL string
	BotToken   string
	Channel    string
	// APIBase is the Web API base; default https://slack.com/api.
	APIBase string
	HTTP    *http.Client
	Now     func() time.Time
}

// Slack posts Block Kit approval cards.
type Slack struct {
	cfg SlackConfig
}

// NewSlack validates cfg.
func NewSlack(cfg SlackConfig) (*Slack, error) {
	if cfg.BotToken == "" && cfg.WebhookURL == "" {
		return nil, errors.New("slack: need a bot token or an incoming webhook URL")
	}
	if cfg.BotToken != "" && cfg.Channel == "" {
		return nil, errors.New("slack: a bot token needs a channel")
	}
	if cfg.WebhookURL != "" {
		if u, err := url.Parse(cfg.WebhookURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, errors.New("slack: webhook URL must be http(s)")
		}
	}
	if cfg.APIBase == "" {
		cfg.APIBase = "https://slack.com/api"
	}
	cfg.APIBase = strings.TrimRight(cfg.APIBase, "/")
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Slack{cfg: cfg}, nil
}

func (s *Slack) Name() string { return "slack" }

func (s *Slack) Notify(ctx context.Context, a *Approval) (string, error) {
	msg := SlackMessage(a, s.cfg.Now())
	if s.cfg.BotToken == "" {
		return "", s.post(ctx, s.cfg.WebhookURL, msg, false)
	}
	msg["channel"] = s.cfg.Channel
	var resp struct {
		OK      bool   `json:"ok"`
		Error   string `json:"error"`
		Channel string `json:"channel"`
		TS      string `json:"ts"`
	}
	if err := s.call(ctx, "chat.postMessage", msg, &resp); err != nil {
		return "", err
	}
	return resp.Channel + "|" + resp.TS, nil
}

// Update edits the card with chat.update when it was posted with the bot
// token; incoming-webhook cards are only edited from button clicks.
func (s *Slack) Update(ctx context.Context, a *Approval, ref string) error {
	ch, ts, ok := strings.Cut(ref, "|")
	if s.cfg.BotToken == "" || !ok {
		return nil
	}
	msg := SlackMessage(a, s.cfg.Now())
	msg["channel"] = ch
	msg["ts"] = ts
	var resp struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	return s.call(ctx, "chat.update", msg, &resp)
}

func (s *Slack) call(ctx context.Context, method string, msg map[string]any, out any) error {
	b, _ := json.Marshal(msg)
	req, err := http.NewRequestWithContext(ctx, "POST", s.cfg.APIBase+"/"+method, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("slack %s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+s.cfg.BotToken)
	resp, err := s.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("slack %s: %w", method, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("slack %s: HTTP %d", method, resp.StatusCode)
	}
	var r struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("slack %s: bad response: %w", method, err)
	}
	if !r.OK {
		return fmt.Errorf("slack %s: %s", method, r.Error)
	}
	return json.Unmarshal(body, out)
}

func (s *Slack) post(ctx context.Context, u string, msg map[string]any, _ bool) error {
	return postJSON(ctx, s.cfg.HTTP, u, msg)
}

func postJSON(ctx context.Context, c *http.Client, u string, msg any) error {
	b, _ := json.Marshal(msg)
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("slack post: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		// The URL may carry a webhook token; url.Error includes it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("slack post: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("slack post: HTTP %d", resp.StatusCode)
	}
	return nil
}

// slackEscape makes agent text inert in mrkdwn: no <!channel>, no links.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slackCode makes s safe inside a ``` block.
func slackCode(s string) string {
	return slackEscape(strings.ReplaceAll(s, "```", "'''"))
}

var statusText = map[string]string{
	Approved:  ":white_check_mark: Approved",
	Denied:    ":no_entry: Denied",
	TimedOut:  ":hourglass: Timed out (denied)",
	Cancelled: ":heavy_multiplication_x: Cancelled (the agent disconnected)",
	Expired:   ":arrows_counterclockwise: Expired (clawd restarted)",
}

func textObj(t string) map[string]any { return map[string]any{"type": "mrkdwn", "text": t} }

// SlackMessage builds the Block Kit card for a; pending cards carry the
// buttons, decided ones the outcome instead.
func SlackMessage(a *Approval, now time.Time) map[string]any {
	summary := truncate(slackEscape(a.Summary), 280)
	blocks := []any{
		map[string]any{"type": "section", "text": textObj("*" + summary + "*")},
		map[string]any{"type": "section", "text": textObj("`" + slackEscape(a.Method) + "` " + truncate(slackEscape(a.URL), 2000))},
	}
	ctxText := fmt.Sprintf("Container *%s* (%s) · rule `%s`", slackEscape(a.Container.Name), slackEscape(a.Container.Runtime), slackEscape(a.Rule))
	if a.Status == Pending {
		left := a.Expires.Sub(now).Round(time.Second)
		if left < 0 {
			left = 0
		}
		ctxText += fmt.Sprintf(" · expires in %s", left)
	}
	blocks = append(blocks, map[string]any{"type": "context", "elements": []any{textObj(ctxText)}})
	if a.Body != "" {
		body := truncate(a.Body, 2500)
		if a.BodyTruncated {
			body += "\n… (truncated"
			if a.BodySize >= 0 {
				body += ", " + strconv.FormatInt(a.BodySize, 10) + " bytes in total"
			}
			body += ")"
		}
		blocks = append(blocks, map[string]any{"type": "section", "text": textObj("```" + slackCode(body) + "```")})
	}
	if a.Status == Pending {
		btn := func(text, id, style string) map[string]any {
			b := map[string]any{
				"type": "button", "action_id": id, "value": a.ID,
				"text": map[string]any{"type": "plain_text", "text": text},
			}
			if style != "" {
				b["style"] = style
			}
			return b
		}
		blocks = append(blocks, map[string]any{
			"type": "actions", "block_id": "clawd_" + a.ID,
			"elements": []any{
				btn("Approve once", SlackActionApprove, "primary"),
				btn("Approve 15 min", SlackActionApprove15m, ""),
				btn("Deny", SlackActionDeny, "danger"),
			},
		})
	} else {
		out := statusText[a.Status]
		if out == "" {
			out = a.Status
		}
		if a.By != "" {
			out += " by " + slackEscape(a.By)
		}
		if a.GrantID != "" {
			out += " (" + slackEscape(a.Reason) + ")"
		} else if a.Status == Denied && a.Reason != "" {
			out += ": " + slackEscape(a.Reason)
		}
		blocks = append(blocks, map[string]any{"type": "section", "text": textObj(out)})
	}
	fallback := "Approval needed: " + summary
	if a.Status != Pending {
		fallback = a.Status + ": " + summary
	}
	return map[string]any{"text": fallback, "blocks": blocks}
}

// slackPayload is the part of a block_actions interaction we use.
type slackPayload struct {
	Type string `json:"type"`
	User struct {
		ID string `json:"id"`
	} `json:"user"`
	ResponseURL string `json:"response_url"`
	Actions     []struct {
		ActionID string `json:"action_id"`
		Value    string `json:"value"`
	} `json:"actions"`
}

func ephemeral(w http.ResponseWriter, text string) {
	writeJSON(w, http.StatusOK, map[string]any{"response_type": "ephemeral", "replace_original": false, "text": text})
}

// verifySlack checks the v0 signature and timestamp window and refuses a
// signature seen before.
func (m *Manager) verifySlack(r *http.Request, body []byte) error {
	ts := r.Header.Get("X-Slack-Request-Timestamp")
	sig := r.Header.Get("X-Slack-Signature")
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad timestamp")
	}
	now := m.now()
	if d := now.Sub(time.Unix(t, 0)); d > slackWindow || d < -slackWindow {
		return errors.New("stale timestamp")
	}
	mac := hmac.New(sha256.New, []byte(m.cfg.SlackSigningSecret))
	fmt.Fprintf(mac, "v0:%s:", ts)
	mac.Write(body)
	want := "v0=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return errors.New("bad signature")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for s, at := range m.slackSeen {
		if now.Sub(at) > 2*slackWindow {
			delete(m.slackSeen, s)
		}
	}
	if _, ok := m.slackSeen[sig]; ok {
		return errors.New("replayed request")
	}
	m.slackSeen[sig] = now
	return nil
}

func (m *Manager) slackApprover(user string) bool {
	if user == "" {
		return false
	}
	for _, a := range m.cfg.SlackApprovers {
		// A group entry admits its members, not a "user" carrying the group's ID.
		if _, group := m.cfg.SlackGroups[a]; !group && a == user {
			return true
		}
		for _, mem := range m.cfg.SlackGroups[a] {
			if mem == user {
				return true
			}
		}
	}
	return false
}

// handleSlack serves button clicks. It answers at once; the card is replaced
// through response_url in the background.
func (m *Manager) handleSlack(w http.ResponseWriter, r *http.Request) {
	if m.cfg.SlackSigningSecret == "" {
		http.Error(w, "slack interactions are not configured", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := m.verifySlack(r, body); err != nil {
		m.log.Warn("refused slack callback", zap.Error(err))
		http.Error(w, "invalid slack request: "+err.Error(), http.StatusUnauthorized)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "bad form body", http.StatusBadRequest)
		return
	}
	var p slackPayload
	if err := json.Unmarshal([]byte(form.Get("payload")), &p); err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	if p.Type != "block_actions" || len(p.Actions) == 0 {
		w.WriteHeader(http.StatusOK) // nothing for us; Slack wants a 200
		return
	}
	act := p.Actions[0]
	var approve bool
	var grant time.Duration
	switch act.ActionID {
	case SlackActionApprove:
		approve = true
	case SlackActionApprove15m:
		approve, grant = true, 15*time.Minute
	case SlackActionDeny:
	default:
		ephemeral(w, "Unknown action.")
		return
	}
	if !m.slackApprover(p.User.ID) {
		m.log.Warn("slack user may not decide approvals", zap.String("user", p.User.ID), zap.String("id", act.Value))
		ephemeral(w, "You are not allowed to decide clawd approvals. Nothing was changed.")
		return
	}
	by := "slack:" + p.User.ID
	a, err := m.Decide(act.Value, approve, by, "", grant)
	switch {
	case errors.Is(err, ErrNotFound):
		ephemeral(w, "This approval does not exist.")
		return
	case err != nil && a != nil:
		ephemeral(w, fmt.Sprintf("This request was already %s%s; nothing changed.", a.Status, byText(a.By)))
		return
	case err != nil:
		m.log.Error("slack decision", zap.Error(err))
		ephemeral(w, "clawd could not record the decision.")
		return
	}
	w.WriteHeader(http.StatusOK)
	if p.ResponseURL != "" && validResponseURL(p.ResponseURL) {
		msg := SlackMessage(a, m.now())
		msg["replace_original"] = true
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			ctx, cancel := context.WithTimeout(m.bgCtx, 30*time.Second)
			defer cancel()
			if err := postJSON(ctx, m.slackHTTP(), p.ResponseURL, msg); err != nil {
				m.log.Warn("slack response_url update", zap.Error(err))
			}
		}()
	}
}

func byText(by string) string {
	if by == "" {
		return ""
	}
	return " by " + by
}

// validResponseURL: the payload is signed by Slack, but still only follow
// http(s) URLs.
func validResponseURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

func (m *Manager) slackHTTP() *http.Client {
	for _, n := range m.cfg.Notifiers {
		if s, ok := n.(*Slack); ok {
			return s.cfg.HTTP
		}
	}
	return &http.Client{Timeout: 15 * time.Second}
}

// Package ntfy asks approvers on their phones through ntfy (ntfy.sh or a
// self-hosted server) and needs no public URL: each approver gets the card
// on their own secret topic with up to three http action buttons, each
// carrying a one-time token issued to that approver; pressing one makes the
// phone POST the token to clawd's private reply topic, which clawd reads as
// a JSON stream. The token is the identity: whoever presents it decides as
// the approver it was issued to, once.
package ntfy

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
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "ntfy"

// DefaultServer is the public ntfy server.
const DefaultServer = "https://ntfy.sh"

// Limits of the ntfy publishing API this channel keeps to.
const (
	maxActions = 3    // ntfy refuses more than three actions
	maxMessage = 4096 // bytes; ntfy's default message-size-limit (longer turns into an attachment)
	maxTitle   = 256  // bytes; kept short for the notification drawer
)

var (
	// topicRe is ntfy's topic name rule.
	topicRe = regexp.MustCompile(`^[-_A-Za-z0-9]{1,64}$`)
	// approverRe is what an approver name may be (it becomes "ntfy:NAME").
	approverRe = regexp.MustCompile(`^[A-Za-z0-9][-_.A-Za-z0-9]{0,63}$`)
	// messageIDRe is an ntfy message ID (12 characters on ntfy.sh).
	messageIDRe = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)
)

type config struct {
	Server     string            `mapstructure:"server"`
	Topics     map[string]string `mapstructure:"topics"`
	ReplyTopic string            `mapstructure:"reply-topic"`
	Token      string            `mapstructure:"token"`
	Priority   string            `mapstructure:"priority"`
}

// Channel is the ntfy approval channel.
type Channel struct {
	name     string
	server   string // no trailing slash
	topics   map[string]string
	approver []string // sorted names
	reply    string
	token    string
	priority int

	http   *http.Client
	stream *http.Client // same transport, no overall timeout (the subscription is long-lived)
	now    func() time.Time
	log    *zap.Logger
	state  *state
}

var _ approval.Channel = (*Channel)(nil)
var _ approval.Listener = (*Channel)(nil)

// New builds the channel from its clawd.yaml settings (see README.md).
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	if name == "" {
		name = Type
	}
	var cfg config
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, fmt.Errorf("ntfy %s: settings: %w", name, err)
	}
	server, err := parseServer(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("ntfy %s: server: %w", name, err)
	}
	if len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("ntfy %s: topics: at least one approver topic is required (topics: {alice: <secret topic>})", name)
	}
	names := make([]string, 0, len(cfg.Topics))
	seen := map[string]string{}
	for who, topic := range cfg.Topics {
		if !approverRe.MatchString(who) {
			return nil, fmt.Errorf("ntfy %s: topics: approver name %q: use letters, digits, '-', '_' or '.' (at most 64)", name, who)
		}
		if !topicRe.MatchString(topic) {
			return nil, fmt.Errorf("ntfy %s: topics: %s: not an ntfy topic name (1-64 of A-Z a-z 0-9 - _)", name, who)
		}
		if other, dup := seen[topic]; dup {
			return nil, fmt.Errorf("ntfy %s: topics: %s and %s share a topic; each approver needs their own", name, min(who, other), max(who, other))
		}
		seen[topic] = who
		names = append(names, who)
	}
	sort.Strings(names)
	if cfg.ReplyTopic != "" && !topicRe.MatchString(cfg.ReplyTopic) {
		return nil, fmt.Errorf("ntfy %s: reply-topic: not an ntfy topic name (1-64 of A-Z a-z 0-9 - _)", name)
	}
	if _, clash := seen[cfg.ReplyTopic]; clash {
		return nil, fmt.Errorf("ntfy %s: reply-topic: must differ from every approver topic", name)
	}
	prio, err := parsePriority(cfg.Priority)
	if err != nil {
		return nil, fmt.Errorf("ntfy %s: priority: %w", name, err)
	}
	token := ""
	if cfg.Token != "" {
		if token, err = env.Credential(cfg.Token); err != nil {
			return nil, fmt.Errorf("ntfy %s: token: %w", name, err)
		}
		if token == "" || strings.ContainsAny(token, "\r\n") {
			return nil, fmt.Errorf("ntfy %s: token: empty or not a single line", name)
		}
	}
	if env.StateDir == "" {
		return nil, fmt.Errorf("ntfy %s: needs a state directory for its one-time tokens", name)
	}
	st, err := openState(env.StateDir, name)
	if err != nil {
		return nil, fmt.Errorf("ntfy %s: %w", name, err)
	}
	reply := cfg.ReplyTopic
	if reply == "" {
		if reply, err = st.replyTopic(); err != nil {
			return nil, fmt.Errorf("ntfy %s: %w", name, err)
		}
	}
	if _, clash := seen[reply]; clash {
		return nil, fmt.Errorf("ntfy %s: reply-topic: must differ from every approver topic", name)
	}
	log := env.Logger().With(zap.String("channel", name))
	for _, who := range names {
		if len(cfg.Topics[who]) < 20 && token == "" {
			log.Warn("ntfy topic is short and the server is used without an access token: anyone who guesses it can approve as this approver",
				zap.String("approver", who))
		}
	}
	hc := env.Client()
	sc := *hc
	sc.Timeout = 0
	return &Channel{
		name: name, server: server, topics: cfg.Topics, approver: names, reply: reply, token: token, priority: prio,
		http: hc, stream: &sc, now: env.Clock(), log: log, state: st,
	}, nil
}

// Build is New for the channel registry (approval/channels).
func Build(name string, settings map[string]any, env approval.Env) (approval.Channel, error) {
	c, err := New(name, settings, env)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func parseServer(s string) (string, error) {
	if s == "" {
		s = DefaultServer
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New("not a URL")
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", errors.New("want a base URL like https://ntfy.example.com (no user, query or fragment)")
	}
	switch u.Scheme {
	case "https":
	case "http":
		// Plain HTTP would carry the one-time tokens in clear text: only
		// for a server on this host.
		host := u.Hostname()
		if ip := net.ParseIP(host); !(host == "localhost" || ip != nil && ip.IsLoopback()) {
			return "", errors.New("http:// only for a server on this host (loopback); use https://")
		}
	default:
		return "", errors.New("want an https:// URL")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func parsePriority(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return 4, nil // high
	case "min", "1":
		return 1, nil
	case "low", "2":
		return 2, nil
	case "default", "3":
		return 3, nil
	case "high", "4":
		return 4, nil
	case "max", "urgent", "5":
		return 5, nil
	}
	return 0, errors.New("one of min, low, default, high, urgent (or 1-5)")
}

// Name is the channel's name in clawd.yaml.
func (c *Channel) Name() string { return c.name }

// Personal: each asked person gets a message of their own.
func (c *Channel) Personal() bool { return true }

// DefaultApprovers are the approvers with a topic: who is asked on this
// channel when clawd.yaml lists no approvers for it.
func (c *Channel) DefaultApprovers() []string { return slices.Clone(c.approver) }

// ReplyTopic is the topic clawd reads button presses from.
func (c *Channel) ReplyTopic() string { return c.reply }

// audience is who a card goes to: the asked people that have a topic, or
// every approver when nobody in particular is asked.
func (c *Channel) audience(card *approval.Card) []string {
	if len(card.People) == 0 {
		return c.approver
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range card.People {
		if seen[p] {
			continue
		}
		seen[p] = true
		if _, ok := c.topics[p]; ok {
			out = append(out, p)
		} else {
			c.log.Warn("asked person has no ntfy topic; not notified", zap.String("person", p), zap.String("approval", card.ID))
		}
	}
	sort.Strings(out)
	return out
}

// Post publishes the card to each asked approver's topic, with buttons
// carrying tokens issued to that approver. The ref lists the message ID per
// approver ("alice=ID,bob=ID").
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	if card == nil || card.Approval == nil {
		return "", errors.New("ntfy: no approval on the card")
	}
	who := c.audience(card)
	if len(who) == 0 {
		return "", fmt.Errorf("ntfy %s: none of the asked people has a topic", c.name)
	}
	refs := map[string]string{}
	var errs []error
	for _, w := range who {
		id, err := c.publishCard(ctx, card, w, "")
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w, err))
			continue
		}
		refs[w] = id
	}
	if len(refs) == 0 {
		return "", fmt.Errorf("ntfy %s: %w", c.name, errors.Join(errs...))
	}
	for _, err := range errs {
		c.log.Warn("ntfy publish failed for one approver", zap.String("approval", card.ID), zap.Error(err))
	}
	return formatRef(refs), nil
}

// Update replaces each approver's notification (same sequence ID; ntfy
// 2.16+ and its apps replace it in place, older ones show it as a new
// notification). While pending the replacement carries fresh buttons; once
// decided it shows the outcome, has none, and the approval's tokens are
// revoked.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	if card == nil || card.Approval == nil {
		return errors.New("ntfy: no approval on the card")
	}
	refs := parseRef(ref)
	if card.Status != approval.Pending {
		if err := c.state.revokeApproval(card.ID); err != nil {
			c.log.Error("ntfy: could not persist token revocation", zap.String("approval", card.ID), zap.Error(err))
		}
	}
	names := make([]string, 0, len(refs))
	for w := range refs {
		if _, ok := c.topics[w]; ok {
			names = append(names, w)
		}
	}
	sort.Strings(names)
	var errs []error
	for _, w := range names {
		if _, err := c.publishCard(ctx, card, w, refs[w]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("ntfy %s: update: %w", c.name, errors.Join(errs...))
	}
	return nil
}

// publishCard issues the approver's tokens (when pending), publishes, and
// returns the message ID. seq is the ID of the message it replaces.
func (c *Channel) publishCard(ctx context.Context, card *approval.Card, who, seq string) (string, error) {
	msg := cardMessage(card, c.priority)
	msg.Topic = c.topics[who]
	msg.SequenceID = seq
	var issued []string
	for _, b := range card.Buttons() {
		if len(msg.Actions) == maxActions {
			break
		}
		tok, hash, err := newToken()
		if err != nil {
			return "", err
		}
		issued = append(issued, hash)
		msg.Actions = append(msg.Actions, action{
			Action: "http", Label: b.Label, URL: c.server + "/" + c.reply, Method: http.MethodPost,
			Headers: map[string]string{"Content-Type": "text/plain"}, Body: tok, Clear: true,
		})
		c.state.add(hash, entry{Approval: card.ID, Value: b.Value, Approver: who, Expires: card.Expires})
	}
	if len(issued) > 0 {
		if err := c.state.save(c.now()); err != nil {
			c.state.remove(issued...)
			return "", fmt.Errorf("tokens not persisted: %w", err)
		}
	}
	id, err := c.publish(ctx, msg)
	if err != nil {
		if len(issued) > 0 {
			c.state.remove(issued...)
			_ = c.state.save(c.now())
		}
		return "", err
	}
	return id, nil
}

// publishMsg is ntfy's JSON publishing body.
type publishMsg struct {
	Topic      string   `json:"topic"`
	Title      string   `json:"title,omitempty"`
	Message    string   `json:"message"`
	Priority   int      `json:"priority,omitempty"`
	Tags       []string `json:"tags,omitempty"`
	Actions    []action `json:"actions,omitempty"`
	SequenceID string   `json:"sequence_id,omitempty"`
}

type action struct {
	Action  string            `json:"action"`
	Label   string            `json:"label"`
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	Clear   bool              `json:"clear"`
}

// publish POSTs msg to the server root and returns the message ID. Errors
// name the status and ntfy's error text, never the body sent (it carries
// tokens).
func (c *Channel) publish(ctx context.Context, msg publishMsg) (string, error) {
	b, err := json.Marshal(msg)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.server+"/", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	c.auth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("publish: %w", redactURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return "", fmt.Errorf("publish: %s: %s", resp.Status, oneLine(e.Error, 200))
	}
	var m struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &m); err != nil || !messageIDRe.MatchString(m.ID) {
		return "", errors.New("publish: server answered without a message id")
	}
	return m.ID, nil
}

func (c *Channel) auth(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

// redactURLError drops the URL from a client error (it is ours, but keep
// errors short and free of anything a misconfigured URL might hold).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// notify tells an approver something short (the answer to their press).
func (c *Channel) notify(ctx context.Context, who, title, text string) {
	topic, ok := c.topics[who]
	if !ok {
		return
	}
	_, err := c.publish(ctx, publishMsg{Topic: topic, Title: cut(oneLine(title, maxTitle), maxTitle), Message: cut(clean(text), maxMessage), Priority: 2, Tags: []string{"information_source"}})
	if err != nil {
		c.log.Warn("ntfy: could not send the answer to the approver", zap.String("approver", who), zap.Error(err))
	}
}

func formatRef(refs map[string]string) string {
	names := make([]string, 0, len(refs))
	for w := range refs {
		names = append(names, w)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, w := range names {
		parts[i] = w + "=" + refs[w]
	}
	return strings.Join(parts, ",")
}

func parseRef(ref string) map[string]string {
	out := map[string]string{}
	for _, p := range strings.Split(ref, ",") {
		w, id, ok := strings.Cut(p, "=")
		if ok && approverRe.MatchString(w) && messageIDRe.MatchString(id) {
			out[w] = id
		}
	}
	return out
}

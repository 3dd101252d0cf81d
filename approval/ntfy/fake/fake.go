// Package fake is a small ntfy server for tests: the JSON publishing API
// (checked against ntfy's documented shape and limits), a per-topic message
// cache, the newline-delimited JSON subscription with since=, and a phone
// that presses a notification's http action exactly as the ntfy app does.
package fake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Limits checked on every publish.
const (
	MaxActions = 3    // ntfy: "only 3 actions allowed"
	MaxMessage = 4096 // bytes, ntfy's default message-size-limit
	MaxTitle   = 256  // bytes
)

var (
	topicRe      = regexp.MustCompile(`^[-_A-Za-z0-9]{1,64}$`)
	approvalIDRe = regexp.MustCompile(`(?m)^ID: ([a-z2-7]{26})$`)
	headerNameRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Action is one notification button.
type Action struct {
	ID      string            `json:"id"`
	Action  string            `json:"action"`
	Label   string            `json:"label"`
	Clear   bool              `json:"clear"`
	URL     string            `json:"url,omitempty"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
}

// Message is one cached message, as ntfy streams it.
type Message struct {
	ID         string   `json:"id"`
	Time       int64    `json:"time"`
	Event      string   `json:"event"`
	Topic      string   `json:"topic"`
	Title      string   `json:"title,omitempty"`
	Message    string   `json:"message,omitempty"`
	Priority   int      `json:"priority,omitempty"`
	Tags       []string `json:"tags,omitempty"`
	Actions    []Action `json:"actions,omitempty"`
	SequenceID string   `json:"sequence_id,omitempty"`
	// ApprovalID is the clawd approval the message carries (its "ID: "
	// line), "" for others.
	ApprovalID string `json:"-"`
}

// Subscription is one subscribe request the server got.
type Subscription struct {
	Topic string
	Since string
}

// Server is the fake ntfy server.
type Server struct {
	URL string
	// Token is the access token clawd must send (Authorization: Bearer).
	// Anonymous visitors may only publish (like an ntfy server whose ACL
	// gives everyone write-only access), which is how phones press buttons.
	Token string
	// Topics maps approver name to their topic.
	Topics map[string]string

	srv *httptest.Server

	mu         sync.Mutex
	msgs       []Message
	subs       []Subscription
	violations []string
	changed    chan struct{} // closed and replaced on every change
	drop       chan struct{} // closed and replaced by Drop
}

// New starts a fake with approvers alice and bob, each on a random topic,
// and a random access token.
func New() *Server {
	s := &Server{
		Token:   "tk_" + randString(29),
		Topics:  map[string]string{"alice": "clawd-alice-" + randString(20), "bob": "clawd-bob-" + randString(20)},
		changed: make(chan struct{}),
		drop:    make(chan struct{}),
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.Drop()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Settings are the clawd.yaml settings of a channel using this server.
func (s *Server) Settings() map[string]any {
	topics := map[string]any{}
	for w, t := range s.Topics {
		topics[w] = t
	}
	return map[string]any{"server": s.URL, "topics": topics, "token": s.Token}
}

// Drop cuts every open subscription (the server restarting, a network cut).
func (s *Server) Drop() {
	s.mu.Lock()
	close(s.drop)
	s.drop = make(chan struct{})
	s.mu.Unlock()
}

// Violations are the payload problems seen so far.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Subscriptions are the subscribe requests seen so far, in order.
func (s *Server) Subscriptions() []Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Subscription(nil), s.subs...)
}

// Messages are the cached messages of a topic, oldest first.
func (s *Server) Messages(topic string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.msgs {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// Card is the latest message (on any topic) carrying that approval.
func (s *Server) Card(approvalID string) (Message, bool) { return s.find(approvalID, "") }

// CardFor is the latest message carrying that approval on an approver's topic.
func (s *Server) CardFor(approvalID, approver string) (Message, bool) {
	t, ok := s.Topics[approver]
	if !ok {
		return Message{}, false
	}
	return s.find(approvalID, t)
}

func (s *Server) find(id, topic string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.msgs) - 1; i >= 0; i-- {
		m := s.msgs[i]
		if m.ApprovalID == id && (topic == "" || m.Topic == topic) {
			return m, true
		}
	}
	return Message{}, false
}

// WaitCard waits for the latest message carrying that approval to satisfy cond.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	return s.wait(ctx, func() (Message, bool) {
		m, ok := s.Card(approvalID)
		return m, ok && (cond == nil || cond(m))
	})
}

// WaitMessage waits for any message on the approver's topic satisfying cond.
func (s *Server) WaitMessage(ctx context.Context, approver string, cond func(Message) bool) (Message, error) {
	return s.wait(ctx, func() (Message, bool) {
		for _, m := range s.Messages(s.Topics[approver]) {
			if cond == nil || cond(m) {
				return m, true
			}
		}
		return Message{}, false
	})
}

// WaitSubscriptions waits until n subscribe requests were seen.
func (s *Server) WaitSubscriptions(ctx context.Context, n int) ([]Subscription, error) {
	var out []Subscription
	_, err := s.wait(ctx, func() (Message, bool) {
		out = s.Subscriptions()
		return Message{}, len(out) >= n
	})
	return out, err
}

func (s *Server) wait(ctx context.Context, f func() (Message, bool)) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if m, ok := f(); ok {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case <-ch:
		}
	}
}

// labels are the button labels clawd gives each act (approval.Card.Buttons).
var labels = map[string]string{"a": "Approve", "g": "Approve 15 min", "d": "Deny"}

// Action returns the button for act on the approver's latest notification
// of that approval (for capturing and replaying a press).
func (s *Server) Action(approvalID, act, approver string) (Action, error) {
	m, ok := s.CardFor(approvalID, approver)
	if !ok {
		return Action{}, fmt.Errorf("fake ntfy: no notification of %s for %s", approvalID, approver)
	}
	for _, a := range m.Actions {
		if a.Label == labels[act] {
			return a, nil
		}
	}
	return Action{}, fmt.Errorf("fake ntfy: the notification has no %q button", labels[act])
}

// Click presses the button for act on the approver's notification of that
// approval, as the ntfy app does: it sends the action's HTTP request
// (method, URL, headers, body) without credentials. It returns what the app
// shows: the status of that request.
func (s *Server) Click(ctx context.Context, approvalID, act, approver string) (string, error) {
	a, err := s.Action(approvalID, act, approver)
	if err != nil {
		return "", err
	}
	return Press(ctx, a)
}

// Press sends an http action's request.
func Press(ctx context.Context, a Action) (string, error) {
	if a.Action != "http" {
		return "", fmt.Errorf("fake ntfy: %q is not an http action", a.Action)
	}
	method := a.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, a.URL, strings.NewReader(a.Body))
	if err != nil {
		return "", err
	}
	for k, v := range a.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.Status, fmt.Errorf("fake ntfy: action failed: %s", resp.Status)
	}
	return resp.Status, nil
}

// Publish posts body to topic anonymously, like anyone who knows the topic
// (for forged and replayed presses).
func (s *Server) Publish(ctx context.Context, topic, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/"+topic, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errors.New(resp.Status)
	}
	return nil
}

func (s *Server) violate(format string, args ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

type apiError struct {
	Code  int    `json:"code"`
	HTTP  int    `json:"http"`
	Error string `json:"error"`
}

func fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Code: status * 100, HTTP: status, Error: msg})
}

// authorized checks the Authorization header: absent is anonymous, a wrong
// one is refused.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) (authed, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return false, true
	}
	if s.Token == "" || h != "Bearer "+s.Token {
		s.violate("%s %s: wrong Authorization header", r.Method, r.URL.Path)
		fail(w, http.StatusUnauthorized, "unauthorized")
		return false, false
	}
	return true, true
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	authed, ok := s.authorized(w, r)
	if !ok {
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case path == "" && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		if s.Token != "" && !authed {
			s.violate("JSON publish without the access token")
			fail(w, http.StatusForbidden, "forbidden")
			return
		}
		s.publishJSON(w, r)
	case topicRe.MatchString(path) && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		s.publishRaw(w, r, path)
	case strings.HasSuffix(path, "/json") && topicRe.MatchString(strings.TrimSuffix(path, "/json")) && r.Method == http.MethodGet:
		if s.Token != "" && !authed {
			s.violate("subscribe without the access token")
			fail(w, http.StatusForbidden, "forbidden")
			return
		}
		s.subscribe(w, r, strings.TrimSuffix(path, "/json"))
	default:
		s.violate("unexpected request %s %s", r.Method, r.URL.Path)
		fail(w, http.StatusNotFound, "page not found")
	}
}

// publishBody is ntfy's documented JSON publishing body.
type publishBody struct {
	Topic      string   `json:"topic"`
	Title      string   `json:"title"`
	Message    string   `json:"message"`
	Priority   int      `json:"priority"`
	Tags       []string `json:"tags"`
	Click      string   `json:"click"`
	Icon       string   `json:"icon"`
	Actions    []Action `json:"actions"`
	Attach     string   `json:"attach"`
	Markdown   bool     `json:"markdown"`
	Filename   string   `json:"filename"`
	Email      string   `json:"email"`
	Call       string   `json:"call"`
	Cache      string   `json:"cache"`
	Firebase   string   `json:"firebase"`
	Delay      string   `json:"delay"`
	SequenceID string   `json:"sequence_id"`
}

func (s *Server) publishJSON(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.violate("JSON publish with Content-Type %q", ct)
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 2*MaxMessage+16<<10))
	if err != nil {
		fail(w, http.StatusBadRequest, "read error")
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var p publishBody
	if err := dec.Decode(&p); err != nil {
		s.violate("JSON publish: %v", err)
		fail(w, http.StatusBadRequest, "invalid request: request body must be message JSON")
		return
	}
	if problems := s.check(&p); len(problems) > 0 {
		for _, pr := range problems {
			s.violate("publish to %q: %s", p.Topic, pr)
		}
		fail(w, http.StatusBadRequest, problems[0])
		return
	}
	m := Message{Topic: p.Topic, Title: p.Title, Message: p.Message, Priority: p.Priority, Tags: p.Tags, SequenceID: p.SequenceID}
	if m.Message == "" {
		m.Message = "triggered"
	}
	for _, a := range p.Actions {
		a.ID = randString(10)
		a.Method = strings.ToUpper(a.Method)
		m.Actions = append(m.Actions, a)
	}
	m = s.store(m)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(m)
}

// check lists what ntfy (or clawd's contract with it) refuses in p.
func (s *Server) check(p *publishBody) []string {
	var out []string
	if !topicRe.MatchString(p.Topic) {
		out = append(out, "invalid topic")
	}
	if len(p.Title) > MaxTitle {
		out = append(out, fmt.Sprintf("title is %d bytes (max %d)", len(p.Title), MaxTitle))
	}
	if strings.ContainsAny(p.Title, "\r\n") {
		out = append(out, "title has a line break")
	}
	if len(p.Message) > MaxMessage {
		out = append(out, fmt.Sprintf("message is %d bytes (max %d)", len(p.Message), MaxMessage))
	}
	if !utf8.ValidString(p.Title) || !utf8.ValidString(p.Message) {
		out = append(out, "not UTF-8")
	}
	if p.Priority < 0 || p.Priority > 5 {
		out = append(out, "invalid priority")
	}
	if p.Markdown {
		out = append(out, "markdown enabled: agent text would be rendered")
	}
	for _, t := range p.Tags {
		if t == "" || strings.Contains(t, ",") {
			out = append(out, fmt.Sprintf("invalid tag %q", t))
		}
	}
	if p.Click != "" || p.Attach != "" || p.Email != "" || p.Call != "" || p.Delay != "" || p.Icon != "" {
		out = append(out, "unexpected click/attach/email/call/delay/icon")
	}
	if len(p.Actions) > MaxActions {
		out = append(out, fmt.Sprintf("only %d actions allowed, got %d", MaxActions, len(p.Actions)))
	}
	for i, a := range p.Actions {
		out = append(out, s.checkAction(i, a)...)
	}
	if p.SequenceID != "" {
		if !topicRe.MatchString(p.SequenceID) {
			out = append(out, "invalid sequence_id")
		} else if !s.known(p.Topic, p.SequenceID) {
			out = append(out, "sequence_id names no earlier message of this topic (nothing would be replaced)")
		}
	}
	return out
}

func (s *Server) checkAction(i int, a Action) []string {
	var out []string
	where := fmt.Sprintf("action %d", i)
	if a.ID != "" {
		out = append(out, where+": id is set by the server")
	}
	if a.Action != "http" {
		out = append(out, fmt.Sprintf("%s: action %q, want http", where, a.Action))
	}
	if a.Label == "" {
		out = append(out, where+": parameter 'label' is required")
	}
	if a.URL == "" {
		out = append(out, where+": parameter 'url' is required")
	} else if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		out = append(out, where+": url is not absolute http(s)")
	} else {
		self, _ := url.Parse(s.URL)
		if u.Host != self.Host || !topicRe.MatchString(strings.TrimPrefix(u.Path, "/")) || u.RawQuery != "" {
			out = append(out, where+": url is not a topic on this server")
		}
	}
	m := strings.ToUpper(a.Method)
	switch m {
	case "", "POST", "PUT":
	case "GET", "HEAD":
		if a.Body != "" {
			out = append(out, fmt.Sprintf("%s: parameter 'body' cannot be set if method is %s", where, m))
		}
	case "DELETE", "PATCH":
	default:
		out = append(out, where+": invalid method")
	}
	for k := range a.Headers {
		if !headerNameRe.MatchString(k) {
			out = append(out, fmt.Sprintf("%s: invalid header name %q", where, k))
		}
		if strings.EqualFold(k, "Authorization") {
			out = append(out, where+": carries an Authorization header (a credential on the phone)")
		}
	}
	return out
}

func (s *Server) known(topic, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		if m.Topic == topic && m.ID == id {
			return true
		}
	}
	return false
}

// publishRaw is POST /<topic> with the message as body (how phones press).
func (s *Server) publishRaw(w http.ResponseWriter, r *http.Request, topic string) {
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxMessage+1))
	if err != nil {
		fail(w, http.StatusBadRequest, "read error")
		return
	}
	if len(b) > MaxMessage {
		fail(w, http.StatusRequestEntityTooLarge, "message too large")
		return
	}
	msg := string(b)
	if msg == "" {
		msg = "triggered"
	}
	m := s.store(Message{Topic: topic, Message: msg, Title: r.Header.Get("X-Title")})
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(m)
}

func (s *Server) store(m Message) Message {
	m.ID = randString(12)
	m.Time = time.Now().Unix()
	m.Event = "message"
	if sm := approvalIDRe.FindStringSubmatch(m.Message); sm != nil {
		m.ApprovalID = sm[1]
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.notify()
	s.mu.Unlock()
	return m
}

// subscribe streams the topic: an open event, a keepalive, the cached
// messages after since, then new ones until the client leaves or Drop.
func (s *Server) subscribe(w http.ResponseWriter, r *http.Request, topic string) {
	since := r.URL.Query().Get("since")
	s.mu.Lock()
	s.subs = append(s.subs, Subscription{Topic: topic, Since: since})
	drop := s.drop
	cursor := 0
	switch since {
	case "all":
	case "", "none":
		cursor = len(s.msgs)
	default:
		if !regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`).MatchString(since) {
			s.mu.Unlock()
			s.violate("subscribe: invalid since %q", since)
			fail(w, http.StatusBadRequest, "invalid since")
			return
		}
		for i, m := range s.msgs { // an unknown ID means all, as in ntfy
			if m.ID == since {
				cursor = i + 1
			}
		}
	}
	s.notify()
	s.mu.Unlock()

	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson; charset=utf-8")
	enc := json.NewEncoder(w)
	now := time.Now().Unix()
	enc.Encode(Message{ID: randString(12), Time: now, Event: "open", Topic: topic})
	enc.Encode(Message{ID: randString(12), Time: now, Event: "keepalive", Topic: topic})
	if fl != nil {
		fl.Flush()
	}
	for {
		s.mu.Lock()
		var out []Message
		for ; cursor < len(s.msgs); cursor++ {
			if s.msgs[cursor].Topic == topic {
				out = append(out, s.msgs[cursor])
			}
		}
		ch := s.changed
		s.mu.Unlock()
		for _, m := range out {
			if err := enc.Encode(m); err != nil {
				return
			}
		}
		if fl != nil && len(out) > 0 {
			fl.Flush()
		}
		select {
		case <-ch:
		case <-drop:
			return
		case <-r.Context().Done():
			return
		}
	}
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randString(n int) string {
	b := make([]byte, n)
	for i := range b {
		k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alnum))))
		b[i] = alnum[k.Int64()]
	}
	return string(b)
}

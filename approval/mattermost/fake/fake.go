// Package fake is a stand-in for a Mattermost server as clawd's
// Mattermost channel uses it: the REST API v4 posts endpoints (create,
// patch, get) behind a bot token, checking every payload against the
// documented shapes and limits, and button clicks delivered to an action's
// integration URL exactly as the server does it (with the action's stored
// context, which it never shows to clients), or forged in one chosen way.
package fake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// Identities and limits the fake uses.
const (
	BotToken  = "fakebottoken0000000000000000"
	BotUserID = "b0tuser0000000000000000000"
	ChannelID = "c0hanne1approvals000000000"
	TeamID    = "team00000000000000000000aa"
	// MaxMessage is the longest post message in runes (PostMessageMaxRunesV2).
	MaxMessage = 16383
	// MaxProps is the most runes of props JSON a post may have.
	MaxProps = 800000
)

// Message is one post as the channel shows it now.
type Message struct {
	PostID     string
	ChannelID  string
	ApprovalID string
	Message    string         // the post's message (markdown)
	Text       string         // the attachments' text, one per line
	Footer     string         // the first attachment's footer
	Props      map[string]any // as clawd sent them (the server keeps the integrations)
	Actions    []Action
	Updates    int // patches and click answers applied
}

// AllText is the message and the attachments' text.
func (m Message) AllText() string { return m.Message + "\n" + m.Text }

// Action is one button as the server stores it.
type Action struct {
	ID, Name, Type, Style string
	URL                   string         // integration.url
	Context               map[string]any // integration.context (hidden from clients)
}

// Forgery is one way a click can be forged.
type Forgery int

// Forgeries.
const (
	Genuine           Forgery = iota
	ForgeWrongSecret          // context "t" replaced by a random secret of the right shape
	ForgeOtherChannel         // channel_id of another channel
	ForgeOtherPost            // post_id of another post
	ForgeNoContext            // no context at all
	ForgeMalformed            // body is not JSON
	ForgeOtherValue           // the secret of this button with another button's value
)

// Server is the fake.
type Server struct {
	srv *httptest.Server

	mu         sync.Mutex
	posts      map[string]*Message
	byApproval map[string]string
	channels   map[string]bool
	names      map[string]string
	callback   string
	violations []string
	last       []byte // the last click body delivered
	lastURL    string
	changed    chan struct{}
	client     *http.Client
	hold       chan struct{} // create answers wait for it (nil = answer at once)
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	s := &Server{posts: map[string]*Message{}, byApproval: map[string]string{},
		channels: map[string]bool{ChannelID: true}, names: map[string]string{},
		changed: make(chan struct{}), client: &http.Client{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v4/posts", s.create)
	mux.HandleFunc("/api/v4/posts/", s.postByID)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	s.srv.Start()
	return s
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the site URL.
func (s *Server) URL() string { return s.srv.URL }

// Settings are clawd.yaml settings for a mattermost channel using this fake.
func (s *Server) Settings() map[string]any {
	return map[string]any{"server": s.srv.URL, "bot-token": BotToken, "channel-id": ChannelID}
}

// SetCallbackURL is the integration URL every button must carry (clawd's
// PublicURL + CallbackPath(name)); clicks go there.
func (s *Server) SetCallbackURL(u string) {
	s.mu.Lock()
	s.callback = u
	s.mu.Unlock()
}

// AddChannel makes the bot a member of another channel.
func (s *Server) AddChannel(id string) {
	s.mu.Lock()
	s.channels[id] = true
	s.mu.Unlock()
}

// SetName sets the username the server sends for a user.
func (s *Server) SetName(userID, name string) {
	s.mu.Lock()
	s.names[userID] = name
	s.mu.Unlock()
}

// NewID is a fresh Mattermost-style ID (26 characters of [a-z0-9]).
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.NewEncoding("ybndrfg8ejkmcpqxot1uwisza345h769").WithPadding(base32.NoPadding).EncodeToString(b))
}

// Violations are the shape and limit violations seen.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

func (s *Server) violate(format string, args ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

// Card is the latest version of the post that carries that approval.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.posts[s.byApproval[approvalID]]
	if !ok {
		return Message{}, false
	}
	return copyMsg(m), true
}

// Messages are all posts, in no order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.posts {
		out = append(out, copyMsg(m))
	}
	return out
}

// WaitCard waits until the approval's post satisfies cond.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		m, ok := s.posts[s.byApproval[approvalID]]
		var c Message
		if ok {
			c = copyMsg(m)
		}
		s.mu.Unlock()
		if ok && cond(c) {
			return c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return c, fmt.Errorf("card for %s: %w", approvalID, ctx.Err())
		}
	}
}

func copyMsg(m *Message) Message {
	c := *m
	c.Actions = append([]Action(nil), m.Actions...)
	return c
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// --- REST API ---

func apiError(w http.ResponseWriter, code int, id, msg string) {
	writeJSON(w, code, map[string]any{"id": id, "message": msg, "status_code": code, "request_id": NewID()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) auth(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+BotToken {
		apiError(w, 401, "api.context.session_expired.app_error", "Invalid or expired session, please login again.")
		return false
	}
	return true
}

// body reads a JSON request body, checking its content type.
func (s *Server) body(w http.ResponseWriter, r *http.Request, out any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.violate("%s %s: content type %q", r.Method, r.URL.Path, ct)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		apiError(w, 400, "api.context.invalid_body_param.app_error", "Invalid or missing post in request body.")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		s.violate("%s %s: body: %v", r.Method, r.URL.Path, err)
		apiError(w, 400, "api.context.invalid_body_param.app_error", "Invalid or missing post in request body.")
		return false
	}
	return true
}

type postIn struct {
	ChannelID string          `json:"channel_id"`
	Message   *string         `json:"message"`
	Props     json.RawMessage `json:"props"`
	RootID    string          `json:"root_id"`
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.violate("posts: method %s", r.Method)
		apiError(w, 405, "api.context.method", "method not allowed")
		return
	}
	if !s.auth(w, r) {
		return
	}
	var in postIn
	if !s.body(w, r, &in) {
		return
	}
	s.mu.Lock()
	member := s.channels[in.ChannelID]
	s.mu.Unlock()
	if !member {
		apiError(w, 403, "api.context.permissions.app_error", "You do not have the appropriate permissions.")
		return
	}
	msg := ""
	if in.Message != nil {
		msg = *in.Message
	}
	m := &Message{PostID: NewID(), ChannelID: in.ChannelID}
	if !s.apply(w, m, msg, in.Props, "create") {
		return
	}
	s.mu.Lock()
	s.posts[m.PostID] = m
	if m.ApprovalID != "" {
		s.byApproval[m.ApprovalID] = m.PostID
	}
	s.notifyLocked()
	out := clientPost(m)
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	writeJSON(w, 201, out)
}

// HoldCreates makes create calls store (and show) the post but hold their
// answer until release is called, as a slow server or network would: a
// click can then arrive before clawd knows the post's ID.
func (s *Server) HoldCreates() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = nil
			s.mu.Unlock()
			close(ch)
		})
	}
}

func (s *Server) postByID(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/api/v4/posts/")
	id, op, _ := strings.Cut(rest, "/")
	if !validID(id) || (op != "" && op != "patch") {
		s.violate("posts: unknown path %s", r.URL.Path)
		apiError(w, 404, "api.context.404.app_error", "Sorry, we could not find the page.")
		return
	}
	if !s.auth(w, r) {
		return
	}
	s.mu.Lock()
	m, ok := s.posts[id]
	s.mu.Unlock()
	if !ok {
		apiError(w, 404, "app.post.get.app_error", "Unable to get the post.")
		return
	}
	switch {
	case op == "" && r.Method == http.MethodGet:
		s.mu.Lock()
		out := clientPost(m)
		s.mu.Unlock()
		writeJSON(w, 200, out)
	case op == "patch" && r.Method == http.MethodPut:
		var in struct {
			Message *string         `json:"message"`
			Props   json.RawMessage `json:"props"`
			IsPin   *bool           `json:"is_pinned"`
		}
		if !s.body(w, r, &in) {
			return
		}
		s.mu.Lock()
		cp := copyMsg(m)
		s.mu.Unlock()
		msg := cp.Message
		if in.Message != nil {
			msg = *in.Message
		}
		props := in.Props
		if props == nil {
			props, _ = json.Marshal(cp.Props)
		}
		if !s.apply(w, &cp, msg, props, "patch") {
			return
		}
		cp.Updates++
		s.mu.Lock()
		*m = cp
		if m.ApprovalID != "" {
			s.byApproval[m.ApprovalID] = m.PostID
		}
		s.notifyLocked()
		out := clientPost(m)
		s.mu.Unlock()
		writeJSON(w, 200, out)
	default:
		s.violate("posts: %s %s", r.Method, r.URL.Path)
		apiError(w, 405, "api.context.method", "method not allowed")
	}
}

var actionID = regexp.MustCompile(`^[A-Za-z0-9]+$`)

var styles = map[string]bool{"": true, "default": true, "primary": true, "success": true, "good": true, "warning": true, "danger": true}

// apply checks message and props as the server does and stores them in m.
// what is "create", "patch" or "click".
func (s *Server) apply(w http.ResponseWriter, m *Message, msg string, rawProps json.RawMessage, what string) bool {
	if n := utf8.RuneCountInString(msg); n > MaxMessage {
		s.violate("%s: message of %d runes exceeds %d", what, n, MaxMessage)
		apiError(w, 400, "model.post.is_valid.message_length.app_error", "Message must be less than 16383 characters.")
		return false
	}
	if !utf8.ValidString(msg) {
		s.violate("%s: message is not UTF-8", what)
	}
	if utf8.RuneCount(rawProps) > MaxProps {
		s.violate("%s: props of %d runes exceed %d", what, utf8.RuneCount(rawProps), MaxProps)
		apiError(w, 400, "model.post.is_valid.props.app_error", "Invalid props.")
		return false
	}
	var props map[string]any
	if len(rawProps) > 0 && string(rawProps) != "null" {
		if err := json.Unmarshal(rawProps, &props); err != nil {
			s.violate("%s: props is not an object: %v", what, err)
			apiError(w, 400, "model.post.is_valid.props.app_error", "Invalid props.")
			return false
		}
	}
	var atts []struct {
		Fallback string `json:"fallback"`
		Color    string `json:"color"`
		Text     string `json:"text"`
		Footer   string `json:"footer"`
		Actions  []struct {
			ID          string `json:"id"`
			Name        string `json:"name"`
			Type        string `json:"type"`
			Style       string `json:"style"`
			Integration *struct {
				URL     string         `json:"url"`
				Context map[string]any `json:"context"`
			} `json:"integration"`
		} `json:"actions"`
	}
	if raw, ok := props["attachments"]; ok {
		b, _ := json.Marshal(raw)
		if err := json.Unmarshal(b, &atts); err != nil {
			s.violate("%s: attachments: %v", what, err)
		}
	}
	if msg == "" && len(atts) == 0 {
		s.violate("%s: empty post", what)
	}
	s.mu.Lock()
	callback := s.callback
	s.mu.Unlock()
	var actions []Action
	var texts []string
	seen := map[string]bool{}
	m.ApprovalID = ""
	m.Footer = ""
	for i, a := range atts {
		if a.Fallback == "" {
			s.violate("%s: attachment %d has no fallback", what, i)
		}
		texts = append(texts, a.Text)
		if i == 0 {
			m.Footer = a.Footer
		}
		if id, ok := strings.CutPrefix(a.Footer, "clawd "); ok {
			id, _, _ = strings.Cut(id, " ")
			m.ApprovalID = id
		}
		for j, ac := range a.Actions {
			where := fmt.Sprintf("%s: attachment %d action %d", what, i, j)
			if !actionID.MatchString(ac.ID) {
				s.violate("%s: id %q is not alphanumeric (clicks could not be routed)", where, ac.ID)
			}
			if seen[ac.ID] {
				s.violate("%s: duplicate id %q", where, ac.ID)
			}
			seen[ac.ID] = true
			if ac.Name == "" {
				s.violate("%s: no name", where)
			}
			if ac.Type != "button" {
				s.violate("%s: type %q, want button", where, ac.Type)
			}
			if !styles[ac.Style] {
				s.violate("%s: style %q", where, ac.Style)
			}
			if ac.Integration == nil || ac.Integration.URL == "" {
				s.violate("%s: no integration url", where)
				continue
			}
			if callback != "" && ac.Integration.URL != callback {
				s.violate("%s: integration url %q, want %q", where, ac.Integration.URL, callback)
			}
			if ac.Integration.Context == nil {
				s.violate("%s: no integration context", where)
			}
			if v, ok := ac.Integration.Context["v"].(string); ok {
				if p := strings.Split(v, ":"); len(p) == 3 {
					m.ApprovalID = p[1]
				}
			}
			actions = append(actions, Action{ID: ac.ID, Name: ac.Name, Type: ac.Type, Style: ac.Style,
				URL: ac.Integration.URL, Context: ac.Integration.Context})
		}
	}
	if strings.Contains(msg, BotToken) || strings.Contains(string(rawProps), BotToken) {
		s.violate("%s: the bot token appears in the post", what)
	}
	m.Message = msg
	m.Text = strings.Join(texts, "\n")
	m.Props = props
	m.Actions = actions
	return true
}

// clientPost is the post as the server shows it to clients (and to the
// bot): integrations stripped (Post.StripActionIntegrations).
func clientPost(m *Message) map[string]any {
	b, _ := json.Marshal(m.Props)
	var props map[string]any
	_ = json.Unmarshal(b, &props)
	if atts, ok := props["attachments"].([]any); ok {
		for _, a := range atts {
			if am, ok := a.(map[string]any); ok {
				if acts, ok := am["actions"].([]any); ok {
					for _, ac := range acts {
						if acm, ok := ac.(map[string]any); ok {
							delete(acm, "integration")
						}
					}
				}
			}
		}
	}
	return map[string]any{"id": m.PostID, "channel_id": m.ChannelID, "user_id": BotUserID,
		"message": m.Message, "props": props, "type": ""}
}

func validID(s string) bool {
	if len(s) != 26 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Package fake is a stand-in for the WhatsApp Cloud API: the Graph API
// messages endpoint (checking the bearer token, the JSON shape and every
// documented limit, and WhatsApp's 24-hour window per user), and Meta's
// webhook deliveries, signed with the app secret exactly as Meta signs them
// or forged in one chosen way.
package fake

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

// Identities and names the fake uses.
const (
	AccessToken      = "EAAfake-access-token-not-a-secret"
	AppSecret        = "fake-app-secret-not-a-secret"
	VerifyToken      = "fake-verify-token"
	PhoneNumberID    = "106540352242922"
	DisplayNumber    = "15550783881"
	APIVersion       = "v21.0"
	TemplateName     = "clawd_approval"
	TemplateLanguage = "en_US"
	// TemplateBody is the body of the fake's approved template.
	TemplateBody = "clawd asks for your approval: {{1}}\nContainer: {{2}}\nApproval ID: {{3}}"
)

// TemplateButtons are the fake template's quick-reply buttons, by index.
var TemplateButtons = []string{"Approve", "Approve 15 min", "Deny"}

// Limits the fake enforces (characters, counted in UTF-16 units).
const (
	MaxBody        = 1024
	MaxHeader      = 60
	MaxFooter      = 60
	MaxButtons     = 3
	MaxButtonID    = 256
	MaxButtonTitle = 20
	MaxText        = 4096
	MaxPayload     = 256
	// ErrReengagement is the error code for a free-form message outside the
	// 24-hour window.
	ErrReengagement = 131047
)

// Button is one button of a message: a reply button (ID, Title) or a
// template quick reply (Payload in ID, the template's Title).
type Button struct {
	ID, Title string
}

// Message is one message the fake accepted.
type Message struct {
	ID         string
	To         string
	Kind       string // "interactive", "template" or "text"
	Header     string
	Body       string // interactive body, rendered template body or text body
	Footer     string
	Buttons    []Button
	Params     []string // template body parameters
	Template   string   // template name
	Language   string
	ContextID  string // the message it replies to
	ApprovalID string // from the buttons, or the card it replies to
	Replies    []string
	seq        int
}

// Forgery is one way a webhook can be forged or spoiled.
type Forgery int

// Forgeries.
const (
	Genuine           Forgery = iota
	ForgeBadSignature         // signed with another secret
	ForgeNoSignature          // no X-Hub-Signature-256
	ForgeTampered             // signed, then the payload changed
	ForgeOtherPhone           // genuine signature, metadata.phone_number_id of another number
	ForgeStale                // genuine signature, message timestamp an hour old
	ForgeMalformed            // genuine signature over a body that is not JSON
)

// Server is the fake.
type Server struct {
	srv *httptest.Server

	mu        sync.Mutex
	changed   chan struct{}
	seq       int
	msgs      []*Message
	window    map[string]time.Time // user → window opened
	endpoint  string
	bad       []string
	last      *delivery
	lastPress string
	inbound   map[string]string // message IDs of delivered user messages → sender
}

type delivery struct {
	body []byte
	sig  string
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	s := &Server{changed: make(chan struct{}), window: map[string]time.Time{}, inbound: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.messages)
	s.srv = httptest.NewServer(mux)
	return s
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake Graph API base.
func (s *Server) URL() string { return s.srv.URL }

// Settings are clawd.yaml settings pointing at the fake.
func (s *Server) Settings() map[string]any {
	return map[string]any{
		"access-token": AccessToken, "app-secret": AppSecret, "verify-token": VerifyToken,
		"phone-number-id": PhoneNumberID, "api-base": s.srv.URL, "api-version": APIVersion,
		"template-name": TemplateName, "template-language": TemplateLanguage,
	}
}

// SetEndpoint sets the Callback URL Meta delivers webhooks to.
func (s *Server) SetEndpoint(u string) {
	s.mu.Lock()
	s.endpoint = u
	s.mu.Unlock()
}

// SetWindow opens or closes user's 24-hour window on the fake's side only
// (a message from the user, which also opens it, goes through Text).
func (s *Server) SetWindow(user string, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if open {
		s.window[user] = time.Now()
	} else {
		delete(s.window, user)
	}
}

// Violations are the shape and limit violations seen.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bad...)
}

func (s *Server) violate(format string, args ...any) {
	s.mu.Lock()
	s.bad = append(s.bad, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func cp(m *Message) Message {
	c := *m
	c.Buttons = append([]Button(nil), m.Buttons...)
	c.Params = append([]string(nil), m.Params...)
	c.Replies = append([]string(nil), m.Replies...)
	return c
}

// Messages are all accepted messages, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = cp(m)
	}
	return out
}

// To are the messages sent to user, oldest first.
func (s *Server) To(user string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		if m.To == user {
			out = append(out, m)
		}
	}
	return out
}

// Card is the latest card (interactive or template message) carrying that
// approval, with the replies clawd sent to it.
func (s *Server) Card(approvalID string) (Message, bool) {
	return s.CardFor(approvalID, "")
}

// CardFor is Card for one recipient ("" = any).
func (s *Server) CardFor(approvalID, user string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.msgs) - 1; i >= 0; i-- {
		m := s.msgs[i]
		if m.Kind != "text" && m.ApprovalID == approvalID && (user == "" || m.To == user) {
			return cp(m), true
		}
	}
	return Message{}, false
}

// WaitCard waits until Card(approvalID) satisfies cond.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if m, ok := s.Card(approvalID); ok && (cond == nil || cond(m)) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			m, _ := s.Card(approvalID)
			return m, fmt.Errorf("card for %s: %w (last: %+v)", approvalID, ctx.Err(), m)
		case <-ch:
		}
	}
}

// waitMessage waits for a message after seq that satisfies cond.
func (s *Server) waitMessage(ctx context.Context, after int, cond func(*Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		for _, m := range s.msgs {
			if m.seq > after && cond(m) {
				c := cp(m)
				s.mu.Unlock()
				return c, nil
			}
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case <-ch:
		}
	}
}

var (
	waIDRe    = regexp.MustCompile(`^[1-9][0-9]{6,14}$`)
	valueRe   = regexp.MustCompile(`^[adg]:([a-z0-9]{1,64}):[0-9a-f]{16}$`)
	versionRe = regexp.MustCompile(`^v[0-9]+\.[0-9]+$`)
)

func chars(s string) int { return len(utf16.Encode([]rune(s))) }

// graphError answers like the Graph API does.
func graphError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": "OAuthException", "code": code, "fbtrace_id": "AfakeTrace",
	}})
}

type wire struct {
	Product       *string `json:"messaging_product"`
	RecipientType string  `json:"recipient_type"`
	To            string  `json:"to"`
	Type          string  `json:"type"`
	Context       *struct {
		MessageID string `json:"message_id"`
	} `json:"context"`
	Text *struct {
		Body       string `json:"body"`
		PreviewURL *bool  `json:"preview_url"`
	} `json:"text"`
	Interactive *struct {
		Type   string `json:"type"`
		Header *struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"header"`
		Body *struct {
			Text string `json:"text"`
		} `json:"body"`
		Footer *struct {
			Text string `json:"text"`
		} `json:"footer"`
		Action *struct {
			Buttons []struct {
				Type  string `json:"type"`
				Reply *struct {
					ID    string `json:"id"`
					Title string `json:"title"`
				} `json:"reply"`
			} `json:"buttons"`
		} `json:"action"`
	} `json:"interactive"`
	Template *struct {
		Name     string `json:"name"`
		Language *struct {
			Code string `json:"code"`
		} `json:"language"`
		Components []struct {
			Type       string          `json:"type"`
			SubType    string          `json:"sub_type"`
			Index      json.RawMessage `json:"index"`
			Parameters []struct {
				Type    string `json:"type"`
				Text    string `json:"text"`
				Payload string `json:"payload"`
			} `json:"parameters"`
		} `json:"components"`
	} `json:"template"`
}

// messages is POST /{version}/{phone-number-id}/messages.
func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 3 || !versionRe.MatchString(parts[0]) || parts[2] != "messages" {
		s.violate("request to %s %s", r.Method, r.URL.Path)
		graphError(w, http.StatusBadRequest, 100, "Unknown path components")
		return
	}
	if parts[1] != PhoneNumberID {
		s.violate("phone number id %q", parts[1])
		graphError(w, http.StatusBadRequest, 100, "Unsupported post request. Object does not exist")
		return
	}
	if r.Method != http.MethodPost {
		s.violate("method %s", r.Method)
		graphError(w, http.StatusBadRequest, 100, "Unsupported request method")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+AccessToken {
		s.violate("missing or wrong bearer token")
		graphError(w, http.StatusUnauthorized, 190, "Invalid OAuth access token - Cannot parse access token")
		return
	}
	if r.URL.RawQuery != "" {
		s.violate("query string on messages (tokens belong in the header)")
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.violate("content type %q", r.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		graphError(w, http.StatusBadRequest, 100, "read error")
		return
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	var in wire
	if err := dec.Decode(&in); err != nil {
		s.violate("body: %v", err)
		graphError(w, http.StatusBadRequest, 100, "Invalid parameter")
		return
	}
	m, problems := s.check(&in)
	if len(problems) > 0 {
		for _, p := range problems {
			s.violate("%s message to %s: %s", in.Type, in.To, p)
		}
		graphError(w, http.StatusBadRequest, 131009, "Parameter value is not valid: "+problems[0])
		return
	}
	s.mu.Lock()
	_, open := s.window[m.To]
	if m.Kind != "template" && !open {
		s.mu.Unlock()
		graphError(w, http.StatusBadRequest, ErrReengagement, "Re-engagement message")
		return
	}
	s.seq++
	m.seq = s.seq
	b := make([]byte, 18)
	rand.Read(b)
	m.ID = "wamid." + base64.StdEncoding.EncodeToString(b)
	if m.ContextID != "" {
		for _, o := range s.msgs {
			if o.ID == m.ContextID {
				if m.ApprovalID == "" {
					m.ApprovalID = o.ApprovalID
				}
				o.Replies = append(o.Replies, m.Body)
			}
		}
	}
	s.msgs = append(s.msgs, m)
	s.notify()
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	answer := map[string]any{"id": m.ID}
	if m.Kind == "template" {
		answer["message_status"] = "accepted"
	}
	json.NewEncoder(w).Encode(map[string]any{
		"messaging_product": "whatsapp",
		"contacts":          []any{map[string]any{"input": m.To, "wa_id": m.To}},
		"messages":          []any{answer},
	})
}

// check validates one message against the Cloud API's documented shape.
func (s *Server) check(in *wire) (*Message, []string) {
	var bad []string
	fail := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	if in.Product == nil || *in.Product != "whatsapp" {
		fail("messaging_product must be \"whatsapp\"")
	}
	if in.RecipientType != "" && in.RecipientType != "individual" {
		fail("recipient_type %q", in.RecipientType)
	}
	if !waIDRe.MatchString(in.To) {
		fail("to %q is not a phone number", in.To)
	}
	m := &Message{To: in.To, Kind: in.Type}
	if in.Context != nil {
		if in.Context.MessageID == "" {
			fail("context without message_id")
		}
		m.ContextID = in.Context.MessageID
		s.mu.Lock()
		found := false
		for _, o := range s.msgs {
			found = found || o.ID == m.ContextID && o.To == in.To
		}
		found = found || s.inbound[m.ContextID] == in.To
		s.mu.Unlock()
		if !found {
			fail("context.message_id %q is not a message in this chat", m.ContextID)
		}
	}
	setApproval := func(v string) {
		if mm := valueRe.FindStringSubmatch(v); mm != nil {
			if m.ApprovalID != "" && m.ApprovalID != mm[1] {
				fail("buttons of different approvals")
			}
			m.ApprovalID = mm[1]
		}
	}
	switch in.Type {
	case "text":
		if in.Text == nil || in.Interactive != nil || in.Template != nil {
			fail("type text needs exactly the text object")
			break
		}
		m.Body = in.Text.Body
		if strings.TrimSpace(m.Body) == "" || chars(m.Body) > MaxText {
			fail("text.body of %d characters (1-%d)", chars(m.Body), MaxText)
		}
	case "interactive":
		it := in.Interactive
		if it == nil || in.Text != nil || in.Template != nil {
			fail("type interactive needs exactly the interactive object")
			break
		}
		if it.Type != "button" {
			fail("interactive.type %q (want button)", it.Type)
		}
		if it.Body == nil || strings.TrimSpace(it.Body.Text) == "" || chars(it.Body.Text) > MaxBody {
			n := 0
			if it.Body != nil {
				n = chars(it.Body.Text)
			}
			fail("interactive.body.text of %d characters (1-%d)", n, MaxBody)
		} else {
			m.Body = it.Body.Text
		}
		if h := it.Header; h != nil {
			if h.Type != "text" || h.Text == "" || chars(h.Text) > MaxHeader {
				fail("header: type %q, text of %d characters (text, 1-%d)", h.Type, chars(h.Text), MaxHeader)
			}
			m.Header = h.Text
		}
		if f := it.Footer; f != nil {
			if f.Text == "" || chars(f.Text) > MaxFooter {
				fail("footer text of %d characters (1-%d)", chars(f.Text), MaxFooter)
			}
			m.Footer = f.Text
		}
		if it.Action == nil || len(it.Action.Buttons) == 0 || len(it.Action.Buttons) > MaxButtons {
			fail("interactive.action.buttons: 1-%d required", MaxButtons)
			break
		}
		ids, titles := map[string]bool{}, map[string]bool{}
		for i, b := range it.Action.Buttons {
			if b.Type != "reply" || b.Reply == nil {
				fail("button %d: type %q without reply", i, b.Type)
				continue
			}
			if b.Reply.ID == "" || chars(b.Reply.ID) > MaxButtonID {
				fail("button %d: reply.id of %d characters (1-%d)", i, chars(b.Reply.ID), MaxButtonID)
			}
			if b.Reply.Title == "" || chars(b.Reply.Title) > MaxButtonTitle {
				fail("button %d: reply.title %q is over %d characters", i, b.Reply.Title, MaxButtonTitle)
			}
			if ids[b.Reply.ID] || titles[b.Reply.Title] {
				fail("button %d: duplicate id or title", i)
			}
			ids[b.Reply.ID], titles[b.Reply.Title] = true, true
			m.Buttons = append(m.Buttons, Button{ID: b.Reply.ID, Title: b.Reply.Title})
			setApproval(b.Reply.ID)
		}
	case "template":
		t := in.Template
		if t == nil || in.Text != nil || in.Interactive != nil {
			fail("type template needs exactly the template object")
			break
		}
		if t.Name != TemplateName {
			fail("template name %q does not exist (132001)", t.Name)
		}
		if t.Language == nil || t.Language.Code != TemplateLanguage {
			fail("template %s has no translation for that language (132001)", t.Name)
		}
		m.Template, m.Language = t.Name, TemplateLanguage
		m.Buttons = make([]Button, len(TemplateButtons))
		bodies := 0
		for _, c := range t.Components {
			switch c.Type {
			case "body":
				bodies++
				if len(c.Parameters) != 3 {
					fail("body: %d parameters, the template has 3 (132000)", len(c.Parameters))
				}
				for i, p := range c.Parameters {
					if p.Type != "text" || strings.TrimSpace(p.Text) == "" {
						fail("body parameter %d: type %q, empty text", i+1, p.Type)
					}
					if strings.ContainsAny(p.Text, "\n\t") || strings.Contains(p.Text, "     ") {
						fail("body parameter %d: newlines, tabs or more than 4 consecutive spaces (132018)", i+1)
					}
					m.Params = append(m.Params, p.Text)
				}
			case "button":
				var idx string
				if json.Unmarshal(c.Index, &idx) != nil {
					fail("button index must be a string like \"0\"")
				}
				n := -1
				fmt.Sscanf(idx, "%d", &n)
				if c.SubType != "quick_reply" || n < 0 || n >= len(TemplateButtons) || fmt.Sprint(n) != idx {
					fail("button component: sub_type %q index %q (quick_reply 0-%d)", c.SubType, idx, len(TemplateButtons)-1)
					continue
				}
				if len(c.Parameters) != 1 || c.Parameters[0].Type != "payload" || c.Parameters[0].Payload == "" || chars(c.Parameters[0].Payload) > MaxPayload {
					fail("button %d: want one payload parameter of 1-%d characters", n, MaxPayload)
					continue
				}
				if m.Buttons[n].ID != "" {
					fail("button %d given twice", n)
				}
				m.Buttons[n] = Button{ID: c.Parameters[0].Payload, Title: TemplateButtons[n]}
				setApproval(c.Parameters[0].Payload)
			default:
				fail("component type %q (the template has body and buttons)", c.Type)
			}
		}
		if bodies != 1 {
			fail("template needs its one body component")
		}
		body := TemplateBody
		for i, p := range m.Params {
			body = strings.ReplaceAll(body, fmt.Sprintf("{{%d}}", i+1), p)
		}
		if chars(body) > MaxBody {
			fail("rendered template body of %d characters (max %d)", chars(body), MaxBody)
		}
		m.Body = body
	default:
		fail("type %q", in.Type)
	}
	return m, bad
}

// --- webhooks ---

// Text delivers a text message from user (which opens their window) and
// returns clawd's HTTP status.
func (s *Server) Text(ctx context.Context, user, text string) (int, error) {
	s.SetWindow(user, true)
	msg := map[string]any{"from": user, "id": newWamid(), "timestamp": fmt.Sprint(time.Now().Unix()),
		"type": "text", "text": map[string]any{"body": text}}
	return s.deliver(ctx, s.event(user, msg, PhoneNumberID), Genuine)
}

// Click presses the button with that Act ("a", "g", "d") on the latest card
// for the approval sent to userID, as Meta delivers it (an interactive
// button_reply for a reply-button card, a "button" message for a template
// quick reply), signed with the app secret; it returns the text clawd
// answers the press with (a reply to the press).
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	s.mu.Lock()
	after := s.seq
	s.mu.Unlock()
	status, id, err := s.press(ctx, approvalID, act, userID, Genuine)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("click: clawd answered HTTP %d", status)
	}
	m, err := s.waitMessage(ctx, after, func(m *Message) bool {
		return m.Kind == "text" && m.To == userID && m.ContextID == id
	})
	if err != nil {
		return "", fmt.Errorf("click: no answer to the press: %w", err)
	}
	return m.Body, nil
}

// Forge delivers a press like Click, forged or spoiled as f says, and
// returns clawd's HTTP status.
func (s *Server) Forge(ctx context.Context, approvalID, act, userID string, f Forgery) (int, error) {
	st, _, err := s.press(ctx, approvalID, act, userID, f)
	return st, err
}

// LastPress is the message ID of the last press delivered.
func (s *Server) LastPress() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPress
}

func (s *Server) press(ctx context.Context, approvalID, act, userID string, f Forgery) (int, string, error) {
	card, ok := s.CardFor(approvalID, userID)
	if !ok {
		return 0, "", fmt.Errorf("no card for %s sent to %s", approvalID, userID)
	}
	var b *Button
	for i := range card.Buttons {
		if strings.HasPrefix(card.Buttons[i].ID, act+":") {
			b = &card.Buttons[i]
		}
	}
	if b == nil {
		return 0, "", fmt.Errorf("card for %s has no %q button", approvalID, act)
	}
	s.SetWindow(userID, true) // a press is a message from the user
	ts := time.Now()
	if f == ForgeStale {
		ts = ts.Add(-time.Hour)
	}
	id := newWamid()
	s.mu.Lock()
	s.lastPress = id
	s.mu.Unlock()
	msg := map[string]any{"from": userID, "id": id, "timestamp": fmt.Sprint(ts.Unix()),
		"context": map[string]any{"from": DisplayNumber, "id": card.ID}}
	if card.Kind == "template" {
		msg["type"] = "button"
		msg["button"] = map[string]any{"payload": b.ID, "text": b.Title}
	} else {
		msg["type"] = "interactive"
		msg["interactive"] = map[string]any{"type": "button_reply", "button_reply": map[string]any{"id": b.ID, "title": b.Title}}
	}
	phone := PhoneNumberID
	if f == ForgeOtherPhone {
		phone = "999999999999999"
	}
	st, err := s.deliver(ctx, s.event(userID, msg, phone), f)
	return st, id, err
}

// Deliver POSTs raw as a genuine signed webhook and returns the status.
func (s *Server) Deliver(ctx context.Context, raw []byte) (int, error) {
	return s.deliver(ctx, raw, Genuine)
}

// Replay POSTs the last genuine delivery again, byte for byte with its
// signature.
func (s *Server) Replay(ctx context.Context) (int, error) {
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	if last == nil {
		return 0, fmt.Errorf("replay: nothing delivered yet")
	}
	return s.post(ctx, last.body, last.sig)
}

func (s *Server) event(user string, msg map[string]any, phone string) []byte {
	ev := map[string]any{"object": "whatsapp_business_account", "entry": []any{map[string]any{
		"id": "102290129340398",
		"changes": []any{map[string]any{"field": "messages", "value": map[string]any{
			"messaging_product": "whatsapp",
			"metadata":          map[string]any{"display_phone_number": DisplayNumber, "phone_number_id": phone},
			"contacts":          []any{map[string]any{"profile": map[string]any{"name": "User " + user}, "wa_id": user}},
			"messages":          []any{msg},
		}}},
	}}}
	b, _ := json.Marshal(ev)
	return b
}

// Sign is Meta's X-Hub-Signature-256 value for body.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (s *Server) deliver(ctx context.Context, body []byte, f Forgery) (int, error) {
	s.noteInbound(body)
	if f == ForgeMalformed {
		body = append([]byte("{not json "), body...)
	}
	sig := Sign(AppSecret, body)
	switch f {
	case ForgeBadSignature:
		sig = Sign("some-other-secret", body)
	case ForgeNoSignature:
		sig = ""
	case ForgeTampered:
		body = []byte(strings.Replace(string(body), `"User `, `"Mallory `, 1))
	}
	if f == Genuine {
		s.mu.Lock()
		s.last = &delivery{body: body, sig: sig}
		s.mu.Unlock()
	}
	return s.post(ctx, body, sig)
}

func (s *Server) post(ctx context.Context, body []byte, sig string) (int, error) {
	s.mu.Lock()
	ep := s.endpoint
	s.mu.Unlock()
	if ep == "" {
		return 0, fmt.Errorf("no endpoint: call SetEndpoint")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep, strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "facebookexternalua")
	if sig != "" {
		req.Header.Set("X-Hub-Signature-256", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// Verify does Meta's verification handshake with the right verify token
// and checks that clawd echoes the challenge.
func (s *Server) Verify(ctx context.Context) error {
	status, body, err := s.Handshake(ctx, "subscribe", VerifyToken, "1158201444")
	if err != nil {
		return err
	}
	if status != http.StatusOK || body != "1158201444" {
		return fmt.Errorf("verification: HTTP %d, body %q", status, body)
	}
	return nil
}

// Handshake sends the GET verification request with those values and
// returns clawd's status and body.
func (s *Server) Handshake(ctx context.Context, mode, token, challenge string) (int, string, error) {
	s.mu.Lock()
	ep := s.endpoint
	s.mu.Unlock()
	q := url.Values{"hub.mode": {mode}, "hub.verify_token": {token}, "hub.challenge": {challenge}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep+"?"+q.Encode(), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}

// noteInbound remembers the user messages in a delivery: clawd may reply
// to them.
func (s *Server) noteInbound(body []byte) {
	var ev struct {
		Entry []struct {
			Changes []struct {
				Value struct {
					Messages []struct{ From, ID string } `json:"messages"`
				} `json:"value"`
			} `json:"changes"`
		} `json:"entry"`
	}
	if json.Unmarshal(body, &ev) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range ev.Entry {
		for _, c := range e.Changes {
			for _, m := range c.Value.Messages {
				s.inbound[m.ID] = m.From
			}
		}
	}
}

func newWamid() string {
	b := make([]byte, 24)
	rand.Read(b)
	return "wamid." + base64.StdEncoding.EncodeToString(b)
}

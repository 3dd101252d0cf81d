// Package fake is a stand-in for the Webex REST API as a bot sees it:
// messages (post, edit, delete, get), attachment actions, people and
// webhooks, checking the bot token and every payload against Webex's
// documented shapes and limits. It clicks card buttons the way Webex does:
// it records an attachment action on the card and POSTs the webhook
// notification, signed with X-Spark-Signature, to clawd — or forged in one
// chosen way.
package fake

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// id makes a Webex-style id: base64 of a ciscospark:// URI.
func id(kind, name string) string {
	return base64.RawStdEncoding.EncodeToString([]byte("ciscospark://us/" + kind + "/" + name))
}

// Identities and limits of the fake.
var (
	BotToken      = "fake-webex-bot-token-not-a-secret"
	WebhookSecret = "fake-webex-webhook-secret-0123"
	RoomID        = id("ROOM", "clawd-approvals")
	OtherRoomID   = id("ROOM", "other-space") // the bot is a member too
	BotID         = id("PEOPLE", "clawd-bot")
	Alice         = id("PEOPLE", "alice")
	Bob           = id("PEOPLE", "bob")
	OrgID         = id("ORGANIZATION", "acme")
	AppID         = id("APPLICATION", "clawd")
)

// Webex limits.
const (
	MaxText    = 7439      // bytes of text, markdown or html
	MaxCard    = 22 * 1024 // bytes of card JSON
	MaxEdits   = 10        // edits per message
	MaxActions = 5         // buttons per card
)

// Message is one message as the room shows it now.
type Message struct {
	ID, RoomID, ParentID, PersonID string
	Markdown                       string
	Card                           map[string]any // the Adaptive Card, nil if none
	Text                           string         // the card's TextBlocks and facts, one per line
	Actions                        []Action
	Mentions                       []string // person ids mentioned in the markdown
	ApprovalID                     string
	Edits                          int
	Deleted                        bool
	// Filled in by Card and WaitCard: the thread's head as shown, and the
	// text of the bot's other replies in the thread, as shown.
	Head    string
	Replies []string
	seq     int
	created time.Time
}

// Action is one button of a card.
type Action struct {
	Type, Title, Value, Style string
}

// Webhook is a registered webhook.
type Webhook struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	TargetURL string `json:"targetUrl"`
	Resource  string `json:"resource"`
	Event     string `json:"event"`
	Filter    string `json:"filter,omitempty"`
	Secret    string `json:"secret,omitempty"`
	Status    string `json:"status"`
	Created   string `json:"created"`
	OrgID     string `json:"orgId"`
	CreatedBy string `json:"createdBy"`
	AppID     string `json:"appId"`
	OwnedBy   string `json:"ownedBy"`
}

type action struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	MessageID string         `json:"messageId"`
	Inputs    map[string]any `json:"inputs"`
	PersonID  string         `json:"personId"`
	RoomID    string         `json:"roomId"`
	Created   string         `json:"created"`
}

// Server is the fake.
type Server struct {
	srv *httptest.Server
	now func() time.Time

	mu         sync.Mutex
	msgs       map[string]*Message
	actions    map[string]*action
	hooks      map[string]*Webhook
	people     map[string]string // id -> display name
	seq        int
	violations []string
	endpoint   string
	last       *captured
	changed    chan struct{}
	hookCalls  int
	hookFail   int // webhook calls still to fail with 503
}

type captured struct {
	body []byte
	sig  string
	url  string
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	s := &Server{now: time.Now, msgs: map[string]*Message{}, actions: map[string]*action{},
		hooks: map[string]*Webhook{}, changed: make(chan struct{}),
		people: map[string]string{BotID: "clawd", Alice: "Alice Example", Bob: "Bob Example"}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(s.serve)}}
	s.srv.Start()
	return s
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake's API base.
func (s *Server) URL() string { return s.srv.URL }

// Settings are clawd.yaml settings for a webex channel using this fake
// (webhook registered by the operator: see SetEndpoint).
func (s *Server) Settings() map[string]any {
	return map[string]any{
		"bot-token":      BotToken,
		"webhook-secret": WebhookSecret,
		"room-id":        RoomID,
		"api-base":       s.srv.URL,
	}
}

// SetEndpoint sets where clicks are POSTed when no webhook is registered
// (the operator registered it by hand with WebhookSecret).
func (s *Server) SetEndpoint(u string) {
	s.mu.Lock()
	s.endpoint = u
	s.mu.Unlock()
}

// SetPerson gives a person a display name (GET /v1/people/{id}).
func (s *Server) SetPerson(id, name string) {
	s.mu.Lock()
	s.people[id] = name
	s.mu.Unlock()
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

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Card is the latest card message (not deleted) carrying that approval,
// with its thread's head and the bot's other replies in the thread.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cardLocked(approvalID)
}

func (s *Server) cardLocked(approvalID string) (Message, bool) {
	var best *Message
	for _, m := range s.msgs {
		if m.Card != nil && !m.Deleted && m.ApprovalID == approvalID && (best == nil || m.seq > best.seq) {
			best = m
		}
	}
	if best == nil {
		return Message{}, false
	}
	c := copyMsg(best)
	if h, ok := s.msgs[best.ParentID]; ok {
		c.Head = s.render(h.Markdown)
	}
	if best.ParentID != "" {
		c.Replies = s.threadLocked(best.ParentID)
	}
	return c, true
}

func copyMsg(m *Message) Message {
	c := *m
	c.Actions = append([]Action(nil), m.Actions...)
	c.Mentions = append([]string(nil), m.Mentions...)
	c.Replies = nil
	return c
}

// Messages are all messages ever posted (deleted ones marked), in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.msgs {
		out = append(out, copyMsg(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// WaitCard waits until the approval's card satisfies cond.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		m, ok := s.cardLocked(approvalID)
		s.mu.Unlock()
		if ok && cond(m) {
			return m, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return m, fmt.Errorf("card for %s: %w", approvalID, ctx.Err())
		}
	}
}

// Webhooks are the registered webhooks.
func (s *Server) Webhooks() []Webhook {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhooksLocked()
}

func (s *Server) webhooksLocked() []Webhook {
	var out []Webhook
	for _, h := range s.hooks {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Created < out[j].Created || out[i].Created == out[j].Created && out[i].ID < out[j].ID
	})
	return out
}

// WaitWebhooks waits until the registered webhooks satisfy cond.
func (s *Server) WaitWebhooks(ctx context.Context, cond func([]Webhook) bool) ([]Webhook, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		hs := s.webhooksLocked()
		s.mu.Unlock()
		if cond(hs) {
			return hs, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return hs, fmt.Errorf("webhooks: %w", ctx.Err())
		}
	}
}

// AddWebhook registers a webhook directly (as an operator, or a stale
// one from an earlier set-up) and returns its id.
func (s *Server) AddWebhook(h Webhook) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	h.ID = id("WEBHOOK", fmt.Sprintf("w%d", s.seq))
	h.Created = s.now().UTC().Add(time.Duration(s.seq) * time.Millisecond).Format(time.RFC3339Nano)
	if h.Status == "" {
		h.Status = "active"
	}
	h.OrgID, h.CreatedBy, h.AppID, h.OwnedBy = OrgID, BotID, AppID, "creator"
	s.hooks[h.ID] = &h
	s.notify()
	return h.ID
}

// FailWebhooks makes the next n webhook API calls answer 503.
func (s *Server) FailWebhooks(n int) {
	s.mu.Lock()
	s.hookFail = n
	s.mu.Unlock()
}

// WebhookCalls counts the webhook API requests clawd made.
func (s *Server) WebhookCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hookCalls
}

// --- the API ---

var mentionRe = regexp.MustCompile(`<@(personId|personEmail|groupMention):([^>|]*)(\|[^>]*)?>|<@all>`)

// render is what a reader sees of Webex markdown: mentions as @Name,
// backslash escapes resolved.
func (s *Server) render(md string) string {
	md = mentionRe.ReplaceAllStringFunc(md, func(m string) string {
		sub := mentionRe.FindStringSubmatch(m)
		if sub[1] == "personId" {
			if n, ok := s.people[sub[2]]; ok {
				return "@" + n
			}
		}
		return "@" + sub[2]
	})
	return Unescape(md)
}

// Unescape resolves markdown backslash escapes.
func Unescape(s string) string {
	var b strings.Builder
	esc := false
	for _, r := range s {
		if r == '\\' && !esc {
			esc = true
			continue
		}
		esc = false
		b.WriteRune(r)
	}
	return b.String()
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok != BotToken {
		apiError(w, 401, "The request requires a valid access token set in the Authorization request header.")
		return
	}
	seg := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/v1/"), "/")
	for i, p := range seg {
		seg[i], _ = url.PathUnescape(p)
	}
	var body map[string]any
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			s.violate("%s %s: content type %q", r.Method, r.URL.Path, ct)
		}
		raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := json.Unmarshal(raw, &body); err != nil {
			s.violate("%s %s: body is not a JSON object: %v", r.Method, r.URL.Path, err)
			apiError(w, 400, "Unable to parse the request body.")
			return
		}
	}
	switch {
	case len(seg) == 1 && seg[0] == "messages" && r.Method == http.MethodPost:
		s.postMessage(w, body)
	case len(seg) == 2 && seg[0] == "messages" && r.Method == http.MethodPut:
		s.editMessage(w, seg[1], body)
	case len(seg) == 2 && seg[0] == "messages" && r.Method == http.MethodDelete:
		s.deleteMessage(w, seg[1])
	case len(seg) == 2 && seg[0] == "messages" && r.Method == http.MethodGet:
		s.getMessage(w, seg[1])
	case len(seg) == 3 && seg[0] == "attachment" && seg[1] == "actions" && r.Method == http.MethodGet:
		s.getAction(w, seg[2])
	case len(seg) == 2 && seg[0] == "people" && r.Method == http.MethodGet:
		s.getPerson(w, seg[1])
	case seg[0] == "webhooks":
		s.webhooks(w, r, seg, body)
	default:
		s.violate("unknown endpoint %s %s", r.Method, r.URL.Path)
		apiError(w, 404, "The requested resource could not be found.")
	}
}

func allowedKeys(_ string, body map[string]any, keys ...string) []string {
	var bad []string
	for k := range body {
		found := false
		for _, a := range keys {
			found = found || k == a
		}
		if !found {
			bad = append(bad, k)
		}
	}
	sort.Strings(bad)
	return bad
}

func str(body map[string]any, k string) (string, bool) {
	v, ok := body[k]
	if !ok {
		return "", false
	}
	sv, isStr := v.(string)
	return sv, isStr
}

// checkText checks text/markdown/html against Webex's rules and returns
// the markdown (or text) and the mentions.
func (s *Server) checkText(what string, body map[string]any) (string, []string, bool) {
	text, _ := str(body, "text")
	md, _ := str(body, "markdown")
	html, hasHTML := str(body, "html")
	for k, v := range map[string]string{"text": text, "markdown": md, "html": html} {
		if len(v) > MaxText {
			s.violate("%s: %s of %d bytes exceeds %d", what, k, len(v), MaxText)
			return "", nil, false
		}
	}
	if hasHTML && md != "" {
		s.violate("%s: markdown and html together", what)
		return "", nil, false
	}
	shown := md
	if shown == "" {
		shown = text
	}
	var people []string
	for _, m := range mentionRe.FindAllStringSubmatch(shown, -1) {
		if m[1] == "personId" {
			if m[2] == "" {
				s.violate("%s: empty personId mention", what)
				return "", nil, false
			}
			people = append(people, m[2])
		}
	}
	if strings.Contains(mentionRe.ReplaceAllString(shown, ""), "<@") {
		s.violate("%s: malformed mention in %q", what, shown)
	}
	return shown, people, true
}

func (s *Server) knownRoom(room string) bool { return room == RoomID || room == OtherRoomID }

func (s *Server) postMessage(w http.ResponseWriter, body map[string]any) {
	if bad := allowedKeys("post", body, "roomId", "parentId", "toPersonId", "toPersonEmail", "text", "markdown", "html", "files", "attachments"); len(bad) > 0 {
		s.violate("post message: unknown fields %v", bad)
	}
	room, _ := str(body, "roomId")
	if !s.knownRoom(room) {
		s.violate("post message: roomId %q is not a room the bot is in", room)
		apiError(w, 404, "Could not find a room with provided ID.")
		return
	}
	shown, people, ok := s.checkText("post message", body)
	if !ok {
		apiError(w, 400, "Message is too long or malformed.")
		return
	}
	m := &Message{RoomID: room, PersonID: BotID, Markdown: shown, Mentions: people}
	if atts, ok := body["attachments"]; ok {
		list, _ := atts.([]any)
		if len(list) != 1 {
			s.violate("post message: %d attachments; Webex takes exactly one card", len(list))
			apiError(w, 400, "Only one attachment is allowed.")
			return
		}
		att, _ := list[0].(map[string]any)
		if att["contentType"] != "application/vnd.microsoft.card.adaptive" {
			s.violate("post message: attachment contentType %v", att["contentType"])
			apiError(w, 400, "Unsupported attachment contentType.")
			return
		}
		card, ok := att["content"].(map[string]any)
		if !ok {
			s.violate("post message: attachment content is not an object")
			apiError(w, 400, "Attachment content must be an object.")
			return
		}
		if raw, _ := json.Marshal(card); len(raw) > MaxCard {
			s.violate("post message: card of %d bytes exceeds %d", len(raw), MaxCard)
			apiError(w, 400, "Attachment is too large.")
			return
		}
		if !s.checkCard(card, m) {
			apiError(w, 400, "Invalid card.")
			return
		}
		if shown == "" {
			s.violate("post message: a card needs text or markdown for clients that cannot show cards")
		}
	} else if shown == "" {
		s.violate("post message: no text, markdown or attachment")
		apiError(w, 400, "Message must have text, markdown or an attachment.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if parent, ok := str(body, "parentId"); ok {
		p, found := s.msgs[parent]
		switch {
		case !found || p.Deleted || p.RoomID != room:
			s.violations = append(s.violations, fmt.Sprintf("post message: parentId %q is not a message in the room", parent))
			apiError(w, 404, "Parent message not found.")
			return
		case p.ParentID != "":
			s.violations = append(s.violations, "post message: a reply to a reply (threads are one level)")
			apiError(w, 400, "Cannot reply to a reply.")
			return
		}
		m.ParentID = parent
	}
	s.seq++
	m.seq = s.seq
	m.ID = id("MESSAGE", fmt.Sprintf("m%04d-%s", s.seq, randHex(4)))
	m.created = s.now()
	s.msgs[m.ID] = m
	s.notify()
	writeJSON(w, 200, s.messageJSON(m))
}

func (s *Server) messageJSON(m *Message) map[string]any {
	out := map[string]any{"id": m.ID, "roomId": m.RoomID, "roomType": "group", "markdown": m.Markdown,
		"text": Unescape(m.Markdown), "personId": m.PersonID, "personEmail": "clawd@webex.bot",
		"created": m.created.UTC().Format(time.RFC3339Nano)}
	if m.ParentID != "" {
		out["parentId"] = m.ParentID
	}
	if m.Card != nil {
		out["attachments"] = []any{map[string]any{"contentType": "application/vnd.microsoft.card.adaptive", "content": m.Card}}
	}
	if len(m.Mentions) > 0 {
		out["mentionedPeople"] = m.Mentions
	}
	if m.Edits > 0 {
		out["updated"] = s.now().UTC().Format(time.RFC3339Nano)
	}
	return out
}

func (s *Server) editMessage(w http.ResponseWriter, msgID string, body map[string]any) {
	if bad := allowedKeys("edit", body, "roomId", "text", "markdown", "html"); len(bad) > 0 {
		s.violate("edit message: unknown fields %v", bad)
	}
	shown, people, ok := s.checkText("edit message", body)
	if !ok {
		apiError(w, 400, "Message is too long or malformed.")
		return
	}
	if shown == "" {
		s.violate("edit message: text or markdown is required")
		apiError(w, 400, "text or markdown is required.")
		return
	}
	room, _ := str(body, "roomId")
	s.mu.Lock()
	defer s.mu.Unlock()
	m, found := s.msgs[msgID]
	switch {
	case !found || m.Deleted:
		s.violations = append(s.violations, "edit message: no such message")
		apiError(w, 404, "Message not found.")
	case room != m.RoomID:
		s.violations = append(s.violations, "edit message: roomId is missing or not the message's room")
		apiError(w, 400, "roomId is required and must be the message's room.")
	case m.Card != nil:
		s.violations = append(s.violations, "edit message: Webex does not edit messages with attachments")
		apiError(w, 400, "Editing a message with files or attachments is currently unsupported.")
	case m.Edits >= MaxEdits:
		s.violations = append(s.violations, fmt.Sprintf("edit message: more than %d edits", MaxEdits))
		apiError(w, 400, "The edit limit for this message has been reached.")
	default:
		m.Markdown, m.Mentions = shown, people
		m.Edits++
		s.notify()
		writeJSON(w, 200, s.messageJSON(m))
	}
}

func (s *Server) deleteMessage(w http.ResponseWriter, msgID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, found := s.msgs[msgID]
	if !found || m.Deleted {
		apiError(w, 404, "Message not found.")
		return
	}
	m.Deleted = true
	s.notify()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getMessage(w http.ResponseWriter, msgID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, found := s.msgs[msgID]
	if !found || m.Deleted {
		apiError(w, 404, "Message not found.")
		return
	}
	writeJSON(w, 200, s.messageJSON(m))
}

func (s *Server) getAction(w http.ResponseWriter, actionID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, found := s.actions[actionID]
	if !found {
		apiError(w, 404, "Attachment action not found.")
		return
	}
	writeJSON(w, 200, a)
}

func (s *Server) getPerson(w http.ResponseWriter, pid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pid == "me" {
		pid = BotID
	}
	name, found := s.people[pid]
	if !found {
		apiError(w, 404, "Person not found.")
		return
	}
	writeJSON(w, 200, map[string]any{"id": pid, "displayName": name, "type": "person", "orgId": OrgID,
		"emails": []string{strings.ToLower(strings.Fields(name)[0]) + "@example.com"}})
}

var (
	resources = map[string]bool{"messages": true, "memberships": true, "rooms": true, "attachmentActions": true,
		"meetings": true, "recordings": true, "meetingParticipants": true, "meetingTranscripts": true}
	events = map[string]bool{"created": true, "updated": true, "deleted": true, "started": true, "ended": true, "joined": true, "left": true, "all": true}
)

func (s *Server) webhooks(w http.ResponseWriter, r *http.Request, seg []string, body map[string]any) {
	s.mu.Lock()
	s.hookCalls++
	fail := s.hookFail > 0
	if fail {
		s.hookFail--
	}
	s.mu.Unlock()
	if fail {
		apiError(w, 503, "Service Unavailable.")
		return
	}
	checkURL := func(what string) (string, bool) {
		t, _ := str(body, "targetUrl")
		u, err := url.Parse(t)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(t) > 2048 {
			s.violate("%s: targetUrl %q is not an http(s) URL", what, t)
			return "", false
		}
		return t, true
	}
	checkName := func(what string) (string, bool) {
		n, _ := str(body, "name")
		if n == "" || len(n) > 128 {
			s.violate("%s: name is required (at most 128 characters)", what)
			return "", false
		}
		return n, true
	}
	switch {
	case len(seg) == 1 && r.Method == http.MethodGet:
		s.mu.Lock()
		items := s.webhooksLocked()
		s.mu.Unlock()
		for i := range items {
			items[i].Secret = "" // not listed back
		}
		if items == nil {
			items = []Webhook{}
		}
		writeJSON(w, 200, map[string]any{"items": items})
	case len(seg) == 1 && r.Method == http.MethodPost:
		if bad := allowedKeys("webhook", body, "name", "targetUrl", "resource", "event", "filter", "secret", "ownedBy"); len(bad) > 0 {
			s.violate("create webhook: unknown fields %v", bad)
		}
		name, ok1 := checkName("create webhook")
		target, ok2 := checkURL("create webhook")
		res, _ := str(body, "resource")
		ev, _ := str(body, "event")
		if !resources[res] || !events[ev] {
			s.violate("create webhook: resource %q / event %q", res, ev)
			ok2 = false
		}
		if !ok1 || !ok2 {
			apiError(w, 400, "Invalid webhook.")
			return
		}
		secret, _ := str(body, "secret")
		filter, _ := str(body, "filter")
		hid := s.AddWebhook(Webhook{Name: name, TargetURL: target, Resource: res, Event: ev, Secret: secret, Filter: filter})
		s.mu.Lock()
		out := *s.hooks[hid]
		s.mu.Unlock()
		out.Secret = ""
		writeJSON(w, 200, out)
	case len(seg) == 2 && r.Method == http.MethodPut:
		if bad := allowedKeys("webhook", body, "name", "targetUrl", "secret", "ownedBy", "status"); len(bad) > 0 {
			s.violate("update webhook: unknown fields %v (resource and event cannot be changed)", bad)
		}
		name, ok1 := checkName("update webhook")
		target, ok2 := checkURL("update webhook")
		status, hasStatus := str(body, "status")
		if hasStatus && status != "active" && status != "inactive" {
			s.violate("update webhook: status %q", status)
			ok2 = false
		}
		if !ok1 || !ok2 {
			apiError(w, 400, "Invalid webhook.")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		h, found := s.hooks[seg[1]]
		if !found {
			s.violations = append(s.violations, "update webhook: no such webhook")
			apiError(w, 404, "Webhook not found.")
			return
		}
		h.Name, h.TargetURL = name, target
		if sec, ok := str(body, "secret"); ok {
			h.Secret = sec
		}
		if hasStatus {
			h.Status = status
		}
		s.notify()
		out := *h
		out.Secret = ""
		writeJSON(w, 200, out)
	case len(seg) == 2 && r.Method == http.MethodDelete:
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, found := s.hooks[seg[1]]; !found {
			apiError(w, 404, "Webhook not found.")
			return
		}
		delete(s.hooks, seg[1])
		s.notify()
		w.WriteHeader(http.StatusNoContent)
	default:
		s.violate("webhooks: %s %s", r.Method, r.URL.Path)
		apiError(w, 405, "Method not allowed.")
	}
}

func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"message": msg, "errors": []any{map[string]any{"description": msg}},
		"trackingId": "ROUTER_" + strings.ToUpper(randHex(8))})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Package fake is a local Slack for tests: the Web API methods clawd calls
// (chat.postMessage, chat.update, apps.connections.open), incoming webhooks,
// response_url, a Socket Mode WebSocket that delivers button clicks, and a
// signer for HTTP interactivity callbacks. It checks every payload against
// Slack's documented shape and limits and records what does not fit.
package fake

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Credentials the fake accepts (literal values, as Settings gives them).
const (
	BotToken      = "xoxb-1111-2222-fakebottoken"
	AppToken      = "xapp-1-A0FAKE-3333-fakeapptoken"
	SigningSecret = "8f742231b10e8888abcd99yyyzzz85a5"
	ChannelID     = "C0FAKE0001"
	TeamID        = "T0FAKE0001"
	AppID         = "A0FAKE0001"
)

// Message is a card as Slack holds it.
type Message struct {
	Channel string
	TS      string
	Text    string           // the fallback text
	Blocks  []map[string]any // as received
	Buttons []Button
	// Webhook is true for a message posted by incoming webhook.
	Webhook bool
	// Updates counts chat.update / response_url replacements.
	Updates int
}

// Button is one button on a card.
type Button struct {
	ActionID, BlockID, Text, Value, Style string
}

// Button returns the button with this action_id.
func (m Message) Button(actionID string) (Button, bool) {
	for _, b := range m.Buttons {
		if b.ActionID == actionID {
			return b, true
		}
	}
	return Button{}, false
}

// AllText is every text of the message's blocks in order, one per line
// (mrkdwn source form), button labels included.
func (m Message) AllText() string {
	var out []string
	text := func(v any) {
		switch t := v.(type) {
		case string:
			out = append(out, t)
		case map[string]any:
			if s, ok := t["text"].(string); ok {
				out = append(out, s)
			}
		}
	}
	for _, b := range m.Blocks {
		text(b["text"])
		for _, k := range []string{"fields", "elements"} {
			els, _ := b[k].([]any)
			for _, e := range els {
				if em, ok := e.(map[string]any); ok {
					text(em["text"])
				}
			}
		}
	}
	return strings.Join(out, "\n")
}

// Server is the fake Slack.
type Server struct {
	srv  *httptest.Server
	Now  func() time.Time // for signing HTTP clicks; default time.Now
	HTTP *http.Client

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every change
	messages   []*Message
	seq        int
	violations []string
	names      map[string]string // user ID → name
	tickets    map[string]bool
	conns      []*wsConn
	opened     int // successful socket connections
	acks       map[string]chan struct{}
	responses  map[string]*pendingResponse // response_url id → click waiting for an ephemeral
	lastHTTP   *SignedRequest
	failOpen   []string
	ephemerals []string
}

type pendingResponse struct {
	approvalID string
	reply      chan string
	uses       int
}

type wsConn struct {
	c    *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}
}

func (w *wsConn) write(v any) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return w.c.WriteJSON(v)
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	s := &Server{
		Now: time.Now, changed: make(chan struct{}), names: map[string]string{},
		tickets: map[string]bool{}, acks: map[string]chan struct{}{}, responses: map[string]*pendingResponse{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/chat.postMessage", s.chat)
	mux.HandleFunc("/api/chat.update", s.chat)
	mux.HandleFunc("/api/apps.connections.open", s.connectionsOpen)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.violation("unexpected Web API call %s", r.URL.Path)
		writeJSON(w, map[string]any{"ok": false, "error": "unknown_method"})
	})
	mux.HandleFunc("/link/", s.socket)
	mux.HandleFunc("/services/", s.webhook)
	mux.HandleFunc("/actions/", s.responseURL)
	s.srv = httptest.NewServer(mux)
	s.HTTP = s.srv.Client()
	return s
}

// Close stops the server and drops every socket.
func (s *Server) Close() {
	s.mu.Lock()
	for _, c := range s.conns {
		c.c.NetConn().Close()
	}
	s.mu.Unlock()
	s.srv.Close()
}

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// APIBase is the Web API base to configure as api-base.
func (s *Server) APIBase() string { return s.srv.URL + "/api/" }

// WebhookURL is an incoming-webhook URL on the fake.
func (s *Server) WebhookURL() string {
	return s.srv.URL + "/services/" + TeamID + "/B0FAKE/fakewebhooksecret"
}

// Settings are clawd.yaml settings for a bot-token channel with Socket Mode
// and HTTP interactivity pointing at this fake.
func (s *Server) Settings() map[string]any {
	return map[string]any{
		"bot-token": BotToken, "app-token": AppToken, "signing-secret": SigningSecret,
		"channel": ChannelID, "api-base": s.APIBase(),
	}
}

// WebhookSettings are settings for an incoming-webhook channel with
// Socket Mode clicks.
func (s *Server) WebhookSettings() map[string]any {
	return map[string]any{
		"webhook-url": s.WebhookURL(), "app-token": AppToken, "signing-secret": SigningSecret, "api-base": s.APIBase(),
	}
}

// SetName sets the display name Slack reports for a user (default: the ID
// in lower case).
func (s *Server) SetName(userID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[userID] = name
}

// Violations are the payload shape/limit problems seen so far.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

func (s *Server) violation(f string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, fmt.Sprintf(f, a...))
}

// bump wakes WaitCard/WaitConnected; s.mu must be held.
func (s *Server) bump() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Ephemerals are the ephemeral answers clawd gave clickers, in order.
func (s *Server) Ephemerals() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ephemerals...)
}

// Messages are all cards, in posting order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = *m
	}
	return out
}

// Card is the latest state of the message carrying that approval.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.cardLocked(approvalID)
	if m == nil {
		return Message{}, false
	}
	return *m, true
}

func (s *Server) cardLocked(id string) *Message {
	for i := len(s.messages) - 1; i >= 0; i-- {
		if approvalOf(s.messages[i].Blocks) == id {
			return s.messages[i]
		}
	}
	return nil
}

// approvalOf reads the approval ID from the card's first block_id
// ("clawd_ID").
func approvalOf(blocks []map[string]any) string {
	for _, b := range blocks {
		if id, _ := b["block_id"].(string); strings.HasPrefix(id, "clawd_") {
			id = strings.TrimPrefix(id, "clawd_")
			id, _, _ = strings.Cut(id, "_")
			return id
		}
	}
	return ""
}

// WaitCard waits until the card for approvalID exists and cond holds.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		m := s.cardLocked(approvalID)
		ch := s.changed
		var cp Message
		if m != nil {
			cp = *m
		}
		s.mu.Unlock()
		if m != nil && (cond == nil || cond(cp)) {
			return cp, nil
		}
		select {
		case <-ctx.Done():
			return cp, fmt.Errorf("card for %s: %w", approvalID, ctx.Err())
		case <-ch:
		}
	}
}

// WaitConnected waits until n Socket Mode connections have been opened in
// total and one is live.
func (s *Server) WaitConnected(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		ok := s.opened >= n && len(s.conns) > 0
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for socket connection %d: %w", n, ctx.Err())
		case <-ch:
		}
	}
}

// Connections is how many Socket Mode connections were opened in total.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

// FailOpen makes the next apps.connections.open calls fail with these
// Slack errors, in order ("invalid_auth", "internal_error", …).
func (s *Server) FailOpen(errs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failOpen = append(s.failOpen, errs...)
}

// Disconnect drops every live socket without a close frame, as a network
// failure would.
func (s *Server) Disconnect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.c.NetConn().Close()
	}
}

// RequestDisconnect sends Slack's "disconnect" envelope (refresh_requested)
// on every live socket; the client must open a new one.
func (s *Server) RequestDisconnect() {
	s.mu.Lock()
	conns := append([]*wsConn(nil), s.conns...)
	s.mu.Unlock()
	for _, c := range conns {
		c.write(map[string]any{"type": "disconnect", "reason": "refresh_requested", "debug_info": map[string]any{"host": "fake"}})
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(v)
}

func randomID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + strings.ToUpper(hex.EncodeToString(b[:]))
}

// --- Web API ---

// auth checks the token: Authorization: Bearer for JSON bodies (Slack
// requires it there), Bearer or a token form field for form bodies.
func (s *Server) auth(r *http.Request, form url.Values, want string) bool {
	h := r.Header.Get("Authorization")
	bearer, hasBearer := strings.CutPrefix(h, "Bearer ")
	switch {
	case h != "" && !hasBearer:
		s.violation("%s: Authorization is not Bearer", r.URL.Path)
		return false
	case hasBearer && form != nil && form.Get("token") != "":
		s.violation("%s: token both in header and body", r.URL.Path)
	}
	if hasBearer {
		return bearer == want
	}
	if form != nil {
		return form.Get("token") == want
	}
	return false
}

func mediaType(r *http.Request) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	if r.Method != http.MethodPost {
		s.violation("%s: method %s", method, r.Method)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var (
		form       url.Values
		channel    string
		text, ts   string
		blocksJSON json.RawMessage
	)
	switch mediaType(r) {
	case "application/x-www-form-urlencoded":
		form, _ = url.ParseQuery(string(body))
		channel, text, ts = form.Get("channel"), form.Get("text"), form.Get("ts")
		if b := form.Get("blocks"); b != "" {
			blocksJSON = json.RawMessage(b)
		}
	case "application/json":
		var m struct {
			Channel string          `json:"channel"`
			Text    string          `json:"text"`
			TS      string          `json:"ts"`
			Blocks  json.RawMessage `json:"blocks"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			s.violation("%s: bad JSON", method)
			writeJSON(w, map[string]any{"ok": false, "error": "invalid_json"})
			return
		}
		channel, text, ts, blocksJSON = m.Channel, m.Text, m.TS, m.Blocks
	default:
		s.violation("%s: content type %q", method, r.Header.Get("Content-Type"))
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	if !s.auth(r, form, BotToken) {
		s.violation("%s: bad or missing bot token", method)
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	if channel == "" {
		s.violation("%s: no channel", method)
		writeJSON(w, map[string]any{"ok": false, "error": "channel_not_found"})
		return
	}
	blocks, ok := s.checkMessage(method, text, blocksJSON)
	if !ok {
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_blocks"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if method == "chat.update" {
		for _, m := range s.messages {
			if m.Channel == channel && m.TS == ts {
				m.Text, m.Blocks, m.Buttons = text, blocks, buttons(blocks)
				m.Updates++
				s.bump()
				writeJSON(w, map[string]any{"ok": true, "channel": channel, "ts": ts, "text": text})
				return
			}
		}
		s.violations = append(s.violations, fmt.Sprintf("chat.update: no message %s|%s", channel, ts))
		writeJSON(w, map[string]any{"ok": false, "error": "message_not_found"})
		return
	}
	if ts != "" {
		s.violations = append(s.violations, "chat.postMessage: ts given")
	}
	s.seq++
	ts = fmt.Sprintf("1700000000.%06d", s.seq)
	s.messages = append(s.messages, &Message{Channel: channel, TS: ts, Text: text, Blocks: blocks, Buttons: buttons(blocks)})
	s.bump()
	writeJSON(w, map[string]any{"ok": true, "channel": channel, "ts": ts, "message": map[string]any{"text": text, "ts": ts}})
}

func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/services/"+TeamID+"/B0FAKE/fakewebhooksecret" {
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	msg, ok := s.jsonMessage(w, r, "incoming webhook")
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.messages = append(s.messages, &Message{Channel: "webhook", TS: fmt.Sprintf("1700000000.%06d", s.seq),
		Text: msg.text, Blocks: msg.blocks, Buttons: buttons(msg.blocks), Webhook: true})
	s.bump()
	fmt.Fprint(w, "ok")
}

type jsonMsg struct {
	text            string
	blocks          []map[string]any
	responseType    string
	replaceOriginal bool
}

func (s *Server) jsonMessage(w http.ResponseWriter, r *http.Request, what string) (jsonMsg, bool) {
	if r.Method != http.MethodPost || mediaType(r) != "application/json" {
		s.violation("%s: %s with content type %q", what, r.Method, r.Header.Get("Content-Type"))
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return jsonMsg{}, false
	}
	if r.Header.Get("Authorization") != "" {
		s.violation("%s: sent an Authorization header (a token) to a URL that needs none", what)
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var m struct {
		Text            string          `json:"text"`
		Blocks          json.RawMessage `json:"blocks"`
		ResponseType    string          `json:"response_type"`
		ReplaceOriginal bool            `json:"replace_original"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		s.violation("%s: bad JSON", what)
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return jsonMsg{}, false
	}
	if len(m.Blocks) == 0 || string(m.Blocks) == "null" {
		m.Blocks = nil
	}
	blocks, ok := s.checkMessage(what, m.Text, m.Blocks)
	if !ok {
		http.Error(w, "invalid_blocks", http.StatusBadRequest)
		return jsonMsg{}, false
	}
	return jsonMsg{m.Text, blocks, m.ResponseType, m.ReplaceOriginal}, true
}

// responseURL serves the response_url of fake clicks: an ephemeral answer
// goes to the clicker, replace_original edits the card.
func (s *Server) responseURL(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/actions/")
	s.mu.Lock()
	p := s.responses[id]
	if p != nil {
		p.uses++
	}
	s.mu.Unlock()
	if p == nil {
		s.violation("response_url %s: unknown", id)
		http.Error(w, "no_such_response_url", http.StatusNotFound)
		return
	}
	if p.uses > 5 {
		s.violation("response_url %s: used more than 5 times", id)
		http.Error(w, "used_too_many_times", http.StatusNotFound)
		return
	}
	msg, ok := s.jsonMessage(w, r, "response_url")
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case msg.replaceOriginal:
		if m := s.cardLocked(p.approvalID); m != nil {
			m.Text, m.Blocks, m.Buttons = msg.text, msg.blocks, buttons(msg.blocks)
			m.Updates++
		}
	case msg.responseType == "ephemeral":
		s.ephemerals = append(s.ephemerals, msg.text)
		select {
		case p.reply <- msg.text:
		default:
		}
	default:
		s.violations = append(s.violations, "response_url: neither ephemeral nor replace_original (would post to the channel)")
	}
	s.bump()
	writeJSON(w, map[string]any{"ok": true})
}

// --- Socket Mode ---

func (s *Server) connectionsOpen(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.violation("apps.connections.open: method %s", r.Method)
	}
	if mt := mediaType(r); mt != "application/json" && mt != "application/x-www-form-urlencoded" {
		s.violation("apps.connections.open: content type %q", r.Header.Get("Content-Type"))
	}
	if !s.auth(r, nil, AppToken) {
		s.violation("apps.connections.open: bad or missing app token (Authorization: Bearer xapp-…)")
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	t := randomID("t")
	s.mu.Lock()
	if len(s.failOpen) > 0 {
		e := s.failOpen[0]
		s.failOpen = s.failOpen[1:]
		s.mu.Unlock()
		writeJSON(w, map[string]any{"ok": false, "error": e})
		return
	}
	s.tickets[t] = true
	s.mu.Unlock()
	u := "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/link/?ticket=" + t + "&app_id=" + AppID
	writeJSON(w, map[string]any{"ok": true, "url": u})
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) socket(w http.ResponseWriter, r *http.Request) {
	t := r.URL.Query().Get("ticket")
	s.mu.Lock()
	ok := s.tickets[t]
	delete(s.tickets, t)
	s.mu.Unlock()
	if !ok {
		s.violation("socket: unknown or reused ticket")
		http.Error(w, "invalid ticket", http.StatusUnauthorized)
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	wc := &wsConn{c: c, done: make(chan struct{})}
	s.mu.Lock()
	s.conns = append(s.conns, wc)
	s.opened++
	n := len(s.conns)
	s.bump()
	s.mu.Unlock()
	defer func() {
		close(wc.done)
		c.Close()
		s.mu.Lock()
		for i, x := range s.conns {
			if x == wc {
				s.conns = append(s.conns[:i], s.conns[i+1:]...)
				break
			}
		}
		s.bump()
		s.mu.Unlock()
	}()
	wc.write(map[string]any{
		"type": "hello", "num_connections": n,
		"debug_info":      map[string]any{"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
		"connection_info": map[string]any{"app_id": AppID},
	})
	// Slack pings; slack-go reconnects when pings stop.
	go func() {
		tk := time.NewTicker(5 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-wc.done:
				return
			case <-tk.C:
				wc.wmu.Lock()
				c.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(5*time.Second))
				wc.wmu.Unlock()
			}
		}
	}()
	wc.wmu.Lock()
	c.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(5*time.Second))
	wc.wmu.Unlock()
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		var ack struct {
			EnvelopeID *string         `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(data, &ack); err != nil || ack.EnvelopeID == nil {
			s.violation("socket: message that is not an ack: %.200s", data)
			continue
		}
		if len(data) >= 20*1024 {
			s.violation("socket: ack of %d bytes (Slack drops 20 KiB or more)", len(data))
		}
		s.mu.Lock()
		ch := s.acks[*ack.EnvelopeID]
		delete(s.acks, *ack.EnvelopeID)
		s.mu.Unlock()
		if ch == nil {
			s.violation("socket: ack for unknown or already acked envelope %q", *ack.EnvelopeID)
			continue
		}
		close(ch)
	}
}

// Envelope sends a raw Socket Mode envelope on the live socket and waits
// for its ack. The envelope_id is filled in when missing.
func (s *Server) Envelope(ctx context.Context, env map[string]any) error {
	if _, ok := env["envelope_id"]; !ok {
		env["envelope_id"] = randomID("e-")
	}
	id, _ := env["envelope_id"].(string)
	if err := s.WaitConnected(ctx, 1); err != nil {
		return err
	}
	acked := make(chan struct{})
	s.mu.Lock()
	s.acks[id] = acked
	var c *wsConn
	if len(s.conns) > 0 {
		c = s.conns[len(s.conns)-1]
	}
	s.mu.Unlock()
	if c == nil {
		return errors.New("no socket")
	}
	if err := c.write(env); err != nil {
		return fmt.Errorf("socket write: %w", err)
	}
	select {
	case <-acked:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.acks, id)
		s.mu.Unlock()
		return fmt.Errorf("envelope %s not acked: %w", id, ctx.Err())
	}
}

// Click presses the card's button "clawd_"+act as userID over Socket Mode
// and returns the ephemeral answer clawd gave through response_url.
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	return s.ClickWith(ctx, approvalID, act, userID, nil)
}

// ClickWith is Click with the payload (and the envelope, under
// "envelope") changed by tamper first, for forged and malformed clicks.
func (s *Server) ClickWith(ctx context.Context, approvalID, act, userID string, tamper func(envelope, payload map[string]any)) (string, error) {
	payload, reply, err := s.clickPayload(approvalID, act, userID)
	if err != nil {
		return "", err
	}
	env := map[string]any{
		"type": "interactive", "payload": payload, "accepts_response_payload": false,
		"retry_attempt": 0, "retry_reason": "",
	}
	if tamper != nil {
		tamper(env, payload)
	}
	if err := s.Envelope(ctx, env); err != nil {
		return "", err
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return "", fmt.Errorf("no answer to the click: %w", ctx.Err())
	}
}

// ClickPayload is the block_actions payload a click on that button makes
// (for forging and raw envelopes); its response_url is live on the fake.
func (s *Server) ClickPayload(approvalID, act, userID string) (map[string]any, error) {
	p, _, err := s.clickPayload(approvalID, act, userID)
	return p, err
}

func (s *Server) clickPayload(approvalID, act, userID string) (map[string]any, chan string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.cardLocked(approvalID)
	if m == nil {
		return nil, nil, fmt.Errorf("no card for %s", approvalID)
	}
	b, ok := m.Button("clawd_" + act)
	if !ok {
		return nil, nil, fmt.Errorf("card for %s has no button clawd_%s", approvalID, act)
	}
	name := s.names[userID]
	if name == "" {
		name = strings.ToLower(userID)
	}
	rid := randomID("r")
	reply := make(chan string, 1)
	s.responses[rid] = &pendingResponse{approvalID: approvalID, reply: reply}
	blocks := make([]any, len(m.Blocks))
	for i, x := range m.Blocks {
		blocks[i] = x
	}
	return map[string]any{
		"type":       "block_actions",
		"user":       map[string]any{"id": userID, "username": name, "name": name, "team_id": TeamID},
		"api_app_id": AppID,
		"token":      "fakeverificationtoken",
		"container":  map[string]any{"type": "message", "message_ts": m.TS, "channel_id": m.Channel, "is_ephemeral": false},
		"trigger_id": randomID("trig"),
		"team":       map[string]any{"id": TeamID, "domain": "fake"},
		"channel":    map[string]any{"id": m.Channel, "name": "approvals"},
		"message": map[string]any{"type": "message", "ts": m.TS, "text": m.Text, "blocks": blocks,
			"bot_id": "B0FAKE", "user": "U0FAKEBOT"},
		"response_url": s.srv.URL + "/actions/" + rid,
		"actions": []any{map[string]any{
			"type": "button", "action_id": b.ActionID, "block_id": b.BlockID, "value": b.Value,
			"text": map[string]any{"type": "plain_text", "text": b.Text}, "style": b.Style,
			"action_ts": strconv.FormatInt(time.Now().Unix(), 10) + ".000000",
		}},
	}, reply, nil
}

// --- HTTP interactivity ---

// SignedRequest is an interactivity POST as Slack sends it.
type SignedRequest struct {
	Body      string // application/x-www-form-urlencoded, payload=…
	Timestamp string // X-Slack-Request-Timestamp
	Signature string // X-Slack-Signature
}

// Sign signs body as Slack does (v0, HMAC-SHA256 of "v0:ts:body" with the
// signing secret) at time at.
func Sign(body string, at time.Time) SignedRequest {
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(SigningSecret))
	mac.Write([]byte("v0:" + ts + ":" + body))
	return SignedRequest{Body: body, Timestamp: ts, Signature: "v0=" + hex.EncodeToString(mac.Sum(nil))}
}

// WithBadSignature is r with a signature made with another secret.
func (r SignedRequest) WithBadSignature() SignedRequest {
	mac := hmac.New(sha256.New, []byte("not-the-signing-secret"))
	mac.Write([]byte("v0:" + r.Timestamp + ":" + r.Body))
	r.Signature = "v0=" + hex.EncodeToString(mac.Sum(nil))
	return r
}

// SignedClick is the signed interactivity request for a click at time at.
func (s *Server) SignedClick(approvalID, act, userID string, at time.Time) (SignedRequest, error) {
	p, err := s.ClickPayload(approvalID, act, userID)
	if err != nil {
		return SignedRequest{}, err
	}
	b, _ := json.Marshal(p)
	return Sign(url.Values{"payload": {string(b)}}.Encode(), at), nil
}

// Send POSTs r to clawd's callback URL and returns the HTTP status and
// body; the request is kept for Replay.
func (s *Server) Send(ctx context.Context, callbackURL string, r SignedRequest) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, callbackURL, strings.NewReader(r.Body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
	if r.Timestamp != "" {
		req.Header.Set("X-Slack-Request-Timestamp", r.Timestamp)
	}
	if r.Signature != "" {
		req.Header.Set("X-Slack-Signature", r.Signature)
	}
	s.mu.Lock()
	cp := r
	s.lastHTTP = &cp
	s.mu.Unlock()
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// LastHTTP is the last request Send made (for replays).
func (s *Server) LastHTTP() (SignedRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastHTTP == nil {
		return SignedRequest{}, false
	}
	return *s.lastHTTP, true
}

// ClickHTTP presses the button over HTTP interactivity, signed now, and
// returns the ephemeral text clawd answered with. Slack wants a 200 within
// 3 seconds; anything else is an error.
func (s *Server) ClickHTTP(ctx context.Context, callbackURL, approvalID, act, userID string) (string, error) {
	r, err := s.SignedClick(approvalID, act, userID, s.Now())
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	code, body, err := s.Send(ctx, callbackURL, r)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("callback answered %d: %s", code, strings.TrimSpace(body))
	}
	if body == "" {
		return "", nil
	}
	var m struct {
		ResponseType    string `json:"response_type"`
		ReplaceOriginal *bool  `json:"replace_original"`
		Text            string `json:"text"`
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return "", fmt.Errorf("callback answer is not JSON: %.200s", body)
	}
	if m.ResponseType != "ephemeral" {
		s.violation("interactivity answer: response_type %q (would post to the channel)", m.ResponseType)
	}
	if m.ReplaceOriginal == nil || *m.ReplaceOriginal {
		s.violation("interactivity answer: replace_original not false")
	}
	s.mu.Lock()
	s.ephemerals = append(s.ephemerals, m.Text)
	s.mu.Unlock()
	return m.Text, nil
}

// Package fake is a Telegram Bot API server on 127.0.0.1 for tests: it
// takes clawd's sendMessage / editMessageText / answerCallbackQuery /
// getUpdates / setWebhook / deleteWebhook calls, checks each against the
// Bot API's documented shape and limits (recording violations), and plays
// the human: Click presses a card's button as a user, delivered as a
// callback_query over getUpdates or POSTed to the webhook with its secret
// token, exactly as Telegram does.
//
// Relaxed on purpose: setWebhook accepts an http://127.0.0.1 URL on any port.
package fake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

// ChatID is the chat the fake's bot posts in.
const ChatID int64 = -1001234567890

// Button is one inline keyboard button as posted.
type Button struct {
	Text         string
	CallbackData string
}

// Message is a message the bot sent, as last edited.
type Message struct {
	ChatID    int64
	MessageID int64
	HTML      string // text as sent (parse_mode HTML)
	Text      string // what the chat shows: tags removed, entities decoded
	Keyboard  [][]Button
	Edits     int
}

// Answer is an answerCallbackQuery call.
type Answer struct {
	QueryID   string
	Text      string
	ShowAlert bool
}

// Poll is one getUpdates call's parameters.
type Poll struct {
	Offset         int64
	Timeout        int
	AllowedUpdates []string
	// From is the label of the API base the call came through
	// (SettingsAs; "" = Settings): which of several clients polled.
	From string
}

// Server is the fake Bot API.
type Server struct {
	Token string
	srv   *httptest.Server

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every change
	messages   map[int64]*Message
	byApproval map[string]int64
	nextMsg    int64
	nextUpdate int64
	queue      []json.RawMessage // pending updates (poll mode), with ids
	queueIDs   []int64
	pollers    map[int]chan struct{} // in-flight getUpdates: closed = 409
	drops      map[int]chan struct{} // in-flight getUpdates: closed = drop the connection
	polls      []Poll
	conflicts  int
	overlaps   int // getUpdates calls that arrived while another was in flight
	webhookURL string
	secret     string
	hookSets   int
	queries    map[string]bool // callback query ids not yet answered
	answers    map[string]chan Answer
	lastHook   []byte
	answered   []Answer
	violations []string
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	var rnd [8]byte
	rand.Read(rnd[:])
	s := &Server{
		Token:   "123456789:FAKE_" + hex.EncodeToString(rnd[:]),
		changed: make(chan struct{}), messages: map[int64]*Message{}, byApproval: map[string]int64{},
		nextMsg: 100, nextUpdate: 500000, pollers: map[int]chan struct{}{}, drops: map[int]chan struct{}{},
		queries: map[string]bool{}, answers: map[string]chan Answer{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	for id, ch := range s.drops {
		close(ch)
		delete(s.drops, id)
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// URL is the API base.
func (s *Server) URL() string { return s.srv.URL }

// Settings are clawd.yaml settings for a channel on this fake (poll mode).
func (s *Server) Settings() map[string]any {
	return map[string]any{"bot-token": s.Token, "chat-id": strconv.FormatInt(ChatID, 10), "api-base": s.srv.URL, "mode": "poll", "poll-timeout": 30}
}

// SettingsAs are Settings whose API base carries label: the fake tells
// the clients apart by it (Poll.From), as Telegram tells bot instances
// apart by their connections. label is letters, digits, '-' and '_'.
func (s *Server) SettingsAs(label string) map[string]any {
	m := s.Settings()
	m["api-base"] = s.srv.URL + "/as/" + label
	return m
}

// Overlaps is how many getUpdates calls arrived while another one was in
// flight: Telegram ends the earlier one with 409 Conflict ("terminated by
// other getUpdates request"), i.e. two consumers polled at once.
func (s *Server) Overlaps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overlaps
}

// WaitPollFrom waits until a getUpdates call from label (SettingsAs) is in
// flight or was made after the first n calls (see Polls).
func (s *Server) WaitPollFrom(ctx context.Context, label string, n int) error {
	_, err := s.wait(ctx, func() (any, bool) {
		for i := n; i < len(s.polls); i++ {
			if s.polls[i].From == label {
				return nil, true
			}
		}
		return nil, false
	})
	return err
}

// Violations are the shape and limit violations seen so far.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Polls are the getUpdates calls so far.
func (s *Server) Polls() []Poll {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Poll(nil), s.polls...)
}

// Pending is how many updates wait for a poller to confirm them.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Webhook is the URL and secret token setWebhook set ("" = none) and how
// many times it was called.
func (s *Server) Webhook() (url, secret string, calls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookURL, s.secret, s.hookSets
}

// Answers are the answerCallbackQuery calls so far.
func (s *Server) Answers() []Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Answer(nil), s.answered...)
}

// WaitWebhook waits until setWebhook was called and returns its URL and
// secret token.
func (s *Server) WaitWebhook(ctx context.Context) (url, secret string, err error) {
	_, err = s.wait(ctx, func() (any, bool) { return nil, s.webhookURL != "" })
	url, secret, _ = s.Webhook()
	return url, secret, err
}

// Conflict answers the next n getUpdates calls 409, as when another bot
// instance polls.
func (s *Server) Conflict(n int) {
	s.mu.Lock()
	s.conflicts = n
	s.mu.Unlock()
}

// DropPolls cuts the connection of every getUpdates call in flight and
// returns how many it cut.
func (s *Server) DropPolls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, ch := range s.drops {
		close(ch)
		delete(s.drops, id)
		n++
	}
	return n
}

// WaitPolling waits until a getUpdates call is in flight whose number (from
// 1, in arrival order among all getUpdates calls, see Polls) is at least n.
func (s *Server) WaitPolling(ctx context.Context, n int) error {
	_, err := s.wait(ctx, func() (any, bool) {
		for id := range s.drops {
			if id >= n {
				return nil, true
			}
		}
		return nil, false
	})
	return err
}

func (s *Server) violate(format string, a ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, a...))
}

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait runs cond under the lock on every change until it holds.
func (s *Server) wait(ctx context.Context, cond func() (any, bool)) (any, error) {
	for {
		s.mu.Lock()
		v, ok := cond()
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return v, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Card is the latest state of the message that carries that approval.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cardLocked(approvalID)
}

func (s *Server) cardLocked(id string) (Message, bool) {
	mid, ok := s.byApproval[id]
	if !ok {
		return Message{}, false
	}
	m := *s.messages[mid]
	m.Keyboard = append([][]Button(nil), m.Keyboard...)
	return m, true
}

// WaitCard waits until the approval's card satisfies cond (nil = exists).
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	v, err := s.wait(ctx, func() (any, bool) {
		m, ok := s.cardLocked(approvalID)
		return m, ok && (cond == nil || cond(m))
	})
	if err != nil {
		m, _ := s.Card(approvalID)
		return m, fmt.Errorf("card %s: %w (last text %q)", approvalID, err, m.Text)
	}
	return v.(Message), nil
}

// User is who clicks: a Telegram user.
type User struct {
	ID        int64  `json:"id"`
	IsBot     bool   `json:"is_bot"`
	FirstName string `json:"first_name"`
	Username  string `json:"username,omitempty"`
}

func userFor(id string) (User, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return User{}, fmt.Errorf("user %q is not a Telegram user ID", id)
	}
	return User{ID: n, FirstName: "User " + id, Username: "user" + id}, nil
}

// Click presses the card's button with that Act ("a", "g", "d") as userID
// and returns the text Telegram shows the clicker (the callback answer).
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	return s.ClickIn(ctx, approvalID, act, userID, ChatID)
}

// ClickIn is Click on a copy of the card in another chat (a forwarded or
// forged card): the callback_query's message chat is chatID.
func (s *Server) ClickIn(ctx context.Context, approvalID, act, userID string, chatID int64) (string, error) {
	s.mu.Lock()
	m, ok := s.cardLocked(approvalID)
	s.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("no card for %s", approvalID)
	}
	data := ""
	for _, row := range m.Keyboard {
		for _, b := range row {
			if strings.HasPrefix(b.CallbackData, act+":") {
				data = b.CallbackData
			}
		}
	}
	if data == "" {
		return "", fmt.Errorf("card %s has no button %q (text %q)", approvalID, act, m.Text)
	}
	return s.ClickData(ctx, m.MessageID, chatID, data, userID)
}

// ClickData delivers a callback_query with any data on message messageID
// in chatID, as userID, and returns the answer shown to the clicker.
func (s *Server) ClickData(ctx context.Context, messageID, chatID int64, data, userID string) (string, error) {
	u, err := userFor(userID)
	if err != nil {
		return "", err
	}
	a, err := s.deliver(ctx, u, messageID, chatID, data)
	return a.Text, err
}

type callbackQuery struct {
	ID           string `json:"id"`
	From         User   `json:"from"`
	Message      any    `json:"message"`
	ChatInstance string `json:"chat_instance"`
	Data         string `json:"data"`
}

func (s *Server) deliver(ctx context.Context, u User, messageID, chatID int64, data string) (Answer, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	qid := hex.EncodeToString(rnd[:])
	ans := make(chan Answer, 1)
	s.mu.Lock()
	s.nextUpdate++
	uid := s.nextUpdate
	upd, _ := json.Marshal(map[string]any{"update_id": uid, "callback_query": callbackQuery{
		ID: qid, From: u, ChatInstance: "42", Data: data,
		Message: map[string]any{"message_id": messageID, "date": time.Now().Unix(), "chat": map[string]any{"id": chatID, "type": "supergroup", "title": "Approvals"}},
	}})
	s.queries[qid] = true
	s.answers[qid] = ans
	hook, secret := s.webhookURL, s.secret
	if hook == "" {
		s.queue = append(s.queue, upd)
		s.queueIDs = append(s.queueIDs, uid)
		s.notify()
	} else {
		s.lastHook = upd
	}
	s.mu.Unlock()
	if hook != "" {
		code, err := post(ctx, hook, secret, upd)
		if err != nil {
			return Answer{}, err
		}
		if code != http.StatusOK {
			return Answer{}, fmt.Errorf("webhook answered %d", code)
		}
	}
	select {
	case a := <-ans:
		return a, nil
	case <-ctx.Done():
		return Answer{}, fmt.Errorf("the click was never answered: %w", ctx.Err())
	}
}

func post(ctx context.Context, hook, secret string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Telegram-Bot-Api-Secret-Token", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ForgeWebhook POSTs a click on the approval's button to the webhook with
// the given secret token ("" = no header) and returns the HTTP status.
func (s *Server) ForgeWebhook(ctx context.Context, approvalID, act, userID, secret string) (int, error) {
	s.mu.Lock()
	m, ok := s.cardLocked(approvalID)
	hook := s.webhookURL
	s.nextUpdate++
	uid := s.nextUpdate
	s.mu.Unlock()
	if !ok || hook == "" {
		return 0, errors.New("no card or no webhook")
	}
	data := ""
	for _, row := range m.Keyboard {
		for _, b := range row {
			if strings.HasPrefix(b.CallbackData, act+":") {
				data = b.CallbackData
			}
		}
	}
	u, err := userFor(userID)
	if err != nil {
		return 0, err
	}
	upd, _ := json.Marshal(map[string]any{"update_id": uid, "callback_query": callbackQuery{
		ID: "forged", From: u, ChatInstance: "42", Data: data,
		Message: map[string]any{"message_id": m.MessageID, "date": time.Now().Unix(), "chat": map[string]any{"id": ChatID, "type": "supergroup"}},
	}})
	return post(ctx, hook, secret, upd)
}

// ReplayWebhook POSTs the last update delivered to the webhook again, with
// the right secret token, and returns the HTTP status.
func (s *Server) ReplayWebhook(ctx context.Context) (int, error) {
	s.mu.Lock()
	hook, secret, last := s.webhookURL, s.secret, s.lastHook
	s.mu.Unlock()
	if last == nil {
		return 0, errors.New("nothing was delivered to the webhook")
	}
	return post(ctx, hook, secret, last)
}

// ---- the Bot API side ----

type apiReply struct {
	code int
	desc string
	res  any
}

func okReply(res any) apiReply { return apiReply{code: 200, res: res} }
func bad(desc string) apiReply {
	return apiReply{code: 400, desc: "Bad Request: " + desc}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path, from := r.URL.Path, ""
	if as, ok := strings.CutPrefix(path, "/as/"); ok {
		from, path, _ = strings.Cut(as, "/")
		path = "/" + path
	}
	rest, found := strings.CutPrefix(path, "/bot")
	tok, method, found2 := strings.Cut(rest, "/")
	var rep apiReply
	switch {
	case !found || !found2:
		rep = apiReply{code: 404, desc: "Not Found"}
		s.mu.Lock()
		s.violate("request to %s: not /bot<token>/<method>", r.URL.Path)
		s.mu.Unlock()
	case tok != s.Token:
		rep = apiReply{code: 401, desc: "Unauthorized"}
		s.mu.Lock()
		s.violate("%s with a wrong bot token", method)
		s.mu.Unlock()
	default:
		p, err := params(r)
		if err != nil {
			s.mu.Lock()
			s.violate("%s: %v", method, err)
			s.mu.Unlock()
			rep = bad(err.Error())
			break
		}
		if method == "getUpdates" {
			s.getUpdates(w, r, p, from)
			return
		}
		s.mu.Lock()
		rep = s.method(method, p)
		if rep.code != 200 && !strings.Contains(rep.desc, "message is not modified") {
			s.violate("%s: %d %s", method, rep.code, rep.desc)
		}
		s.mu.Unlock()
	}
	write(w, rep)
}

func write(w http.ResponseWriter, rep apiReply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.code)
	if rep.code == 200 {
		json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": rep.res})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"ok": false, "error_code": rep.code, "description": rep.desc})
}

// params reads a Bot API call's parameters: JSON, urlencoded form or
// multipart, as Telegram takes them. Form values that are JSON objects or
// arrays (reply_markup) are decoded.
func params(r *http.Request) (map[string]any, error) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, fmt.Errorf("method %s", r.Method)
	}
	p := map[string]any{}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.UseNumber()
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("body is not a JSON object: %v", err)
		}
	case "application/x-www-form-urlencoded", "multipart/form-data":
		if err := r.ParseMultipartForm(1 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			return nil, err
		}
		for k, vs := range r.Form {
			var v any = vs[0]
			if strings.HasPrefix(vs[0], "{") || strings.HasPrefix(vs[0], "[") {
				var j any
				if json.Unmarshal([]byte(vs[0]), &j) == nil {
					v = j
				}
			}
			p[k] = v
		}
	case "":
		if r.ContentLength > 0 {
			return nil, errors.New("body without a Content-Type")
		}
	default:
		return nil, fmt.Errorf("Content-Type %q", mt)
	}
	return p, nil
}

func str(p map[string]any, k string) (string, bool) {
	switch v := p[k].(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	}
	return "", false
}

func integer(p map[string]any, k string) (int64, bool) {
	s, ok := str(p, k)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func boolean(p map[string]any, k string) (bool, bool) {
	switch v := p[k].(type) {
	case bool:
		return v, true
	case string:
		b, err := strconv.ParseBool(v)
		return b, err == nil
	case nil:
		return false, true
	}
	return false, false
}

var known = map[string]bool{
	"chat_id": true, "message_id": true, "text": true, "parse_mode": true, "link_preview_options": true, "reply_markup": true,
	"disable_web_page_preview": true, "disable_notification": true, "protect_content": true, "entities": true,
	"inline_message_id": true, "message_thread_id": true,
}

func (s *Server) method(method string, p map[string]any) apiReply {
	switch method {
	case "getMe":
		return okReply(map[string]any{"id": 123456789, "is_bot": true, "first_name": "clawd", "username": "clawd_fake_bot"})
	case "sendMessage":
		return s.sendMessage(p)
	case "editMessageText":
		return s.editMessage(p, true)
	case "editMessageReplyMarkup":
		return s.editMessage(p, false)
	case "answerCallbackQuery":
		return s.answerCallbackQuery(p)
	case "setWebhook":
		return s.setWebhook(p)
	case "deleteWebhook":
		if _, ok := boolean(p, "drop_pending_updates"); !ok {
			return bad("drop_pending_updates must be a boolean")
		}
		if s.webhookURL != "" {
			s.webhookURL, s.secret = "", ""
			s.notify()
		}
		return okReply(true)
	}
	return apiReply{code: 404, desc: "Not Found"}
}

func (s *Server) checkChat(p map[string]any) (int64, apiReply, bool) {
	id, ok := integer(p, "chat_id")
	if !ok {
		return 0, bad("chat_id is empty or not an integer"), false
	}
	if id != ChatID {
		return 0, bad("chat not found"), false
	}
	return id, apiReply{}, true
}

// text checks text + parse_mode and returns the shown text.
func (s *Server) text(p map[string]any) (html, shown string, rep apiReply, good bool) {
	for k := range p {
		if !known[k] {
			s.violate("unknown parameter %q", k)
		}
	}
	html, ok := p["text"].(string)
	if !ok || html == "" {
		return "", "", bad("message text is empty"), false
	}
	switch mode, _ := p["parse_mode"].(string); mode {
	case "HTML":
		var err error
		if shown, err = parseHTML(html); err != nil {
			return "", "", bad("can't parse entities: " + err.Error()), false
		}
		if strings.Contains(stripTags(html), ">") {
			s.violate("bare '>' in the text: escape agent-controlled text")
		}
	case "":
		shown = html
	default:
		return "", "", bad("unsupported parse_mode " + mode), false
	}
	if n := len(utf16.Encode([]rune(shown))); n > 4096 {
		return "", "", bad("message is too long"), false
	}
	if n := len(utf16.Encode([]rune(html))); n > 4096 {
		s.violate("text source is %d UTF-16 units (clawd keeps it ≤ 4096)", n)
	}
	lp, _ := p["link_preview_options"].(map[string]any)
	if dis, _ := lp["is_disabled"].(bool); !dis {
		s.violate("link previews not disabled: Telegram would fetch agent-controlled URLs")
	}
	return html, shown, apiReply{}, true
}

func (s *Server) keyboard(p map[string]any, required bool) ([][]Button, apiReply, bool) {
	raw, present := p["reply_markup"]
	if !present {
		if required {
			return nil, bad("reply_markup is required"), false
		}
		return nil, apiReply{}, true
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, bad("reply_markup is not an object"), false
	}
	rows, ok := m["inline_keyboard"].([]any)
	if !ok {
		return nil, bad("inline_keyboard is not an array of arrays"), false
	}
	var out [][]Button
	total := 0
	for _, rr := range rows {
		row, ok := rr.([]any)
		if !ok {
			return nil, bad("inline_keyboard row is not an array"), false
		}
		if len(row) > 8 {
			return nil, bad("too many buttons in a row"), false
		}
		var bs []Button
		for _, bb := range row {
			b, ok := bb.(map[string]any)
			if !ok {
				return nil, bad("inline keyboard button is not an object"), false
			}
			text, _ := b["text"].(string)
			data, hasData := b["callback_data"].(string)
			if text == "" {
				return nil, bad("text buttons are unallowed in the inline keyboard"), false
			}
			if !hasData {
				return nil, bad("inline keyboard button needs callback_data"), false
			}
			if len(data) < 1 || len(data) > 64 {
				return nil, bad("BUTTON_DATA_INVALID"), false
			}
			for k := range b {
				if k != "text" && k != "callback_data" {
					return nil, bad("inline keyboard button has more than one action"), false
				}
			}
			bs = append(bs, Button{Text: text, CallbackData: data})
			total++
		}
		out = append(out, bs)
	}
	if total > 100 {
		return nil, bad("too many inline keyboard buttons"), false
	}
	return out, apiReply{}, true
}

var approvalInData = regexp.MustCompile(`^[a-z]:([a-z2-7]{26}):`)

func (s *Server) index(m *Message) {
	for _, row := range m.Keyboard {
		for _, b := range row {
			if sm := approvalInData.FindStringSubmatch(b.CallbackData); sm != nil {
				s.byApproval[sm[1]] = m.MessageID
			}
		}
	}
}

func (s *Server) sendMessage(p map[string]any) apiReply {
	chatID, rep, good := s.checkChat(p)
	if !good {
		return rep
	}
	html, shown, rep, good := s.text(p)
	if !good {
		return rep
	}
	kb, rep, good := s.keyboard(p, false)
	if !good {
		return rep
	}
	s.nextMsg++
	m := &Message{ChatID: chatID, MessageID: s.nextMsg, HTML: html, Text: shown, Keyboard: kb}
	s.messages[m.MessageID] = m
	s.index(m)
	s.notify()
	return okReply(map[string]any{"message_id": m.MessageID, "date": time.Now().Unix(), "text": shown,
		"chat": map[string]any{"id": chatID, "type": "supergroup", "title": "Approvals"}})
}

func (s *Server) editMessage(p map[string]any, withText bool) apiReply {
	if _, ok := p["inline_message_id"]; ok {
		return bad("clawd posts no inline messages")
	}
	if _, rep, good := s.checkChat(p); !good {
		return rep
	}
	id, ok := integer(p, "message_id")
	m := s.messages[id]
	if !ok || m == nil {
		return bad("message to edit not found")
	}
	html, shown := m.HTML, m.Text
	if withText {
		var rep apiReply
		var good bool
		if html, shown, rep, good = s.text(p); !good {
			return rep
		}
	}
	kb, rep, good := s.keyboard(p, false)
	if !good {
		return rep
	}
	if html == m.HTML && fmt.Sprint(kb) == fmt.Sprint(m.Keyboard) {
		return bad("message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message")
	}
	// Without reply_markup, an edit removes the inline keyboard.
	m.HTML, m.Text, m.Keyboard = html, shown, kb
	m.Edits++
	s.index(m)
	s.notify()
	return okReply(map[string]any{"message_id": m.MessageID, "chat": map[string]any{"id": m.ChatID, "type": "supergroup"}, "text": shown})
}

func (s *Server) answerCallbackQuery(p map[string]any) apiReply {
	id, _ := str(p, "callback_query_id")
	if !s.queries[id] {
		return bad("query is too old and response timeout expired or query ID is invalid")
	}
	text, _ := p["text"].(string)
	if len(utf16.Encode([]rune(text))) > 200 {
		return bad("MESSAGE_TOO_LONG")
	}
	alert, good := boolean(p, "show_alert")
	if !good {
		return bad("show_alert must be a boolean")
	}
	delete(s.queries, id)
	s.answered = append(s.answered, Answer{QueryID: id, Text: text, ShowAlert: alert})
	if ch := s.answers[id]; ch != nil {
		ch <- Answer{QueryID: id, Text: text, ShowAlert: alert}
		delete(s.answers, id)
	}
	s.notify()
	return okReply(true)
}

var secretRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

func (s *Server) setWebhook(p map[string]any) apiReply {
	raw, _ := p["url"].(string)
	u, err := url.Parse(raw)
	if raw == "" || err != nil || u.Host == "" {
		return bad("invalid webhook URL specified")
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && u.Hostname() == "127.0.0.1") {
		return bad("bad webhook: An HTTPS URL must be provided for webhook")
	}
	secret, _ := p["secret_token"].(string)
	if secret != "" && !secretRE.MatchString(secret) {
		return bad("secret token contains unallowed characters")
	}
	if n, ok := integer(p, "max_connections"); ok && (n < 1 || n > 100) {
		return bad("max_connections must be 1-100")
	}
	if drop, _ := boolean(p, "drop_pending_updates"); drop {
		s.violate("setWebhook drops pending updates: clicks made meanwhile would be lost")
	}
	if au, ok := p["allowed_updates"].([]any); ok {
		for _, a := range au {
			if a != "callback_query" {
				s.violate("setWebhook asks for %v updates", a)
			}
		}
	}
	s.webhookURL, s.secret = raw, secret
	s.hookSets++
	s.notify()
	return okReply(true)
}

func (s *Server) getUpdates(w http.ResponseWriter, r *http.Request, p map[string]any, from string) {
	s.mu.Lock()
	poll := Poll{From: from}
	var good bool
	if _, present := p["offset"]; present {
		if poll.Offset, good = integer(p, "offset"); !good {
			s.violate("getUpdates: offset is not an integer")
		}
	}
	if t, present := integer(p, "timeout"); present {
		poll.Timeout = int(t)
	}
	if au, ok := p["allowed_updates"].([]any); ok {
		for _, a := range au {
			as, _ := a.(string)
			poll.AllowedUpdates = append(poll.AllowedUpdates, as)
		}
	}
	if l, present := integer(p, "limit"); present && (l < 1 || l > 100) {
		s.violate("getUpdates: limit %d not in 1-100", l)
	}
	if poll.Timeout <= 0 {
		s.violate("getUpdates without a long-poll timeout (short polling)")
	}
	s.polls = append(s.polls, poll)
	if s.webhookURL != "" {
		s.mu.Unlock()
		write(w, apiReply{code: 409, desc: "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"})
		return
	}
	if s.conflicts > 0 {
		s.conflicts--
		s.mu.Unlock()
		write(w, apiReply{code: 409, desc: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})
		return
	}
	// A new poll terminates the ones in flight, as Telegram does.
	if len(s.pollers) > 0 {
		s.overlaps++
	}
	for id, ch := range s.pollers {
		close(ch)
		delete(s.pollers, id)
	}
	me := len(s.polls) // its number: arrival order among all getUpdates calls
	kicked, drop := make(chan struct{}), make(chan struct{})
	s.pollers[me], s.drops[me] = kicked, drop
	// Updates below the offset are confirmed: forgotten.
	for len(s.queueIDs) > 0 && s.queueIDs[0] < poll.Offset {
		s.queue, s.queueIDs = s.queue[1:], s.queueIDs[1:]
	}
	s.notify()
	s.mu.Unlock()
	// Out of flight before the answer leaves, so the client's next poll
	// never counts as an overlap with this one.
	var once sync.Once
	finish := func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.pollers, me)
			delete(s.drops, me)
			s.notify()
			s.mu.Unlock()
		})
	}
	defer finish()
	timer := time.NewTimer(time.Duration(max(poll.Timeout, 0)) * time.Second)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var out []json.RawMessage
		for i, id := range s.queueIDs {
			if id >= poll.Offset {
				out = append(out, s.queue[i])
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if len(out) > 0 {
			finish()
			write(w, okReply(out))
			return
		}
		select {
		case <-ch:
		case <-kicked:
			finish()
			write(w, apiReply{code: 409, desc: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})
			return
		case <-drop:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
				}
			}
			return
		case <-timer.C:
			finish()
			write(w, okReply([]any{}))
			return
		case <-r.Context().Done():
			return
		}
	}
}

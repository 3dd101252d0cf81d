// Package fake is a Discord for tests: the REST endpoints clawd uses
// (checking auth and every documented limit of what it sends), a Gateway
// WebSocket that identifies, heartbeats, resumes and dispatches
// INTERACTION_CREATE, and an interactions-endpoint client that signs with
// its own Ed25519 key. Clicks are pressed as Discord would deliver them.
package fake

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Message is a posted (and maybe edited) message as the fake stores it.
type Message struct {
	ID              string           `json:"id"`
	ChannelID       string           `json:"channel_id"`
	Content         string           `json:"content"`
	Embeds          []Embed          `json:"embeds"`
	Components      []Component      `json:"components"`
	AllowedMentions *AllowedMentions `json:"allowed_mentions,omitempty"`
	Edits           int              `json:"-"`
	// ApprovalID is the approval the message's buttons carry (kept after
	// an edit removes them).
	ApprovalID string `json:"-"`
}

// Embed is a rich embed (the fields clawd may use).
type Embed struct {
	Title       string          `json:"title,omitempty"`
	Type        string          `json:"type,omitempty"`
	Description string          `json:"description,omitempty"`
	URL         string          `json:"url,omitempty"`
	Timestamp   string          `json:"timestamp,omitempty"`
	Color       int             `json:"color,omitempty"`
	Footer      *EmbedFooter    `json:"footer,omitempty"`
	Author      *EmbedAuthor    `json:"author,omitempty"`
	Fields      []EmbedField    `json:"fields,omitempty"`
	Image       json.RawMessage `json:"image,omitempty"`
	Thumbnail   json.RawMessage `json:"thumbnail,omitempty"`
}

// EmbedFooter is an embed's footer.
type EmbedFooter struct {
	Text    string `json:"text"`
	IconURL string `json:"icon_url,omitempty"`
}

// EmbedAuthor is an embed's author line.
type EmbedAuthor struct {
	Name    string `json:"name"`
	URL     string `json:"url,omitempty"`
	IconURL string `json:"icon_url,omitempty"`
}

// EmbedField is one embed field.
type EmbedField struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Inline bool   `json:"inline,omitempty"`
}

// Component is an action row (type 1) or a button (type 2).
type Component struct {
	Type       int             `json:"type"`
	Style      int             `json:"style,omitempty"`
	Label      string          `json:"label,omitempty"`
	CustomID   string          `json:"custom_id,omitempty"`
	URL        string          `json:"url,omitempty"`
	Disabled   bool            `json:"disabled,omitempty"`
	Emoji      json.RawMessage `json:"emoji,omitempty"`
	Components []Component     `json:"components,omitempty"`
}

// AllowedMentions says who a message may notify.
type AllowedMentions struct {
	Parse       []string `json:"parse"`
	Users       []string `json:"users,omitempty"`
	Roles       []string `json:"roles,omitempty"`
	RepliedUser bool     `json:"replied_user,omitempty"`
}

// Buttons are the message's buttons, in order.
func (m Message) Buttons() []Component {
	var b []Component
	for _, row := range m.Components {
		b = append(b, row.Components...)
	}
	return b
}

// Reply is what clawd answered to one click.
type Reply struct {
	InteractionID string
	Via           string // "gateway" (callback endpoint) or "http" (endpoint response)
	Type          int
	Content       string
	Flags         int
	Mentions      *AllowedMentions
}

// Server is the fake Discord.
type Server struct {
	srv *httptest.Server

	// Token, AppID, ChannelID, GuildID and BotID are the fake's identities.
	Token, AppID, ChannelID, GuildID, BotID string
	// OtherChannelID is a second channel the bot may post to (a route
	// target).
	OtherChannelID string
	// Now is the clock the fake signs with (default time.Now).
	Now func() time.Time

	pub  ed25519.PublicKey
	priv ed25519.PrivateKey

	gwWrite    sync.Mutex // orders Gateway writes: handshakes, dispatches, ops
	mu         sync.Mutex
	next       uint64
	msgs       map[string]*Message
	byApproval map[string]string
	violations []string
	changed    chan struct{}
	pending    map[string]*pendingInteraction
	replies    []Reply
	endpoint   string
	last       *signedRequest
	gw         gwState
}

type pendingInteraction struct {
	token    string
	sent     time.Time
	answered bool
	reply    chan Reply
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	s := &Server{
		Token: "fake-bot-token." + randHex(12), AppID: "1100000000000000001", ChannelID: "1200000000000000002",
		OtherChannelID: "1200000000000000009",
		GuildID:        "1300000000000000003", BotID: "1100000000000000001", Now: time.Now,
		pub: pub, priv: priv, next: 1400000000000000000,
		msgs: map[string]*Message{}, byApproval: map[string]string{}, changed: make(chan struct{}),
		pending: map[string]*pendingInteraction{},
	}
	s.gw.interval = 41250 * time.Millisecond
	s.gw.changed = make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v10/gateway/bot", s.gatewayBot)
	mux.HandleFunc("POST /api/v10/channels/{channel}/messages", s.createMessage)
	mux.HandleFunc("PATCH /api/v10/channels/{channel}/messages/{message}", s.editMessage)
	mux.HandleFunc("POST /api/v10/interactions/{id}/{token}/callback", s.callback)
	mux.HandleFunc("/gateway", s.gateway)
	mux.HandleFunc("/resume", s.gateway)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.violation("unexpected request %s %s", r.Method, r.URL.Path)
		apiErr(w, http.StatusNotFound, 0, "404: Not Found")
	})
	s.srv = httptest.NewServer(mux)
	return s
}

// Close stops the fake.
func (s *Server) Close() {
	s.mu.Lock()
	if s.gw.conn != nil {
		s.gw.conn.CloseNow()
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// PublicKey is the key the fake signs interactions with.
func (s *Server) PublicKey() ed25519.PublicKey { return s.pub }

// Settings are clawd.yaml settings for a channel on this fake (gateway
// mode; add "mode": "interactions" for the endpoint).
func (s *Server) Settings() map[string]any {
	return map[string]any{
		"bot-token":      s.Token,
		"application-id": s.AppID,
		"public-key":     hex.EncodeToString(s.pub),
		"channel-id":     s.ChannelID,
		"api-base":       s.srv.URL + "/api/v10",
	}
}

// Violations are the shape and limit violations seen in what clawd sent.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Replies are all the answers clawd gave to clicks, in order.
func (s *Server) Replies() []Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Reply(nil), s.replies...)
}

// Messages are all messages, in the order they were posted.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for id := uint64(1400000000000000000); id <= s.next; id++ {
		if m, ok := s.msgs[strconv.FormatUint(id, 10)]; ok {
			out = append(out, copyMessage(m))
		}
	}
	return out
}

// Card is the latest state of the message that carries approvalID.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cardLocked(approvalID)
}

func (s *Server) cardLocked(approvalID string) (Message, bool) {
	m, ok := s.msgs[s.byApproval[approvalID]]
	if !ok {
		return Message{}, false
	}
	return copyMessage(m), true
}

// WaitCard waits until the card for approvalID exists and cond holds.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		m, ok := s.cardLocked(approvalID)
		ch := s.changed
		s.mu.Unlock()
		if ok && (cond == nil || cond(m)) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			if ok {
				return m, fmt.Errorf("card %s: condition not met: %w", approvalID, ctx.Err())
			}
			return m, fmt.Errorf("no card for %s: %w", approvalID, ctx.Err())
		case <-ch:
		}
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) violation(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, fmt.Sprintf(format, a...))
}

func (s *Server) snowflakeLocked() string {
	s.next++
	return strconv.FormatUint(s.next, 10)
}

func copyMessage(m *Message) Message {
	var c Message
	b, _ := json.Marshal(m)
	json.Unmarshal(b, &c)
	c.Edits, c.ApprovalID = m.Edits, m.ApprovalID
	return c
}

// WaitMessage waits for a message (the latest state of any) for which cond
// holds.
func (s *Server) WaitMessage(ctx context.Context, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		for _, m := range s.Messages() {
			if cond(m) {
				return m, nil
			}
		}
		select {
		case <-ctx.Done():
			return Message{}, fmt.Errorf("no such message: %w", ctx.Err())
		case <-ch:
		}
	}
}

func apiErr(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// auth checks the bot token and the User-Agent Discord requires.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) bool {
	if !strings.HasPrefix(r.Header.Get("User-Agent"), "DiscordBot (") {
		s.violation("%s %s: User-Agent %q is not \"DiscordBot ($url, $version)\"", r.Method, r.URL.Path, r.Header.Get("User-Agent"))
	}
	if r.Header.Get("Authorization") != "Bot "+s.Token {
		s.violation("%s %s: missing or wrong Authorization: Bot token", r.Method, r.URL.Path)
		apiErr(w, http.StatusUnauthorized, 0, "401: Unauthorized")
		return false
	}
	return true
}

func (s *Server) gatewayBot(w http.ResponseWriter, r *http.Request) {
	if !s.auth(w, r) {
		return
	}
	writeJSON(w, map[string]any{
		"url":    "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/gateway",
		"shards": 1,
		"session_start_limit": map[string]int{
			"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1,
		},
	})
}

// messageBody is a create/edit body; pointers tell absent from empty.
type messageBody struct {
	Content         *string          `json:"content"`
	Embeds          *[]Embed         `json:"embeds"`
	Components      *[]Component     `json:"components"`
	AllowedMentions *AllowedMentions `json:"allowed_mentions"`
	Flags           *int             `json:"flags"`
	Nonce           json.RawMessage  `json:"nonce"`
	TTS             *bool            `json:"tts"`
	StickerIDs      json.RawMessage  `json:"sticker_ids"`
	Attachments     json.RawMessage  `json:"attachments"`
}

func (s *Server) readMessage(w http.ResponseWriter, r *http.Request) (*messageBody, bool) {
	if !s.auth(w, r) {
		return nil, false
	}
	if ch := r.PathValue("channel"); ch != s.ChannelID && ch != s.OtherChannelID {
		s.violation("%s: unknown channel %s", r.Method, r.PathValue("channel"))
		apiErr(w, http.StatusNotFound, 10003, "Unknown Channel")
		return nil, false
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.violation("%s message: Content-Type %q, want application/json", r.Method, ct)
		apiErr(w, http.StatusBadRequest, 50035, "Invalid Form Body")
		return nil, false
	}
	var b messageBody
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		s.violation("%s message: body is not a message object: %v", r.Method, err)
		apiErr(w, http.StatusBadRequest, 50035, "Invalid Form Body")
		return nil, false
	}
	if errs := checkMessage(&b, r.Method == "POST"); len(errs) > 0 {
		for _, e := range errs {
			s.violation("%s message: %s", r.Method, e)
		}
		apiErr(w, http.StatusBadRequest, 50035, "Invalid Form Body: "+errs[0])
		return nil, false
	}
	return &b, true
}

func (s *Server) createMessage(w http.ResponseWriter, r *http.Request) {
	b, ok := s.readMessage(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	m := &Message{ID: s.snowflakeLocked(), ChannelID: r.PathValue("channel")}
	s.applyLocked(m, b)
	s.notifyLocked()
	out := copyMessage(m)
	s.mu.Unlock()
	writeJSON(w, out)
}

func (s *Server) editMessage(w http.ResponseWriter, r *http.Request) {
	b, ok := s.readMessage(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	m, found := s.msgs[r.PathValue("message")]
	if !found || m.ChannelID != r.PathValue("channel") {
		s.mu.Unlock()
		s.violation("PATCH: unknown message %s", r.PathValue("message"))
		apiErr(w, http.StatusNotFound, 10008, "Unknown Message")
		return
	}
	m.Edits++
	s.applyLocked(m, b)
	s.notifyLocked()
	out := copyMessage(m)
	s.mu.Unlock()
	writeJSON(w, out)
}

func (s *Server) applyLocked(m *Message, b *messageBody) {
	if b.Content != nil {
		m.Content = *b.Content
	}
	if b.Embeds != nil {
		m.Embeds = *b.Embeds
	}
	if b.Components != nil {
		m.Components = *b.Components
	}
	if b.AllowedMentions != nil {
		m.AllowedMentions = b.AllowedMentions
	}
	s.msgs[m.ID] = m
	for _, btn := range m.Buttons() {
		if parts := strings.Split(btn.CustomID, ":"); len(parts) == 3 {
			s.byApproval[parts[1]] = m.ID
			m.ApprovalID = parts[1]
		}
	}
}

func runes(s string) int { return utf8.RuneCountInString(s) }

// checkMessage checks a message body against Discord's documented limits
// (and, marked "clawd:", against what clawd promises: no mass mentions).
func checkMessage(b *messageBody, create bool) []string {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if create && (b.Content == nil || *b.Content == "") && (b.Embeds == nil || len(*b.Embeds) == 0) {
		bad("cannot send an empty message (no content, no embeds)")
	}
	if b.Content != nil && runes(*b.Content) > 2000 {
		bad("content is %d characters, limit 2000", runes(*b.Content))
	}
	if b.Embeds != nil {
		embeds := *b.Embeds
		if len(embeds) > 10 {
			bad("%d embeds, limit 10", len(embeds))
		}
		total := 0
		for i, e := range embeds {
			n := runes(e.Title) + runes(e.Description)
			if runes(e.Title) > 256 {
				bad("embed %d: title is %d characters, limit 256", i, runes(e.Title))
			}
			if runes(e.Description) > 4096 {
				bad("embed %d: description is %d characters, limit 4096", i, runes(e.Description))
			}
			if len(e.Fields) > 25 {
				bad("embed %d: %d fields, limit 25", i, len(e.Fields))
			}
			for j, f := range e.Fields {
				if f.Name == "" || runes(f.Name) > 256 {
					bad("embed %d field %d: name is %d characters, want 1 to 256", i, j, runes(f.Name))
				}
				if f.Value == "" || runes(f.Value) > 1024 {
					bad("embed %d field %d: value is %d characters, want 1 to 1024", i, j, runes(f.Value))
				}
				n += runes(f.Name) + runes(f.Value)
			}
			if e.Footer != nil {
				if runes(e.Footer.Text) > 2048 {
					bad("embed %d: footer is %d characters, limit 2048", i, runes(e.Footer.Text))
				}
				n += runes(e.Footer.Text)
			}
			if e.Author != nil {
				if runes(e.Author.Name) > 256 {
					bad("embed %d: author name is %d characters, limit 256", i, runes(e.Author.Name))
				}
				n += runes(e.Author.Name)
			}
			if e.Color < 0 || e.Color > 0xFFFFFF {
				bad("embed %d: color %d out of range", i, e.Color)
			}
			total += n
		}
		if total > 6000 {
			bad("embeds total %d characters, limit 6000", total)
		}
	}
	if b.Components != nil {
		rows := *b.Components
		if len(rows) > 5 {
			bad("%d action rows, limit 5", len(rows))
		}
		ids := map[string]bool{}
		for i, row := range rows {
			if row.Type != 1 {
				bad("component %d: top-level type %d, want an action row (1)", i, row.Type)
				continue
			}
			if len(row.Components) == 0 || len(row.Components) > 5 {
				bad("action row %d: %d components, want 1 to 5", i, len(row.Components))
			}
			for j, c := range row.Components {
				where := fmt.Sprintf("row %d button %d", i, j)
				if c.Type != 2 {
					bad("%s: type %d, want a button (2)", where, c.Type)
					continue
				}
				if runes(c.Label) > 80 {
					bad("%s: label is %d characters, limit 80", where, runes(c.Label))
				}
				if c.Label == "" && len(c.Emoji) == 0 {
					bad("%s: needs a label or an emoji", where)
				}
				switch {
				case c.Style >= 1 && c.Style <= 4:
					if c.CustomID == "" || runes(c.CustomID) > 100 {
						bad("%s: custom_id is %d characters, want 1 to 100", where, runes(c.CustomID))
					}
					if c.URL != "" {
						bad("%s: a non-link button cannot have a url", where)
					}
					if ids[c.CustomID] {
						bad("%s: custom_id %q is not unique in the message", where, c.CustomID)
					}
					ids[c.CustomID] = true
				case c.Style == 5:
					if c.URL == "" || c.CustomID != "" {
						bad("%s: a link button needs a url and no custom_id", where)
					}
				default:
					bad("%s: style %d, want 1 to 5", where, c.Style)
				}
			}
		}
	}
	if am := b.AllowedMentions; am != nil {
		for _, p := range am.Parse {
			if p != "users" && p != "roles" && p != "everyone" {
				bad("allowed_mentions.parse has %q, want users, roles or everyone", p)
			}
			if p == "users" && len(am.Users) > 0 {
				bad("allowed_mentions: parse users and a users list are mutually exclusive")
			}
			if p == "roles" && len(am.Roles) > 0 {
				bad("allowed_mentions: parse roles and a roles list are mutually exclusive")
			}
			if p == "everyone" || p == "roles" {
				bad("clawd: allowed_mentions.parse %q lets agent text notify people", p)
			}
		}
		if len(am.Users) > 100 {
			bad("allowed_mentions.users has %d IDs, limit 100", len(am.Users))
		}
	} else if create || b.Content != nil {
		bad("clawd: no allowed_mentions: Discord would notify everyone the content mentions")
	}
	return errs
}

// callback is POST /interactions/{id}/{token}/callback (Gateway mode).
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	id, token := r.PathValue("id"), r.PathValue("token")
	s.mu.Lock()
	p, ok := s.pending[id]
	s.mu.Unlock()
	if !ok || p.token != token {
		s.violation("callback for an unknown interaction or with a wrong token")
		apiErr(w, http.StatusNotFound, 10062, "Unknown interaction")
		return
	}
	if r.Header.Get("Authorization") != "" && r.Header.Get("Authorization") != "Bot "+s.Token {
		s.violation("callback: wrong Authorization header")
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.violation("callback: Content-Type %q, want application/json", ct)
		apiErr(w, http.StatusBadRequest, 50035, "Invalid Form Body")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rep, errs := checkResponse(body)
	rep.InteractionID, rep.Via = id, "gateway"
	s.mu.Lock()
	late := s.Now().Sub(p.sent) > 3*time.Second
	already := p.answered
	if len(errs) == 0 && !already && !late {
		p.answered = true
	}
	s.mu.Unlock()
	switch {
	case already:
		s.violation("callback: interaction %s answered twice", id)
		apiErr(w, http.StatusBadRequest, 40060, "Interaction has already been acknowledged.")
	case late:
		s.violation("callback: interaction %s answered after 3 s", id)
		apiErr(w, http.StatusNotFound, 10062, "Unknown interaction")
	case len(errs) > 0:
		for _, e := range errs {
			s.violation("callback: %s", e)
		}
		apiErr(w, http.StatusBadRequest, 50035, "Invalid Form Body: "+errs[0])
	default:
		s.mu.Lock()
		s.replies = append(s.replies, rep)
		s.mu.Unlock()
		p.reply <- rep
		w.WriteHeader(http.StatusNoContent)
	}
}

// checkResponse checks an interaction response and reads it.
func checkResponse(body []byte) (Reply, []string) {
	var resp struct {
		Type *int `json:"type"`
		Data *struct {
			Content         string           `json:"content"`
			Flags           int              `json:"flags"`
			AllowedMentions *AllowedMentions `json:"allowed_mentions"`
			Embeds          json.RawMessage  `json:"embeds"`
			Components      json.RawMessage  `json:"components"`
			TTS             bool             `json:"tts"`
		} `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&resp); err != nil || resp.Type == nil {
		return Reply{}, []string{fmt.Sprintf("not an interaction response: %v", err)}
	}
	rep := Reply{Type: *resp.Type}
	var errs []string
	switch *resp.Type {
	case 1, 4, 5, 6, 7, 8, 9, 10, 12:
	default:
		errs = append(errs, fmt.Sprintf("response type %d is not a callback type", *resp.Type))
	}
	if resp.Data != nil {
		rep.Content, rep.Flags, rep.Mentions = resp.Data.Content, resp.Data.Flags, resp.Data.AllowedMentions
		if runes(rep.Content) > 2000 {
			errs = append(errs, fmt.Sprintf("response content is %d characters, limit 2000", runes(rep.Content)))
		}
		if rep.Flags&^(64|4|4096) != 0 {
			errs = append(errs, fmt.Sprintf("response flags %d: only EPHEMERAL, SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS may be set", rep.Flags))
		}
	}
	if *resp.Type == 4 && (resp.Data == nil || resp.Data.Content == "" && len(resp.Data.Embeds) == 0) {
		errs = append(errs, "CHANNEL_MESSAGE_WITH_SOURCE needs content")
	}
	return rep, errs
}

// Interaction is the INTERACTION_CREATE / endpoint payload of a click;
// ClickWith lets a test change it before it is sent.
type Interaction struct {
	ID            string          `json:"id"`
	ApplicationID string          `json:"application_id"`
	Type          int             `json:"type"`
	Data          InteractionData `json:"data"`
	GuildID       string          `json:"guild_id,omitempty"`
	ChannelID     string          `json:"channel_id,omitempty"`
	Channel       *struct {
		ID   string `json:"id"`
		Type int    `json:"type"`
	} `json:"channel,omitempty"`
	Member  *Member  `json:"member,omitempty"`
	User    *User    `json:"user,omitempty"`
	Token   string   `json:"token"`
	Version int      `json:"version"`
	Message *Message `json:"message,omitempty"`
	Locale  string   `json:"locale,omitempty"`
}

// InteractionData is a component click's data.
type InteractionData struct {
	CustomID      string `json:"custom_id,omitempty"`
	ComponentType int    `json:"component_type,omitempty"`
}

// Member is a guild member.
type Member struct {
	User  *User  `json:"user"`
	Nick  string `json:"nick,omitempty"`
	Roles []any  `json:"roles"`
}

// User is a Discord user.
type User struct {
	ID         string `json:"id"`
	Username   string `json:"username"`
	GlobalName string `json:"global_name,omitempty"`
}

// Click presses the card's button for act as userID in the guild channel,
// delivered the way the application is set up (Gateway, or the
// interactions endpoint once SetInteractionsURL was called), and returns
// what the clicker sees.
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	return s.ClickWith(ctx, approvalID, act, userID, nil)
}

// ClickWith is Click with a change to the interaction before it is sent.
func (s *Server) ClickWith(ctx context.Context, approvalID, act, userID string, mod func(*Interaction)) (string, error) {
	in, err := s.interaction(approvalID, act, userID)
	if err != nil {
		return "", err
	}
	if mod != nil {
		mod(in)
	}
	s.mu.Lock()
	endpoint := s.endpoint
	s.mu.Unlock()
	var rep Reply
	if endpoint != "" {
		rep, err = s.deliverHTTP(ctx, in)
	} else {
		rep, err = s.deliverGateway(ctx, in)
	}
	return rep.Content, err
}

func (s *Server) interaction(approvalID, act, userID string) (*Interaction, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.cardLocked(approvalID)
	if !ok {
		return nil, fmt.Errorf("no card for approval %s", approvalID)
	}
	var btn *Component
	for _, b := range m.Buttons() {
		if strings.HasPrefix(b.CustomID, act+":") {
			btn = &b
			break
		}
	}
	if btn == nil {
		return nil, fmt.Errorf("card for %s has no %q button", approvalID, act)
	}
	msg := m
	return &Interaction{
		ID: s.snowflakeLocked(), ApplicationID: s.AppID, Type: 3,
		Data:    InteractionData{CustomID: btn.CustomID, ComponentType: 2},
		GuildID: s.GuildID, ChannelID: m.ChannelID,
		Member: &Member{User: &User{ID: userID, Username: "user" + userID}, Roles: []any{}},
		Token:  "aW50ZXJhY3Rpb24." + randHex(24), Version: 1, Message: &msg, Locale: "en-US",
	}, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var errNoSession = errors.New("no gateway session")

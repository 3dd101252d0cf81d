// Package fake is a stand-in for the Microsoft side of a Teams bot: the
// Bot Framework OpenID metadata and signing keys (its own RSA keys, which it
// can rotate), the token endpoint, and the Bot Connector's conversation
// API. It checks every request clawd makes against the documented shapes
// and limits, and clicks card buttons by POSTing activities signed exactly
// as the Bot Connector signs them, or forged in one chosen way.
package fake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Identities the fake uses.
const (
	AppID          = "00000000-0000-4000-8000-00000000c1a0"
	AppPassword    = "fake-app-password-not-a-secret"
	ConversationID = "19:clawd-approvals@thread.tacv2"
	TenantID       = "11111111-2222-4333-8444-555555555555"
	Issuer         = "https://api.botframework.com"
	Scope          = "https://api.botframework.com/.default"
	// MaxMessage is Teams' message size limit.
	MaxMessage = 28 * 1024
	tokenLife  = time.Hour
)

// Message is one card as the conversation shows it now.
type Message struct {
	ActivityID     string
	ConversationID string
	ApprovalID     string
	Card           map[string]any // the Adaptive Card
	Text           string         // every TextBlock's and fact's text, one per line
	Actions        []Action
	Mentions       []string // mentioned ids (msteams.entities)
	Replies        []string // text of the bot's replies in this message's thread
	Updates        int
}

// Action is one button of a card.
type Action struct {
	Type, Title, Verb, Value, Style string
	Fallback                        string // fallback action type ("" = none)
}

// Forgery is one way a click can be forged.
type Forgery int

// Forgeries.
const (
	Genuine                Forgery = iota
	ForgeWrongKey                  // signed by another key under the real kid
	ForgeUnknownKey                // signed by another key under a kid nobody publishes
	ForgeWrongAudience             // aud is another bot
	ForgeWrongIssuer               // iss is not the Bot Framework
	ForgeExpired                   // exp an hour ago
	ForgeNotYetValid               // nbf in an hour
	ForgeServiceURL                // serviceurl claim differs from the activity's
	ForgeNoToken                   // no Authorization header
	ForgeHS256                     // HMAC-signed with the public modulus as secret
	ForgeUnendorsed                // a published key endorsed for another channel only
	ForgeOtherConversation         // genuine token, activity from another conversation
	ForgeOtherRecipient            // genuine token, activity addressed to another bot
	ForgeMalformed                 // genuine token, body not JSON
)

type key struct {
	kid  string
	priv *rsa.PrivateKey
	ends []string
}

// Server is the fake.
type Server struct {
	srv *httptest.Server
	now func() time.Time

	mu         sync.Mutex
	keys       []key // published
	unendorsed key   // published, endorsed for "skype" only
	stray      key   // never published
	tokens     map[string]time.Time
	tokenCount int
	msgs       map[string]*Message // by activity id
	byApproval map[string]string   // approval id -> activity id
	seq        int
	violations []string
	endpoint   string
	last       *captured
	changed    chan struct{}
	invoked    map[string]any // last invoke response card by approval id
	down       bool           // metadata answers 503
}

type captured struct {
	body  []byte
	token string
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	s := &Server{now: time.Now, tokens: map[string]time.Time{}, msgs: map[string]*Message{},
		byApproval: map[string]string{}, changed: make(chan struct{}), invoked: map[string]any{}}
	s.keys = []key{newKey([]string{"msteams", "skype", "slack"})}
	s.unendorsed = newKey([]string{"skype"})
	s.stray = newKey(nil)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/.well-known/openidconfiguration", s.metadata)
	mux.HandleFunc("/v1/.well-known/keys", s.jwks)
	mux.HandleFunc("/botframework.com/oauth2/v2.0/token", s.token)
	mux.HandleFunc("/teams/v3/conversations/", s.connector)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	s.srv.Start()
	return s
}

func newKey(ends []string) key {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return key{kid: "fake-" + hex.EncodeToString(b), priv: priv, ends: ends}
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// ServiceURL is the Bot Connector service URL activities carry.
func (s *Server) ServiceURL() string { return s.srv.URL + "/teams/" }

// Settings are clawd.yaml settings for a teams channel using this fake.
func (s *Server) Settings() map[string]any {
	return map[string]any{
		"app-id":          AppID,
		"app-password":    AppPassword,
		"service-url":     s.ServiceURL(),
		"conversation-id": ConversationID,
		"openid-metadata": s.srv.URL + "/v1/.well-known/openidconfiguration",
		"token-url":       s.srv.URL + "/botframework.com/oauth2/v2.0/token",
	}
}

// SetEndpoint sets clawd's messaging endpoint (PublicURL +
// CallbackPath(name)), where clicks are POSTed.
func (s *Server) SetEndpoint(u string) {
	s.mu.Lock()
	s.endpoint = u
	s.mu.Unlock()
}

// Rotate publishes a new signing key in place of the current one; tokens
// are signed with the new key from now on.
func (s *Server) Rotate() {
	k := newKey([]string{"msteams"})
	s.mu.Lock()
	s.keys = []key{k}
	s.mu.Unlock()
}

// ExpireTokens makes every access token issued so far invalid.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	s.tokens = map[string]time.Time{}
	s.mu.Unlock()
}

// TokensIssued counts the tokens the token endpoint issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCount
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

// Card is the latest posted or updated message carrying that approval.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[s.byApproval[approvalID]]
	if !ok {
		return Message{}, false
	}
	return copyMsg(m), true
}

func copyMsg(m *Message) Message {
	c := *m
	c.Actions = append([]Action(nil), m.Actions...)
	c.Replies = append([]string(nil), m.Replies...)
	c.Mentions = append([]string(nil), m.Mentions...)
	return c
}

// Messages are all messages, in no order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.msgs {
		out = append(out, copyMsg(m))
	}
	return out
}

// WaitCard waits until the approval's message satisfies cond.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		m, ok := s.msgs[s.byApproval[approvalID]]
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

// InvokeCard is the last card returned to a click on that approval.
func (s *Server) InvokeCard(approvalID string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.invoked[approvalID]
	if !ok {
		return nil, false
	}
	return c.(map[string]any), true
}

func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// --- OpenID metadata, keys, token endpoint ---

// SetMetadataDown makes the OpenID metadata document answer 503 (down)
// or work again.
func (s *Server) SetMetadataDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.violate("openid metadata: method %s", r.Method)
	}
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, 200, map[string]any{
		"issuer":                                "https://api.botframework.com",
		"authorization_endpoint":                "https://invalid.botframework.com",
		"jwks_uri":                              s.srv.URL + "/v1/.well-known/keys",
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt"},
	})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.violate("jwks: method %s", r.Method)
	}
	s.mu.Lock()
	ks := append(append([]key(nil), s.keys...), s.unendorsed)
	s.mu.Unlock()
	var out []map[string]any
	for _, k := range ks {
		out = append(out, map[string]any{
			"kty": "RSA", "use": "sig", "kid": k.kid,
			"n":            base64.RawURLEncoding.EncodeToString(k.priv.N.Bytes()),
			"e":            base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.priv.E)).Bytes()),
			"endorsements": k.ends,
		})
	}
	writeJSON(w, 200, map[string]any{"keys": out})
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.violate("token: method %s", r.Method)
		http.Error(w, "POST", 405)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		s.violate("token: content type %q", ct)
	}
	if err := r.ParseForm(); err != nil {
		s.violate("token: form: %v", err)
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" || f.Get("scope") != Scope {
		s.violate("token: grant_type %q scope %q", f.Get("grant_type"), f.Get("scope"))
		writeJSON(w, 400, map[string]any{"error": "invalid_request"})
		return
	}
	if f.Get("client_id") != AppID || f.Get("client_secret") != AppPassword {
		writeJSON(w, 401, map[string]any{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
		return
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := "fake-access-" + hex.EncodeToString(b)
	s.mu.Lock()
	s.tokens[tok] = s.now().Add(tokenLife)
	s.tokenCount++
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": int(tokenLife.Seconds()) - 1,
		"ext_expires_in": int(tokenLife.Seconds()) - 1, "access_token": tok})
}

// --- Bot Connector ---

func (s *Server) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, live := s.tokens[tok]
	return ok && live && s.now().Before(exp)
}

func (s *Server) connector(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/teams/v3/conversations/")
	parts := strings.Split(rest, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[1] != "activities" {
		s.violate("connector: unknown path %s", r.URL.Path)
		connectorError(w, 404, "NotFound", "unknown path")
		return
	}
	conv, err := url.PathUnescape(parts[0])
	if err != nil {
		s.violate("connector: path %s", r.URL.Path)
	}
	var id string
	if len(parts) == 3 {
		id, _ = url.PathUnescape(parts[2])
	}
	if !s.authorized(r) {
		connectorError(w, 401, "Unauthorized", "Authorization has been denied for this request.")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.violate("connector: content type %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		connectorError(w, 400, "BadSyntax", "body")
		return
	}
	if len(body) > MaxMessage {
		s.violate("connector: message of %d bytes exceeds Teams' %d", len(body), MaxMessage)
		connectorError(w, 413, "MessageSizeTooBig", "Message size too large")
		return
	}
	if conv != ConversationID && !strings.HasPrefix(conv, ConversationID+";messageid=") {
		s.violate("connector: conversation %q is not the bot's", conv)
		connectorError(w, 403, "BotNotInConversationRoster", "The bot is not part of the conversation roster.")
		return
	}
	var act map[string]any
	if err := json.Unmarshal(body, &act); err != nil {
		s.violate("connector: body is not JSON: %v", err)
		connectorError(w, 400, "BadSyntax", "not JSON")
		return
	}
	switch {
	case r.Method == http.MethodPost && id == "":
		s.post(w, conv, act)
	case r.Method == http.MethodPost:
		s.reply(w, conv, id, act)
	case r.Method == http.MethodPut && id != "":
		s.put(w, conv, id, act)
	default:
		s.violate("connector: %s %s", r.Method, r.URL.Path)
		connectorError(w, 405, "MethodNotAllowed", r.Method)
	}
}

func (s *Server) post(w http.ResponseWriter, conv string, act map[string]any) {
	m, ok := s.checkCardActivity("post", act)
	if !ok {
		connectorError(w, 400, "BadArgument", "invalid activity")
		return
	}
	s.mu.Lock()
	s.seq++
	m.ActivityID = fmt.Sprintf("1700000000%03d", s.seq)
	m.ConversationID = conv
	for _, a := range m.Actions {
		if p := strings.Split(a.Value, ":"); len(p) == 3 {
			m.ApprovalID = p[1]
		}
	}
	s.msgs[m.ActivityID] = m
	if m.ApprovalID != "" {
		s.byApproval[m.ApprovalID] = m.ActivityID
	}
	s.notify()
	s.mu.Unlock()
	writeJSON(w, 201, map[string]any{"id": m.ActivityID})
}

func (s *Server) put(w http.ResponseWriter, conv, id string, act map[string]any) {
	m, ok := s.checkCardActivity("update", act)
	if !ok {
		connectorError(w, 400, "BadArgument", "invalid activity")
		return
	}
	if aid, _ := act["id"].(string); aid != id {
		s.violate("update: activity id %q in the body, %q in the path", aid, id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, found := s.msgs[id]
	if !found || old.ConversationID != conv {
		s.violations = append(s.violations, fmt.Sprintf("update: no activity %s in %s", id, conv))
		connectorError(w, 404, "ActivityNotFoundInConversation", "unknown activity")
		return
	}
	m.ActivityID, m.ConversationID, m.ApprovalID = id, conv, old.ApprovalID
	m.Replies, m.Updates = old.Replies, old.Updates+1
	s.msgs[id] = m
	s.notify()
	writeJSON(w, 200, map[string]any{"id": id})
}

func (s *Server) reply(w http.ResponseWriter, conv, id string, act map[string]any) {
	if act["type"] != "message" {
		s.violate("reply: type %v", act["type"])
	}
	text, _ := act["text"].(string)
	if text == "" || len(text) > 4000 {
		s.violate("reply: text of %d bytes", len(text))
	}
	if act["replyToId"] != id {
		s.violate("reply: replyToId %v for activity %s", act["replyToId"], id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cardID, _, _ := strings.Cut(strings.TrimPrefix(conv, ConversationID+";messageid="), ";")
	m, ok := s.msgs[cardID]
	if !ok {
		s.violations = append(s.violations, fmt.Sprintf("reply: thread %s has no card", conv))
		connectorError(w, 404, "ConversationNotFound", "no thread")
		return
	}
	m.Replies = append(m.Replies, text)
	s.notify()
	writeJSON(w, 201, map[string]any{"id": fmt.Sprintf("reply-%d", len(m.Replies))})
}

func connectorError(w http.ResponseWriter, code int, c, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": c, "message": msg}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

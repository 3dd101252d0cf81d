// Package fake is a stand-in for Google Chat on 127.0.0.1, for clawd's
// tests: the OAuth token endpoint of a service account, the Chat API's
// message create and patch (checked against the documented shape and
// limits), the x509 certificates of chat@system.gserviceaccount.com and a
// Google JWKS, and Click, which signs a bearer token exactly as Chat does
// for the configured authentication audience and POSTs the interaction
// event to clawd's callback URL. Forge and Replay send what an attacker
// could.
package fake

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Identities and limits as Google documents them.
const (
	ChatIssuer      = "chat@system.gserviceaccount.com"
	Scope           = "https://www.googleapis.com/auth/chat.bot"
	MaxText         = 4096  // characters of message text
	MaxMessageBytes = 32000 // bytes of a message with its cards
	MaxWidgets      = 100   // widgets of one card
	ProjectNumber   = "123456789012"
	Space           = "spaces/AAAAfakeSpace"
	ClientEmail     = "clawd-approvals@fake-project.iam.gserviceaccount.com"
	chatKeyID       = "chat-key-1"
	googleKeyID     = "google-key-1"
	saKeyID         = "sa-key-1"
)

// Audience types.
const (
	AudienceProjectNumber = "project-number"
	AudienceEndpointURL   = "endpoint-url"
)

// Message is a message the app posted, as last updated.
type Message struct {
	Name       string
	ApprovalID string // from the card's cardId "clawd-<ID>"
	Text       string
	Title      string   // the card header's title
	Texts      []string // every text of the card's widgets, in order
	Buttons    []Button
	Updates    int // PATCHes so far
	CardsV2    json.RawMessage
}

// Button is one action button on a card.
type Button struct {
	Text     string
	Function string
	Value    string // the "v" parameter
}

// Forgery is what Forge does wrong.
type Forgery int

const (
	ForgeNone            Forgery = iota
	ForgeWrongKey                // signed with a key Google never published (same key ID)
	ForgeWrongAudience           // a token for another project / endpoint
	ForgeWrongIssuer             // issued by someone other than Chat / Google
	ForgeWrongEmail              // endpoint-url: a genuine Google ID token of another service account
	ForgeUnverifiedEmail         // endpoint-url: email_verified false
	ForgeExpired                 // exp an hour ago
	ForgeNoToken                 // no Authorization header
	ForgeAlgNone                 // "alg": "none"
	ForgeOtherMode               // the other audience type's token (ID token for a project number, …)
	ForgeOtherSpace              // a valid token, the event says another space
	ForgeStaleEvent              // a valid token, eventTime an hour old
)

// Server is the fake Google.
type Server struct {
	srv *httptest.Server
	// Now is the fake's clock (tokens, eventTime); default time.Now.
	Now func() time.Time

	mu          sync.Mutex
	audType     string
	callbackURL string
	tokens      map[string]time.Time // access token → expiry
	issued      int
	keyFetches  int
	revoked     map[string]bool
	msgs        map[string]*Message
	order       []string
	violations  []string
	changed     chan struct{}
	seq         int
	last        *http.Request
	lastBody    []byte
	http        *http.Client
}

type keys struct {
	sa, chat, google, wrong *rsa.PrivateKey
	chatCert                []byte
}

var (
	keyOnce sync.Once
	theKeys keys
)

// fakeKeys are generated once per process (RSA generation is slow).
func fakeKeys() keys {
	keyOnce.Do(func() {
		gen := func() *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			return k
		}
		theKeys = keys{sa: gen(), chat: gen(), google: gen(), wrong: gen()}
		tpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: ChatIssuer},
			NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &theKeys.chat.PublicKey, theKeys.chat)
		if err != nil {
			panic(err)
		}
		theKeys.chatCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	})
	return theKeys
}

// New starts the fake on 127.0.0.1 in project-number mode.
func New() *Server {
	fakeKeys()
	s := &Server{
		Now: time.Now, audType: AudienceProjectNumber,
		tokens: map[string]time.Time{}, revoked: map[string]bool{}, msgs: map[string]*Message{}, changed: make(chan struct{}),
		http: &http.Client{Timeout: 30 * time.Second},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", s.token)
	mux.HandleFunc("/certs/chat", s.certs)
	mux.HandleFunc("/oauth2/v3/certs", s.jwks)
	mux.HandleFunc("/v1/", s.api)
	s.srv = httptest.NewServer(mux)
	return s
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// SetCallbackURL is where Click posts events (clawd's public URL +
// approval.CallbackPath(name)); in endpoint-url mode it is also the
// tokens' audience.
func (s *Server) SetCallbackURL(u string) {
	s.mu.Lock()
	s.callbackURL = u
	s.mu.Unlock()
}

// SetAudienceType switches between "project-number" and "endpoint-url".
func (s *Server) SetAudienceType(t string) {
	s.mu.Lock()
	s.audType = t
	s.mu.Unlock()
}

// KeyJSON is the service account's JSON key, as the console downloads it.
func (s *Server) KeyJSON() string {
	k := fakeKeys()
	der, _ := x509.MarshalPKCS8PrivateKey(k.sa)
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "fake-project", "private_key_id": saKeyID,
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": ClientEmail, "client_id": "100000000000000000001",
		"auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": s.srv.URL + "/token",
	})
	return string(b)
}

// Settings are clawd.yaml settings for a gchat channel using this fake.
func (s *Server) Settings() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]any{
		"credentials":      s.KeyJSON(),
		"space":            Space,
		"api-base":         s.srv.URL,
		"token-url":        s.srv.URL + "/token",
		"audience-type":    s.audType,
		"certs-url":        s.srv.URL + "/certs/chat",
		"google-certs-url": s.srv.URL + "/oauth2/v3/certs",
	}
	switch {
	case s.audType == AudienceProjectNumber:
		m["audience"] = ProjectNumber
	case s.callbackURL != "":
		m["audience"] = s.callbackURL
	}
	return m
}

// Violations are the shape and limit violations seen in what clawd sent.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

func (s *Server) violate(format string, a ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

// Card is the latest message carrying that approval's card.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cardLocked(approvalID)
}

func (s *Server) cardLocked(id string) (Message, bool) {
	for i := len(s.order) - 1; i >= 0; i-- {
		if m := s.msgs[s.order[i]]; m.ApprovalID == id {
			c := *m
			c.Buttons, c.Texts = slices.Clone(m.Buttons), slices.Clone(m.Texts)
			return c, true
		}
	}
	return Message{}, false
}

func (s *Server) countFetch() {
	s.mu.Lock()
	s.keyFetches++
	s.mu.Unlock()
}

// KeyFetches is how often the certificates and the JWKS were fetched.
func (s *Server) KeyFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keyFetches
}

// TokensIssued is how many access tokens the token endpoint gave out.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// RevokeTokens makes every access token given out so far invalid (the API
// answers 401), as a revocation or an early expiry would.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	for t := range s.tokens {
		s.revoked[t] = true
	}
	s.tokens = map[string]time.Time{}
	s.mu.Unlock()
}

// Messages is how many messages were created.
func (s *Server) Messages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// WaitCard waits until the approval's card satisfies cond (nil: exists).
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
		case <-ch:
		case <-ctx.Done():
			return m, fmt.Errorf("card of %s: %w", approvalID, ctx.Err())
		}
	}
}

func (s *Server) bumpLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// token is the OAuth 2.0 token endpoint (JWT bearer grant).
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, e, why string) {
		s.violate("token: %s", why)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": e, "error_description": why})
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "invalid_request", "method "+r.Method)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		fail(http.StatusBadRequest, "invalid_request", "content type "+ct)
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request", "form")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail(http.StatusBadRequest, "unsupported_grant_type", "grant_type "+g)
		return
	}
	now := s.Now()
	var c struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	k := fakeKeys()
	_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), &c, func(t *jwt.Token) (any, error) {
		if t.Header["kid"] != nil && t.Header["kid"] != saKeyID {
			return nil, errors.New("unknown kid")
		}
		return &k.sa.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithAudience(s.srv.URL+"/token"), jwt.WithIssuer(ClientEmail), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		fail(http.StatusBadRequest, "invalid_grant", "assertion: "+err.Error())
		return
	}
	if c.IssuedAt == nil || c.ExpiresAt.Sub(c.IssuedAt.Time) > time.Hour {
		fail(http.StatusBadRequest, "invalid_grant", "assertion lives longer than an hour")
		return
	}
	if !slices.Contains(strings.Fields(c.Scope), Scope) {
		fail(http.StatusBadRequest, "invalid_scope", "scope "+c.Scope)
		return
	}
	tok := "ya29.fake-" + randHex(16)
	s.mu.Lock()
	s.tokens[tok] = now.Add(time.Hour)
	s.issued++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
}

// certs is Google's x509 metadata of chat@system.gserviceaccount.com.
func (s *Server) certs(w http.ResponseWriter, r *http.Request) {
	s.countFetch()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{chatKeyID: string(fakeKeys().chatCert)})
}

// jwks is Google's OAuth2 v3 certs (ID token keys).
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	s.countFetch()
	k := fakeKeys().google.PublicKey
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": googleKeyID,
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
	}}})
}

var (
	createRe = regexp.MustCompile(`^/v1/(spaces/[A-Za-z0-9_-]+)/messages$`)
	patchRe  = regexp.MustCompile(`^/v1/(spaces/[A-Za-z0-9_-]+/messages/[A-Za-z0-9._-]+)$`)
)

func apiError(w http.ResponseWriter, code int, status, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "status": status, "message": msg}})
}

// api is the Chat API: spaces.messages.create and .patch.
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	bad := func(code int, status, why string) {
		s.violate("%s %s: %s", r.Method, r.URL.Path, why)
		apiError(w, code, status, why)
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, ok := s.tokens[tok]
	revoked := s.revoked[tok]
	s.mu.Unlock()
	if revoked {
		apiError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "access token revoked")
		return
	}
	if !ok || !s.Now().Before(exp) {
		bad(http.StatusUnauthorized, "UNAUTHENTICATED", "no valid access token")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		bad(http.StatusBadRequest, "INVALID_ARGUMENT", "content type "+ct)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if len(body) > MaxMessageBytes {
		bad(http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf("message is %d bytes, more than %d", len(body), MaxMessageBytes))
		return
	}
	var create bool
	var name string
	switch {
	case r.Method == http.MethodPost && createRe.MatchString(r.URL.Path):
		sp := createRe.FindStringSubmatch(r.URL.Path)[1]
		if sp != Space {
			bad(http.StatusNotFound, "NOT_FOUND", "no space "+sp)
			return
		}
		create = true
	case r.Method == http.MethodPatch && patchRe.MatchString(r.URL.Path):
		name = patchRe.FindStringSubmatch(r.URL.Path)[1]
		mask := strings.Split(r.URL.Query().Get("updateMask"), ",")
		for _, f := range mask {
			if f != "text" && f != "cardsV2" && f != "attachment" && f != "accessoryWidgets" {
				bad(http.StatusBadRequest, "INVALID_ARGUMENT", "updateMask field "+f)
				return
			}
		}
		s.mu.Lock()
		_, ok := s.msgs[name]
		s.mu.Unlock()
		if !ok {
			bad(http.StatusNotFound, "NOT_FOUND", "no message "+name)
			return
		}
	default:
		bad(http.StatusNotFound, "NOT_FOUND", "no such method")
		return
	}
	m, err := checkMessage(body)
	if err != nil {
		bad(http.StatusBadRequest, "INVALID_ARGUMENT", err.Error())
		return
	}
	s.mu.Lock()
	if create {
		s.seq++
		name = fmt.Sprintf("%s/messages/fake%06d.fake%06d", Space, s.seq, s.seq)
		m.Name = name
		s.msgs[name] = m
		s.order = append(s.order, name)
	} else {
		old := s.msgs[name]
		m.Name, m.Updates = name, old.Updates+1
		if m.ApprovalID != old.ApprovalID {
			s.violations = append(s.violations, "patch changed the card ID of "+name)
		}
		s.msgs[name] = m
	}
	s.bumpLocked()
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"name": name, "sender": map[string]string{"name": "users/app", "type": "BOT"},
		"createTime": s.Now().UTC().Format(time.RFC3339Nano), "text": m.Text, "cardsV2": m.CardsV2,
		"space": map[string]string{"name": Space},
	})
}

var widgetKinds = map[string]bool{
	"textParagraph": true, "image": true, "decoratedText": true, "buttonList": true, "textInput": true,
	"selectionInput": true, "dateTimePicker": true, "divider": true, "grid": true, "columns": true, "chipList": true,
}

// checkMessage validates a Message body as the Chat API would and
// extracts what tests look at.
func checkMessage(body []byte) (*Message, error) {
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&top); err != nil {
		return nil, errors.New("invalid JSON payload")
	}
	for k := range top {
		switch k {
		case "text", "cardsV2", "thread", "fallbackText", "accessoryWidgets", "privateMessageViewer":
		default:
			return nil, fmt.Errorf("invalid JSON payload: unknown name %q", k)
		}
	}
	var m struct {
		Text    string `json:"text"`
		CardsV2 []struct {
			CardID string `json:"cardId"`
			Card   struct {
				Header *struct {
					Title string `json:"title"`
				} `json:"header"`
				Sections []struct {
					Widgets []map[string]json.RawMessage `json:"widgets"`
				} `json:"sections"`
			} `json:"card"`
		} `json:"cardsV2"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("invalid JSON payload: %v", err)
	}
	if n := utf8.RuneCountInString(m.Text); n > MaxText {
		return nil, fmt.Errorf("text is %d characters, more than %d", n, MaxText)
	}
	out := &Message{Text: m.Text, CardsV2: top["cardsV2"]}
	if len(m.CardsV2) == 0 && m.Text == "" {
		return nil, errors.New("message has neither text nor cards")
	}
	for _, cw := range m.CardsV2 {
		if cw.CardID == "" {
			return nil, errors.New("cardsV2: cardId is required")
		}
		if id, ok := strings.CutPrefix(cw.CardID, "clawd-"); ok {
			out.ApprovalID = id
		}
		if cw.Card.Header != nil {
			if cw.Card.Header.Title == "" {
				return nil, errors.New("card header: title is required")
			}
			out.Title = cw.Card.Header.Title
		}
		if len(cw.Card.Sections) == 0 {
			return nil, errors.New("card: no sections")
		}
		n := 0
		for _, sec := range cw.Card.Sections {
			if len(sec.Widgets) == 0 {
				return nil, errors.New("card section: no widgets")
			}
			for _, wd := range sec.Widgets {
				n++
				if len(wd) != 1 {
					return nil, fmt.Errorf("widget has %d kinds, want exactly one", len(wd))
				}
				for kind, raw := range wd {
					if !widgetKinds[kind] {
						return nil, fmt.Errorf("unknown widget %q", kind)
					}
					if err := checkWidget(kind, raw, out); err != nil {
						return nil, err
					}
				}
			}
		}
		if n > MaxWidgets {
			return nil, fmt.Errorf("card has %d widgets, more than %d", n, MaxWidgets)
		}
	}
	return out, nil
}

func checkWidget(kind string, raw json.RawMessage, out *Message) error {
	switch kind {
	case "decoratedText", "textParagraph":
		var t struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(raw, &t) != nil || t.Text == "" {
			return fmt.Errorf("%s: text is required", kind)
		}
		out.Texts = append(out.Texts, t.Text)
	case "buttonList":
		var bl struct {
			Buttons []struct {
				Text    string `json:"text"`
				Type    string `json:"type"`
				OnClick *struct {
					Action *struct {
						Function   string `json:"function"`
						Parameters []struct {
							Key   string `json:"key"`
							Value string `json:"value"`
						} `json:"parameters"`
					} `json:"action"`
					OpenLink *struct {
						URL string `json:"url"`
					} `json:"openLink"`
				} `json:"onClick"`
			} `json:"buttons"`
		}
		if err := json.Unmarshal(raw, &bl); err != nil {
			return fmt.Errorf("buttonList: %v", err)
		}
		if len(bl.Buttons) == 0 {
			return errors.New("buttonList: no buttons")
		}
		for _, b := range bl.Buttons {
			if b.Text == "" {
				return errors.New("button: text is required")
			}
			switch b.Type {
			case "", "OUTLINED", "FILLED", "FILLED_TONAL", "BORDERLESS":
			default:
				return fmt.Errorf("button: type %q", b.Type)
			}
			if b.OnClick == nil || (b.OnClick.Action == nil) == (b.OnClick.OpenLink == nil) {
				return errors.New("button: onClick needs exactly one of action, openLink")
			}
			if a := b.OnClick.Action; a != nil {
				if a.Function == "" {
					return errors.New("button action: function is required")
				}
				btn := Button{Text: b.Text, Function: a.Function}
				for _, p := range a.Parameters {
					if p.Key == "" {
						return errors.New("action parameter: key is required")
					}
					if p.Key == "v" {
						btn.Value = p.Value
					}
				}
				out.Buttons = append(out.Buttons, btn)
			}
		}
	}
	return nil
}

// Click presses the button whose value starts with act+":" on the
// approval's latest card, as userID ("users/123…"), and returns the text
// Chat shows the clicker.
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	code, reply, err := s.send(ctx, approvalID, act, userID, ForgeNone)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("clawd answered the click with %d", code)
	}
	return reply, nil
}

// Forge sends the click with forgery f and returns clawd's HTTP status.
func (s *Server) Forge(ctx context.Context, approvalID, act, userID string, f Forgery) (int, error) {
	code, _, err := s.send(ctx, approvalID, act, userID, f)
	return code, err
}

// Replay resends the last event exactly as it was delivered and returns
// clawd's HTTP status.
func (s *Server) Replay(ctx context.Context) (int, error) {
	s.mu.Lock()
	last, body := s.last, s.lastBody
	s.mu.Unlock()
	if last == nil {
		return 0, errors.New("nothing to replay")
	}
	req := last.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// PostRaw posts body to clawd's callback with a valid token (for malformed
// event tests) and returns the status.
func (s *Server) PostRaw(ctx context.Context, body []byte) (int, error) {
	s.mu.Lock()
	u := s.callbackURL
	s.mu.Unlock()
	tok, err := s.bearer(ForgeNone)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (s *Server) send(ctx context.Context, approvalID, act, userID string, f Forgery) (int, string, error) {
	s.mu.Lock()
	m, ok := s.cardLocked(approvalID)
	u := s.callbackURL
	s.mu.Unlock()
	if !ok {
		return 0, "", fmt.Errorf("no card for approval %s", approvalID)
	}
	if u == "" {
		return 0, "", errors.New("no callback URL (SetCallbackURL)")
	}
	var btn *Button
	for i := range m.Buttons {
		if strings.HasPrefix(m.Buttons[i].Value, act+":") {
			btn = &m.Buttons[i]
		}
	}
	if btn == nil {
		return 0, "", fmt.Errorf("the card of %s has no %q button", approvalID, act)
	}
	now := s.Now()
	at := now
	space := Space
	switch f {
	case ForgeStaleEvent:
		at = now.Add(-time.Hour)
	case ForgeOtherSpace:
		space = "spaces/AAAAotherSpace"
	}
	msgName := m.Name
	if f == ForgeOtherSpace {
		msgName = space + "/messages/" + strings.TrimPrefix(m.Name, Space+"/messages/")
	}
	ev := map[string]any{
		"type":      "CARD_CLICKED",
		"eventTime": at.UTC().Format(time.RFC3339Nano),
		"space":     map[string]any{"name": space, "type": "ROOM", "spaceType": "SPACE"},
		"message": map[string]any{
			"name": msgName, "sender": map[string]string{"name": "users/app", "type": "BOT"},
			"text": m.Text, "cardsV2": m.CardsV2, "space": map[string]string{"name": space},
		},
		"user":   map[string]any{"name": userID, "displayName": "Fake " + strings.TrimPrefix(userID, "users/"), "type": "HUMAN", "domainId": "fake-domain"},
		"action": map[string]any{"actionMethodName": btn.Function, "parameters": []map[string]string{{"key": "v", "value": btn.Value}}},
		"common": map[string]any{"hostApp": "CHAT", "invokedFunction": btn.Function, "parameters": map[string]string{"v": btn.Value}},
	}
	body, _ := json.Marshal(ev)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if f != ForgeNoToken {
		tok, err := s.bearer(f)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Google-Dynamite")
	s.mu.Lock()
	s.last, s.lastBody = req.Clone(context.Background()), body
	s.mu.Unlock()
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", nil
	}
	reply, err := s.checkReply(rb, userID)
	if err != nil {
		s.violate("click reply: %v", err)
		return resp.StatusCode, "", err
	}
	return resp.StatusCode, reply, nil
}

// checkReply validates the synchronous answer to a CARD_CLICKED event.
func (s *Server) checkReply(b []byte, userID string) (string, error) {
	var r struct {
		ActionResponse *struct {
			Type string `json:"type"`
		} `json:"actionResponse"`
		PrivateMessageViewer *struct {
			Name string `json:"name"`
		} `json:"privateMessageViewer"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", errors.New("not JSON")
	}
	if r.ActionResponse != nil {
		switch r.ActionResponse.Type {
		case "NEW_MESSAGE", "UPDATE_MESSAGE", "REQUEST_CONFIG", "DIALOG":
		default:
			return "", fmt.Errorf("actionResponse type %q", r.ActionResponse.Type)
		}
	}
	if r.PrivateMessageViewer != nil && r.PrivateMessageViewer.Name != userID {
		return "", fmt.Errorf("private message for %s, not the clicker %s", r.PrivateMessageViewer.Name, userID)
	}
	if utf8.RuneCountInString(r.Text) > MaxText {
		return "", errors.New("reply text too long")
	}
	return r.Text, nil
}

// bearer signs the token Chat would send (or the forgery f).
func (s *Server) bearer(f Forgery) (string, error) {
	s.mu.Lock()
	mode, cb := s.audType, s.callbackURL
	s.mu.Unlock()
	if f == ForgeOtherMode {
		if mode == AudienceProjectNumber {
			mode = AudienceEndpointURL
		} else {
			mode = AudienceProjectNumber
		}
	}
	k := fakeKeys()
	now := s.Now()
	iat, exp := now, now.Add(time.Hour)
	if f == ForgeExpired {
		iat, exp = now.Add(-2*time.Hour), now.Add(-time.Hour)
	}
	claims := jwt.MapClaims{"iat": iat.Unix(), "exp": exp.Unix()}
	var key *rsa.PrivateKey
	var kid string
	switch mode {
	case AudienceProjectNumber:
		claims["iss"], claims["aud"] = ChatIssuer, ProjectNumber
		if f == ForgeOtherMode {
			claims["aud"] = cb
		}
		key, kid = k.chat, chatKeyID
	default:
		claims["iss"], claims["aud"] = "https://accounts.google.com", cb
		if f == ForgeOtherMode {
			claims["aud"] = ProjectNumber
		}
		claims["email"], claims["email_verified"] = ChatIssuer, true
		claims["sub"], claims["azp"] = "110000000000000000001", "110000000000000000001"
		key, kid = k.google, googleKeyID
	}
	switch f {
	case ForgeWrongKey:
		key = k.wrong
	case ForgeWrongAudience:
		if mode == AudienceProjectNumber {
			claims["aud"] = "999999999999"
		} else {
			claims["aud"] = "https://attacker.example/v1/channels/gchat/"
		}
	case ForgeWrongIssuer:
		if mode == AudienceProjectNumber {
			claims["iss"] = "attacker@evil-project.iam.gserviceaccount.com"
		} else {
			claims["iss"] = "https://evil.example"
		}
	case ForgeWrongEmail:
		claims["email"] = "attacker@evil-project.iam.gserviceaccount.com"
	case ForgeUnverifiedEmail:
		claims["email_verified"] = false
	case ForgeAlgNone:
		t := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
		t.Header["kid"] = kid
		return t.SignedString(jwt.UnsafeAllowNoneSignatureType)
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = kid
	return t.SignedString(key)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

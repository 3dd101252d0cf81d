// Package fake is a stand-in for GitHub's issue comments API and its
// issue_comment webhook: clawd posts and edits comments here (every request
// checked for auth, API version, media type and GitHub's comment limit),
// and tests comment on an issue as some login, which the fake delivers to
// clawd's webhook endpoint signed exactly as GitHub signs it, or forged in
// one chosen way.
package fake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Identities and settings the fake uses.
const (
	Token         = "github_pat_fake0123456789notasecret"
	WebhookSecret = "fake-webhook-secret-not-a-secret"
	// BotLogin is the token's user: clawd's comments are by it.
	BotLogin = "clawd-bot"
	// Issue is the configured tracking issue.
	Issue = "acme/agents#1"
	// MaxBody is GitHub's limit on a comment body, in characters.
	MaxBody    = 65536
	APIVersion = "2022-11-28"
)

// Comment is one comment on an issue.
type Comment struct {
	ID      int64
	Repo    string // owner/repo
	Issue   int
	Login   string
	Body    string
	Updates int
	Created time.Time
}

// Message is a clawd card as the issue shows it now.
type Message struct {
	Comment
	ApprovalID string
	// Replies are the bodies of clawd's answers to commands on this card's
	// issue, oldest first (marker line dropped).
	Replies []string
}

// Server is the fake GitHub.
type Server struct {
	srv *httptest.Server
	// HTTP is a client for the fake.
	HTTP *http.Client

	mu         sync.Mutex
	nextID     int64
	comments   []*Comment
	violations []string
	endpoint   string
	last       *delivery // the last delivery sent, for Replay
	changed    chan struct{}
	botType    string
	ids        map[string]int64 // login → user id
}

type delivery struct {
	header http.Header
	body   []byte
}

// New starts a fake GitHub on 127.0.0.1.
func New() *Server {
	s := &Server{nextID: 1000, changed: make(chan struct{}), botType: "User", ids: map[string]int64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /repos/{owner}/{repo}/issues/{n}/comments", s.create)
	mux.HandleFunc("GET /repos/{owner}/{repo}/issues/{n}/comments", s.list)
	mux.HandleFunc("PATCH /repos/{owner}/{repo}/issues/comments/{id}", s.patch)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.violation("unexpected request %s %s", r.Method, r.URL.Path)
		apiError(w, http.StatusNotFound, "Not Found")
	})
	s.srv = httptest.NewServer(mux)
	s.HTTP = s.srv.Client()
	return s
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the API base.
func (s *Server) URL() string { return s.srv.URL }

// Settings are clawd.yaml settings for a channel on this fake.
func (s *Server) Settings() map[string]any {
	return map[string]any{"token": Token, "webhook-secret": WebhookSecret, "issue": Issue, "api-base": s.srv.URL}
}

// SetEndpoint is the webhook URL (clawd's public URL + the channel's
// callback path).
func (s *Server) SetEndpoint(u string) {
	s.mu.Lock()
	s.endpoint = u
	s.mu.Unlock()
}

// SetBotType makes clawd's token an app's ("Bot") instead of a person's.
func (s *Server) SetBotType(t string) {
	s.mu.Lock()
	s.botType = t
	s.mu.Unlock()
}

// Violations are the problems seen in clawd's requests.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

func (s *Server) violation(f string, a ...any) {
	s.mu.Lock()
	s.violations = append(s.violations, fmt.Sprintf(f, a...))
	s.mu.Unlock()
}

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

// check validates the headers and the {"body": …} of a write; it answers
// the error itself and returns ok=false.
func (s *Server) check(w http.ResponseWriter, r *http.Request) (body string, ok bool) {
	if r.Header.Get("Authorization") != "Bearer "+Token {
		s.violation("%s %s: Authorization is not the token as a Bearer", r.Method, r.URL.Path)
		apiError(w, http.StatusUnauthorized, "Bad credentials")
		return "", false
	}
	if a := r.Header.Get("Accept"); a != "application/vnd.github+json" {
		s.violation("%s %s: Accept %q, want application/vnd.github+json", r.Method, r.URL.Path, a)
	}
	if v := r.Header.Get("X-GitHub-Api-Version"); v != APIVersion {
		s.violation("%s %s: X-GitHub-Api-Version %q, want %s", r.Method, r.URL.Path, v, APIVersion)
		apiError(w, http.StatusBadRequest, "Unsupported API version")
		return "", false
	}
	if r.Header.Get("User-Agent") == "" {
		s.violation("%s %s: no User-Agent (GitHub refuses such requests)", r.Method, r.URL.Path)
		apiError(w, http.StatusForbidden, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header")
		return "", false
	}
	if r.Method == http.MethodGet {
		return "", true
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.violation("%s %s: Content-Type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		apiError(w, http.StatusBadRequest, "Problems parsing JSON")
		return "", false
	}
	var in map[string]any
	if err := json.Unmarshal(raw, &in); err != nil {
		s.violation("%s %s: body is not JSON", r.Method, r.URL.Path)
		apiError(w, http.StatusBadRequest, "Problems parsing JSON")
		return "", false
	}
	for k := range in {
		if k != "body" {
			s.violation("%s %s: unknown field %q", r.Method, r.URL.Path, k)
		}
	}
	b, _ := in["body"].(string)
	switch n := utf8.RuneCountInString(b); {
	case b == "":
		s.violation("%s %s: no body", r.Method, r.URL.Path)
		apiError(w, http.StatusUnprocessableEntity, "Validation Failed: body is missing")
		return "", false
	case n > MaxBody:
		s.violation("%s %s: body is %d characters, GitHub allows %d", r.Method, r.URL.Path, n, MaxBody)
		apiError(w, http.StatusUnprocessableEntity, "Validation Failed: body is too long (maximum is 65536 characters)")
		return "", false
	case !utf8.ValidString(b):
		s.violation("%s %s: body is not UTF-8", r.Method, r.URL.Path)
	}
	return b, true
}

var (
	ownerRE = regexp.MustCompile(`^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$`)
	repoRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

func repoOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	o, p := r.PathValue("owner"), r.PathValue("repo")
	if !ownerRE.MatchString(o) || !repoRE.MatchString(p) {
		apiError(w, http.StatusNotFound, "Not Found")
		return "", false
	}
	return o + "/" + p, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	repo, ok := repoOf(w, r)
	if !ok {
		s.violation("POST %s: bad repository", r.URL.Path)
		return
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n <= 0 {
		s.violation("POST %s: bad issue number", r.URL.Path)
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	body, ok := s.check(w, r)
	if !ok {
		return
	}
	c := s.add(repo, n, BotLogin, body)
	s.writeComment(w, http.StatusCreated, c)
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request) {
	repo, ok := repoOf(w, r)
	if !ok {
		s.violation("PATCH %s: bad repository", r.URL.Path)
		return
	}
	body, ok := s.check(w, r)
	if !ok {
		return
	}
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	var c *Comment
	for _, x := range s.comments {
		if x.ID == id && strings.EqualFold(x.Repo, repo) {
			c = x
		}
	}
	if c == nil || c.Login != BotLogin {
		s.mu.Unlock()
		s.violation("PATCH %s: no such comment of clawd's", r.URL.Path)
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	c.Body = body
	c.Updates++
	cp := *c
	s.notify()
	s.mu.Unlock()
	s.writeComment(w, http.StatusOK, &cp)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	repo, ok := repoOf(w, r)
	if !ok {
		return
	}
	if _, ok := s.check(w, r); !ok {
		return
	}
	n, _ := strconv.Atoi(r.PathValue("n"))
	var out []map[string]any
	for _, c := range s.Comments(repo + "#" + strconv.Itoa(n)) {
		out = append(out, s.commentJSON(&c))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(out)
}

// notify wakes WaitCard; call with s.mu held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) add(repo string, issue int, login, body string) *Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	c := &Comment{ID: s.nextID, Repo: repo, Issue: issue, Login: login, Body: body, Created: time.Now().UTC().Truncate(time.Second)}
	s.comments = append(s.comments, c)
	s.notify()
	cp := *c
	return &cp
}

func (s *Server) userID(login string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := strings.ToLower(login)
	if id, ok := s.ids[l]; ok {
		return id
	}
	id := int64(5000 + len(s.ids))
	s.ids[l] = id
	return id
}

func (s *Server) user(login string) map[string]any {
	typ := "User"
	s.mu.Lock()
	if login == BotLogin {
		typ = s.botType
	}
	s.mu.Unlock()
	return map[string]any{
		"login": login, "id": s.userID(login), "node_id": "U_" + login, "type": typ, "site_admin": false,
		"html_url": "https://github.com/" + login,
	}
}

func (s *Server) commentJSON(c *Comment) map[string]any {
	return map[string]any{
		"id": c.ID, "node_id": "IC_" + strconv.FormatInt(c.ID, 10),
		"url":        fmt.Sprintf("%s/repos/%s/issues/comments/%d", s.srv.URL, c.Repo, c.ID),
		"html_url":   fmt.Sprintf("https://github.com/%s/issues/%d#issuecomment-%d", c.Repo, c.Issue, c.ID),
		"issue_url":  fmt.Sprintf("%s/repos/%s/issues/%d", s.srv.URL, c.Repo, c.Issue),
		"body":       c.Body,
		"user":       s.user(c.Login),
		"created_at": c.Created.Format(time.RFC3339), "updated_at": c.Created.Format(time.RFC3339),
		"author_association": "MEMBER",
	}
}

func (s *Server) writeComment(w http.ResponseWriter, code int, c *Comment) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(s.commentJSON(c))
}

// Comments are the comments on an issue "owner/repo#N", oldest first.
func (s *Server) Comments(issue string) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.comments {
		if strings.EqualFold(c.Repo+"#"+strconv.Itoa(c.Issue), issue) {
			out = append(out, *c)
		}
	}
	return out
}

// All is every comment, oldest first.
func (s *Server) All() []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.comments {
		out = append(out, *c)
	}
	return out
}

const (
	cardMarker  = "<!-- clawd:"
	replyMarker = "<!-- clawd-reply:"
)

// Card is the latest clawd comment that carries that approval's card.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.card(approvalID)
}

func (s *Server) card(approvalID string) (Message, bool) {
	var m Message
	found := false
	for _, c := range s.comments {
		if c.Login == BotLogin && strings.HasPrefix(c.Body, cardMarker+approvalID+" -->\n") {
			m, found = Message{Comment: *c, ApprovalID: approvalID}, true
		}
	}
	if !found {
		return m, false
	}
	for _, c := range s.comments {
		if c.Login == BotLogin && c.Repo == m.Repo && c.Issue == m.Issue && strings.HasPrefix(c.Body, replyMarker) {
			_, rest, _ := strings.Cut(c.Body, "\n")
			m.Replies = append(m.Replies, rest)
		}
	}
	return m, true
}

// WaitCard waits until the approval's card satisfies cond (nil = exists).
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		m, ok := s.card(approvalID)
		ch := s.changed
		s.mu.Unlock()
		if ok && (cond == nil || cond(m)) {
			return m, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return m, fmt.Errorf("card for %s: %w (last: %q)", approvalID, ctx.Err(), m.Body)
		}
	}
}

// Forgery is one way a webhook delivery can be forged.
type Forgery int

// Forgeries.
const (
	Genuine          Forgery = iota
	ForgeSignature           // signed with another secret
	ForgeNoSignature         // no X-Hub-Signature-256 (only the SHA-1 X-Hub-Signature)
	ForgeTampered            // signed, then the body changed
	ForgeEdited              // genuine, but an "edited" event: an old comment changed into a command
	ForgeOtherIssue          // genuine comment on another issue of the repository
	ForgeBot                 // genuine comment by a bot account
	ForgeSelf                // genuine comment by clawd's own token user
	ForgeSender              // genuine signature, sender differs from the comment's author
)

// Click comments the command for act ("a", "g", "d") on the card's issue as
// login and returns clawd's answer.
func (s *Server) Click(ctx context.Context, approvalID, act, login string) (string, error) {
	text := map[string]string{
		"a": "/clawd approve " + approvalID,
		"g": "/clawd approve " + approvalID + " for 15m",
		"d": "/clawd deny " + approvalID + " not now",
	}[act]
	if text == "" {
		return "", fmt.Errorf("fake: unknown act %q", act)
	}
	return s.Comment(ctx, approvalID, login, text)
}

// Comment comments text on the issue that carries the approval's card as
// login, delivers the signed issue_comment webhook and returns the text of
// clawd's answer to it ("" if none); a non-2xx webhook response is an error.
func (s *Server) Comment(ctx context.Context, approvalID, login, text string) (string, error) {
	code, reply, err := s.Deliver(ctx, Genuine, approvalID, login, text)
	if err == nil && code/100 != 2 {
		err = fmt.Errorf("fake: webhook answered HTTP %d", code)
	}
	return reply, err
}

// Deliver comments text as login on the card's issue (or, forged, elsewhere
// or as someone else) and delivers the webhook forged as f; it returns the
// webhook's HTTP status and clawd's answer to the comment.
func (s *Server) Deliver(ctx context.Context, f Forgery, approvalID, login, text string) (int, string, error) {
	m, ok := s.Card(approvalID)
	if !ok {
		return 0, "", fmt.Errorf("fake: no card for %s", approvalID)
	}
	repo, issue := m.Repo, m.Issue
	if f == ForgeOtherIssue {
		issue += 1000
	}
	author, typ := login, "User"
	switch f {
	case ForgeBot:
		author, typ = "dependabot[bot]", "Bot"
	case ForgeSelf:
		author = BotLogin
	}
	c := s.add(repo, issue, author, text)
	cj := s.commentJSON(c)
	u := s.user(author)
	u["type"] = typ
	cj["user"] = u
	sender := u
	if f == ForgeSender {
		sender = s.user("someone-else")
	}
	action := "created"
	payload := map[string]any{
		"action":  action,
		"comment": cj,
		"issue": map[string]any{
			"number": issue, "title": "Agent work", "state": "open",
			"html_url": fmt.Sprintf("https://github.com/%s/issues/%d", repo, issue),
			"user":     s.user("octocat"),
		},
		"repository": map[string]any{
			"id": 4242, "name": repo[strings.IndexByte(repo, '/')+1:], "full_name": repo, "private": true,
			"owner": s.user(repo[:strings.IndexByte(repo, '/')]),
		},
		"sender": sender,
	}
	if f == ForgeEdited {
		payload["action"] = "edited"
		payload["changes"] = map[string]any{"body": map[string]any{"from": "looks good"}}
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return 0, "", err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/abc1234")
	h.Set("X-GitHub-Event", "issue_comment")
	h.Set("X-GitHub-Delivery", newGUID())
	h.Set("X-GitHub-Hook-ID", "123456")
	h.Set("X-GitHub-Hook-Installation-Target-Type", "repository")
	h.Set("X-GitHub-Hook-Installation-Target-ID", "4242")
	secret := WebhookSecret
	if f == ForgeSignature {
		secret = "not-the-secret"
	}
	h.Set("X-Hub-Signature-256", "sha256="+Sign(secret, body))
	legacy := hmac.New(sha1.New, []byte(secret)) // GitHub still sends the SHA-1 one too
	legacy.Write(body)
	h.Set("X-Hub-Signature", "sha1="+hex.EncodeToString(legacy.Sum(nil)))
	if f == ForgeNoSignature {
		h.Del("X-Hub-Signature-256")
	}
	if f == ForgeTampered {
		body = bytes.Replace(body, []byte(`"login":"`+author+`"`), []byte(`"login":"admin"`), -1)
	}
	code, err := s.send(ctx, &delivery{header: h, body: body})
	if err != nil {
		return 0, "", err
	}
	return code, s.replyTo(c.ID), nil
}

// Sign is GitHub's X-Hub-Signature-256 value without "sha256=".
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Ping delivers a signed ping event.
func (s *Server) Ping(ctx context.Context) (int, error) {
	body := []byte(`{"zen":"Keep it logically awesome.","hook_id":123456,"hook":{"type":"Repository","events":["issue_comment"]}}`)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/abc1234")
	h.Set("X-GitHub-Event", "ping")
	h.Set("X-GitHub-Delivery", newGUID())
	h.Set("X-Hub-Signature-256", "sha256="+Sign(WebhookSecret, body))
	return s.send(ctx, &delivery{header: h, body: body})
}

// Replay sends the last delivery again, byte for byte (as GitHub's
// "Redeliver" does, same X-GitHub-Delivery), and returns the status.
func (s *Server) Replay(ctx context.Context) (int, error) {
	s.mu.Lock()
	d := s.last
	s.mu.Unlock()
	if d == nil {
		return 0, fmt.Errorf("fake: nothing delivered yet")
	}
	return s.send(ctx, d)
}

func (s *Server) send(ctx context.Context, d *delivery) (int, error) {
	s.mu.Lock()
	ep := s.endpoint
	s.last = d
	s.mu.Unlock()
	if ep == "" {
		return 0, fmt.Errorf("fake: no webhook endpoint (SetEndpoint)")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep, bytes.NewReader(d.body))
	if err != nil {
		return 0, err
	}
	req.Header = d.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// replyTo is clawd's answer to comment id, without the marker line.
func (s *Server) replyTo(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := replyMarker + strconv.FormatInt(id, 10) + " -->\n"
	for _, c := range s.comments {
		if c.Login == BotLogin && strings.HasPrefix(c.Body, m) {
			return strings.TrimPrefix(c.Body, m)
		}
	}
	return ""
}

func newGUID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

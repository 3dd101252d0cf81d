// Package fake is a local stand-in for Linear: a GraphQL endpoint that
// understands just the operations clawd's Linear channel uses (issue,
// viewer, commentCreate, commentUpdate), checking the Authorization header,
// the operations' variables and the comment limits, and a webhook sender
// that delivers comment creations to clawd signed exactly as Linear signs
// them (Linear-Signature = hex HMAC-SHA256 of the body), or forged in one
// chosen way.
package fake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Identities and limits of the fake workspace.
const (
	APIKey         = "lin_api_fakekeynotasecret0123456789abcdef"
	OAuthToken     = "lin_oauth_fakeaccesstokennotasecret"
	WebhookSecret  = "lin_wh_fakesigningsecretnotasecret"
	ViewerID       = "00000000-0000-4000-8000-00000000c1a0" // clawd's own user
	OrganizationID = "0rg00000-0000-4000-8000-000000000001"
	WebhookID      = "00000000-0000-4000-8000-0000000000eb"
	// TrackingIssue is the issue Settings names.
	TrackingIssue = "ENG-1"
	// MaxBody is the longest comment body the fake accepts (characters).
	MaxBody = 65536
)

// Issues of the fake workspace: identifier -> id.
var Issues = map[string]string{
	"ENG-1":   "1551e000-0000-4000-8000-000000000001",
	"ENG-123": "1551e000-0000-4000-8000-000000000123",
	"OPS-7":   "1551e000-0000-4000-8000-000000000007",
}

// Comment is one comment on an issue.
type Comment struct {
	ID, IssueID, UserID, ParentID, Body string
	Updates                             int
	seq                                 int
}

// Message is a clawd card as the issue shows it now.
type Message struct {
	CommentID  string
	IssueID    string
	Issue      string // identifier
	ApprovalID string
	Body       string   // raw markdown
	Text       string   // as rendered: code spans, escapes and emphasis resolved
	Commands   []string // the /clawd commands the card offers
	Blocks     []string // contents of fenced code blocks
	Hazards    []string // mentions, links, raw HTML or command lines outside code
	Replies    []string // rendered text of clawd's replies in the card's thread
	Updates    int
}

// Forgery is one way a webhook delivery can differ from Linear's.
type Forgery int

// Forgeries.
const (
	Genuine          Forgery = iota
	ForgeSignature           // signed with another secret
	ForgeNoSignature         // no Linear-Signature header
	ForgeStale               // webhookTimestamp two minutes ago (signed)
	ForgeFuture              // webhookTimestamp two minutes ahead (signed)
	ForgeUpdate              // action "update" (a comment edited into a command)
	ForgeRemove              // action "remove"
	ForgeOtherIssue          // the comment is on another issue than the card
	ForgeMalformed           // signed, but not JSON
	ForgeNoDelivery          // no Linear-Delivery header
	ForgeBot                 // the comment is from an integration (botActor set)
)

// Delivery is what one webhook POST to clawd did.
type Delivery struct {
	Status    int
	CommentID string
	Reply     string // rendered text of clawd's reply comment ("" = none)
}

// Server is the fake.
type Server struct {
	srv *httptest.Server
	now func() time.Time

	mu         sync.Mutex
	comments   map[string]*Comment
	order      []string
	seq        int
	names      map[string]string
	violations []string
	endpoint   string
	deliverOwn bool
	last       *captured
	changed    chan struct{}
	calls      map[string]int
	viewerDown bool
	onCreate   func(Comment)
}

type captured struct {
	body   []byte
	header http.Header
}

// New starts the fake on 127.0.0.1.
func New() *Server {
	s := &Server{now: time.Now, comments: map[string]*Comment{}, names: map[string]string{},
		changed: make(chan struct{}), calls: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/graphql", s.graphql)
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

// URL is the fake's API base.
func (s *Server) URL() string { return s.srv.URL }

// Settings are clawd.yaml settings for a linear channel using this fake.
func (s *Server) Settings() map[string]any {
	return map[string]any{
		"api-key":        APIKey,
		"webhook-secret": WebhookSecret,
		"issue":          TrackingIssue,
		"api-base":       s.srv.URL,
	}
}

// SetEndpoint sets where webhooks go (clawd's PublicURL + CallbackPath).
func (s *Server) SetEndpoint(u string) {
	s.mu.Lock()
	s.endpoint = u
	s.mu.Unlock()
}

// DeliverOwn makes the fake also deliver webhooks for the comments clawd
// itself creates, as Linear does (synchronously, before answering clawd).
func (s *Server) DeliverOwn(on bool) {
	s.mu.Lock()
	s.deliverOwn = on
	s.mu.Unlock()
}

// SetName sets a user's display name (the webhook's actor name).
func (s *Server) SetName(userID, name string) {
	s.mu.Lock()
	s.names[userID] = name
	s.mu.Unlock()
}

// OnCreate runs f with each comment clawd creates, before the fake answers
// commentCreate (to act "while Linear is still answering").
func (s *Server) OnCreate(f func(Comment)) {
	s.mu.Lock()
	s.onCreate = f
	s.mu.Unlock()
}

// SetViewerDown makes the viewer query fail (an API outage) or work again.
func (s *Server) SetViewerDown(down bool) {
	s.mu.Lock()
	s.viewerDown = down
	s.mu.Unlock()
}

// Calls counts the GraphQL operations served, by root field.
func (s *Server) Calls(field string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[field]
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

var markerRE = regexp.MustCompile("Approval `([a-z0-9]{1,64})`")

// Card is the latest card comment carrying that approval.
func (s *Server) Card(approvalID string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cardLocked(approvalID)
}

func (s *Server) cardLocked(approvalID string) (Message, bool) {
	var best *Comment
	for _, id := range s.order {
		c := s.comments[id]
		if c.UserID != ViewerID || c.ParentID != "" {
			continue
		}
		if m := markerRE.FindStringSubmatch(c.Body); m != nil && m[1] == approvalID {
			best = c
		}
	}
	if best == nil {
		return Message{}, false
	}
	m := Message{CommentID: best.ID, IssueID: best.IssueID, Issue: identOf(best.IssueID), ApprovalID: approvalID,
		Body: best.Body, Updates: best.Updates}
	m.Text, m.Blocks, m.Hazards = Render(best.Body)
	for _, cmd := range regexp.MustCompile("`(/clawd [^`]+)`").FindAllStringSubmatch(best.Body, -1) {
		m.Commands = append(m.Commands, cmd[1])
	}
	for _, id := range s.order {
		c := s.comments[id]
		if c.ParentID == best.ID && c.UserID == ViewerID {
			t, _, _ := Render(c.Body)
			m.Replies = append(m.Replies, t)
		}
	}
	return m, true
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

// Comments are all comments, oldest first.
func (s *Server) Comments() []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, id := range s.order {
		out = append(out, *s.comments[id])
	}
	return out
}

func identOf(issueID string) string {
	for k, v := range Issues {
		if v == issueID {
			return k
		}
	}
	return ""
}

// --- GraphQL ---

type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func gqlFail(w http.ResponseWriter, code int, msg, typ string) {
	writeJSON(w, code, map[string]any{"errors": []gqlError{{Message: msg, Extensions: map[string]any{"type": typ, "code": strings.ToUpper(strings.ReplaceAll(typ, " ", "_"))}}}})
}

var (
	opRE    = regexp.MustCompile(`^(query|mutation)\s+(\w+)?\s*(\(([^)]*)\))?\s*\{\s*(\w+)\s*(\(([^)]*)\))?\s*\{(.*)\}\s*\}$`)
	spaceRE = regexp.MustCompile(`\s+`)
	uuidRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	identRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,9}-[1-9][0-9]{0,8}$`)
)

// The operations the fake understands: root field -> (declared variables,
// field arguments, selection).
var ops = map[string]struct{ kind, decl, args, sel string }{
	"issue":         {"query", "$id: String!", "id: $id", "id identifier"},
	"viewer":        {"query", "", "", "id"},
	"commentCreate": {"mutation", "$input: CommentCreateInput!", "input: $input", "success comment { id }"},
	"commentUpdate": {"mutation", "$id: String!, $input: CommentUpdateInput!", "id: $id, input: $input", "success comment { id }"},
}

func (s *Server) graphql(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.violate("graphql: method %s", r.Method)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		s.violate("graphql: Content-Type %q", ct)
		gqlFail(w, 400, "Content-Type must be application/json", "invalid input")
		return
	}
	switch a := r.Header.Get("Authorization"); a {
	case APIKey, "Bearer " + OAuthToken:
	default:
		if a == "Bearer "+APIKey {
			s.violate("graphql: personal API key sent with a Bearer prefix")
		} else if a == "" {
			s.violate("graphql: no Authorization header")
		}
		gqlFail(w, 400, "Authentication required, not authenticated", "authentication error")
		return
	}
	var req struct {
		Query         string         `json:"query"`
		Variables     map[string]any `json:"variables"`
		OperationName string         `json:"operationName"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.violate("graphql: body: %v", err)
		gqlFail(w, 400, "invalid request body", "invalid input")
		return
	}
	q := strings.TrimSpace(spaceRE.ReplaceAllString(req.Query, " "))
	m := opRE.FindStringSubmatch(q)
	if m == nil {
		s.violate("graphql: query not understood: %.200s", q)
		gqlFail(w, 400, "query not understood by the fake", "graphql error")
		return
	}
	field := m[5]
	op, ok := ops[field]
	if !ok || m[1] != op.kind || strings.TrimSpace(m[4]) != op.decl || strings.TrimSpace(m[7]) != op.args || strings.TrimSpace(m[8]) != op.sel {
		s.violate("graphql: unexpected operation %.200s", q)
		gqlFail(w, 400, "unknown operation", "graphql error")
		return
	}
	s.mu.Lock()
	s.calls[field]++
	s.mu.Unlock()
	switch field {
	case "viewer":
		s.mu.Lock()
		down := s.viewerDown
		s.mu.Unlock()
		if down {
			gqlFail(w, 503, "service unavailable", "internal error")
			return
		}
		if len(req.Variables) != 0 {
			s.violate("viewer: unexpected variables %v", req.Variables)
		}
		writeJSON(w, 200, map[string]any{"data": map[string]any{"viewer": map[string]any{"id": ViewerID}}})
	case "issue":
		s.issue(w, req.Variables)
	case "commentCreate":
		s.commentCreate(w, req.Variables)
	case "commentUpdate":
		s.commentUpdate(w, req.Variables)
	}
}

func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

func (s *Server) issue(w http.ResponseWriter, vars map[string]any) {
	id, ok := str(vars["id"])
	if !ok || len(vars) != 1 {
		s.violate("issue: variables %v", vars)
		gqlFail(w, 400, "Variable \"$id\" of required type \"String!\" was not provided.", "graphql error")
		return
	}
	if !identRE.MatchString(id) && !uuidRE.MatchString(id) {
		s.violate("issue: id %q is neither an identifier nor a uuid", id)
	}
	for ident, uid := range Issues {
		if strings.EqualFold(ident, id) || uid == id {
			writeJSON(w, 200, map[string]any{"data": map[string]any{"issue": map[string]any{"id": uid, "identifier": ident}}})
			return
		}
	}
	writeJSON(w, 200, map[string]any{"data": nil, "errors": []gqlError{{Message: "Entity not found: Issue", Extensions: map[string]any{"type": "invalid input", "code": "INPUT_ERROR"}}}})
}

// checkBody applies Linear's comment limits.
func (s *Server) checkBody(op string, v any) (string, bool) {
	b, ok := str(v)
	switch {
	case !ok || strings.TrimSpace(b) == "":
		s.violate("%s: body missing or empty", op)
		return "", false
	case !utf8.ValidString(b):
		s.violate("%s: body is not UTF-8", op)
		return "", false
	case utf8.RuneCountInString(b) > MaxBody:
		s.violate("%s: body of %d characters (max %d)", op, utf8.RuneCountInString(b), MaxBody)
		return "", false
	}
	return b, true
}

func (s *Server) commentCreate(w http.ResponseWriter, vars map[string]any) {
	in, ok := vars["input"].(map[string]any)
	if !ok || len(vars) != 1 {
		s.violate("commentCreate: variables %v", vars)
		gqlFail(w, 400, "Argument Validation Error", "invalid input")
		return
	}
	for k := range in {
		if k != "issueId" && k != "body" && k != "parentId" {
			s.violate("commentCreate: unexpected input field %q", k)
		}
	}
	issue, _ := str(in["issueId"])
	if identOf(issue) == "" {
		s.violate("commentCreate: issueId %q is not an issue id", issue)
		gqlFail(w, 200, "Entity not found: Issue", "invalid input")
		return
	}
	body, ok := s.checkBody("commentCreate", in["body"])
	if !ok {
		gqlFail(w, 200, "Argument Validation Error: body", "invalid input")
		return
	}
	s.mu.Lock()
	parent := ""
	if p, has := in["parentId"]; has {
		parent, _ = str(p)
		pc := s.comments[parent]
		if pc == nil || pc.IssueID != issue || pc.ParentID != "" {
			s.mu.Unlock()
			s.violate("commentCreate: parentId %q is not a top-level comment of the issue", parent)
			gqlFail(w, 200, "Entity not found: Comment", "invalid input")
			return
		}
	}
	c := s.addLocked(issue, ViewerID, parent, body)
	own, hook := s.deliverOwn, s.onCreate
	s.mu.Unlock()
	if own {
		_, _ = s.deliver(context.Background(), c, Genuine)
	}
	if hook != nil {
		hook(*c)
	}
	writeJSON(w, 200, map[string]any{"data": map[string]any{"commentCreate": map[string]any{
		"success": true, "comment": map[string]any{"id": c.ID}}}})
}

func (s *Server) commentUpdate(w http.ResponseWriter, vars map[string]any) {
	id, _ := str(vars["id"])
	in, ok := vars["input"].(map[string]any)
	if !ok || len(vars) != 2 || len(in) != 1 {
		s.violate("commentUpdate: variables %v", vars)
		gqlFail(w, 400, "Argument Validation Error", "invalid input")
		return
	}
	body, ok := s.checkBody("commentUpdate", in["body"])
	if !ok {
		gqlFail(w, 200, "Argument Validation Error: body", "invalid input")
		return
	}
	s.mu.Lock()
	c := s.comments[id]
	if c == nil || c.UserID != ViewerID {
		s.mu.Unlock()
		s.violate("commentUpdate: %q is not a comment of clawd's", id)
		gqlFail(w, 200, "Entity not found: Comment", "invalid input")
		return
	}
	c.Body = body
	c.Updates++
	s.notify()
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{"data": map[string]any{"commentUpdate": map[string]any{
		"success": true, "comment": map[string]any{"id": id}}}})
}

func (s *Server) addLocked(issue, user, parent, body string) *Comment {
	s.seq++
	c := &Comment{ID: newUUID(), IssueID: issue, UserID: user, ParentID: parent, Body: body, seq: s.seq}
	s.comments[c.ID] = c
	s.order = append(s.order, c.ID)
	s.notify()
	return c
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// --- people commenting, webhooks ---

// Comment creates a top-level comment by userID on the approval's card
// issue and delivers its webhook to clawd; it returns clawd's reply.
func (s *Server) Comment(ctx context.Context, approvalID, userID, text string) (string, error) {
	d, err := s.Deliver(ctx, approvalID, userID, text, false, Genuine)
	if err != nil {
		return "", err
	}
	if d.Status != http.StatusOK {
		return "", fmt.Errorf("clawd answered the webhook with HTTP %d", d.Status)
	}
	return d.Reply, nil
}

// Reply is Comment as a reply in the card's thread.
func (s *Server) Reply(ctx context.Context, approvalID, userID, text string) (string, error) {
	d, err := s.Deliver(ctx, approvalID, userID, text, true, Genuine)
	if err != nil {
		return "", err
	}
	if d.Status != http.StatusOK {
		return "", fmt.Errorf("clawd answered the webhook with HTTP %d", d.Status)
	}
	return d.Reply, nil
}

// Click comments the command for a card action (approval.ActApprove "a",
// ActApproveFor "g", ActDeny "d") as userID and returns clawd's reply.
func (s *Server) Click(ctx context.Context, approvalID, act, userID string) (string, error) {
	var text string
	switch act {
	case "a":
		text = "/clawd approve " + approvalID
	case "g":
		text = "/clawd approve " + approvalID + " for 15m"
	case "d":
		text = "/clawd deny " + approvalID + " not now"
	default:
		return "", fmt.Errorf("unknown action %q", act)
	}
	return s.Comment(ctx, approvalID, userID, text)
}

// Deliver creates the comment (on the card's issue; in its thread when
// threaded) and delivers the webhook, genuine or forged.
func (s *Server) Deliver(ctx context.Context, approvalID, userID, text string, threaded bool, f Forgery) (Delivery, error) {
	s.mu.Lock()
	card, ok := s.cardLocked(approvalID)
	if !ok {
		s.mu.Unlock()
		return Delivery{}, fmt.Errorf("no card for %s", approvalID)
	}
	issue, parent := card.IssueID, ""
	if threaded {
		parent = card.CommentID
	}
	if f == ForgeOtherIssue {
		for _, id := range Issues {
			if id != issue {
				issue, parent = id, ""
				break
			}
		}
	}
	c := s.addLocked(issue, userID, parent, text)
	s.mu.Unlock()
	return s.deliver(ctx, c, f)
}

func (s *Server) deliver(ctx context.Context, c *Comment, f Forgery) (Delivery, error) {
	s.mu.Lock()
	endpoint := s.endpoint
	name := s.names[c.UserID]
	before := s.seq
	s.mu.Unlock()
	if endpoint == "" {
		return Delivery{}, fmt.Errorf("fake: no webhook endpoint set")
	}
	if name == "" {
		name = "User " + c.UserID
	}
	now := s.now()
	action := "create"
	switch f {
	case ForgeUpdate:
		action = "update"
	case ForgeRemove:
		action = "remove"
	}
	ts := now
	switch f {
	case ForgeStale:
		ts = now.Add(-2 * time.Minute)
	case ForgeFuture:
		ts = now.Add(2 * time.Minute)
	}
	data := map[string]any{
		"id": c.ID, "body": c.Body, "issueId": c.IssueID, "userId": c.UserID,
		"createdAt": now.UTC().Format(time.RFC3339Nano), "updatedAt": now.UTC().Format(time.RFC3339Nano),
		"reactionData": []any{}, "botActor": nil,
		"issue": map[string]any{"id": c.IssueID, "identifier": identOf(c.IssueID), "title": "Issue " + identOf(c.IssueID)},
		"user":  map[string]any{"id": c.UserID, "name": name},
	}
	if c.ParentID != "" {
		data["parentId"] = c.ParentID
	}
	if f == ForgeBot {
		data["botActor"] = map[string]any{"id": "integration", "type": "slack", "name": "Slack"}
	}
	payload := map[string]any{
		"action": action, "type": "Comment", "data": data,
		"url":              "https://linear.app/fake/issue/" + strings.ToLower(identOf(c.IssueID)) + "#comment-" + c.ID[:8],
		"createdAt":        now.UTC().Format(time.RFC3339Nano),
		"webhookTimestamp": ts.UnixMilli(), "webhookId": WebhookID, "organizationId": OrganizationID,
		"actor": map[string]any{"id": c.UserID, "type": "user", "name": name,
			"url": "https://linear.app/fake/profiles/" + c.UserID[:min(8, len(c.UserID))]},
	}
	body, _ := json.Marshal(payload)
	if f == ForgeMalformed {
		body = []byte(`{"action":"create","type":"Comment","data":`)
	}
	secret := WebhookSecret
	if f == ForgeSignature {
		secret = "not-the-webhook-secret"
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("User-Agent", "Linear-Webhook")
	h.Set("Linear-Event", "Comment")
	if f != ForgeNoDelivery {
		h.Set("Linear-Delivery", newUUID())
	}
	if f != ForgeNoSignature {
		h.Set("Linear-Signature", Sign(secret, body))
	}
	s.mu.Lock()
	s.last = &captured{body: body, header: h.Clone()}
	s.mu.Unlock()
	status, err := s.post(ctx, endpoint, body, h)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Status: status, CommentID: c.ID, Reply: s.replyAfter(before, c)}, nil
}

// replyAfter is clawd's reply to c: the first comment by clawd created
// after c in c's thread.
func (s *Server) replyAfter(before int, c *Comment) string {
	root := c.ID
	if c.ParentID != "" {
		root = c.ParentID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.order {
		r := s.comments[id]
		if r.seq > before && r.UserID == ViewerID && r.ParentID == root && r.IssueID == c.IssueID {
			t, _, _ := Render(r.Body)
			return t
		}
	}
	return ""
}

func (s *Server) post(ctx context.Context, endpoint string, body []byte, h http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = h.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Replay resends the last delivery exactly (same body, headers, delivery
// id and signature) and returns clawd's HTTP status.
func (s *Server) Replay(ctx context.Context) (int, error) {
	s.mu.Lock()
	last, endpoint := s.last, s.endpoint
	s.mu.Unlock()
	if last == nil {
		return 0, fmt.Errorf("fake: nothing delivered yet")
	}
	return s.post(ctx, endpoint, last.body, last.header)
}

// ReplayNewDelivery resends the last delivery's body and signature under a
// fresh Linear-Delivery id (the header is not signed).
func (s *Server) ReplayNewDelivery(ctx context.Context) (int, error) {
	s.mu.Lock()
	last, endpoint := s.last, s.endpoint
	s.mu.Unlock()
	if last == nil {
		return 0, fmt.Errorf("fake: nothing delivered yet")
	}
	h := last.header.Clone()
	h.Set("Linear-Delivery", newUUID())
	return s.post(ctx, endpoint, last.body, h)
}

// Sign is Linear's webhook signature: hex HMAC-SHA256 of the body.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

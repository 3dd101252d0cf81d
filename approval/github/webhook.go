package github

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// MaxPayload is the largest webhook body clawd reads (GitHub caps payloads
// at 25 MB, but an issue_comment event with a full comment and issue body
// stays far below this).
const MaxPayload = 4 << 20

// event is the part of an issue_comment webhook clawd reads.
type event struct {
	Action string `json:"action"`
	Issue  struct {
		Number int `json:"number"`
	} `json:"issue"`
	Comment struct {
		comment
		CreatedAt time.Time `json:"created_at"`
	} `json:"comment"`
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Sender struct {
		Login string `json:"login"`
	} `json:"sender"`
}

// command is one parsed "/clawd …" line.
type command struct {
	ID       string
	Approve  bool
	GrantFor time.Duration
	Reason   string
	Problem  string // set when the line is a clawd command that cannot be done as typed
}

var idRE = regexp.MustCompile(`^[a-z2-7]{26}$`)

// parseCommands finds the lines of body that are exactly a clawd command:
// "/clawd approve ID", "/clawd approve ID for 15m", "/clawd deny ID
// [reason…]" (the words in any case, the ID as clawd shows it). Quoted,
// indented, inline or otherwise decorated lines are not commands.
func parseCommands(body string) []command {
	var out []command
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimRight(line, " \t\r")
		if !strings.HasPrefix(strings.ToLower(line), "/clawd ") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || !strings.EqualFold(f[0], "/clawd") || !idRE.MatchString(strings.ToLower(f[2])) {
			continue
		}
		cmd := command{ID: strings.ToLower(f[2])}
		switch verb := strings.ToLower(f[1]); {
		case verb == "approve" && len(f) == 3:
			cmd.Approve = true
		case verb == "approve" && len(f) == 5 && strings.EqualFold(f[3], "for"):
			cmd.Approve = true
			if d, err := time.ParseDuration(strings.ToLower(f[4])); err == nil && d == approval.GrantFor {
				cmd.GrantFor = d
			} else {
				cmd.Problem = "Grants last 15 minutes: type `/clawd approve " + cmd.ID + " for 15m`. Nothing was changed."
			}
		case verb == "deny":
			// The reason is the rest of the line as typed.
			rest := strings.TrimSpace(line[len(f[0]):])
			rest = strings.TrimSpace(rest[len(f[1]):])
			cmd.Reason = strings.TrimSpace(rest[len(f[2]):])
		default:
			continue
		}
		out = append(out, cmd)
	}
	return out
}

// Callbacks serves the webhook (mount it at approval.CallbackPath(name)).
// A delivery must carry a valid X-Hub-Signature-256 over its raw body
// made with webhook-secret and a delivery ID not seen before; only
// issue_comment "created" events by people are read, and only a comment on
// the issue that carries the approval's card can decide it.
func (c *Channel) Callbacks(dec approval.Decider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.secret == "" {
			http.Error(w, "github webhook is not configured (no webhook-secret)", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if !c.signed(r.Header.Get("X-Hub-Signature-256"), body) {
			c.log.Warn("refused github webhook: missing or bad X-Hub-Signature-256")
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			http.Error(w, "set the webhook's content type to application/json", http.StatusUnsupportedMediaType)
			return
		}
		delivery := r.Header.Get("X-GitHub-Delivery")
		if delivery == "" || len(delivery) > 100 {
			http.Error(w, "no X-GitHub-Delivery", http.StatusBadRequest)
			return
		}
		if !c.firstDelivery(delivery) {
			c.log.Warn("refused github webhook: replayed delivery", zap.String("delivery", delivery))
			http.Error(w, "delivery already handled", http.StatusConflict)
			return
		}
		switch r.Header.Get("X-GitHub-Event") {
		case "ping":
			fmt.Fprintln(w, "pong")
			return
		case "issue_comment":
		default:
			fmt.Fprintln(w, "ignored: not an issue_comment event")
			return
		}
		var ev event
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		// The delivery ID is not signed; the comment ID is: a comment is
		// acted on once, whatever delivery carries it.
		if ev.Action == "created" && ev.Comment.ID != 0 && !c.firstDelivery("comment:"+strconv.FormatInt(ev.Comment.ID, 10)) {
			c.log.Warn("refused github webhook: comment already handled", zap.Int64("comment", ev.Comment.ID))
			http.Error(w, "comment already handled", http.StatusConflict)
			return
		}
		msg := c.handle(r.Context(), dec, &ev)
		fmt.Fprintln(w, msg)
	})
}

// signed checks "sha256=<hex HMAC-SHA256(secret, body)>" in constant time.
func (c *Channel) signed(header string, body []byte) bool {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	m := hmac.New(sha256.New, []byte(c.secret))
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// firstDelivery records a delivery ID (in memory) and reports whether it
// is new.
func (c *Channel) firstDelivery(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if _, seen := c.st.Deliveries[id]; seen {
		return false
	}
	if len(c.st.Deliveries) >= maxDelivered {
		c.st.prune(now)
	}
	c.st.Deliveries[id] = now
	return true
}

// saveDeliveries persists the deliveries seen so far; handle calls it for
// a delivery that carries a command (only those matter after a restart, and
// an org-wide webhook sends every comment).
func (c *Channel) saveDeliveries() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.st.save(c.path); err != nil {
		c.log.Warn("github: could not save state; a replay of this delivery after a restart would not be recognised", zap.Error(err))
	}
}

// handle reads a verified issue_comment event, decides the command in it
// and answers the commenter; it returns a line for the webhook response
// (GitHub shows it in the delivery log).
func (c *Channel) handle(ctx context.Context, dec approval.Decider, ev *event) string {
	if ev.Action != "created" {
		return "ignored: only new comments decide"
	}
	cm := ev.Comment.comment
	login := strings.ToLower(cm.User.Login)
	switch {
	case !loginRE.MatchString(cm.User.Login) || cm.ID <= 0:
		return "ignored: no commenter"
	case cm.User.Type != "User":
		return "ignored: comments by bots and apps do not decide"
	case !strings.EqualFold(ev.Sender.Login, cm.User.Login):
		return "ignored: the sender is not the commenter"
	case strings.Contains(cm.Body, cardMarker) || strings.Contains(cm.Body, replyMarker):
		return "ignored: a clawd comment"
	}
	c.mu.Lock()
	self := c.st.Self
	c.mu.Unlock()
	if login == self {
		return "ignored: clawd's own comment"
	}
	cmds := parseCommands(cm.Body)
	if len(cmds) == 0 {
		return "ignored: no clawd command"
	}
	c.saveDeliveries()
	t, err := parseTarget(ev.Repository.FullName + "#" + fmt.Sprint(ev.Issue.Number))
	if err != nil {
		return "ignored: no issue"
	}
	answer := func(msg string) string {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 8*time.Second)
		defer cancel()
		if err := c.reply(rctx, t, cm.ID, "@"+cm.User.Login+" "+msg); err != nil {
			c.log.Warn("github: could not answer the commenter", zap.Error(err))
		}
		return msg
	}
	if len(cmds) > 1 {
		return answer("Put one clawd command in a comment. Nothing was changed.")
	}
	cmd := cmds[0]
	c.mu.Lock()
	r := c.st.Cards[cmd.ID]
	var rec record
	onIssue := false
	if r != nil {
		rec = *r
		for _, at := range r.At {
			onIssue = onIssue || strings.EqualFold(at.Repo, t.full()) && at.Issue == t.Number
		}
	}
	c.mu.Unlock()
	switch {
	case r == nil:
		c.log.Warn("refused github command: no card", zap.String("id", cmd.ID), zap.String("user", login))
		return answer("clawd has no approval `" + cmd.ID + "` here. Nothing was changed.")
	case !onIssue:
		c.log.Warn("refused github command: comment on another issue", zap.String("id", cmd.ID), zap.String("user", login), zap.String("issue", t.String()))
		return answer("The card for `" + cmd.ID + "` is not on this issue: comment on the issue that shows it. Nothing was changed.")
	case cmd.Problem != "":
		return answer(cmd.Problem)
	case cmd.GrantFor > 0 && !rec.Grants:
		return answer("Grants are off for this rule: approve once with `/clawd approve " + cmd.ID + "`. Nothing was changed.")
	}
	d := approval.Decision{
		ID: cmd.ID, Digest: rec.Digest, Approve: cmd.Approve, GrantFor: cmd.GrantFor,
		Channel: c.name, User: login, Display: cm.User.Login, Reason: cut(cmd.Reason, 500),
	}
	res := dec.Decide(ctx, d)
	c.log.Info("github decision", zap.String("id", d.ID), zap.String("user", d.User), zap.Bool("approve", d.Approve), zap.String("outcome", res.Outcome))
	msg := res.Message
	if msg == "" {
		msg = "clawd: " + res.Outcome
	}
	return answer(text(msg, 1000))
}

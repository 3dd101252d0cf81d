package mattermost

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Limits. Mattermost refuses a post whose message is over 16383 characters
// (runes); clawd keeps the message and the attachment text, together, well
// under that.
const (
	MaxMessage   = 16383
	maxSummary   = 600
	maxURL       = 1500
	maxBody      = 3000
	maxField     = 300
	maxMentions  = 20
	maxCardRunes = 12000
	colorPending = "#f2a900"
	colorOK      = "#2e7d32"
	colorBad     = "#c62828"
)

var outcomes = map[string]string{
	approval.Approved:  "✅ Approved",
	approval.Denied:    "⛔ Denied",
	approval.TimedOut:  "⌛ Timed out (denied)",
	approval.Cancelled: "✖️ Cancelled (the agent disconnected)",
	approval.Expired:   "🔄 Expired (clawd restarted)",
}

// Attachment is a Mattermost message attachment (props.attachments[]).
type Attachment struct {
	Fallback string   `json:"fallback"`
	Color    string   `json:"color,omitempty"`
	Text     string   `json:"text"`
	Footer   string   `json:"footer,omitempty"`
	Actions  []Action `json:"actions,omitempty"`
}

// Action is an interactive message button.
type Action struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	Type        string      `json:"type"`
	Style       string      `json:"style,omitempty"`
	Integration Integration `json:"integration"`
}

// Integration is where Mattermost POSTs a click, and the context it sends
// along (kept from clients by the server).
type Integration struct {
	URL     string            `json:"url"`
	Context map[string]string `json:"context"`
}

// rendered is one rendering of a card: the post's message and props, and
// the secrets its buttons carry (by hash).
type rendered struct {
	Message     string
	Attachments []Attachment
	Issue       string
	Secrets     map[string]binding
}

// render builds the post for card. With callback != "" and the approval
// pending, each button gets a fresh secret bound to channel and post
// (post may be "" before the post exists).
func (c *Channel) render(card *approval.Card, channel, post string) (rendered, error) {
	a := card.Approval
	if a == nil {
		a = &approval.Approval{}
	}
	var r rendered
	for _, lim := range []struct{ body, summary, url int }{
		{maxBody, maxSummary, maxURL}, {1000, maxSummary, maxURL}, {0, 300, 500}, {0, 100, 200},
	} {
		msg, text := c.texts(card, lim.body, lim.summary, lim.url)
		if utf8.RuneCountInString(msg)+utf8.RuneCountInString(text) <= maxCardRunes || lim.body == 0 && lim.summary == 100 {
			r.Message = msg
			r.Attachments = []Attachment{{
				Fallback: clip("clawd approval: "+oneLine(summaryOf(a)), 200),
				Color:    color(a.Status),
				Text:     text,
				Footer:   footer(a),
			}}
			break
		}
	}
	buttons := card.Buttons()
	if len(buttons) == 0 || c.callback == "" {
		return r, nil
	}
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return r, err
	}
	r.Issue = hex.EncodeToString(b)
	r.Secrets = map[string]binding{}
	exp := a.Expires
	if exp.IsZero() {
		exp = c.now().Add(24 * time.Hour)
	}
	for i, bt := range buttons {
		sec, err := newSecret()
		if err != nil {
			return r, err
		}
		r.Secrets[hashSecret(sec)] = binding{Approval: a.ID, Value: bt.Value, Channel: channel, Post: post, Issue: r.Issue, Expires: exp}
		style := "default"
		switch bt.Style {
		case "primary":
			style = "success"
		case "danger":
			style = "danger"
		}
		r.Attachments[0].Actions = append(r.Attachments[0].Actions, Action{
			// Action IDs must be alphanumeric: Mattermost routes clicks to
			// /posts/{post_id}/actions/{action_id:[A-Za-z0-9]+}.
			ID:    fmt.Sprintf("clawd%s%d", actName(bt.Act), i),
			Name:  bt.Label,
			Type:  "button",
			Style: style,
			Integration: Integration{URL: c.callback, Context: map[string]string{
				"v": bt.Value, "t": sec,
			}},
		})
	}
	return r, nil
}

func actName(act string) string {
	switch act {
	case approval.ActApprove:
		return "approve"
	case approval.ActApproveFor:
		return "grant"
	case approval.ActDeny:
		return "deny"
	}
	return "act"
}

func summaryOf(a *approval.Approval) string {
	if a.Summary != "" {
		return a.Summary
	}
	if a.Method != "" || a.Host != "" {
		return a.Method + " " + a.Host
	}
	return "clawd approval"
}

func color(status string) string {
	switch status {
	case approval.Pending:
		return colorPending
	case approval.Approved:
		return colorOK
	}
	return colorBad
}

func footer(a *approval.Approval) string {
	d := a.Digest
	if len(d) > 16 {
		d = d[:16]
	}
	f := "clawd " + a.ID
	if d != "" {
		f += " · request " + d
	}
	return f
}

// texts are the post's message (status, summary, mentions) and the
// attachment's text (the request's details).
func (c *Channel) texts(card *approval.Card, bodyLim, summaryLim, urlLim int) (string, string) {
	a := card.Approval
	if a == nil {
		a = &approval.Approval{}
	}
	var msg strings.Builder
	if a.Status == approval.Pending {
		msg.WriteString("**clawd approval needed**: ")
	} else {
		line := outcomes[a.Status]
		if line == "" {
			line = esc(a.Status)
		}
		msg.WriteString("**" + line + "**")
		if a.By != "" {
			msg.WriteString(" by " + esc(clip(a.By, 120)))
		}
		msg.WriteString(": ")
	}
	msg.WriteString(esc(clip(oneLine(summaryOf(a)), summaryLim)))
	if a.Status == approval.Pending {
		if m := c.mentions(card.People); m != "" {
			msg.WriteString("\nAsked: " + m)
		}
	}

	var t []string
	t = append(t, "**Request:** "+codeSpan(clip(oneLine(a.Method+" "+a.URL), urlLim)))
	t = append(t, "**Container:** "+esc(clip(oneLine(a.Container.Name), 120)))
	t = append(t, "**Rule:** "+esc(clip(oneLine(a.Rule), 120)))
	if a.Status == approval.Pending {
		t = append(t, "**Time left:** "+timeLeft(a.Expires, card.Now))
	}
	if a.Required > 1 {
		var who []string
		for _, v := range a.Votes {
			n := v.Display
			if n == "" {
				n = v.By
			}
			who = append(who, clip(oneLine(n), 60))
		}
		s := fmt.Sprintf("%d of %d", len(a.Votes), a.Required)
		if len(who) > 0 {
			s += " (" + esc(strings.Join(who, ", ")) + ")"
		}
		t = append(t, "**Approvals:** "+s)
	}
	if a.Status != approval.Pending && a.Reason != "" {
		t = append(t, "**Reason:** "+esc(clip(oneLine(a.Reason), maxField)))
	}
	if bodyLim > 0 && a.Body != "" {
		preview := clip(a.Body, bodyLim)
		more := ""
		if a.BodyTruncated || preview != a.Body {
			more = fmt.Sprintf("\n(body cut: %d bytes in all)", a.BodySize)
		}
		t = append(t, codeBlock(preview)+more)
	}
	return msg.String(), strings.Join(t, "\n")
}

// mentions are @username mentions for the people asked: a Mattermost user
// ID (26 characters) only when the usernames setting names it, a username
// as it is; at most maxMentions.
func (c *Channel) mentions(people []string) string {
	var out []string
	seen := map[string]bool{}
	for _, p := range people {
		name := c.usernames[p]
		if name == "" && !validUserID(p) && validUsername(p) {
			name = p
		}
		if name == "" || seen[name] || len(out) >= maxMentions {
			continue
		}
		seen[name] = true
		out = append(out, "@"+name)
	}
	return strings.Join(out, " ")
}

func timeLeft(exp, now time.Time) string {
	if exp.IsZero() {
		return "no limit"
	}
	if now.IsZero() {
		now = time.Now()
	}
	d := exp.Sub(now).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	return d.String()
}

// zwsp breaks what Mattermost would otherwise read as a mention (@name,
// @channel, @here), a channel link (~name) or an autolink.
const zwsp = "\u200b"

// esc makes agent-controlled text inert in Mattermost markdown: markdown
// metacharacters are backslash-escaped, and @mentions, ~channel links and
// URLs are broken with a zero-width space.
func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\', '*', '_', '[', ']', '(', ')', '`', '#', '|', '>', '!', '{', '}', '$':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '<':
			b.WriteString("\\<")
		case '@', '~', ':':
			b.WriteRune(r)
			b.WriteString(zwsp)
		case '\r':
		case '\n':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return strings.ReplaceAll(b.String(), "www.", "www"+zwsp+".")
}

// codeSpan shows s literally: a code span fenced with more backticks than s
// contains in a row (no links, mentions or formatting inside).
func codeSpan(s string) string {
	f := strings.Repeat("`", longestRun(s, '`')+1)
	return f + " " + s + " " + f
}

// codeBlock shows s literally in a fenced block whose fence is longer than
// any backtick run in s, so s cannot close it.
func codeBlock(s string) string {
	n := longestRun(s, '`') + 1
	if n < 3 {
		n = 3
	}
	f := strings.Repeat("`", n)
	return f + "\n" + strings.TrimRight(strings.ReplaceAll(s, "\r", ""), "\n") + "\n" + f
}

func longestRun(s string, c byte) int {
	best, cur := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			cur++
			if cur > best {
				best = cur
			}
		} else {
			cur = 0
		}
	}
	return best
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// clip cuts s to at most n runes (valid UTF-8), marking the cut.
func clip(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "�")
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	if n <= 1 {
		return string(r[:n])
	}
	return string(r[:n-1]) + "…"
}

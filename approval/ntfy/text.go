package ntfy

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// cardMessage is the notification for a card, without topic and actions.
// It is plain text (markdown is never enabled), every agent-controlled
// field is cut to one line, and the body preview is fenced line by line so
// it cannot pass for clawd's own lines.
func cardMessage(c *approval.Card, priority int) publishMsg {
	summary := oneLine(c.Summary, 300)
	if summary == "" {
		summary = oneLine(c.Method+" "+c.Host, 300)
	}
	var title string
	var tags []string
	var head []string
	switch c.Status {
	case approval.Pending:
		title = "Approve? " + summary
		tags = []string{"warning"}
	case approval.Approved:
		title = "Approved: " + summary
		tags = []string{"white_check_mark"}
		priority = 2
	case approval.Denied:
		title = "Denied: " + summary
		tags = []string{"x"}
		priority = 2
	default:
		title = statusWord(c.Status) + ": " + summary
		tags = []string{"hourglass"}
		priority = 2
	}
	if c.Status != approval.Pending {
		line := statusWord(c.Status)
		if c.By != "" {
			line += " by " + oneLine(c.By, 100)
		}
		head = append(head, line)
		if c.Reason != "" {
			head = append(head, "Reason: "+oneLine(c.Reason, 300))
		}
	}

	var b strings.Builder
	for _, h := range head {
		b.WriteString(h + "\n")
	}
	b.WriteString(summary + "\n")
	b.WriteString(oneLine(c.Method+" "+c.URL, 600) + "\n")
	if c.Container.Name != "" {
		b.WriteString("Container: " + oneLine(c.Container.Name, 100) + "\n")
	}
	if c.Rule != "" {
		b.WriteString("Rule: " + oneLine(c.Rule, 100) + "\n")
	}
	if c.Required > 1 {
		var by []string
		for _, v := range c.Votes {
			by = append(by, oneLine(v.By, 60))
		}
		line := fmt.Sprintf("Approvals: %d of %d", len(c.Votes), c.Required)
		if len(by) > 0 {
			line += " (" + strings.Join(by, ", ") + ")"
		}
		b.WriteString(line + "\n")
	}
	if c.Status == approval.Pending && !c.Expires.IsZero() {
		left := c.Expires.Sub(c.Now).Round(time.Second)
		if left < 0 {
			left = 0
		}
		b.WriteString(fmt.Sprintf("Expires in %s (%s UTC)\n", left, c.Expires.UTC().Format("15:04:05")))
	}
	b.WriteString("ID: " + c.ID + "\n")
	head0 := b.String()

	msg := head0
	if c.Body != "" || c.BodySize > 0 {
		var body strings.Builder
		body.WriteString(fmt.Sprintf("Body (%d bytes):\n", c.BodySize))
		for _, l := range strings.Split(clean(c.Body), "\n") {
			body.WriteString("│ " + l + "\n")
		}
		if c.BodyTruncated {
			body.WriteString("│ …\n")
		}
		msg += body.String()
	}
	if len(msg) > maxMessage {
		msg = cut(msg, maxMessage-len("…\n")) + "…\n"
	}
	return publishMsg{
		Title:    cut(oneLine(title, maxTitle), maxTitle),
		Message:  strings.TrimRight(msg, "\n"),
		Priority: priority,
		Tags:     tags,
	}
}

func statusWord(s string) string {
	switch s {
	case approval.Approved:
		return "Approved"
	case approval.Denied:
		return "Denied"
	case approval.TimedOut:
		return "Timed out"
	case approval.Cancelled:
		return "Cancelled"
	case approval.Expired:
		return "Expired"
	case approval.Pending:
		return "Pending"
	}
	return "Closed"
}

// clean makes text valid UTF-8 without control characters other than
// newlines (tabs become spaces).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return r
		case r == '\t':
			return ' '
		case unicode.IsControl(r), r == '\u2028', r == '\u2029', unicode.Is(unicode.Bidi_Control, r):
			return -1
		}
		return r
	}, s)
}

// oneLine is clean(s) on one line, cut to max bytes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(clean(s), "\n", " ")), " ")
	if len(s) > max {
		s = cut(s, max-len("…")) + "…"
	}
	return s
}

// cut returns at most n bytes of s without splitting a rune.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

package telegram

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/clawd-dev/clawd/approval"
)

// maxText is Telegram's limit for a message's text. Telegram counts it
// after parsing the HTML, in UTF-16 code units; clawd keeps the whole HTML
// source under it, which is stricter.
const maxText = 4096

// Caps (in UTF-16 units after escaping) for the one-line fields, so that
// even at their longest the card stays under maxText with room for the body.
const (
	maxSummary = 400
	maxURL     = 700
	maxReason  = 300
	maxShort   = 100
	maxPeople  = 20 // mentions shown
	maxVoters  = 5  // voter names shown
)

// escape makes agent-controlled text inert in Telegram HTML.
func escape(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// field is agent-controlled text for a one-line field: control characters
// (newlines included) become spaces, so an agent cannot draw its own
// "Approved by" line; escaped and cut to n UTF-16 units.
func field(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	out, cut := escapeCut(s, n)
	if cut {
		out += "…"
	}
	return out
}

// u16 is a length as Telegram counts it.
func u16(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// escapeCut escapes s and cuts it (on a character, never inside an
// entity) so the result is at most budget UTF-16 units; cut reports
// whether it had to.
func escapeCut(s string, budget int) (out string, cut bool) {
	var b strings.Builder
	n := 0
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		e := escape(string(r))
		if n+u16(e) > budget {
			return b.String(), true
		}
		b.WriteString(e)
		n += u16(e)
	}
	return b.String(), false
}

// render is the card's HTML text: summary first, then the request, the
// outcome or time left, who is asked, votes, and the body preview, at most
// maxText long.
func render(c *approval.Card) string {
	a := c.Approval
	var b strings.Builder
	icon := "🔐"
	switch a.Status {
	case approval.Approved:
		icon = "✅"
	case approval.Denied:
		icon = "⛔"
	case approval.Pending:
	default:
		icon = "⌛"
	}
	fmt.Fprintf(&b, "%s <b>%s</b>\n", icon, field(a.Summary, maxSummary))
	fmt.Fprintf(&b, "<code>%s %s</code>\n", field(a.Method, maxShort), field(a.URL, maxURL))
	fmt.Fprintf(&b, "Container: <b>%s</b>\n", field(a.Container.Name, maxShort))
	fmt.Fprintf(&b, "Rule: <code>%s</code>\n", field(a.Rule, maxShort))
	fmt.Fprintf(&b, "ID: <code>%s</code>\n", field(a.ID, maxShort))
	b.WriteString(outcome(c))
	if a.Status == approval.Pending {
		if m := mentions(c.People); m != "" {
			b.WriteString("Asked: " + m + "\n")
		}
	}
	if a.Body != "" {
		head := b.String()
		const open, close, more = "\n<pre>", "</pre>", "\n… (cut)"
		budget := maxText - u16(head) - u16(open) - u16(close) - u16(more)
		if budget > 0 {
			body, cut := escapeCut(a.Body, budget)
			b.WriteString(open + body + close)
			if cut || a.BodyTruncated {
				b.WriteString(more)
			}
		}
	}
	return b.String()
}

// outcome is the status line(s): time left and votes while pending, who
// decided and why once not.
func outcome(c *approval.Card) string {
	a := c.Approval
	by := ""
	if a.By != "" {
		by = " by " + field(a.By, maxShort)
	}
	reason := ""
	if a.Reason != "" {
		reason = ": " + field(a.Reason, maxReason)
	}
	var s string
	switch a.Status {
	case approval.Pending:
		left := a.Expires.Sub(c.Now).Round(time.Second)
		if left < 0 {
			left = 0
		}
		s = "⏳ Waiting, " + left.String() + " left\n"
	case approval.Approved:
		s = "<b>Approved</b>" + by + reason + "\n"
	case approval.Denied:
		s = "<b>Denied</b>" + by + reason + "\n"
	case approval.TimedOut:
		s = "<b>Timed out</b>: nobody decided in time\n"
	case approval.Cancelled:
		s = "<b>Cancelled</b>" + reason + "\n"
	case approval.Expired:
		s = "<b>Expired</b>" + reason + "\n"
	default:
		s = "<b>" + field(a.Status, maxShort) + "</b>" + by + reason + "\n"
	}
	if a.Required > 1 {
		names := make([]string, 0, len(a.Votes))
		for i, v := range a.Votes {
			if i == maxVoters {
				names = append(names, "…")
				break
			}
			n := v.Label()
			names = append(names, field(n, maxShort))
		}
		s += fmt.Sprintf("Approvals: %d of %d", len(a.Votes), a.Required)
		if len(names) > 0 {
			s += " (" + strings.Join(names, ", ") + ")"
		}
		s += "\n"
	}
	return s
}

// mentions links numeric Telegram user IDs; anything else is shown as text.
func mentions(people []string) string {
	var out []string
	for i, p := range people {
		if i == maxPeople {
			out = append(out, fmt.Sprintf("and %d more", len(people)-maxPeople))
			break
		}
		if id, err := strconv.ParseInt(p, 10, 64); err == nil && id > 0 {
			out = append(out, fmt.Sprintf(`<a href="tg://user?id=%d">%d</a>`, id, id))
		} else {
			out = append(out, field(p, maxShort))
		}
	}
	return strings.Join(out, ", ")
}

// markup is the inline keyboard for the card's buttons (nil once decided).
func markup(c *approval.Card) *keyboard {
	bs := c.Buttons()
	if len(bs) == 0 {
		return nil
	}
	row := make([]inlineButton, 0, len(bs))
	for _, b := range bs {
		label := b.Label
		switch b.Act {
		case approval.ActApprove:
			label = "✅ " + label
		case approval.ActDeny:
			label = "⛔ " + label
		}
		row = append(row, inlineButton{Text: label, CallbackData: b.Value})
	}
	return &keyboard{InlineKeyboard: [][]inlineButton{row}}
}

package linear

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Limits. Linear does not document a comment size limit; clawd keeps its
// comments under MaxBody characters.
const (
	MaxBody    = 65536
	maxSummary = 600
	maxURL     = 2000
	maxPreview = 4000
	maxField   = 200
	maxReason  = 500
	maxVoters  = 10
)

var outcomes = map[string]string{
	approval.Approved:  "✅ **Approved**",
	approval.Denied:    "⛔ **Denied**",
	approval.TimedOut:  "⌛ **Timed out** (denied)",
	approval.Cancelled: "✖️ **Cancelled** (the agent disconnected)",
	approval.Expired:   "🔄 **Expired** (clawd restarted)",
}

// render is the card as Linear markdown, cut down until it fits MaxBody.
func render(card *approval.Card) string {
	for _, lim := range []struct{ preview, summary, url int }{
		{maxPreview, maxSummary, maxURL}, {1000, maxSummary, maxURL}, {0, 200, 500},
	} {
		s := build(card, lim.preview, lim.summary, lim.url)
		if utf8.RuneCountInString(s) <= MaxBody {
			return s
		}
	}
	return build(&approval.Card{Approval: &approval.Approval{ID: card.ID, Status: card.Status, Summary: "clawd approval"}}, 0, 100, 100)
}

func build(card *approval.Card, previewLim, summaryLim, urlLim int) string {
	a := card.Approval
	var b strings.Builder
	summary := a.Summary
	if summary == "" {
		summary = a.Method + " " + a.Host
	}
	b.WriteString("**" + inert(clip(oneLine(summary), summaryLim)) + "**\n\n")
	if a.Status == approval.Pending {
		b.WriteString("🔐 **clawd approval needed**\n\n")
	} else {
		line := outcomes[a.Status]
		if line == "" {
			line = "**" + inert(a.Status) + "**"
		}
		if a.By != "" {
			line += " by " + inert(clip(a.By, 120))
		}
		b.WriteString(line + "\n\n")
		if a.Reason != "" {
			b.WriteString("Reason: " + inert(clip(oneLine(a.Reason), maxReason)) + "\n\n")
		}
	}
	b.WriteString("- Request: " + code(clip(oneLine(a.Method+" "+a.URL), urlLim)) + "\n")
	b.WriteString("- Container: " + code(clip(oneLine(a.Container.Name), maxField)) + "\n")
	b.WriteString("- Rule: " + code(clip(oneLine(a.Rule), maxField)) + "\n")
	if a.Status == approval.Pending {
		b.WriteString("- Time left: " + timeLeft(a.Expires, card.Now) + "\n")
	}
	if a.Required > 1 {
		var who []string
		for i, v := range a.Votes {
			if i == maxVoters {
				who = append(who, "…")
				break
			}
			n := v.Display
			if n == "" {
				n = v.By
			}
			who = append(who, inert(clip(oneLine(n), 60)))
		}
		s := fmt.Sprintf("- Approvals: %d of %d", len(a.Votes), a.Required)
		if len(who) > 0 {
			s += " (" + strings.Join(who, ", ") + ")"
		}
		b.WriteString(s + "\n")
	}
	if previewLim > 0 && a.Body != "" {
		preview := clip(bodyText(a.Body), previewLim)
		note := ""
		if a.BodyTruncated || preview != bodyText(a.Body) {
			note = fmt.Sprintf(" (cut; %d bytes in all)", a.BodySize)
		}
		b.WriteString("\nBody" + note + ":\n\n")
		b.WriteString(fence(preview))
	}
	b.WriteString("\nApproval " + code(a.ID))
	if a.Digest != "" {
		d := a.Digest
		if len(d) > 16 {
			d = d[:16]
		}
		b.WriteString(" · request " + code(d))
	}
	b.WriteString("\n")
	if a.Status == approval.Pending {
		b.WriteString("\nTo decide, comment on this issue with one of:\n\n")
		for _, cmd := range commands(card) {
			b.WriteString("- " + code(cmd) + "\n")
		}
	}
	return b.String()
}

// commands are the exact comments that decide the card (none once decided).
func commands(card *approval.Card) []string {
	var out []string
	for _, btn := range card.Buttons() {
		switch btn.Act {
		case approval.ActApprove:
			out = append(out, "/clawd approve "+card.ID)
		case approval.ActApproveFor:
			out = append(out, "/clawd approve "+card.ID+" for 15m")
		case approval.ActDeny:
			out = append(out, "/clawd deny "+card.ID+" reason…")
		}
	}
	return out
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

// inert makes one line of agent-controlled text plain in Linear markdown:
// words that could become a mention, a link or an issue reference (an @,
// a scheme, a slash, a dotted name, KEY-123) are put in inline code; every
// other ASCII punctuation is backslash-escaped, so no emphasis, link,
// heading, list, HTML or table cell can start.
func inert(s string) string {
	s = clean(oneLine(s))
	var b strings.Builder
	for i, w := range strings.Split(s, " ") {
		if i > 0 {
			b.WriteByte(' ')
		}
		if risky(w) {
			b.WriteString(code(w))
			continue
		}
		for _, r := range w {
			if r < 0x80 && unicode.IsPunct(r) || r < 0x80 && unicode.IsSymbol(r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}

// risky: a word a renderer may turn into a mention, link or reference:
// an @, a scheme or path, a dotted name, an issue key like ENG-123.
func risky(w string) bool {
	if strings.ContainsAny(w, "@/\\<>") || strings.Contains(strings.TrimRight(w, ":"), ":") {
		return true
	}
	for i := 1; i+1 < len(w); i++ {
		if w[i] == '.' && isAlnum(w[i-1]) && isAlnum(w[i+1]) {
			return true
		}
		if w[i] == '-' && isAlnum(w[i-1]) && w[i+1] >= '0' && w[i+1] <= '9' {
			return true
		}
	}
	return false
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// code is s as an inline code span: delimited by a backtick run longer than
// any inside, padded when s starts or ends with a backtick. Inside a code
// span nothing is a link or a mention.
func code(s string) string {
	s = clean(oneLine(s))
	if s == "" {
		return "` `"
	}
	n := longestRun(s, '`') + 1
	d := strings.Repeat("`", n)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		s = " " + s + " "
	}
	return d + s + d
}

// fence is text in a fenced code block whose fence is longer than any
// backtick run in it, so the text cannot close it.
func fence(text string) string {
	n := longestRun(text, '`') + 1
	if n < 3 {
		n = 3
	}
	d := strings.Repeat("`", n)
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	return d + "text\n" + text + d + "\n"
}

func longestRun(s string, c rune) int {
	best, cur := 0, 0
	for _, r := range s {
		if r == c {
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

// bodyText is a body preview fit for a code block: valid UTF-8, newlines
// and tabs kept, other control and bidi characters dropped.
func bodyText(s string) string {
	s = strings.ToValidUTF8(s, "�")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if unsafeRune(r) {
			return -1
		}
		return r
	}, s)
}

// clean drops control, bidi-override and zero-width characters.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "�")
	return strings.Map(func(r rune) rune {
		if unsafeRune(r) {
			return -1
		}
		return r
	}, s)
}

func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r >= 0x200b && r <= 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0xfeff:
		return true
	}
	return false
}

// oneLine collapses every run of white space (newlines included) to one
// space.
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

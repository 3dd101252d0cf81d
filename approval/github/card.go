package github

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// MaxComment is GitHub's limit on a comment body, in characters. clawd
// counts bytes, never fewer than characters, so what fits here fits there.
const MaxComment = 65536

// Markers start clawd's comments (an HTML comment GitHub does not render):
// the card of an approval and a reply to a command comment. A comment that
// carries one is never read as a command.
const (
	cardMarker  = "<!-- clawd:"
	replyMarker = "<!-- clawd-reply:"
)

// loginRE is a GitHub login: letters, digits and single inner hyphens, at
// most 39 characters.
var loginRE = regexp.MustCompile(`^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$`)

// wordJoiner is an invisible character put after "@" and "#" and inside
// "/clawd" in agent text so GitHub links no mention or issue reference and
// no copied line becomes a command.
const wordJoiner = "\u2060"

// visible replaces control, invisible and bidi-override characters (which
// could hide or reorder what the human reads) with U+FFFD.
func visible(r rune) rune {
	switch {
	case r == '\n' || r == '\t':
		return r
	case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0,
		r >= 0x200b && r <= 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069,
		r == 0x2028 || r == 0x2029 || r == 0xfeff || r == 0x061c:
		return '\uFFFD'
	}
	return r
}

// defang makes agent text inert wherever it lands: no @mention, no #123
// or owner/repo#123 reference, no "/clawd" command, no HTML comment that
// could pass for clawd's marker, nothing invisible.
func defang(s string) string {
	s = strings.Map(visible, s)
	s = strings.NewReplacer("@", "@"+wordJoiner, "#", "#"+wordJoiner, "<!--", "<!"+wordJoiner+"--").Replace(s)
	return replaceFold(s, "/clawd", "/"+wordJoiner+"clawd")
}

// replaceFold replaces every case-insensitive ASCII match of old in s.
func replaceFold(s, old, new string) string {
	var b strings.Builder
	lo := asciiLower(s) // same byte offsets as s
	for {
		i := strings.Index(lo, old)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(new)
		s, lo = s[i+len(old):], lo[i+len(old):]
	}
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// cut shortens s to at most max bytes on a rune boundary, marking a cut
// with "…" (counted within max).
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "…"
	i := n - len(more)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:max(i, 0)] + more
}

// text is one line of prose that may carry agent text (a rule name in a
// message): defanged, markdown and HTML characters escaped.
func text(s string, n int) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	var b strings.Builder
	for _, r := range defang(cut(s, n)) {
		if strings.ContainsRune("\\`*_[]<>|~!&", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// code is agent text as an inline code span: one line, defanged, in a
// backtick fence longer than any backtick run in it. Inside a code span
// GitHub renders no markdown, HTML, mention or reference.
func code(s string, max int) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	s = defang(cut(s, max))
	if s == "" {
		return "` `"
	}
	f := strings.Repeat("`", longestRun(s, '`')+1)
	return f + " " + s + " " + f
}

// fence is agent text as a fenced code block whose fence is longer than any
// backtick run in it, so the text cannot close it.
func fence(s string) string {
	s = defang(strings.ToValidUTF8(s, "\uFFFD"))
	f := strings.Repeat("`", max(3, longestRun(s, '`')+1))
	return f + "text\n" + strings.TrimRight(s, "\n") + "\n" + f
}

func longestRun(s string, c byte) int {
	best, n := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			n++
			best = max(best, n)
		} else {
			n = 0
		}
	}
	return best
}

var statusText = map[string]string{
	approval.Approved:  "✅ **Approved**",
	approval.Denied:    "⛔ **Denied**",
	approval.TimedOut:  "⌛ **Timed out** (denied)",
	approval.Cancelled: "✖️ **Cancelled** (the agent disconnected)",
	approval.Expired:   "🔄 **Expired** (clawd restarted)",
}

// Commands are the comment lines that decide an approval.
func Commands(a *approval.Approval) (approve, approveFor, deny string) {
	approve = "/clawd approve " + a.ID
	if a.GrantsAllowed {
		approveFor = approve + " for 15m"
	}
	return approve, approveFor, "/clawd deny " + a.ID + " reason"
}

// Body is the comment for c: summary first, the request, container, rule,
// time left, a body preview, the approval ID and digest, who is asked and
// the commands to type while it is pending, the outcome once decided.
// Every piece of agent text is in a code span or block and defanged.
func Body(c *approval.Card) string {
	a := c.Approval
	var b strings.Builder
	b.WriteString(cardMarker + a.ID + " -->\n")
	summary := a.Summary
	if summary == "" {
		summary = a.Method + " " + a.Host
	}
	lead := "🔒 **Approval needed:** "
	if a.Status != approval.Pending {
		lead = "**Approval request:** "
	}
	b.WriteString(lead + code(summary, 1000) + "\n\n")
	b.WriteString(code(a.Method, 32) + " " + code(a.URL, 4000) + "\n\n")

	cont := "- Container: " + code(a.Container.Name, 200)
	if a.Container.Runtime != "" {
		cont += " (" + code(a.Container.Runtime, 50) + ")"
	}
	b.WriteString(cont + "\n")
	if a.Rule != "" {
		b.WriteString("- Rule: " + code(a.Rule, 200) + "\n")
	}
	if a.Status == approval.Pending && !a.Expires.IsZero() {
		left := a.Expires.Sub(c.Now).Round(time.Second)
		b.WriteString("- Expires in: " + max(left, 0).String() + "\n")
	}
	d := a.Digest
	if len(d) > 16 {
		d = d[:16]
	}
	b.WriteString("- Approval: `" + a.ID + "` · digest `" + code16(d) + "`\n")
	if a.Required > 1 || len(a.Votes) > 1 {
		b.WriteString("- " + votes(a) + "\n")
	}

	tail := tailText(c)
	if a.Body != "" {
		note := ""
		if a.BodyTruncated {
			note = "\n_Preview"
			if a.BodySize >= 0 {
				note += " of " + strconv.FormatInt(a.BodySize, 10) + " bytes"
			}
			note += "._"
		}
		room := MaxComment - b.Len() - len(tail) - len(note) - 200
		body := a.Body
		cutNote := ""
		if len(body) > room {
			body, cutNote = cut(body, max(room, 0)), "\n_Cut to fit a GitHub comment._"
		}
		b.WriteString("\nRequest body:\n" + fence(body) + note + cutNote + "\n")
	}
	b.WriteString(tail)
	return b.String()
}

// code16 keeps only hex digits (the digest is ours, but be strict).
func code16(s string) string {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return ""
		}
	}
	return s
}

// tailText is who is asked and the commands (pending), or the outcome.
func tailText(c *approval.Card) string {
	a := c.Approval
	var b strings.Builder
	if a.Status != approval.Pending {
		b.WriteString("\n" + outcome(a) + "\n")
		return b.String()
	}
	var mentions []string
	for _, p := range c.People {
		if loginRE.MatchString(p) {
			mentions = append(mentions, "@"+p)
		}
		if len(mentions) == 20 {
			break
		}
	}
	if len(mentions) > 0 {
		b.WriteString("\nAsked: " + strings.Join(mentions, " ") + "\n")
	}
	approve, approveFor, deny := Commands(a)
	b.WriteString("\nTo decide, comment with exactly one of these lines:\n")
	b.WriteString("- approve once: `" + approve + "`\n")
	if approveFor != "" {
		b.WriteString("- approve and allow the same for 15 minutes: `" + approveFor + "`\n")
	}
	b.WriteString("- deny (the reason is optional): `" + deny + "`\n")
	return b.String()
}

// votes is "1 of 2 approvals: alice".
func votes(a *approval.Approval) string {
	var who []string
	for i, v := range a.Votes {
		if i == 10 {
			who = append(who, "…")
			break
		}
		// The identity that voted, never only a name.
		who = append(who, code(v.By, 120))
	}
	line := fmt.Sprintf("%d of %d approvals", len(a.Votes), max(a.Required, len(a.Votes)))
	if len(who) > 0 {
		line += ": " + strings.Join(who, ", ")
	}
	return line
}

// outcome is the status, who decided and why.
func outcome(a *approval.Approval) string {
	out := statusText[a.Status]
	if out == "" {
		out = code(a.Status, 40)
	}
	if a.By != "" {
		out += " by " + code(a.By, 200)
	}
	if a.Reason != "" {
		out += ": " + code(a.Reason, 1000)
	}
	return out
}

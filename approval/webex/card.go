package webex

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Webex limits and card constants.
const (
	// MaxText is Webex's limit on a message's text or markdown, in bytes.
	MaxText = 7439
	// MaxCard is the most bytes of card JSON clawd sends (Webex refuses
	// attachments over about 22 KB).
	MaxCard       = 16 * 1024
	ContentTypeAC = "application/vnd.microsoft.card.adaptive"
	// CardVersion: Webex renders Adaptive Cards up to 1.3.
	CardVersion = "1.3"
	schemaURL   = "http://adaptivecards.io/schemas/adaptive-card.json"
	maxSummary  = 300
	maxURL      = 1000
	maxBody     = 3000
	maxField    = 300
	maxMentions = 20
)

type obj = map[string]any

var outcomes = map[string]string{
	approval.Approved:  "✅ Approved",
	approval.Denied:    "⛔ Denied",
	approval.TimedOut:  "⌛ Timed out (denied)",
	approval.Cancelled: "✖️ Cancelled (the agent disconnected)",
	approval.Expired:   "🔄 Expired (clawd restarted)",
}

func statusLine(a *approval.Approval) string {
	line := outcomes[a.Status]
	if line == "" {
		line = esc(a.Status)
	}
	if a.By != "" {
		line += " by " + esc(clip(a.By, 120))
	}
	return line
}

func summaryOf(a *approval.Approval) string {
	if a.Summary != "" {
		return a.Summary
	}
	return a.Method + " " + a.Host
}

// headMarkdown is the thread's head: what the approval is, who is asked
// (mentions, while pending), its state. It is plain markdown, so Webex
// lets clawd edit it.
func headMarkdown(card *approval.Card) string {
	a := card.Approval
	if a == nil {
		a = &approval.Approval{}
	}
	var b strings.Builder
	if a.Status == approval.Pending {
		b.WriteString("**clawd approval needed**: ")
	} else {
		b.WriteString("**" + statusLine(a) + "**: ")
	}
	b.WriteString(esc(clip(oneLine(summaryOf(a)), maxSummary)))
	b.WriteString("  \n" + code(clip(a.Method+" "+a.URL, maxURL)))
	b.WriteString(" · container " + code(clip(a.Container.Name, 120)) + " · rule " + code(clip(a.Rule, 120)))
	if a.Required > 1 {
		b.WriteString("  \n" + votes(a))
	}
	if a.Status == approval.Pending {
		if m := mentions(card.People); m != "" {
			b.WriteString("  \nAsked: " + m)
		}
		b.WriteString("  \nDecide with the buttons on the card in this thread.")
	} else if a.Reason != "" {
		b.WriteString("  \n" + esc(clip(oneLine(a.Reason), maxField)))
	}
	return clipBytes(b.String(), MaxText)
}

// mentions are "<@personId:ID>" for the people asked (Webex person IDs
// only; anything else is left out).
func mentions(people []string) string {
	var at []string
	for _, p := range people {
		if len(at) >= maxMentions {
			break
		}
		if validID(p) {
			at = append(at, "<@personId:"+p+">")
		}
	}
	return strings.Join(at, ", ")
}

func votes(a *approval.Approval) string {
	var who []string
	for _, v := range a.Votes {
		n := v.Display
		if n == "" {
			n = v.By
		}
		who = append(who, clip(oneLine(n), 60))
	}
	s := fmt.Sprintf("Approvals: %d of %d", len(a.Votes), a.Required)
	if len(who) > 0 {
		s += " (" + strings.Join(who, ", ") + ")"
	}
	return esc(clip(s, maxField))
}

// cardMessage is the card in the head's thread: markdown for clients
// without cards, and the Adaptive Card.
func cardMessage(room, head string, card *approval.Card) message {
	a := card.Approval
	if a == nil {
		a = &approval.Approval{}
	}
	fallback := "clawd approval " + code(a.ID) + ": " + esc(clip(oneLine(summaryOf(a)), maxSummary))
	if a.Status == approval.Pending {
		fallback += " (open this in a Webex client that shows cards to decide)"
	} else {
		fallback = statusLine(a) + " · " + fallback
	}
	return message{RoomID: room, ParentID: head, Markdown: clipBytes(fallback, MaxText),
		Attachments: []attachment{{ContentType: ContentTypeAC, Content: cardContent(card)}}}
}

// cardContent builds the Adaptive Card, shrinking the body preview (then
// the summary and URL) until it fits MaxCard.
func cardContent(card *approval.Card) obj {
	for _, lim := range []struct{ body, summary, url int }{
		{maxBody, maxSummary, maxURL}, {1000, maxSummary, maxURL}, {0, 200, 500}, {0, 100, 200},
	} {
		c := buildCard(card, lim.body, lim.summary, lim.url)
		if b, _ := json.Marshal(c); len(b) <= MaxCard {
			return c
		}
	}
	a := &approval.Approval{ID: card.ID, Status: card.Status, Summary: "clawd approval", Digest: card.Digest}
	return buildCard(&approval.Card{Approval: a, Now: card.Now}, 0, 100, 100)
}

func buildCard(card *approval.Card, bodyLim, summaryLim, urlLim int) obj {
	a := card.Approval
	if a == nil {
		a = &approval.Approval{}
	}
	body := []obj{{"type": "TextBlock", "text": esc(clip(oneLine(summaryOf(a)), summaryLim)), "wrap": true,
		"weight": "Bolder", "size": "Medium"}}
	if a.Status == approval.Pending {
		body = append(body, obj{"type": "TextBlock", "text": "clawd approval needed", "wrap": true, "color": "Warning"})
	} else {
		color := "Attention"
		if a.Status == approval.Approved {
			color = "Good"
		}
		body = append(body, obj{"type": "TextBlock", "text": statusLine(a), "wrap": true, "weight": "Bolder", "color": color})
		if a.Reason != "" {
			body = append(body, obj{"type": "TextBlock", "text": esc(clip(oneLine(a.Reason), maxField)), "wrap": true, "isSubtle": true})
		}
	}
	facts := []obj{
		{"title": "Request", "value": esc(clip(a.Method+" "+a.URL, urlLim))},
		{"title": "Container", "value": esc(clip(a.Container.Name, 120))},
		{"title": "Rule", "value": esc(clip(a.Rule, 120))},
	}
	if a.Status == approval.Pending {
		facts = append(facts, obj{"title": "Time left", "value": timeLeft(a.Expires, card.Now)})
	}
	if a.Required > 1 {
		facts = append(facts, obj{"title": "Approvals", "value": strings.TrimPrefix(votes(a), "Approvals: ")})
	}
	body = append(body, obj{"type": "FactSet", "facts": facts})
	if bodyLim > 0 && a.Body != "" {
		preview := clip(a.Body, bodyLim)
		if a.BodyTruncated || preview != a.Body {
			preview += fmt.Sprintf(" … (%d bytes)", a.BodySize)
		}
		body = append(body, obj{"type": "TextBlock", "text": esc(preview), "wrap": true, "fontType": "Monospace", "size": "Small"})
	}
	if a.ID != "" {
		foot := "clawd " + esc(a.ID)
		if d := a.Digest; d != "" {
			foot += " · request " + esc(d[:min(16, len(d))])
		}
		body = append(body, obj{"type": "TextBlock", "text": foot, "isSubtle": true, "size": "Small", "wrap": true})
	}
	c := obj{"type": "AdaptiveCard", "$schema": schemaURL, "version": CardVersion, "body": body}
	var actions []obj
	for _, b := range card.Buttons() {
		act := obj{"type": "Action.Submit", "title": b.Label, "data": obj{"v": b.Value}}
		switch b.Style {
		case "primary":
			act["style"] = "positive"
		case "danger":
			act["style"] = "destructive"
		}
		actions = append(actions, act)
	}
	if len(actions) > 0 {
		c["actions"] = actions
	}
	return c
}

// timeLeft is the time left when the card was posted and the time it
// ends (the card is not edited while pending, so the end is what stays
// true).
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
	return d.String() + " (until " + exp.UTC().Format("15:04:05") + " UTC)"
}

// esc makes agent-controlled text inert in Webex markdown (and card
// markdown): backslash escapes for emphasis, links, code, headings and
// quotes; '<' is replaced so no <@all> mention or HTML tag can
// be formed.
func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\', '*', '_', '[', ']', '`', '~', '#', '>':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '<':
			b.WriteRune('‹')
		case '\r':
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// code is s as an inline code span: no markdown inside; backticks and '<'
// replaced so the span cannot be closed or carry a mention.
func code(s string) string {
	s = strings.NewReplacer("`", "ˋ", "<", "‹", "\r", "", "\n", " ").Replace(s)
	if s == "" {
		s = "-"
	}
	return "`" + s + "`"
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

// clipBytes cuts s to at most n bytes on a rune boundary.
func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-len("…")]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

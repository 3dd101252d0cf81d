package teams

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Limits: Teams refuses a message over 28 KB; the card is kept well under.
const (
	// MaxActivity is the most bytes of activity JSON clawd sends.
	MaxActivity    = 26 * 1024
	maxSummary     = 600
	maxURL         = 1500
	maxBody        = 3000
	maxMentions    = 20
	maxFieldText   = 300
	ContentTypeAC  = "application/vnd.microsoft.card.adaptive"
	CardVersion    = "1.5"
	Verb           = "clawd"
	ResultBlockID  = "clawd-result"
	schemaURL      = "http://adaptivecards.io/schemas/adaptive-card.json"
	styleOK        = "positive"
	styleDangerous = "destructive"
)

type obj = map[string]any

var outcomes = map[string]string{
	approval.Approved:  "✅ Approved",
	approval.Denied:    "⛔ Denied",
	approval.TimedOut:  "⌛ Timed out (denied)",
	approval.Cancelled: "✖️ Cancelled (the agent disconnected)",
	approval.Expired:   "🔄 Expired (clawd restarted)",
}

// activity wraps an Adaptive Card in a message activity (mentions live in
// the card's msteams.entities).
func activity(card obj) obj {
	return obj{
		"type": "message",
		"attachments": []obj{{
			"contentType": ContentTypeAC,
			"content":     card,
		}},
	}
}

// cardContent builds the Adaptive Card for card, shrinking the body
// preview (then the summary and URL) until the message fits Teams' limit.
// result, when set, is shown first (the answer to the person who clicked).
func cardContent(card *approval.Card, result string) obj {
	for _, lim := range []struct{ body, summary, url int }{
		{maxBody, maxSummary, maxURL}, {1000, maxSummary, maxURL}, {0, 300, 500}, {0, 100, 200},
	} {
		c := buildCard(card, result, lim.body, lim.summary, lim.url)
		b, _ := json.Marshal(activity(c))
		if len(b) <= MaxActivity {
			return c
		}
	}
	return buildCard(&approval.Card{Approval: &approval.Approval{ID: card.ID, Status: card.Status, Summary: "clawd approval"}}, clip(result, 200), 0, 100, 100)
}

func buildCard(card *approval.Card, result string, bodyLim, summaryLim, urlLim int) obj {
	a := card.Approval
	if a == nil {
		a = &approval.Approval{}
	}
	summary := a.Summary
	if summary == "" {
		summary = a.Method + " " + a.Host
	}
	body := []obj{{"type": "TextBlock", "text": esc(clip(oneLine(summary), summaryLim)), "wrap": true,
		"weight": "Bolder", "size": "Medium"}}
	if result != "" {
		body = append(body, obj{"type": "TextBlock", "id": ResultBlockID, "text": esc(clip(result, maxFieldText)),
			"wrap": true, "weight": "Bolder", "color": "Accent"})
	}
	if a.Status == approval.Pending {
		body = append(body, obj{"type": "TextBlock", "text": "clawd approval needed", "wrap": true, "color": "Warning"})
	} else {
		line := outcomes[a.Status]
		if line == "" {
			line = esc(a.Status)
		}
		if a.By != "" {
			line += " by " + esc(clip(a.By, 120))
		}
		color := "Attention"
		if a.Status == approval.Approved {
			color = "Good"
		}
		body = append(body, obj{"type": "TextBlock", "text": line, "wrap": true, "weight": "Bolder", "color": color})
		if a.Reason != "" {
			body = append(body, obj{"type": "TextBlock", "text": esc(clip(oneLine(a.Reason), maxFieldText)), "wrap": true, "isSubtle": true})
		}
	}
	var entities []obj
	if a.Status == approval.Pending {
		var at []string
		for _, p := range card.People {
			if len(entities) >= maxMentions || !validMention(p) {
				continue
			}
			label := fmt.Sprintf("approver %d", len(entities)+1)
			at = append(at, "<at>"+label+"</at>")
			entities = append(entities, obj{"type": "mention", "text": "<at>" + label + "</at>",
				"mentioned": obj{"id": p, "name": label}})
		}
		if len(at) > 0 {
			body = append(body, obj{"type": "TextBlock", "text": "Asked: " + strings.Join(at, ", "), "wrap": true, "isSubtle": true})
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
		var who []string
		for _, v := range a.Votes {
			n := v.Label()
			who = append(who, clip(n, 60))
		}
		s := fmt.Sprintf("%d of %d", len(a.Votes), a.Required)
		if len(who) > 0 {
			s += " (" + esc(strings.Join(who, ", ")) + ")"
		}
		facts = append(facts, obj{"title": "Approvals", "value": clip(s, maxFieldText)})
	}
	body = append(body, obj{"type": "FactSet", "facts": facts})
	if bodyLim > 0 && a.Body != "" {
		preview := clip(a.Body, bodyLim)
		if a.BodyTruncated || preview != a.Body {
			preview += fmt.Sprintf(" … (%d bytes)", a.BodySize)
		}
		body = append(body, obj{"type": "TextBlock", "text": esc(preview), "wrap": true, "fontType": "Monospace", "size": "Small"})
	}
	if a.Digest != "" {
		d := a.Digest
		if len(d) > 16 {
			d = d[:16]
		}
		body = append(body, obj{"type": "TextBlock", "text": "clawd " + esc(a.ID) + " · request " + d, "isSubtle": true, "size": "Small", "wrap": true})
	}
	c := obj{
		"type":    "AdaptiveCard",
		"$schema": schemaURL,
		"version": CardVersion,
		"body":    body,
		"msteams": obj{"width": "Full"},
	}
	if len(entities) > 0 {
		c["msteams"].(obj)["entities"] = entities
	}
	var actions []obj
	for _, b := range card.Buttons() {
		style := "default"
		switch b.Style {
		case "primary":
			style = styleOK
		case "danger":
			style = styleDangerous
		}
		data := obj{"v": b.Value}
		actions = append(actions, obj{
			"type": "Action.Execute", "title": b.Label, "verb": Verb, "data": data, "style": style,
			"fallback": obj{"type": "Action.Submit", "title": b.Label, "data": data, "style": style},
		})
	}
	if len(actions) > 0 {
		c["actions"] = actions
	}
	return c
}

// validMention: an AAD object ID (a GUID) or a Teams user id (29:…).
func validMention(p string) bool {
	return validAppID(p) || (strings.HasPrefix(p, "29:") && len(p) < 200 && !strings.ContainsAny(p, "<>\"\\ "))
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

// esc makes agent-controlled text inert in Adaptive Card markdown: no
// links, emphasis or code spans (backslash escapes), no <at> mentions.
func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\', '*', '_', '[', ']', '`', '~':
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

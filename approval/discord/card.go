package discord

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Discord's documented message limits (characters).
const (
	maxContent     = 2000
	maxTitle       = 256
	maxDescription = 4096
	maxFields      = 25
	maxFieldName   = 256
	maxFieldValue  = 1024
	maxFooter      = 2048
	maxEmbedTotal  = 6000
	maxCustomID    = 100
	maxLabel       = 80
	maxMentions    = 50 // of the 100 allowed_mentions.users allows; keeps content short
)

// Component types and button styles.
const (
	componentRow    = 1
	componentButton = 2
	stylePrimary    = 1
	styleDanger     = 4
)

type msg struct {
	Content         string      `json:"content"`
	Embeds          []embed     `json:"embeds"`
	Components      []component `json:"components"`
	AllowedMentions mentions    `json:"allowed_mentions"`
}

type mentions struct {
	Parse []string `json:"parse"`
	Users []string `json:"users,omitempty"`
}

type embed struct {
	Title       string  `json:"title,omitempty"`
	Description string  `json:"description,omitempty"`
	Color       int     `json:"color,omitempty"`
	Fields      []field `json:"fields,omitempty"`
	Footer      *footer `json:"footer,omitempty"`
}

type field struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Inline bool   `json:"inline,omitempty"`
}

type footer struct {
	Text string `json:"text"`
}

type component struct {
	Type       int         `json:"type"`
	Style      int         `json:"style,omitempty"`
	Label      string      `json:"label,omitempty"`
	CustomID   string      `json:"custom_id,omitempty"`
	Components []component `json:"components,omitempty"`
}

var outcome = map[string]string{
	approval.Approved:  "✅ Approved",
	approval.Denied:    "⛔ Denied",
	approval.TimedOut:  "⌛ Timed out (denied)",
	approval.Cancelled: "✖️ Cancelled (the agent disconnected)",
	approval.Expired:   "🔄 Expired (clawd restarted)",
}

var colors = map[string]int{
	approval.Pending:  0xF1C40F,
	approval.Approved: 0x2ECC71,
	approval.Denied:   0xE74C3C,
	approval.TimedOut: 0xE74C3C,
}

// message builds the card: mentions of the people asked (and only them),
// one embed within Discord's limits, and the buttons while pending. Agent
// text (summary, URL, container, rule, body) is escaped so it can neither
// format nor mention.
func message(card *approval.Card) msg {
	a := card.Approval
	var users []string
	for _, p := range card.People {
		if snowflake(p) && len(users) < maxMentions && !contains(users, p) {
			users = append(users, p)
		}
	}
	var content strings.Builder
	for _, u := range users {
		content.WriteString("<@" + u + "> ")
	}
	if a.Status == approval.Pending {
		content.WriteString("clawd approval needed")
	} else {
		content.WriteString("clawd approval: " + statusLine(a.Status))
	}
	m := msg{
		Content:         content.String(),
		Embeds:          []embed{cardEmbed(card)},
		Components:      []component{},
		AllowedMentions: mentions{Parse: []string{}, Users: users},
	}
	var row []component
	for _, b := range card.Buttons() {
		style := stylePrimary
		if b.Style == "danger" {
			style = styleDanger
		}
		if len(b.Value) > maxCustomID {
			continue // cannot happen: values are ≤ 45 bytes
		}
		row = append(row, component{Type: componentButton, Style: style, Label: cut(b.Label, maxLabel), CustomID: b.Value})
	}
	if len(row) > 0 {
		m.Components = []component{{Type: componentRow, Components: row}}
	}
	return m
}

func cardEmbed(card *approval.Card) embed {
	a := card.Approval
	summary := a.Summary
	if summary == "" {
		summary = "Approval needed"
	}
	e := embed{Title: escape(summary, maxTitle, true), Color: colors[a.Status]}
	if e.Color == 0 {
		e.Color = 0x95A5A6
	}
	ctr := escape(a.Container.Name, 400, true)
	if a.Container.Runtime != "" {
		ctr += " (" + escape(a.Container.Runtime, 100, true) + ")"
	}
	e.Fields = append(e.Fields, field{Name: "Container", Value: orDash(ctr), Inline: true})
	e.Fields = append(e.Fields, field{Name: "Rule", Value: orDash(escape(a.Rule, 500, true)), Inline: true})
	if a.Status == approval.Pending {
		left := a.Expires.Sub(card.Now).Round(time.Second)
		if left < 0 {
			left = 0
		}
		v := left.String()
		if !a.Expires.IsZero() {
			v += " (<t:" + strconv.FormatInt(a.Expires.Unix(), 10) + ":R>)"
		}
		e.Fields = append(e.Fields, field{Name: "Time left", Value: v, Inline: true})
	} else {
		e.Fields = append(e.Fields, field{Name: "Outcome", Value: outcomeText(card)})
	}
	if a.Required > 1 {
		var v strings.Builder
		fmt.Fprintf(&v, "%d of %d", len(a.Votes), a.Required)
		for i, vt := range a.Votes {
			if i == 0 {
				v.WriteString(": ")
			} else {
				v.WriteString(", ")
			}
			v.WriteString(who(card, vt.By, vt.Label()))
		}
		e.Fields = append(e.Fields, field{Name: "Approvals", Value: cutEscaped(v.String(), maxFieldValue)})
	}
	e.Footer = &footer{Text: "clawd · " + a.ID + " · digest " + digest16(a.Digest)}

	// The description (request line and body preview) gets what the
	// total allows.
	used := runes(e.Title) + runes(e.Footer.Text)
	for _, f := range e.Fields {
		used += runes(f.Name) + runes(f.Value)
	}
	budget := min(maxDescription, maxEmbedTotal-used)
	desc := "**" + escape(a.Method, 20, true) + "** " + escape(a.URL, min(1500, budget/2), true)
	if a.Body != "" {
		note := ""
		if a.BodyTruncated {
			note = "\n… (truncated, " + strconv.FormatInt(a.BodySize, 10) + " bytes in total)"
		}
		const fences = len("\n```\n") + len("\n```")
		room := budget - runes(desc) - fences - runes(note)
		if room > 20 {
			desc += "\n```\n" + codeSafe(a.Body, room) + "\n```" + note
		}
	}
	e.Description = desc
	return e
}

func outcomeText(card *approval.Card) string {
	a := card.Approval
	s := statusLine(a.Status)
	if a.By != "" {
		s += " by " + who(card, a.By, "")
	}
	if a.Reason != "" {
		s += ": " + escape(a.Reason, 500, true)
	}
	return cutEscaped(s, maxFieldValue)
}

func statusLine(status string) string {
	if s, ok := outcome[status]; ok {
		return s
	}
	return escape(status, 50, true)
}

// who shows an identity: a mention for this channel's users (mentions in
// embeds never notify), else the escaped identity.
func who(card *approval.Card, identity, display string) string {
	if u, ok := strings.CutPrefix(identity, card.Channel+":"); ok && snowflake(u) {
		return "<@" + u + ">"
	}
	return escape(display, 100, true) // Vote.Label: the identity, then the chosen name
}

func digest16(d string) string {
	if len(d) > 16 {
		return d[:16]
	}
	return d
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// mdSpecial are the characters Discord markdown gives a meaning to,
// including mentions (<@…>, @everyone), masked links and headings.
const mdSpecial = "\\*_~`|><#-[]()@!:"

// escape makes agent text inert: markdown characters are backslash
// escaped, control characters dropped (newlines become spaces when oneLine),
// and the result is at most max characters, ending in "…" when cut.
func escape(s string, max int, oneLine bool) string {
	return transform(s, max, func(r rune) string {
		switch {
		case r == '\n' && !oneLine:
			return "\n"
		case r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			return " "
		case strings.ContainsRune(mdSpecial, r):
			return "\\" + string(r)
		}
		return string(r)
	})
}

// codeSafe is s inside a ``` block: no run of backticks can close it, and at
// most max characters.
func codeSafe(s string, max int) string {
	return transform(s, max, func(r rune) string {
		switch {
		case r == '`':
			return "`\u200b"
		case r == '\n' || r == '\t':
			return string(r)
		case r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			return " "
		}
		return string(r)
	})
}

// transform maps each rune of s and stops at max characters, ending in
// "…" when input was left out.
func transform(s string, max int, f func(rune) string) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		piece := f(r)
		k := utf8.RuneCountInString(piece)
		more := i+w < len(s)
		if n+k > max || more && n+k > max-1 {
			b.WriteString("…")
			return b.String()
		}
		b.WriteString(piece)
		n += k
		i += w
	}
	return b.String()
}

// cutEscaped cuts already-escaped text without leaving a lone backslash.
func cutEscaped(s string, max int) string {
	if runes(s) <= max {
		return s
	}
	r := []rune(s)[:max-1]
	t := strings.TrimRight(string(r), "\\")
	return t + "…"
}

// cut shortens trusted text to max characters.
func cut(s string, max int) string {
	if runes(s) <= max {
		return s
	}
	return string([]rune(s)[:max-1]) + "…"
}

func runes(s string) int { return utf8.RuneCountInString(s) }

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

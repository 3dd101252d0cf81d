package whatsapp

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Limits of the Cloud API messages this channel keeps to (characters).
const (
	maxBody        = 1024 // interactive body text
	maxHeader      = 60   // interactive header text
	maxFooter      = 60   // interactive footer text
	maxButtons     = 3    // reply buttons per interactive message
	maxButtonID    = 256  // reply.id
	maxButtonTitle = 20   // reply.title
	maxText        = 4096 // text message body
	// Template body parameters: clawd's template body is short, so these
	// keep the rendered body far below WhatsApp's 1024 characters.
	maxParamSummary   = 300
	maxParamContainer = 60
	maxParamID        = 64
)

// shortTitle is a button's title on WhatsApp (≤ 20 characters).
func shortTitle(act string) string {
	switch act {
	case approval.ActApprove:
		return "Approve"
	case approval.ActApproveFor:
		return "Approve 15m"
	}
	return "Deny"
}

// templateIndex is the position of each action's quick-reply button in the
// operator's template: Approve, Approve 15 min, Deny.
var templateIndex = map[string]int{approval.ActApprove: 0, approval.ActApproveFor: 1, approval.ActDeny: 2}

type textBody struct {
	Body       string `json:"body"`
	PreviewURL bool   `json:"preview_url"`
}

type msgContext struct {
	MessageID string `json:"message_id"`
}

// outMessage is a Cloud API message (one of text, interactive, template).
type outMessage struct {
	Product       string       `json:"messaging_product"`
	RecipientType string       `json:"recipient_type"`
	To            string       `json:"to"`
	Type          string       `json:"type"`
	Context       *msgContext  `json:"context,omitempty"`
	Text          *textBody    `json:"text,omitempty"`
	Interactive   *interactive `json:"interactive,omitempty"`
	Template      *template    `json:"template,omitempty"`
}

type interactive struct {
	Type   string     `json:"type"`
	Header *header    `json:"header,omitempty"`
	Body   textOnly   `json:"body"`
	Footer *textOnly  `json:"footer,omitempty"`
	Action btnActions `json:"action"`
}

type header struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type textOnly struct {
	Text string `json:"text"`
}

type btnActions struct {
	Buttons []replyButton `json:"buttons"`
}

type replyButton struct {
	Type  string `json:"type"`
	Reply struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	} `json:"reply"`
}

type template struct {
	Name       string      `json:"name"`
	Language   language    `json:"language"`
	Components []component `json:"components"`
}

type language struct {
	Code string `json:"code"`
}

type component struct {
	Type       string      `json:"type"`
	SubType    string      `json:"sub_type,omitempty"`
	Index      string      `json:"index,omitempty"`
	Parameters []parameter `json:"parameters"`
}

type parameter struct {
	Type    string `json:"type"`
	Text    string `json:"text,omitempty"`
	Payload string `json:"payload,omitempty"`
}

func newMessage(to, typ string) outMessage {
	return outMessage{Product: "whatsapp", RecipientType: "individual", To: to, Type: typ}
}

// textMessage is a plain text (no link preview), in reply to replyTo when
// it is set.
func textMessage(to, text, replyTo string) outMessage {
	m := newMessage(to, "text")
	m.Text = &textBody{Body: cutChars(clean(text), maxText)}
	if replyTo != "" {
		m.Context = &msgContext{MessageID: replyTo}
	}
	return m
}

// interactiveMessage is the card as reply buttons, for inside the window.
func interactiveMessage(c *approval.Card, to string) outMessage {
	m := newMessage(to, "interactive")
	in := &interactive{Type: "button", Header: &header{Type: "text", Text: "clawd: approval needed"}, Body: textOnly{Text: cardBody(c)}}
	if !c.Expires.IsZero() {
		in.Footer = &textOnly{Text: "Expires " + c.Expires.UTC().Format("15:04:05") + " UTC"}
	}
	for _, b := range c.Buttons() {
		var rb replyButton
		rb.Type = "reply"
		rb.Reply.ID = b.Value
		rb.Reply.Title = shortTitle(b.Act)
		in.Action.Buttons = append(in.Action.Buttons, rb)
	}
	m.Interactive = in
	return m
}

// templateMessage is the card as the operator's template, for outside the
// window: body parameters {{1}} summary, {{2}} container, {{3}} approval
// ID, and the three quick-reply buttons' payloads. When the rule forbids
// grants the "Approve 15 min" button still exists in the template; its
// payload then asks for a grant and clawd's core refuses it with a message.
func templateMessage(c *approval.Card, to, name, lang string) outMessage {
	m := newMessage(to, "template")
	container := c.Container.Name
	if container == "" {
		container = "-"
	}
	t := &template{Name: name, Language: language{Code: lang}}
	t.Components = append(t.Components, component{Type: "body", Parameters: []parameter{
		{Type: "text", Text: param(summaryOf(c), maxParamSummary)},
		{Type: "text", Text: param(container, maxParamContainer)},
		{Type: "text", Text: param(c.ID, maxParamID)},
	}})
	for _, act := range []string{approval.ActApprove, approval.ActApproveFor, approval.ActDeny} {
		t.Components = append(t.Components, component{
			Type: "button", SubType: "quick_reply", Index: strconv.Itoa(templateIndex[act]),
			Parameters: []parameter{{Type: "payload", Payload: approval.ButtonValue(act, c.Approval)}},
		})
	}
	m.Template = t
	return m
}

func summaryOf(c *approval.Card) string {
	if s := oneLine(c.Summary, 600); s != "" {
		return s
	}
	return oneLine(c.Method+" "+c.Host, 600)
}

// cardBody is the interactive body: clawd's lines, each agent-controlled
// field on one line after a label, then the body preview fenced in a
// monospace block it cannot close; at most 1024 characters.
func cardBody(c *approval.Card) string {
	var b strings.Builder
	b.WriteString(oneLine(summaryOf(c), 300) + "\n")
	b.WriteString(oneLine(c.Method+" "+c.URL, 300) + "\n")
	if c.Container.Name != "" {
		b.WriteString("Container: " + oneLine(c.Container.Name, 60) + "\n")
	}
	if c.Rule != "" {
		b.WriteString("Rule: " + oneLine(c.Rule, 60) + "\n")
	}
	if c.Required > 1 {
		b.WriteString(votesLine(c) + "\n")
	}
	if !c.Expires.IsZero() {
		left := max(c.Expires.Sub(c.Now).Round(time.Second), 0)
		b.WriteString(fmt.Sprintf("Expires in %s\n", left))
	}
	b.WriteString("ID: " + c.ID)
	out := b.String()
	if c.Body == "" && c.BodySize == 0 {
		return cutChars(out, maxBody)
	}
	head := fmt.Sprintf("\nBody (%d bytes):\n```", c.BodySize)
	tail := "```"
	room := maxBody - chars(out) - chars(head) - len(tail) - 1
	if room < 20 {
		return cutChars(out, maxBody)
	}
	preview := inert(c.Body)
	if c.BodyTruncated || chars(preview) > room {
		preview = cutChars(preview, room-1) + "…"
	}
	return out + head + preview + tail
}

func votesLine(c *approval.Card) string {
	var by []string
	for _, v := range c.Votes {
		who := v.Display
		if who == "" {
			who = v.By
		}
		by = append(by, oneLine(who, 40))
	}
	line := fmt.Sprintf("Approvals: %d of %d", len(c.Votes), c.Required)
	if len(by) > 0 {
		line += " (" + strings.Join(by, ", ") + ")"
	}
	return line
}

// followUp is what Update sends in reply to the card, "" when there is
// nothing new to say.
func followUp(c *approval.Card) string {
	var line string
	switch c.Status {
	case approval.Pending:
		if len(c.Votes) == 0 {
			return ""
		}
		line = votesLine(c) + ", waiting for more"
	case approval.Approved:
		line = "Approved"
	case approval.Denied:
		line = "Denied"
	case approval.TimedOut:
		line = "Timed out"
	case approval.Cancelled:
		line = "Cancelled"
	case approval.Expired:
		line = "Expired"
	default:
		line = "Closed"
	}
	if c.Status != approval.Pending && c.By != "" {
		line += " by " + oneLine(c.By, 100)
	}
	if c.Reason != "" {
		line += ". Reason: " + oneLine(c.Reason, 300)
	}
	if c.Status != approval.Pending && c.Required > 1 && len(c.Votes) > 0 {
		line += "\n" + votesLine(c)
	}
	line += "\n" + oneLine(summaryOf(c), 300) + "\nID: " + c.ID
	if c.Status != approval.Pending {
		line += "\nThe buttons of this card no longer do anything."
	}
	return line
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

// oneLine is clean(s) on one line with single spaces, at most max
// characters, and without backticks (they would open a monospace block
// that swallows clawd's own lines).
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(inert(s), "\n", " ")), " ")
	if chars(s) > max {
		s = cutChars(s, max-1) + "…"
	}
	return s
}

// inert is clean(s) with backticks replaced by a look-alike that WhatsApp
// does not format.
func inert(s string) string { return strings.ReplaceAll(clean(s), "`", "ˋ") }

// param is a template text parameter: one line, no tabs, no runs of
// spaces (WhatsApp refuses those), not empty.
func param(s string, max int) string {
	s = oneLine(s, max)
	if s == "" {
		return "-"
	}
	return s
}

// chars counts s as WhatsApp's limits do, in UTF-16 code units (an
// emoji outside the BMP is two): never fewer than the characters shown.
func chars(s string) int {
	n := 0
	for _, r := range s {
		n += max(utf16.RuneLen(r), 1)
	}
	return n
}

// cutChars returns the longest prefix of s of at most n chars.
func cutChars(s string, n int) string {
	used := 0
	for j, r := range s {
		w := max(utf16.RuneLen(r), 1)
		if used+w > n {
			return s[:j]
		}
		used += w
	}
	return s
}

// cutBytes returns at most n bytes of s without splitting a rune.
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

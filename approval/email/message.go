package email

import (
	"bytes"
	"fmt"
	"html/template"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
)

// Limits of what a message shows.
const (
	maxSummary = 600
	maxSubject = 80 // runes of summary in the Subject
	maxURL     = 2000
	maxBody    = 3000
	maxReason  = 300
)

// HeaderApproval names the approval a message is about.
const HeaderApproval = "X-Clawd-Approval"

// link is one action link in a message.
type link struct {
	Label, Act, URL string
}

var outcomes = map[string]string{
	approval.Approved:  "Approved",
	approval.Denied:    "Denied",
	approval.TimedOut:  "Timed out (denied)",
	approval.Cancelled: "Cancelled (the agent disconnected)",
	approval.Expired:   "Expired (clawd restarted)",
}

// Subject is the card's subject line (before RFC 2047 encoding).
func Subject(summary string) string {
	return "clawd: approve? " + oneLine(summary, maxSubject)
}

func summaryOf(a *approval.Approval) string {
	if a.Summary != "" {
		return a.Summary
	}
	return a.Method + " " + a.Host
}

type cardView struct {
	Summary, Request, Container, Rule, Body, Expires, To, ID string
	Required                                                 int
	Votes                                                    []string
	Links                                                    []link
}

func (c *Channel) cardMessage(card *approval.Card, to, id string, links []link, now time.Time) []byte {
	a := card.Approval
	v := cardView{
		Summary: clip(summaryOf(a), maxSummary), Request: clip(a.Method+" "+a.URL, maxURL),
		Container: clip(a.Container.Name, 128), Rule: clip(a.Rule, 128), Body: clip(a.Body, maxBody),
		Expires: expiresText(a.Expires, now), To: to, ID: a.ID, Required: a.Required, Links: links,
	}
	for _, vo := range a.Votes {
		v.Votes = append(v.Votes, clip(vo.By, 120))
	}
	var t strings.Builder
	t.WriteString("clawd asks you to approve a request.\n\n")
	t.WriteString(cleanText(v.Summary) + "\n\n")
	t.WriteString("Request:  " + cleanText(oneLine(v.Request, maxURL)) + "\n")
	if v.Container != "" {
		t.WriteString("Agent:    " + oneLine(v.Container, 128) + "\n")
	}
	if v.Rule != "" {
		t.WriteString("Rule:     " + oneLine(v.Rule, 128) + "\n")
	}
	t.WriteString("Expires:  " + v.Expires + "\n")
	if v.Required > 1 {
		t.WriteString(fmt.Sprintf("Needs:    %d approvals", v.Required))
		if len(v.Votes) > 0 {
			t.WriteString(" (so far: " + oneLine(strings.Join(v.Votes, ", "), 300) + ")")
		}
		t.WriteString("\n")
	}
	if v.Body != "" {
		t.WriteString("\nBody:\n")
		for _, l := range strings.Split(cleanText(v.Body), "\n") {
			t.WriteString("  " + l + "\n")
		}
	}
	t.WriteString("\n")
	for _, l := range links {
		t.WriteString(l.Label + ":\n  " + l.URL + "\n\n")
	}
	t.WriteString(footer(to) + "\n")
	t.WriteString("Approval " + a.ID + "\n")

	var h bytes.Buffer
	if err := htmlCard.Execute(&h, v); err != nil {
		h.Reset()
		h.WriteString("<p>See the text part of this message.</p>")
	}
	return c.compose(to, Subject(summaryOf(a)), id, "", a.ID, now, t.String(), h.String())
}

func footer(to string) string {
	return "Each link opens a confirmation page in your browser; nothing is decided until you press its button. " +
		"The links decide as " + to + " and work once: do not forward this message."
}

var htmlCard = template.Must(template.New("card").Funcs(template.FuncMap{"footer": footer}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>clawd approval</title></head>
<body style="font-family:sans-serif;max-width:40em">
<p style="color:#8a6d00">clawd asks you to approve a request.</p>
<h2 style="font-size:1.2em">{{.Summary}}</h2>
<table style="border-collapse:collapse">
<tr><td style="padding-right:1em"><b>Request</b></td><td><code>{{.Request}}</code></td></tr>
{{if .Container}}<tr><td><b>Agent</b></td><td>{{.Container}}</td></tr>{{end}}
{{if .Rule}}<tr><td><b>Rule</b></td><td>{{.Rule}}</td></tr>{{end}}
<tr><td><b>Expires</b></td><td>{{.Expires}}</td></tr>
{{if gt .Required 1}}<tr><td><b>Needs</b></td><td>{{.Required}} approvals{{if .Votes}} (so far: {{range $i, $v := .Votes}}{{if $i}}, {{end}}{{$v}}{{end}}){{end}}</td></tr>{{end}}
</table>
{{if .Body}}<pre style="background:#f4f4f4;padding:.5em;white-space:pre-wrap">{{.Body}}</pre>{{end}}
<p>{{range .Links}}<a href="{{.URL}}" style="display:inline-block;margin:0 .5em .5em 0;padding:.5em 1em;border:1px solid #888;border-radius:4px;text-decoration:none">{{.Label}}</a> {{end}}</p>
<p style="color:#666;font-size:.9em">{{footer .To}}<br>Approval {{.ID}}</p>
</body></html>
`))

// followUp is the short message sent in the approver's thread once the
// approval is decided.
func (c *Channel) followUp(card *approval.Card, to, id, parent string, now time.Time) []byte {
	out := outcomeLine(card.Approval)
	text := out + "\n\n" + cleanText(oneLine(summaryOf(card.Approval), maxSummary)) + "\n\n" +
		"The links in the earlier message no longer work.\nApproval " + card.ID + "\n"
	var h bytes.Buffer
	_ = htmlFollowUp.Execute(&h, map[string]string{"Outcome": out, "Summary": oneLine(summaryOf(card.Approval), maxSummary), "ID": card.ID})
	return c.compose(to, "Re: "+Subject(summaryOf(card.Approval)), id, parent, card.ID, now, text, h.String())
}

var htmlFollowUp = template.Must(template.New("f").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>clawd approval</title></head>
<body style="font-family:sans-serif;max-width:40em">
<p><b>{{.Outcome}}</b></p><p>{{.Summary}}</p>
<p style="color:#666;font-size:.9em">The links in the earlier message no longer work.<br>Approval {{.ID}}</p>
</body></html>
`))

// outcomeLine is "Approved by alice@example.com." and the like.
func outcomeLine(a *approval.Approval) string {
	line := outcomes[a.Status]
	if line == "" {
		line = oneLine(a.Status, 40)
	}
	if a.By != "" {
		line += " by " + oneLine(a.By, 120)
	}
	line += "."
	if a.Reason != "" {
		line += " " + oneLine(a.Reason, maxReason)
	}
	return line
}

func expiresText(exp, now time.Time) string {
	if exp.IsZero() {
		return "-"
	}
	left := exp.Sub(now).Round(time.Minute)
	s := exp.UTC().Format("2006-01-02 15:04 UTC")
	if left > 0 {
		s += fmt.Sprintf(" (in %s)", strings.TrimSuffix(left.String(), "0s"))
	}
	return s
}

// compose builds an RFC 5322 message: CRLF line ends, every header line
// ASCII and built only from validated or single-lined text (no CR/LF from
// the agent can reach a header), both parts quoted-printable (so no line
// is longer than 76 characters).
func (c *Channel) compose(to, subject, id, parent, approvalID string, now time.Time, text, html string) []byte {
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", c.from.String())
	hdr("To", (&mail.Address{Address: to}).String())
	hdr("Subject", encodeHeader(subject))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", id)
	if parent != "" {
		hdr("In-Reply-To", parent)
		hdr("References", parent)
	}
	hdr("MIME-Version", "1.0")
	hdr("Auto-Submitted", "auto-generated")
	hdr("X-Auto-Response-Suppress", "All")
	hdr(HeaderApproval, headerSafe(approvalID))
	mw := multipart.NewWriter(&b)
	hdr("Content-Type", `multipart/alternative; boundary="`+mw.Boundary()+`"`)
	b.WriteString("\r\n")
	for _, p := range []struct{ typ, body string }{{"text/plain", text}, {"text/html", html}} {
		w, _ := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.typ + "; charset=utf-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		q := quotedprintable.NewWriter(w)
		_, _ = q.Write([]byte(p.body))
		_ = q.Close()
	}
	_ = mw.Close()
	return b.Bytes()
}

// encodeHeader makes unstructured header text: control characters
// dropped, RFC 2047 Q-encoded when not ASCII, one encoded-word per folded
// line (each at most 75 characters, so no header line nears 998).
func encodeHeader(s string) string {
	e := mime.QEncoding.Encode("utf-8", headerSafe(s))
	if !strings.HasPrefix(e, "=?") {
		return e
	}
	// Encoded words are separated by single spaces (spaces inside them
	// are "_"); whitespace between encoded words is not part of the text.
	return strings.ReplaceAll(e, " ", "\r\n ")
}

// headerSafe drops every control character (CR and LF included) and
// non-UTF-8 byte: the text then cannot start a new header line.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return -1
		}
		return r
	}, s)
}

// cleanText keeps newlines and tabs but drops other control characters
// (terminal escapes, CR, bidi overrides would mislead a reader).
func cleanText(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r == utf8.RuneError, unicode.IsControl(r), r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
			return -1
		}
		return r
	}, s)
}

// oneLine joins s into one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(headerSafe(strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == '\t' {
			return ' '
		}
		return r
	}, s))), " ")
	return clip(s, n)
}

// clip cuts s to n runes (valid UTF-8), marking the cut with "…".
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	if n <= 1 {
		return string(r[:n])
	}
	return string(r[:n-1]) + "…"
}

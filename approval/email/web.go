package email

import (
	"bytes"
	"errors"
	"html/template"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Why the confirmation form needs no separate CSRF token: the link's
// token is the only credential there is. clawd sets no cookie and keeps no
// session on this path, so a request carries no ambient authority a
// cross-site page could borrow; a forged POST would have to name the
// token, and whoever knows the token can decide with it anyway (it is the
// capability, delivered only to the approver's mailbox). What the two-step
// GET/POST adds is that a GET never decides: mail scanners, link
// previewers and prefetchers that open the link change nothing. Pages are
// never framed (X-Frame-Options DENY, frame-ancestors 'none'), so the
// button cannot be clickjacked, and the token does not leak through the
// Referer (Referrer-Policy no-referrer, no external resources).

// maxForm bounds the confirmation form's body.
const maxForm = 1 << 10

// Callbacks serves the links: GET (or HEAD) shows the confirmation page,
// POST with the page's form decides.
func (c *Channel) Callbacks(d approval.Decider) http.Handler {
	prefix := approval.CallbackPath(c.name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok || len(tok) != 64 || !isLowerHex(tok) {
			c.page(w, http.StatusNotFound, page{Title: "Not found", Message: "This is not a clawd approval link."})
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			c.confirm(w, hashToken(tok))
		case http.MethodPost:
			c.decide(w, r, d, hashToken(tok))
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			c.page(w, http.StatusMethodNotAllowed, page{Title: "Not allowed", Message: "Open the link in a browser."})
		}
	})
}

var actLabels = map[string]string{
	approval.ActApprove:    "Approve",
	approval.ActApproveFor: "Approve and allow for 15 min",
	approval.ActDeny:       "Deny",
}

// refused is the page for a link that cannot decide.
func (c *Channel) refused(w http.ResponseWriter, err error, t token) {
	switch {
	case errors.Is(err, errClosed):
		line := outcomes[t.Closed]
		if line == "" {
			line = "decided"
		}
		c.page(w, http.StatusGone, page{Title: "No longer pending", Message: "This approval has ended: " + line + ". Nothing was changed."})
	case errors.Is(err, errUsed):
		c.page(w, http.StatusGone, page{Title: "Link already used", Message: "This link was already used; each link decides once. Nothing was changed."})
	case errors.Is(err, errExpired):
		c.page(w, http.StatusGone, page{Title: "Link expired", Message: "This approval has expired. Nothing was changed."})
	default:
		c.page(w, http.StatusForbidden, page{Title: "Unknown link", Message: "This link is not valid. Nothing was changed."})
	}
}

func (c *Channel) confirm(w http.ResponseWriter, hash string) {
	t, rec, err := c.state.peek(hash, c.now())
	if err != nil {
		c.refused(w, err, t)
		return
	}
	label := actLabels[t.Act]
	c.page(w, http.StatusOK, page{
		Title: label + "?", Message: "You are about to " + strings.ToLower(label) + " this request as " + t.Approver + ".",
		Rec: &rec, Button: label, Danger: t.Act == approval.ActDeny,
	})
}

func (c *Channel) decide(w http.ResponseWriter, r *http.Request, d approval.Decider, hash string) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil || r.PostForm.Get("confirm") != "yes" {
		c.page(w, http.StatusBadRequest, page{Title: "Not confirmed", Message: "Use the button on the confirmation page. Nothing was changed."})
		return
	}
	now := c.now()
	t, rec, err := c.state.take(hash, now)
	if errors.Is(err, errPersist) {
		c.log.Error("email: could not persist a used link", zap.String("approval", t.Approval), zap.Error(err))
		c.page(w, http.StatusServiceUnavailable, page{Title: "Try again", Message: "clawd could not record the click. Nothing was changed; try again."})
		return
	}
	if err != nil {
		c.log.Info("email: refused a link", zap.String("why", err.Error()), zap.String("approval", t.Approval))
		c.refused(w, err, t)
		return
	}
	digest := rec.Digest
	if len(digest) < 16 {
		c.page(w, http.StatusForbidden, page{Title: "Unknown link", Message: "This link is not valid. Nothing was changed."})
		return
	}
	dec, err := approval.ParseButton(t.Act + ":" + t.Approval + ":" + digest[:16])
	if err != nil {
		c.log.Warn("email: a stored link maps to no decision", zap.String("approval", t.Approval))
		c.page(w, http.StatusForbidden, page{Title: "Unknown link", Message: "This link is not valid. Nothing was changed."})
		return
	}
	dec.Digest = digest
	dec.Channel, dec.User, dec.Display = c.name, t.Approver, t.Approver
	res := d.Decide(r.Context(), dec)
	c.log.Info("email: decision", zap.String("approval", dec.ID), zap.String("approver", t.Approver),
		zap.Bool("approve", dec.Approve), zap.String("outcome", res.Outcome))
	switch {
	case res.Outcome == approval.ResultError:
		c.state.restore(hash, c.now()) // not recorded: the same link may be tried again
	case res.OK() || res.Outcome == approval.ResultConflict:
		c.state.spend(t.Approval, t.Approver, c.now()) // this approver has answered
	}
	msg := res.Message
	if msg == "" {
		msg = "Done (" + res.Outcome + ")."
	}
	status := http.StatusOK
	if !res.OK() {
		status = http.StatusConflict
		if res.Outcome == approval.ResultError {
			status = http.StatusServiceUnavailable
		}
	}
	c.page(w, status, page{Title: "clawd", Message: msg, Result: true})
}

// page is what the pages show; everything is escaped by html/template.
type page struct {
	Title, Message string
	Rec            *record
	Button         string
	Danger         bool
	Result         bool
}

// CSP allows nothing but the page's inline style and a form posting back
// to the same origin.
const csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func (c *Channel) page(w http.ResponseWriter, status int, p page) {
	var b bytes.Buffer
	if err := pageTmpl.Execute(&b, p); err != nil {
		c.log.Error("email: page template", zap.Error(err))
		b.Reset()
		b.WriteString("<!DOCTYPE html><title>clawd</title><p>Error.</p>")
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Robots-Tag", "noindex")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>clawd: {{.Title}}</title>
<style>body{font-family:sans-serif;max-width:42em;margin:2em auto;padding:0 1em}pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap;word-break:break-all}
td{vertical-align:top;padding:.2em 1em .2em 0}button{font-size:1.1em;padding:.5em 1.5em;cursor:pointer}.danger{background:#b00020;color:#fff}</style>
</head><body>
<h1>{{.Title}}</h1>
<p id="message"{{if .Result}} role="status"{{end}}>{{.Message}}</p>
{{with .Rec}}<h2>{{.Summary}}</h2>
<table><tr><td>Request</td><td><code>{{.Method}} {{.URL}}</code></td></tr>
{{if .Container}}<tr><td>Agent</td><td>{{.Container}}</td></tr>{{end}}
{{if .Rule}}<tr><td>Rule</td><td>{{.Rule}}</td></tr>{{end}}
<tr><td>Expires</td><td>{{.Expires.UTC.Format "2006-01-02 15:04:05 UTC"}}</td></tr></table>
{{if .Body}}<pre>{{.Body}}</pre>{{end}}{{end}}
{{if .Button}}<form method="post"><input type="hidden" name="confirm" value="yes">
<button type="submit"{{if .Danger}} class="danger"{{end}}>{{.Button}}</button></form>{{end}}
</body></html>
`))

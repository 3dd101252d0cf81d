package email

import (
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/email/fake"
)

// Each asked approver gets their own message, to them alone, with their
// own three links; the text shows the request; only hashes are stored.
func TestPostShape(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	ref := r.post(t, a, "Alice@Example.com", bob)
	msgs := r.fk.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		if m.ApprovalID != a.ID || !m.TLS || m.AuthUser != fake.Username {
			t.Errorf("message %+v", m)
		}
		if m.Subject != "clawd: approve? Create an issue in clawd-dev/clawd" {
			t.Errorf("subject %q", m.Subject)
		}
		for _, want := range []string{"POST https://api.github.com/repos/clawd-dev/clawd/issues", "agent-1", "github-writes", `{"title":"hello"}`, "decide as " + m.To} {
			if !strings.Contains(m.Text, want) {
				t.Errorf("text to %s lacks %q:\n%s", m.To, want, m.Text)
			}
		}
		if len(m.Links) != 3 {
			t.Fatalf("links to %s: %v", m.To, m.Links)
		}
		for _, l := range m.Links {
			if !strings.HasPrefix(l, r.web+"/v1/channels/email/") || seen[l] {
				t.Errorf("link %s (duplicate %v)", l, seen[l])
			}
			seen[l] = true
		}
		if !strings.Contains(ref, m.To+"="+m.MessageID) {
			t.Errorf("ref %q lacks %s's message %s", ref, m.To, m.MessageID)
		}
	}
	if msgs[0].To != alice || msgs[1].To != bob {
		t.Errorf("recipients %s, %s", msgs[0].To, msgs[1].To)
	}
	st, err := os.ReadFile(filepath.Join(r.dir, "email-email.json"))
	if err != nil {
		t.Fatal(err)
	}
	for l := range seen {
		if strings.Contains(string(st), l[strings.LastIndexByte(l, '/')+1:]) {
			t.Error("the state file holds a raw token")
		}
	}
	if fi, _ := os.Stat(filepath.Join(r.dir, "email-email.json")); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode())
	}
}

// Without people on the card, the recipients setting is asked; no
// "approve for" link when the rule allows no grants.
func TestPostDefaultsAndNoGrant(t *testing.T) {
	r := newRig(t, func(s map[string]any) { s["recipients"] = []string{"Bob@Example.com", alice, bob} })
	if got := r.ch.DefaultApprovers(); strings.Join(got, ",") != alice+","+bob {
		t.Errorf("DefaultApprovers %v", got)
	}
	a := newApproval()
	a.GrantsAllowed = false
	r.post(t, a)
	for _, who := range []string{alice, bob} {
		m, ok := r.fk.CardFor(a.ID, who)
		if !ok {
			t.Fatalf("no message to %s", who)
		}
		if _, ok := m.Links[approval.ActApproveFor]; ok || len(m.Links) != 2 {
			t.Errorf("links %v", m.Links)
		}
	}
}

// Clicking (GET the page, POST its form) decides as the address the link
// was sent to, with the digest of the channel's own record, and shows the
// core's message.
func TestClickDecides(t *testing.T) {
	for _, tc := range []struct {
		act     string
		approve bool
		grant   time.Duration
	}{{approval.ActApprove, true, 0}, {approval.ActApproveFor, true, approval.GrantFor}, {approval.ActDeny, false, 0}} {
		r := newRig(t, nil)
		a := newApproval()
		r.post(t, a, alice, bob)
		r.d.Res = approval.Result{Outcome: approval.ResultDecided, Message: "Done <" + tc.act + "> & recorded."}
		reply, err := r.fk.Click(ctxT(t), a.ID, tc.act, bob)
		if err != nil {
			t.Fatal(err)
		}
		if reply != r.d.Res.Message {
			t.Errorf("%s: clicker saw %q", tc.act, reply)
		}
		calls := r.d.Calls()
		want := approval.Decision{ID: a.ID, Digest: a.Digest, Approve: tc.approve, GrantFor: tc.grant, Channel: "email", User: bob, Display: bob}
		if len(calls) != 1 || calls[0] != want {
			t.Errorf("%s: decisions %+v, want %+v", tc.act, calls, want)
		}
	}
}

// Opening a link (as scanners, previewers and prefetchers do) never
// decides; the page shows the request, escaped, and the headers that keep
// it safe.
func TestGetNeverDecides(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	a.Summary = `Merge <script>alert("x")</script> & "quote"`
	a.Body = `<img src=x onerror=alert(1)>`
	r.post(t, a, alice)
	link := r.fk.Link(a.ID, approval.ActApprove, alice)
	for _, m := range []string{http.MethodGet, http.MethodGet, http.MethodHead} {
		p, err := r.fk.Open(ctxT(t), m, link)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != http.StatusOK {
			t.Fatalf("%s: status %d", m, p.Status)
		}
		if m == http.MethodGet {
			if !p.Form || !strings.Contains(p.HTML, "Merge &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;quote&#34;") ||
				!strings.Contains(p.HTML, "&lt;img src=x onerror=alert(1)&gt;") || !strings.Contains(p.HTML, "POST https://api.github.com/repos/clawd-dev/clawd/issues") {
				t.Errorf("page:\n%s", p.HTML)
			}
			if p.Message != "You are about to approve this request as alice@example.com." {
				t.Errorf("page message %q", p.Message)
			}
		}
	}
	if c := r.d.Calls(); len(c) != 0 {
		t.Fatalf("GET decided: %+v", c)
	}
	m, _ := r.fk.CardFor(a.ID, alice)
	if strings.Contains(m.HTML, "<script") || strings.Contains(m.HTML, "<img") || !strings.Contains(m.HTML, "&lt;script&gt;") {
		t.Errorf("message HTML not escaped:\n%s", m.HTML)
	}
	// The link still works after all those GETs.
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil || len(r.d.Calls()) != 1 {
		t.Fatalf("click after GETs: %v, %d calls", err, len(r.d.Calls()))
	}
}

// A link decides once; after alice answered, her other links are spent
// too; bob's are untouched.
func TestSingleUse(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice, bob)
	link := r.fk.Link(a.ID, approval.ActApprove, alice)
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	p, err := r.fk.Open(ctxT(t), http.MethodPost, link)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != http.StatusGone || !strings.Contains(p.Message, "already used") {
		t.Errorf("replay: %d %q", p.Status, p.Message)
	}
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActDeny, alice); err == nil {
		t.Error("alice's deny link still worked after she approved")
	}
	if n := len(r.d.Calls()); n != 1 {
		t.Fatalf("%d decisions, want 1", n)
	}
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActDeny, bob); err != nil {
		t.Fatal(err)
	}
	if c := r.d.Calls(); len(c) != 2 || c[1].User != bob || c[1].Approve {
		t.Errorf("bob's deny: %+v", c)
	}
}

// A link from alice's message decides as alice, whoever presents it; the
// identity never comes from the request.
func TestTokenIsTheIdentity(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice, bob)
	link := r.fk.Link(a.ID, approval.ActApprove, alice) + "?user=" + bob
	p, err := r.fk.Open(ctxT(t), http.MethodPost, link)
	if err != nil {
		t.Fatal(err)
	}
	if c := r.d.Calls(); p.Status != http.StatusOK || len(c) != 1 || c[0].User != alice {
		t.Errorf("status %d, decisions %+v", p.Status, c)
	}
}

// A core error (not recorded) leaves the link usable; a refusal shows the
// core's message.
func TestCoreAnswers(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice)
	r.d.Res = approval.Result{Outcome: approval.ResultError, Message: "clawd could not record the decision; try again."}
	if reply, _ := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); reply != r.d.Res.Message {
		t.Errorf("reply %q", reply)
	}
	r.d.Res = approval.Result{Outcome: approval.ResultNotApprover, Message: "You are not an approver for this request; nothing changed."}
	if reply, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil || reply != r.d.Res.Message {
		t.Errorf("reply %q, %v", reply, err)
	}
	if n := len(r.d.Calls()); n != 2 {
		t.Errorf("%d decisions", n)
	}
}

// Unknown, malformed, expired, unconfirmed and wrong-method requests are
// refused with a page, and the Decider is not called.
func TestRefused(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice)
	base := r.web + approval.CallbackPath("email")
	link := r.fk.Link(a.ID, approval.ActApprove, alice)
	for _, tc := range []struct {
		method, url string
		status      int
	}{
		{http.MethodPost, base + strings.Repeat("ab", 32), http.StatusForbidden},
		{http.MethodGet, base + strings.Repeat("ab", 32), http.StatusForbidden},
		{http.MethodPost, base + strings.ToUpper(link[len(base):]), http.StatusNotFound},
		{http.MethodPost, base + "../../v1/approvals", http.StatusNotFound},
		{http.MethodPost, link[:len(link)-1], http.StatusNotFound},
		{http.MethodPut, link, http.StatusMethodNotAllowed},
	} {
		p, err := r.fk.Open(ctxT(t), tc.method, tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != tc.status || !strings.Contains(p.HTML, "Nothing was changed") && tc.status != http.StatusNotFound && tc.status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d %q", tc.method, tc.url, p.Status, p.Message)
		}
	}
	// POST without the form's confirm field (not from the page).
	resp, err := http.Post(link, "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unconfirmed POST: %d", resp.StatusCode)
	}
	// Expired with the approval.
	r.advance(11 * time.Minute)
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		p, err := r.fk.Open(ctxT(t), m, link)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != http.StatusGone || !strings.Contains(p.Message, "expired") {
			t.Errorf("expired %s: %d %q", m, p.Status, p.Message)
		}
	}
	if c := r.d.Calls(); len(c) != 0 {
		t.Fatalf("decider called: %+v", c)
	}
}

// Agent-controlled text cannot add headers or recipients; non-ASCII
// subjects are RFC 2047-encoded.
func TestHeaderInjection(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	a.Summary = "Deploy\r\nBcc: eve@evil.example\r\nX-Evil: 1\n\nbody"
	r.post(t, a, alice)
	m, _ := r.fk.Card(a.ID)
	if m.Header.Get("Bcc") != "" || m.Header.Get("X-Evil") != "" || len(m.Rcpt) != 1 || m.Rcpt[0] != alice {
		t.Errorf("injected: headers %v, rcpt %v", m.Header, m.Rcpt)
	}
	if m.Subject != "clawd: approve? Deploy Bcc: eve@evil.example X-Evil: 1 body" {
		t.Errorf("subject %q", m.Subject)
	}

	b := newApproval()
	b.Summary = "Überweisung an Müller — 100 € " + strings.Repeat("x", 200)
	r.post(t, b, alice)
	m, _ = r.fk.Card(b.ID)
	if !strings.HasPrefix(m.Subject, "clawd: approve? Überweisung an Müller — 100 € xxx") || !strings.HasSuffix(m.Subject, "…") {
		t.Errorf("subject %q", m.Subject)
	}
	if raw := m.Header.Get("Subject"); !strings.Contains(raw, "=?utf-8?q?") {
		t.Errorf("raw subject %q is not encoded", raw)
	}
	// Many multi-byte runes: the encoded Subject is folded (the fake
	// checks 998 per line) and decodes to the cut summary.
	e := newApproval()
	e.Summary = strings.Repeat("😀", 300)
	r.post(t, e, alice)
	m, _ = r.fk.Card(e.ID)
	if m.Subject != "clawd: approve? "+strings.Repeat("😀", 79)+"…" {
		t.Errorf("subject %q", m.Subject)
	}
	if !strings.Contains(string(m.Raw), "?=\r\n =?utf-8?q?") {
		t.Error("long encoded subject not folded")
	}
	// A long body line is wrapped by quoted-printable (the fake checks
	// 998), and the text keeps it whole.
	c := newApproval()
	c.Body = strings.Repeat("y", 2500)
	r.post(t, c, alice)
	if m, _ := r.fk.Card(c.ID); !strings.Contains(m.Text, strings.Repeat("y", 2500)) {
		t.Error("body preview lost")
	}
}

// No credentials without TLS: a server without STARTTLS gets nothing, a
// certificate clawd does not trust gets nothing, a wrong password is
// refused and not shown.
func TestNoAuthWithoutTLS(t *testing.T) {
	t.Run("no STARTTLS", func(t *testing.T) {
		r := newRig(t, nil)
		r.fk.DisableSTARTTLS()
		_, err := r.ch.Post(ctxT(t), cardFor(newApproval(), alice))
		if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
			t.Errorf("err %v", err)
		}
		if n := len(r.fk.AuthAttempts()) + len(r.fk.Messages()); n != 0 {
			t.Errorf("auth %v, %d messages", r.fk.AuthAttempts(), len(r.fk.Messages()))
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		r := newRig(t, func(s map[string]any) { delete(s, "tls-ca-file") })
		_, err := r.ch.Post(ctxT(t), cardFor(newApproval(), alice))
		if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
			t.Errorf("err %v", err)
		}
		if n := len(r.fk.AuthAttempts()) + len(r.fk.Messages()); n != 0 {
			t.Errorf("auth %v", r.fk.AuthAttempts())
		}
	})
	t.Run("wrong server name", func(t *testing.T) {
		r := newRig(t, func(s map[string]any) { s["tls-server-name"] = "smtp.example.com" })
		if _, err := r.ch.Post(ctxT(t), cardFor(newApproval(), alice)); err == nil || len(r.fk.AuthAttempts()) != 0 {
			t.Errorf("err %v, auth %v", err, r.fk.AuthAttempts())
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		r := newRig(t, func(s map[string]any) { s["password"] = "not-the-password-987" })
		a := newApproval()
		_, err := r.ch.Post(ctxT(t), cardFor(a, alice))
		if err == nil || strings.Contains(err.Error(), "not-the-password-987") || !strings.Contains(err.Error(), "535") {
			t.Errorf("err %v", err)
		}
		if len(r.fk.Messages()) != 0 {
			t.Error("sent without AUTH")
		}
		// The links of a message never sent do not work.
		st, _ := os.ReadFile(filepath.Join(r.dir, "email-email.json"))
		if !strings.Contains(string(st), `"tokens":{}`) {
			t.Errorf("tokens of an unsent message kept: %s", st)
		}
	})
}

// Update sends one follow-up in each approver's thread once decided and
// ends all links; pending updates send nothing.
func TestUpdate(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	a.Required = 2
	ref := r.post(t, a, alice, bob)
	first, _ := r.fk.CardFor(a.ID, bob)
	a.Votes = []approval.Vote{{By: "email:" + alice}}
	if err := r.ch.Update(ctxT(t), cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	if n := len(r.fk.Messages()); n != 2 {
		t.Fatalf("pending update sent mail: %d messages", n)
	}
	a.Status, a.By, a.Reason = approval.Approved, "email:"+alice+", email:"+bob, "looks fine"
	for range 2 {
		if err := r.ch.Update(ctxT(t), cardFor(a, alice, bob), ref); err != nil {
			t.Fatal(err)
		}
	}
	msgs := r.fk.Messages()
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want 2 cards and 2 follow-ups", len(msgs))
	}
	m, _ := r.fk.CardFor(a.ID, bob)
	if m.InReplyTo != first.MessageID || m.Header.Get("References") != first.MessageID || len(m.Links) != 0 {
		t.Errorf("follow-up In-Reply-To %q (card %q), links %v", m.InReplyTo, first.MessageID, m.Links)
	}
	if !strings.Contains(m.Text, "Approved by email:alice@example.com, email:bob@example.com. looks fine") || m.Subject != "Re: clawd: approve? Create an issue in clawd-dev/clawd" {
		t.Errorf("follow-up %q:\n%s", m.Subject, m.Text)
	}
	p, err := r.fk.Open(ctxT(t), http.MethodGet, first.Links[approval.ActDeny])
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != http.StatusGone || !strings.Contains(p.Message, "ended: Approved") || p.Form {
		t.Errorf("link of a decided approval: %d %q", p.Status, p.Message)
	}
	if err := r.ch.Update(ctxT(t), cardFor(a), "bob@example.com=<x>"); err != nil {
		t.Errorf("malformed ref: %v", err)
	}
}

// Links survive a restart (the hashes are persisted), and still once.
func TestRestart(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice)
	ch, err := New("email", r.fk.Settings(), r.env())
	if err != nil {
		t.Fatal(err)
	}
	r.mount(ch, r.d)
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	ch2, err := New("email", r.fk.Settings(), r.env())
	if err != nil {
		t.Fatal(err)
	}
	r.mount(ch2, r.d)
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err == nil {
		t.Error("a used link worked again after a restart")
	}
	if n := len(r.d.Calls()); n != 1 {
		t.Errorf("%d decisions", n)
	}
}

func TestNewRefuses(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	env := approval.Env{PublicURL: "https://clawd.example.com", StateDir: t.TempDir()}
	with := func(k string, v any) map[string]any {
		s := fk.Settings()
		if v == nil {
			delete(s, k)
		} else {
			s[k] = v
		}
		return s
	}
	for _, tc := range []struct {
		name string
		s    map[string]any
		env  approval.Env
		want string
	}{
		{"no public url", fk.Settings(), approval.Env{StateDir: env.StateDir}, "public URL"},
		{"no state dir", fk.Settings(), approval.Env{PublicURL: env.PublicURL}, "state directory"},
		{"no host", with("smtp-host", nil), env, "smtp-host"},
		{"port 465", with("smtp-port", 465), env, "implicit TLS"},
		{"bad recipient", with("recipients", []string{"alice@example.com", "bob <bob@x.com>"}), env, "recipients"},
		{"injected from", with("from", "clawd@example.com\r\nBcc: x@y.z"), env, "from"},
		{"no from", with("from", nil), env, "from"},
		{"password without user", with("username", nil), env, "username"},
		{"unknown key", with("allow-insecure", true), env, "allow-insecure"},
		{"bad ca", with("tls-ca-file", "/nonexistent/ca.pem"), env, "tls-ca-file"},
		{"secret missing", with("password", "secret:smtp"), approval.Env{PublicURL: env.PublicURL, StateDir: env.StateDir,
			Secret: func(string) (string, error) { return "", errors.New("no secret smtp") }}, "password: no secret smtp"},
	} {
		_, err := New("email", tc.s, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

// The password comes from the secret store.
func TestSecretPassword(t *testing.T) {
	r := newRig(t, nil)
	s := r.fk.Settings()
	s["password"] = "secret:smtp-password"
	env := r.env()
	env.Secret = func(n string) (string, error) {
		if n != "smtp-password" {
			return "", errors.New("no such secret")
		}
		return fake.Password, nil
	}
	ch, err := New("email", s, env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Post(ctxT(t), cardFor(newApproval(), alice)); err != nil {
		t.Fatal(err)
	}
	if got := r.fk.AuthAttempts(); len(got) != 1 || got[0] != fake.Username+" tls=true" {
		t.Errorf("auth %v", got)
	}
}

// The fake itself refuses AUTH before STARTTLS (so the channel tests
// above would notice a client that tried).
func TestFakeRefusesAuthBeforeTLS(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	c, err := net.Dial("tcp", fk.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tp := textproto.NewConn(c)
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	id, _ := tp.Cmd("EHLO test")
	tp.StartResponse(id)
	_, ehlo, err := tp.ReadResponse(250)
	tp.EndResponse(id)
	if err != nil || strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO before TLS: %q %v", ehlo, err)
	}
	id, _ = tp.Cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+fake.Username+"\x00"+fake.Password)))
	tp.StartResponse(id)
	code, _, _ := tp.ReadResponse(235)
	tp.EndResponse(id)
	if code != 530 || len(fk.Violations()) != 1 {
		t.Errorf("AUTH before STARTTLS: %d, violations %v", code, fk.Violations())
	}
}

// Concurrent presses of one link decide once.
func TestConcurrentPresses(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice)
	link := r.fk.Link(a.ID, approval.ActApprove, alice)
	done := make(chan int, 8)
	for range 8 {
		go func() {
			p, err := r.fk.Open(ctxT(t), http.MethodPost, link)
			if err != nil {
				done <- 0
				return
			}
			done <- p.Status
		}()
	}
	ok := 0
	for range 8 {
		if <-done == http.StatusOK {
			ok++
		}
	}
	if n := len(r.d.Calls()); n != 1 || ok != 1 {
		t.Errorf("%d decisions, %d pages OK; want 1 and 1", n, ok)
	}
}

// Package fake is an SMTP submission server on 127.0.0.1 for testing the
// e-mail approval channel: EHLO, STARTTLS with a self-signed test
// certificate, AUTH PLAIN (only after STARTTLS, credentials checked),
// MAIL/RCPT/DATA. It keeps every message parsed (headers, parts, links),
// checks each against RFC 5321/5322 (CRLF only, lines ≤ 998, Date,
// Message-ID, single From/To/Subject, no injected headers) and clicks
// links as a browser would: GET the confirmation page, then POST its form.
package fake

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Credentials the fake accepts.
const (
	Username = "clawd@example.com"
	Password = "fake-smtp-password-123"
	From     = "clawd@example.com"
)

// Approvers the settings name as recipients.
var Recipients = []string{"alice@example.com", "bob@example.com"}

// Message is one message the fake received.
type Message struct {
	EnvelopeFrom string
	Rcpt         []string // RCPT TO addresses
	Header       mail.Header
	Subject      string // decoded (RFC 2047)
	To           string // the To address
	MessageID    string
	InReplyTo    string
	ApprovalID   string            // X-Clawd-Approval
	Text, HTML   string            // the decoded parts
	Links        map[string]string // act ("a", "g", "d") → URL, from the text part
	TLS          bool              // sent after STARTTLS
	AuthUser     string
	Raw          []byte
}

// Server is the fake SMTP server.
type Server struct {
	ln      net.Listener
	tlsCfg  *tls.Config
	caPEM   []byte
	caFile  string
	dir     string
	noTLS   bool // do not offer STARTTLS
	wg      sync.WaitGroup
	mu      sync.Mutex
	msgs    []Message
	viol    []string
	authTry []string // users that tried AUTH (with the connection's TLS state)
	changed chan struct{}
	closed  bool
	conns   map[net.Conn]bool
	// HTTP is the client Click uses (the links point at clawd's public URL).
	HTTP *http.Client
}

// New starts a fake on 127.0.0.1.
func New() *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	cert, caPEM := selfSigned()
	dir, err := os.MkdirTemp("", "clawd-fake-smtp-")
	if err != nil {
		panic(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		panic(err)
	}
	s := &Server{ln: ln, tlsCfg: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		caPEM: caPEM, caFile: caFile, dir: dir, changed: make(chan struct{}), conns: map[net.Conn]bool{},
		HTTP: &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Close stops the server and removes its CA file.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
	os.RemoveAll(s.dir)
}

// Addr is host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CAPEM is the test certificate (its own CA).
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.caPEM...) }

// DisableSTARTTLS makes the server stop offering (and refuse) STARTTLS.
func (s *Server) DisableSTARTTLS() { s.mu.Lock(); s.noTLS = true; s.mu.Unlock() }

// Settings are the channel settings pointing at this fake (literal
// credentials; tls-ca-file trusts the test certificate).
func (s *Server) Settings() map[string]any {
	_, port, _ := net.SplitHostPort(s.Addr())
	return map[string]any{
		"smtp-host": "127.0.0.1", "smtp-port": port, "username": Username, "password": Password,
		"from": "clawd <" + From + ">", "recipients": append([]string(nil), Recipients...), "tls-ca-file": s.caFile,
	}
}

// Messages are all messages received, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// AuthAttempts lists "user tls=BOOL" per AUTH command seen.
func (s *Server) AuthAttempts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.authTry...)
}

// Violations are protocol and message-format violations seen.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.viol...)
}

// Card is the latest message about approvalID (to anyone).
func (s *Server) Card(approvalID string) (Message, bool) { return s.CardFor(approvalID, "") }

// CardFor is the latest message about approvalID to address ("" = anyone).
func (s *Server) CardFor(approvalID, address string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.msgs) - 1; i >= 0; i-- {
		m := s.msgs[i]
		if m.ApprovalID == approvalID && (address == "" || m.To == strings.ToLower(address)) {
			return m, true
		}
	}
	return Message{}, false
}

// WaitCard waits until the latest message about approvalID satisfies cond.
func (s *Server) WaitCard(ctx context.Context, approvalID string, cond func(Message) bool) (Message, error) {
	return s.WaitFor(ctx, approvalID, "", cond)
}

// WaitFor is WaitCard for one recipient ("" = anyone).
func (s *Server) WaitFor(ctx context.Context, approvalID, address string, cond func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if m, ok := s.CardFor(approvalID, address); ok && (cond == nil || cond(m)) {
			return m, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Message{}, fmt.Errorf("no message for approval %s to %q: %w", approvalID, address, ctx.Err())
		}
	}
}

func (s *Server) violation(f string, a ...any) {
	s.mu.Lock()
	s.viol = append(s.viol, fmt.Sprintf(f, a...))
	s.mu.Unlock()
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.session(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

type sess struct {
	conn   net.Conn
	r      *bufio.Reader
	tls    bool
	ehlo   bool
	user   string
	from   string
	rcpt   []string
	inMail bool
	noTLS  bool
	srv    *Server
}

func (x *sess) reply(lines ...string) {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	_, _ = io.WriteString(x.conn, b.String())
}

// line reads one command line (CRLF required).
func (x *sess) line() (string, error) {
	l, err := x.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(l, "\r\n") {
		x.srv.violation("command line ends in a bare LF: %q", l)
		return strings.TrimSuffix(l, "\n"), nil
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

func (s *Server) session(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	s.mu.Lock()
	x := &sess{conn: c, r: bufio.NewReader(c), srv: s, noTLS: s.noTLS}
	s.mu.Unlock()
	x.reply("220 fake.smtp.test ESMTP clawd fake")
	for {
		l, err := x.line()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(l, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			if arg == "" {
				x.reply("501 5.5.4 EHLO needs a domain")
				continue
			}
			x.ehlo = true
			lines := []string{"250-fake.smtp.test", "250-8BITMIME", "250-SIZE 10485760"}
			if !x.tls && !x.noTLS {
				lines = append(lines, "250-STARTTLS")
			}
			if x.tls {
				lines = append(lines, "250-AUTH PLAIN")
			}
			lines = append(lines, "250 ENHANCEDSTATUSCODES")
			x.reply(lines...)
		case "HELO":
			x.ehlo = true
			x.reply("250 fake.smtp.test")
		case "STARTTLS":
			if x.tls || x.noTLS {
				x.reply("502 5.5.1 STARTTLS not available")
				continue
			}
			if x.r.Buffered() > 0 {
				s.violation("data pipelined after STARTTLS")
			}
			x.reply("220 2.0.0 Ready to start TLS")
			tc := tls.Server(c, s.tlsCfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			x.conn, x.r, x.tls = tc, bufio.NewReader(tc), true
			x.ehlo, x.user, x.from, x.rcpt, x.inMail = false, "", "", nil, false
		case "AUTH":
			x.auth(arg)
		case "MAIL":
			switch {
			case !x.tls:
				s.violation("MAIL before STARTTLS")
				x.reply("530 5.7.0 Must issue a STARTTLS command first")
			case x.user == "":
				s.violation("MAIL without AUTH")
				x.reply("530 5.7.0 Authentication required")
			case !strings.HasPrefix(strings.ToUpper(arg), "FROM:<"):
				x.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
			default:
				addr, _, _ := strings.Cut(arg[len("FROM:<"):], ">")
				x.from, x.rcpt, x.inMail = addr, nil, true
				x.reply("250 2.1.0 OK")
			}
		case "RCPT":
			if !x.inMail {
				x.reply("503 5.5.1 MAIL first")
				continue
			}
			if !strings.HasPrefix(strings.ToUpper(arg), "TO:<") {
				x.reply("501 5.5.4 Syntax: RCPT TO:<address>")
				continue
			}
			addr, _, _ := strings.Cut(arg[len("TO:<"):], ">")
			x.rcpt = append(x.rcpt, strings.ToLower(addr))
			x.reply("250 2.1.5 OK")
		case "DATA":
			if !x.inMail || len(x.rcpt) == 0 {
				x.reply("503 5.5.1 RCPT first")
				continue
			}
			x.reply("354 End data with <CR><LF>.<CR><LF>")
			raw, err := x.data()
			if err != nil {
				return
			}
			s.store(x, raw)
			x.from, x.rcpt, x.inMail = "", nil, false
			x.reply("250 2.0.0 OK queued")
		case "RSET":
			x.from, x.rcpt, x.inMail = "", nil, false
			x.reply("250 2.0.0 OK")
		case "NOOP":
			x.reply("250 2.0.0 OK")
		case "QUIT":
			x.reply("221 2.0.0 Bye")
			return
		default:
			x.reply("500 5.5.2 unknown command")
		}
	}
}

func (x *sess) auth(arg string) {
	s := x.srv
	if !x.tls {
		s.mu.Lock()
		s.authTry = append(s.authTry, "? tls=false")
		s.mu.Unlock()
		s.violation("AUTH before STARTTLS")
		x.reply("530 5.7.0 Must issue a STARTTLS command first")
		return
	}
	mech, initial, _ := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		x.reply("504 5.5.4 Unrecognized authentication type")
		return
	}
	if initial == "" {
		x.reply("334 ")
		l, err := x.line()
		if err != nil {
			return
		}
		initial = l
	}
	b, err := base64.StdEncoding.DecodeString(initial)
	parts := strings.Split(string(b), "\x00")
	if err != nil || len(parts) != 3 {
		x.reply("501 5.5.2 Cannot decode AUTH PLAIN")
		return
	}
	s.mu.Lock()
	s.authTry = append(s.authTry, parts[1]+" tls=true")
	s.mu.Unlock()
	if parts[1] != Username || parts[2] != Password || (parts[0] != "" && parts[0] != parts[1]) {
		x.reply("535 5.7.8 Authentication credentials invalid")
		return
	}
	x.user = parts[1]
	x.reply("235 2.7.0 Authentication successful")
}

// data reads the DATA section, checking CRLF and line lengths, and undoes
// dot-stuffing.
func (x *sess) data() ([]byte, error) {
	var out bytes.Buffer
	for n := 1; ; n++ {
		l, err := x.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if !strings.HasSuffix(l, "\r\n") {
			x.srv.violation("message line %d ends in a bare LF", n)
			l = strings.TrimSuffix(l, "\n") + "\r\n"
		}
		body := strings.TrimSuffix(l, "\r\n")
		if strings.Contains(body, "\r") {
			x.srv.violation("message line %d has a bare CR", n)
		}
		if body == "." {
			return out.Bytes(), nil
		}
		if len(body) > 998 {
			x.srv.violation("message line %d is %d bytes (RFC 5322: at most 998)", n, len(body))
		}
		if strings.HasPrefix(body, ".") {
			l = l[1:]
		}
		out.WriteString(l)
	}
}

// allowed are the headers the channel may send; anything else is taken
// for injected text.
var allowed = map[string]bool{
	"From": true, "To": true, "Subject": true, "Date": true, "Message-Id": true, "In-Reply-To": true,
	"References": true, "Mime-Version": true, "Content-Type": true, "Auto-Submitted": true,
	"X-Auto-Response-Suppress": true, "X-Clawd-Approval": true,
}

var linkRe = regexp.MustCompile(`(?m)^(Approve|Approve 15 min|Deny):\r?\n  (\S+)\r?$`)

var acts = map[string]string{"Approve": "a", "Approve 15 min": "g", "Deny": "d"}

func (s *Server) store(x *sess, raw []byte) {
	v := func(f string, a ...any) { s.violation(f, a...) }
	m := Message{EnvelopeFrom: x.from, Rcpt: append([]string(nil), x.rcpt...), TLS: x.tls, AuthUser: x.user, Raw: raw, Links: map[string]string{}}
	for _, b := range raw {
		if b >= 0x80 {
			v("8-bit byte in the message (parts must be encoded)")
			break
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		v("message does not parse: %v", err)
		return
	}
	m.Header = msg.Header
	for k, vals := range msg.Header {
		if !allowed[k] {
			v("unexpected header %q (injected?)", k)
		}
		if len(vals) != 1 {
			v("header %s appears %d times", k, len(vals))
		}
	}
	for _, k := range []string{"From", "To", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type"} {
		if msg.Header.Get(k) == "" {
			v("header %s missing", k)
		}
	}
	if _, err := msg.Header.Date(); err != nil {
		v("Date does not parse: %v", err)
	}
	m.MessageID = msg.Header.Get("Message-Id")
	if !regexp.MustCompile(`^<[^<>@\s]+@[^<>@\s]+>$`).MatchString(m.MessageID) {
		v("Message-ID %q is not <id@domain>", m.MessageID)
	}
	m.InReplyTo = msg.Header.Get("In-Reply-To")
	if m.InReplyTo != "" && msg.Header.Get("References") != m.InReplyTo {
		v("References does not carry In-Reply-To")
	}
	if f, err := mail.ParseAddress(msg.Header.Get("From")); err != nil || !strings.EqualFold(f.Address, x.from) {
		v("From %q does not match MAIL FROM %q", msg.Header.Get("From"), x.from)
	}
	if to, err := mail.ParseAddressList(msg.Header.Get("To")); err != nil || len(to) != 1 {
		v("To %q is not one address", msg.Header.Get("To"))
	} else {
		m.To = strings.ToLower(to[0].Address)
		if len(m.Rcpt) != 1 || m.Rcpt[0] != m.To {
			v("envelope recipients %v differ from To %s", m.Rcpt, m.To)
		}
	}
	dec := new(mime.WordDecoder)
	if m.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		v("Subject does not decode: %v", err)
	}
	m.ApprovalID = msg.Header.Get("X-Clawd-Approval")
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" || params["boundary"] == "" {
		v("Content-Type %q is not multipart/alternative", msg.Header.Get("Content-Type"))
	} else {
		mr := multipart.NewReader(msg.Body, params["boundary"])
		var types []string
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				v("multipart: %v", err)
				break
			}
			pt, pp, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			types = append(types, pt)
			if !strings.EqualFold(pp["charset"], "utf-8") {
				v("part %s has charset %q", pt, pp["charset"])
			}
			var body []byte
			switch strings.ToLower(p.Header.Get("Content-Transfer-Encoding")) {
			case "quoted-printable":
				body, err = io.ReadAll(quotedprintable.NewReader(p))
			case "base64":
				body, err = io.ReadAll(base64.NewDecoder(base64.StdEncoding, p))
			default:
				body, err = io.ReadAll(p)
			}
			if err != nil {
				v("part %s does not decode: %v", pt, err)
			}
			switch pt {
			case "text/plain":
				m.Text = string(body)
			case "text/html":
				m.HTML = string(body)
			}
		}
		if strings.Join(types, ",") != "text/plain,text/html" {
			v("parts are %v, want text/plain then text/html", types)
		}
	}
	for _, l := range linkRe.FindAllStringSubmatch(m.Text, -1) {
		m.Links[acts[l[1]]] = l[2]
		if !strings.Contains(m.HTML, `href="`+html.EscapeString(l[2])+`"`) {
			v("link %s of the text part is not in the HTML part", l[1])
		}
	}
	if m.ApprovalID != "" && !strings.Contains(m.Text, m.ApprovalID) {
		v("the text part does not name approval %s", m.ApprovalID)
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Page is what a browser showed for one request.
type Page struct {
	Status  int
	Header  http.Header
	HTML    string
	Message string // the text of the page's message paragraph
	Form    bool   // it has the confirmation form
}

var msgRe = regexp.MustCompile(`(?s)<p id="message"[^>]*>(.*?)</p>`)

// Open requests a link as a browser does (GET, or POST of the
// confirmation form).
func (s *Server) Open(ctx context.Context, method, link string) (Page, error) {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(url.Values{"confirm": {"yes"}}.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, link, body)
	if err != nil {
		return Page{}, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return Page{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Page{}, err
	}
	p := Page{Status: resp.StatusCode, Header: resp.Header, HTML: string(b)}
	if mm := msgRe.FindStringSubmatch(p.HTML); mm != nil {
		p.Message = html.UnescapeString(mm[1])
	}
	p.Form = strings.Contains(p.HTML, `<form method="post">`) && strings.Contains(p.HTML, `name="confirm" value="yes"`)
	s.checkPage(p)
	return p, nil
}

// checkPage records pages that miss the headers a confirmation page needs.
func (s *Server) checkPage(p Page) {
	want := map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
	for k, w := range want {
		if p.Header.Get(k) != w {
			s.violation("page header %s = %q, want %q", k, p.Header.Get(k), w)
		}
	}
	if !strings.HasPrefix(p.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		s.violation("page CSP %q does not start with default-src 'none'", p.Header.Get("Content-Security-Policy"))
	}
	if !strings.HasPrefix(p.Header.Get("Content-Type"), "text/html") {
		s.violation("page Content-Type %q", p.Header.Get("Content-Type"))
	}
	if regexp.MustCompile(`(?i)<(script|img|link|iframe|object|embed)|<[a-z][^>]*\s(src|href)=`).MatchString(p.HTML) {
		s.violation("page loads or runs something")
	}
}

// Click opens the act link of the latest message about approvalID to
// address, checks the confirmation page, and presses its button (POST).
// It returns the result page's message.
func (s *Server) Click(ctx context.Context, approvalID, act, address string) (string, error) {
	link := ""
	s.mu.Lock()
	for i := len(s.msgs) - 1; i >= 0 && link == ""; i-- {
		m := s.msgs[i]
		if m.ApprovalID == approvalID && m.To == strings.ToLower(address) {
			link = m.Links[act]
		}
	}
	s.mu.Unlock()
	if link == "" {
		return "", fmt.Errorf("no %q link for approval %s in %s's messages", act, approvalID, address)
	}
	p, err := s.Open(ctx, http.MethodGet, link)
	if err != nil {
		return "", err
	}
	if p.Status != http.StatusOK || !p.Form {
		return p.Message, fmt.Errorf("confirmation page: status %d, form %v", p.Status, p.Form)
	}
	if !strings.Contains(p.Message, address) {
		return p.Message, fmt.Errorf("confirmation page does not say who decides: %q", p.Message)
	}
	p, err = s.Open(ctx, http.MethodPost, link)
	if err != nil {
		return "", err
	}
	if p.Message == "" {
		return "", fmt.Errorf("result page: status %d without a message", p.Status)
	}
	return p.Message, nil
}

// Link is the act link of the latest message about approvalID to address.
func (s *Server) Link(approvalID, act, address string) string {
	m, _ := s.CardFor(approvalID, address)
	return m.Links[act]
}

// selfSigned makes a P-256 certificate for 127.0.0.1 and localhost that is
// its own CA.
func selfSigned() (tls.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "clawd fake smtp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost", "fake.smtp.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		panic(err)
	}
	return cert, certPEM
}

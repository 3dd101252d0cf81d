// Package email is the e-mail approval channel, for approvers who live in
// their inbox: each asked approver gets their own message (sent over SMTP,
// always with STARTTLS) whose approve/deny links carry one-time tokens
// issued to that address. Opening a link only shows a confirmation page;
// the page's button POSTs to the same link, and only that decides, as the
// address the link was sent to. The token is the identity and the
// capability: 256 random bits, single use, expiring with the approval, and
// only its hash is stored.
package email

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Type is the channel type in clawd.yaml.
const Type = "email"

// DefaultPort is the SMTP submission port (STARTTLS).
const DefaultPort = 587

// maxRecipients bounds how many messages one card sends.
const maxRecipients = 50

// addrRe is the conservative address form this channel accepts (lowercased
// first): no quoting, comments, spaces, '=' or ',' — it is also a user ID
// and part of the ref.
var addrRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._%+-]{0,63}@[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)+$`)

// Config is the channel's clawd.yaml settings.
type Config struct {
	SMTPHost      string   `mapstructure:"smtp-host"`
	SMTPPort      int      `mapstructure:"smtp-port"`
	Username      string   `mapstructure:"username"`
	Password      string   `mapstructure:"password"` // credential: secret:NAME, file:PATH, env:VAR or literal
	From          string   `mapstructure:"from"`
	Recipients    []string `mapstructure:"recipients"`
	TLSCAFile     string   `mapstructure:"tls-ca-file"`
	TLSServerName string   `mapstructure:"tls-server-name"`
}

// Channel sends approval messages by e-mail and takes the clicks on their
// links at its callback path.
type Channel struct {
	name       string
	host       string // smtp-host
	addr       string // host:port
	serverName string // the name the server's certificate must carry
	roots      *x509.CertPool
	username   string
	password   string
	from       *mail.Address
	fromDomain string
	helo       string
	recipients []string
	public     string // PublicURL without a trailing slash

	now   func() time.Time
	log   *zap.Logger
	state *state
}

var (
	_ approval.Channel   = (*Channel)(nil)
	_ approval.Callbacks = (*Channel)(nil)
)

// New builds the channel from its settings.
func New(name string, settings map[string]any, env approval.Env) (*Channel, error) {
	cfg := Config{SMTPPort: DefaultPort}
	if err := approval.DecodeSettings(settings, &cfg); err != nil {
		return nil, err
	}
	if env.PublicURL == "" {
		return nil, errors.New("needs clawd's public URL: the links in the messages point at it")
	}
	pu, err := url.Parse(env.PublicURL)
	if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || pu.RawQuery != "" || pu.Fragment != "" {
		return nil, errors.New("the public URL is not an http(s) base URL")
	}
	if pu.Scheme == "http" && !loopbackHost(pu.Hostname()) {
		env.Logger().Warn("email: the public URL is plain http: the one-time links travel unencrypted")
	}
	if cfg.SMTPHost == "" || strings.ContainsAny(cfg.SMTPHost, " /\\@\r\n") {
		return nil, errors.New("smtp-host is required: the submission server's host name (e.g. smtp.example.com)")
	}
	if cfg.SMTPPort <= 0 || cfg.SMTPPort > 65535 {
		return nil, fmt.Errorf("smtp-port %d is not a port", cfg.SMTPPort)
	}
	if cfg.SMTPPort == 465 {
		return nil, errors.New("smtp-port 465 is implicit TLS, which this channel does not speak: use the submission port 587 (STARTTLS)")
	}
	c := &Channel{
		name: name, host: cfg.SMTPHost, addr: net.JoinHostPort(cfg.SMTPHost, strconv.Itoa(cfg.SMTPPort)),
		serverName: cfg.SMTPHost, public: strings.TrimRight(env.PublicURL, "/"), helo: heloName(pu.Hostname()),
		now: env.Clock(), log: env.Logger().With(zap.String("channel", name)),
	}
	if cfg.TLSServerName != "" {
		if strings.ContainsAny(cfg.TLSServerName, " /\\@\r\n") {
			return nil, errors.New("tls-server-name is not a host name")
		}
		c.serverName = cfg.TLSServerName
	}
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls-ca-file: %w", err)
		}
		c.roots = x509.NewCertPool()
		if !c.roots.AppendCertsFromPEM(pem) {
			return nil, errors.New("tls-ca-file: no PEM certificate in it")
		}
	}
	switch {
	case cfg.Username != "" && cfg.Password == "":
		return nil, errors.New("password is required with username (e.g. secret:smtp-password)")
	case cfg.Username == "" && cfg.Password != "":
		return nil, errors.New("username is required with password")
	case cfg.Username != "":
		if strings.ContainsAny(cfg.Username, "\x00\r\n") {
			return nil, errors.New("username: not a single line")
		}
		pw, err := env.Credential(cfg.Password)
		if err != nil {
			return nil, fmt.Errorf("password: %w", err)
		}
		if pw == "" || strings.ContainsAny(pw, "\x00\r\n") {
			return nil, errors.New("password: the credential is empty or not a single line")
		}
		c.username, c.password = cfg.Username, pw
	}
	if cfg.From == "" || strings.ContainsAny(cfg.From, "\r\n") {
		return nil, errors.New(`from is required: the sender address (e.g. "clawd <clawd@example.com>")`)
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil || !addrRe.MatchString(strings.ToLower(from.Address)) {
		return nil, fmt.Errorf("from %q is not a plain e-mail address", cfg.From)
	}
	from.Name = oneLine(from.Name, 64)
	c.from = from
	c.fromDomain = strings.ToLower(from.Address[strings.LastIndexByte(from.Address, '@')+1:])
	for _, r := range cfg.Recipients {
		a, ok := normAddr(r)
		if !ok {
			return nil, fmt.Errorf("recipients: %q is not a plain e-mail address", r)
		}
		c.recipients = append(c.recipients, a)
	}
	slices.Sort(c.recipients)
	c.recipients = slices.Compact(c.recipients)
	if len(c.recipients) > maxRecipients {
		return nil, fmt.Errorf("recipients: at most %d", maxRecipients)
	}
	if env.StateDir == "" {
		return nil, errors.New("needs a state directory for its one-time link tokens")
	}
	if c.state, err = openState(env.StateDir, name); err != nil {
		return nil, err
	}
	return c, nil
}

// Build is New for the channel registry (approval/channels).
func Build(name string, settings map[string]any, env approval.Env) (approval.Channel, error) {
	c, err := New(name, settings, env)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Name is the channel's name.
func (c *Channel) Name() string { return c.name }

// Personal: each asked person gets a message of their own.
func (c *Channel) Personal() bool { return true }

// DefaultApprovers are the recipients setting: who is asked when
// clawd.yaml lists no approvers for this channel.
func (c *Channel) DefaultApprovers() []string { return slices.Clone(c.recipients) }

func normAddr(s string) (string, bool) {
	a := strings.ToLower(strings.TrimSpace(s))
	return a, len(a) <= 254 && addrRe.MatchString(a)
}

// audience is who gets a message: the card's people that are addresses,
// else the recipients.
func (c *Channel) audience(card *approval.Card) []string {
	if len(card.People) == 0 {
		return c.DefaultApprovers()
	}
	var out []string
	for _, p := range card.People {
		if a, ok := normAddr(p); ok {
			out = append(out, a)
		} else {
			c.log.Warn("email: an asked person is not an e-mail address; not notified", zap.String("approval", card.ID))
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxRecipients {
		out = out[:maxRecipients]
	}
	return out
}

// Post sends each asked approver their own message with their own links.
// The ref lists "address=<message-id>" per approver, space separated.
func (c *Channel) Post(ctx context.Context, card *approval.Card) (string, error) {
	if card == nil || card.Approval == nil {
		return "", errors.New("email: no approval on the card")
	}
	who := c.audience(card)
	if len(who) == 0 {
		return "", fmt.Errorf("email %s: no one to send to (no approvers that are addresses, no recipients)", c.name)
	}
	now := c.now()
	rec := recordOf(card)
	toks := map[string]token{}
	byAddr := map[string][]string{} // address → its hashes
	msgs := make([]outgoing, 0, len(who))
	for _, to := range who {
		var links []link
		for _, b := range card.Buttons() {
			tok, hash, err := newToken()
			if err != nil {
				return "", err
			}
			toks[hash] = token{Approval: card.ID, Act: b.Act, Approver: to, Expires: card.Expires}
			byAddr[to] = append(byAddr[to], hash)
			links = append(links, link{Label: b.Label, Act: b.Act, URL: c.public + approval.CallbackPath(c.name) + tok})
		}
		id, err := c.messageID()
		if err != nil {
			return "", err
		}
		msgs = append(msgs, outgoing{to: to, id: id, data: c.cardMessage(card, to, id, links, now)})
	}
	if len(toks) > 0 {
		if err := c.state.issue(card.ID, rec, toks, now); err != nil {
			return "", fmt.Errorf("email %s: link tokens not persisted: %w", c.name, err)
		}
	}
	errs := c.send(ctx, msgs)
	var refs, failed []string
	var all []error
	for i, m := range msgs {
		if errs[i] != nil {
			failed = append(failed, byAddr[m.to]...)
			all = append(all, errs[i])
			continue
		}
		refs = append(refs, m.to+"="+m.id)
	}
	if len(failed) > 0 {
		c.state.drop(failed, now)
	}
	if len(refs) == 0 {
		return "", fmt.Errorf("email %s: %w", c.name, errors.Join(all...))
	}
	for _, err := range all {
		c.log.Warn("email: a message was not sent", zap.String("approval", card.ID), zap.Error(err))
	}
	return strings.Join(refs, " "), nil
}

// Update sends a short follow-up in each approver's thread once the
// approval is decided (approved, denied, timed out, cancelled, expired)
// and ends its links. While it is pending (a first vote of two) nothing is
// sent: the links stay valid and the core answers each clicker.
func (c *Channel) Update(ctx context.Context, card *approval.Card, ref string) error {
	if card == nil || card.Approval == nil {
		return errors.New("email: no approval on the card")
	}
	if card.Status == approval.Pending {
		return nil
	}
	now := c.now()
	if !c.state.close(card.ID, card.Status, now) {
		return nil // this outcome was already sent
	}
	var msgs []outgoing
	for _, f := range strings.Fields(ref) {
		to, parent, ok := strings.Cut(f, "=")
		if a, valid := normAddr(to); !ok || !valid || a != to || !validMessageID(parent) {
			c.log.Warn("email: ignored a malformed ref entry", zap.String("approval", card.ID))
			continue
		}
		id, err := c.messageID()
		if err != nil {
			return err
		}
		msgs = append(msgs, outgoing{to: to, id: id, data: c.followUp(card, to, id, parent, now)})
	}
	if len(msgs) == 0 {
		return nil
	}
	var all []error
	for _, err := range c.send(ctx, msgs) {
		if err != nil {
			all = append(all, err)
		}
	}
	if len(all) == len(msgs) {
		return fmt.Errorf("email %s: follow-up: %w", c.name, errors.Join(all...))
	}
	for _, err := range all {
		c.log.Warn("email: a follow-up was not sent", zap.String("approval", card.ID), zap.Error(err))
	}
	return c.state.markFollowedUp(card.ID, card.Status, card.Expires, now)
}

// messageID is a fresh "<random@from-domain>".
func (c *Channel) messageID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "<" + hex.EncodeToString(b) + ".clawd@" + c.fromDomain + ">", nil
}

var messageIDRe = regexp.MustCompile(`^<[a-z0-9.]{1,64}@[a-z0-9.-]{1,253}>$`)

func validMessageID(s string) bool { return messageIDRe.MatchString(s) }

func recordOf(card *approval.Card) record {
	a := card.Approval
	return record{
		Summary: clip(a.Summary, maxSummary), Method: clip(a.Method, 16), URL: clip(a.URL, maxURL),
		Container: clip(a.Container.Name, 128), Rule: clip(a.Rule, 128), Body: clip(a.Body, maxBody),
		Digest: a.Digest, Expires: a.Expires, Required: a.Required, GrantsAllowed: a.GrantsAllowed,
	}
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// heloName is the EHLO argument for the public host: a domain, or an
// address literal (RFC 5321 4.1.3).
func heloName(h string) string {
	ip := net.ParseIP(h)
	switch {
	case ip == nil:
		return h
	case ip.To4() != nil:
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.String() + "]"
}

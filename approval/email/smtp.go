package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"time"
)

// sendTimeout bounds one SMTP session when ctx has no earlier deadline.
const sendTimeout = 60 * time.Second

// outgoing is one message for one recipient.
type outgoing struct {
	to   string
	id   string // Message-ID
	data []byte // the RFC 5322 message, CRLF line ends
}

// send delivers msgs over one SMTP session: EHLO, STARTTLS (required: the
// channel never talks to a server that does not offer it, and never sends
// credentials or links in clear text), AUTH PLAIN when a username is set,
// then one transaction per message. It returns one error per message.
// Errors name the server's reply, never the password or the message.
func (c *Channel) send(ctx context.Context, msgs []outgoing) []error {
	errs := make([]error, len(msgs))
	fail := func(err error) []error {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		return errs
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > sendTimeout {
		deadline = time.Now().Add(sendTimeout)
	}
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fail(fmt.Errorf("smtp: %w", err))
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	cl, err := smtp.NewClient(conn, c.host)
	if err != nil {
		return fail(fmt.Errorf("smtp: greeting: %w", err))
	}
	defer cl.Close()
	if err := cl.Hello(c.helo); err != nil {
		return fail(fmt.Errorf("smtp: EHLO: %w", err))
	}
	if ok, _ := cl.Extension("STARTTLS"); !ok {
		return fail(errors.New("smtp: the server does not offer STARTTLS; refusing to send without TLS"))
	}
	if err := cl.StartTLS(&tls.Config{ServerName: c.serverName, RootCAs: c.roots, MinVersion: tls.VersionTLS12}); err != nil {
		return fail(fmt.Errorf("smtp: STARTTLS: %w", err))
	}
	if st, ok := cl.TLSConnectionState(); !ok || !st.HandshakeComplete {
		return fail(errors.New("smtp: no TLS after STARTTLS"))
	}
	if c.username != "" {
		if ok, _ := cl.Extension("AUTH"); !ok {
			return fail(errors.New("smtp: the server offers no AUTH after STARTTLS"))
		}
		// PlainAuth itself refuses to send the password unless the
		// connection is TLS and the server is c.host.
		if err := cl.Auth(smtp.PlainAuth("", c.username, c.password, c.host)); err != nil {
			return fail(fmt.Errorf("smtp: AUTH PLAIN as %s: %w", c.username, err))
		}
	}
	for i, m := range msgs {
		errs[i] = c.transaction(cl, m)
		if errs[i] != nil {
			if ctx.Err() != nil {
				return fail(ctx.Err())
			}
			if rerr := cl.Reset(); rerr != nil {
				return fail(fmt.Errorf("smtp: %w", rerr))
			}
		}
	}
	_ = cl.Quit()
	return errs
}

func (c *Channel) transaction(cl *smtp.Client, m outgoing) error {
	if err := cl.Mail(c.from.Address); err != nil {
		return fmt.Errorf("smtp: MAIL FROM: %w", err)
	}
	if err := cl.Rcpt(m.to); err != nil {
		return fmt.Errorf("smtp: RCPT TO %s: %w", m.to, err)
	}
	w, err := cl.Data()
	if err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if _, err := w.Write(m.data); err != nil {
		w.Close()
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp: message for %s refused: %w", m.to, err)
	}
	return nil
}

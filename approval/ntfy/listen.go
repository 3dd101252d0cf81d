package ntfy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Reconnect pacing and the silence after which the subscription is deemed
// dead (ntfy sends a keepalive every 45 s by default).
var (
	backoffMin  = 500 * time.Millisecond
	backoffMax  = 30 * time.Second
	idleTimeout = 2 * time.Minute
)

// maxLine is the longest event line read; longer ones are skipped.
const maxLine = 64 << 10

// event is one line of ntfy's JSON subscription stream.
type event struct {
	ID      string `json:"id"`
	Event   string `json:"event"`
	Topic   string `json:"topic"`
	Message string `json:"message"`
}

// Run reads button presses from the reply topic until ctx ends,
// reconnecting with since=<last message processed> so nothing is lost or
// processed twice.
func (c *Channel) Run(ctx context.Context, d approval.Decider) error {
	wait := backoffMin
	for {
		opened, err := c.subscribe(ctx, d)
		if ctx.Err() != nil {
			return nil
		}
		if opened {
			wait = backoffMin
		}
		c.log.Info("ntfy subscription ended; reconnecting", zap.Error(err), zap.Duration("in", wait))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, backoffMax)
	}
}

// subscribe runs one subscription; opened reports whether the server
// accepted it (to reset the backoff).
func (c *Channel) subscribe(ctx context.Context, d approval.Decider) (opened bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	since := c.state.lastID()
	if since == "" {
		since = "all" // first start: tokens are new, nothing older can match
	}
	u := c.server + "/" + c.reply + "/json?since=" + url.QueryEscape(since)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	c.auth(req)
	resp, err := c.stream.Do(req)
	if err != nil {
		return false, redactURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("subscribe: %s", resp.Status)
	}
	idle := time.AfterFunc(idleTimeout, cancel)
	defer idle.Stop()
	r := bufio.NewReaderSize(resp.Body, 4096)
	for {
		line, err := readLine(r, maxLine)
		if err != nil {
			return opened, err
		}
		idle.Reset(idleTimeout)
		if line == nil {
			c.log.Info("ntfy: skipped an over-long subscription line")
			continue
		}
		var ev event
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			c.log.Info("ntfy: skipped a subscription line that is not JSON")
			continue
		}
		switch ev.Event {
		case "open":
			opened = true
		case "message":
			opened = true
			if ev.Topic != "" && ev.Topic != c.reply {
				continue
			}
			c.handle(ctx, d, ev.Message)
			if messageIDRe.MatchString(ev.ID) {
				if err := c.state.setLastID(ev.ID); err != nil {
					c.log.Error("ntfy: could not persist the subscription position", zap.Error(err))
				}
			}
		}
	}
}

// readLine returns the next line without its newline, or nil for a line
// longer than max (which is consumed).
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	long := false
	for {
		frag, err := r.ReadSlice('\n')
		if !long {
			buf = append(buf, frag...)
			if len(buf) > max {
				long, buf = true, nil
			}
		}
		switch {
		case err == nil:
			if long {
				return nil, nil
			}
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			if err == io.EOF && len(buf) > 0 && !long {
				return buf, nil
			}
			return nil, err
		}
	}
}

// handle processes one reply body: a known, unused, unexpired token
// becomes a decision by the approver it was issued to. Anything else is
// ignored; the log never shows the body.
func (c *Channel) handle(ctx context.Context, d approval.Decider, body string) {
	tok := strings.TrimSpace(body)
	if len(tok) != 64 || !isLowerHex(tok) {
		c.log.Info("ntfy: ignored a reply that is not a clawd token")
		return
	}
	hash := hashToken(tok)
	e, found, live := c.state.take(hash, c.now())
	if !found {
		c.log.Info("ntfy: ignored an unknown or already used token")
		return
	}
	if err := c.state.save(c.now()); err != nil {
		c.log.Error("ntfy: could not persist a used token", zap.Error(err))
	}
	if !live {
		c.log.Info("ntfy: ignored an expired token", zap.String("approval", e.Approval), zap.String("approver", e.Approver))
		return
	}
	dec, err := approval.ParseButton(e.Value)
	if err != nil || dec.ID != e.Approval {
		c.log.Warn("ntfy: a stored token maps to no button", zap.String("approval", e.Approval))
		return
	}
	dec.Channel, dec.User, dec.Display = c.name, e.Approver, e.Approver
	res := d.Decide(ctx, dec)
	c.log.Info("ntfy: decision", zap.String("approval", dec.ID), zap.String("approver", e.Approver),
		zap.Bool("approve", dec.Approve), zap.String("outcome", res.Outcome))
	switch res.Outcome {
	case approval.ResultError:
		// Not recorded: the same press may be tried again.
		c.state.add(hash, e)
		if err := c.state.save(c.now()); err != nil {
			c.log.Error("ntfy: could not persist a restored token", zap.Error(err))
		}
	case approval.ResultDecided, approval.ResultRecorded:
		// The core updates the card, which shows the outcome.
		return
	}
	if res.Message != "" {
		c.notify(ctx, e.Approver, "clawd: "+oneLine(res.Message, 200), res.Message+"\n(approval "+dec.ID+")")
	}
}

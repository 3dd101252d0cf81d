package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Gateway opcodes.
const (
	opDispatch       = 0
	opHeartbeat      = 1
	opIdentify       = 2
	opResume         = 6
	opReconnect      = 7
	opInvalidSession = 9
	opHello          = 10
	opHeartbeatACK   = 11
)

// closeResume is the close code clawd uses when it drops a connection it
// means to resume (1000 and 1001 would end the session).
const closeResume websocket.StatusCode = 4900

// Waits between connections; variables so tests need not sleep.
var (
	// invalidSessionWait is Discord's "wait 1 to 5 seconds" before a
	// fresh Identify after a non-resumable Invalid Session.
	invalidSessionWait = func() time.Duration { return time.Second + rand.N(4*time.Second) }
	// backoff is the wait before the n-th consecutive failed attempt
	// (n ≥ 2; the first retry is immediate).
	backoff = func(n int) time.Duration {
		d := time.Second << min(n-2, 6)
		return min(d, time.Minute) + rand.N(time.Second)
	}
	helloTimeout = 30 * time.Second
)

type gwPayload struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  *int64          `json:"s"`
	T  string          `json:"t"`
}

type gwSend struct {
	Op int `json:"op"`
	D  any `json:"d"`
}

// gwSession is what Resume needs; it outlives one connection.
type gwSession struct {
	id        string
	resumeURL string
	seq       atomic.Int64 // 0 = no dispatch seen yet
}

func (s *gwSession) reset() { s.id, s.resumeURL = "", ""; s.seq.Store(0) }

// Errors that end one connection, each with its way back.
var (
	errReconnect   = errors.New("gateway asked to reconnect")
	errZombie      = errors.New("no heartbeat ACK: connection zombied")
	errInvalidated = errors.New("gateway invalidated the session")
)

// Run holds a Gateway connection and answers button clicks that arrive as
// INTERACTION_CREATE dispatches. It resumes after drops, identifies anew
// when the session cannot be resumed, and returns only when ctx is done.
// In interactions mode Discord sends clicks to Callbacks instead, so Run
// just waits.
func (c *Channel) Run(ctx context.Context, d approval.Decider) error {
	if c.mode != ModeGateway {
		<-ctx.Done()
		return nil
	}
	var s gwSession
	fails := 0
	for {
		ready, err := c.connect(ctx, &s, d)
		if ctx.Err() != nil {
			return nil
		}
		if ready {
			fails = 0
		}
		fails++
		var wait time.Duration
		if fails > 1 {
			wait = backoff(fails)
		}
		code := websocket.CloseStatus(err)
		switch {
		case errors.Is(err, errInvalidated):
			s.reset()
			wait = max(wait, invalidSessionWait())
		case code == 4004:
			c.log.Error("discord gateway refused the bot token; fix bot-token", zap.Int("fails", fails))
			s.reset()
			wait = max(wait, time.Minute)
		case code >= 4010 && code <= 4014:
			c.log.Error("discord gateway refused the connection; check the application", zap.Int("close_code", int(code)))
			s.reset()
			wait = max(wait, time.Minute)
		case code == 4007 || code == 4009:
			s.reset() // the session cannot be resumed: identify anew
		}
		c.log.Info("discord gateway disconnected", zap.Error(err), zap.Bool("resume", s.id != ""), zap.Duration("retry_in", wait))
		if sleepCtx(ctx, wait) != nil {
			return nil
		}
	}
}

// connect runs one Gateway connection until it ends; ready reports whether
// it got as far as READY or RESUMED.
func (c *Channel) connect(ctx context.Context, s *gwSession, d approval.Decider) (ready bool, err error) {
	resuming := s.id != "" && s.resumeURL != ""
	base := s.resumeURL
	if !resuming {
		if base, err = c.gatewayURL(ctx); err != nil {
			return false, err
		}
	}
	u, err := c.wsURL(base)
	if err != nil {
		return false, err
	}
	dctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: http.Header{"User-Agent": {userAgent}},
	})
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return false, fmt.Errorf("gateway dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(8 << 20)

	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // a clean close on shutdown
		<-cctx.Done()
		if ctx.Err() != nil {
			conn.Close(websocket.StatusNormalClosure, "clawd stopping")
		}
	}()

	var hello struct {
		Interval int64 `json:"heartbeat_interval"`
	}
	p, err := readPayload(dctx, conn)
	if err != nil {
		return false, err
	}
	if p.Op != opHello || json.Unmarshal(p.D, &hello) != nil || hello.Interval <= 0 {
		return false, errors.New("gateway: expected Hello")
	}
	cancel()

	send := func(op int, v any) error {
		b, err := json.Marshal(gwSend{Op: op, D: v})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(cctx, 10*time.Second)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, b)
	}
	beatNow := make(chan struct{}, 1)
	var acked, zombie atomic.Bool
	go c.heartbeat(cctx, conn, time.Duration(hello.Interval)*time.Millisecond, s, send, beatNow, &acked, &zombie)

	if resuming {
		err = send(opResume, map[string]any{"token": c.token, "session_id": s.id, "seq": s.seq.Load()})
	} else {
		err = send(opIdentify, map[string]any{
			"token":      c.token,
			"intents":    0, // interactions arrive without intents
			"properties": map[string]string{"os": runtime.GOOS, "browser": "clawd", "device": "clawd"},
		})
	}
	if err != nil {
		return false, fmt.Errorf("gateway: send: %w", err)
	}

	for {
		p, err := readPayload(context.Background(), conn)
		if err != nil {
			if zombie.Load() {
				return ready, errZombie
			}
			return ready, err
		}
		switch p.Op {
		case opDispatch:
			if p.S != nil && *p.S > s.seq.Load() {
				s.seq.Store(*p.S)
			}
			switch p.T {
			case "READY":
				var r struct {
					SessionID   string `json:"session_id"`
					ResumeURL   string `json:"resume_gateway_url"`
					Application struct {
						ID string `json:"id"`
					} `json:"application"`
				}
				if json.Unmarshal(p.D, &r) != nil || r.SessionID == "" {
					return ready, errors.New("gateway: malformed READY")
				}
				if r.Application.ID != "" && r.Application.ID != c.appID {
					c.log.Warn("discord bot token belongs to another application than application-id")
				}
				s.id, s.resumeURL = r.SessionID, ""
				if _, err := c.wsURL(r.ResumeURL); err == nil {
					s.resumeURL = r.ResumeURL
				}
				ready = true
				c.log.Info("discord gateway ready")
			case "RESUMED":
				ready = true
				c.log.Info("discord gateway resumed")
			case "INTERACTION_CREATE":
				go c.gatewayInteraction(ctx, p.D, d)
			}
		case opHeartbeat:
			select {
			case beatNow <- struct{}{}:
			default:
			}
		case opHeartbeatACK:
			acked.Store(true)
		case opReconnect:
			conn.Close(closeResume, "reconnect")
			return ready, errReconnect
		case opInvalidSession:
			var resumable bool
			json.Unmarshal(p.D, &resumable)
			conn.Close(closeResume, "invalid session")
			if resumable && s.id != "" {
				return ready, errReconnect
			}
			return ready, errInvalidated
		}
	}
}

// heartbeat beats every interval (the first after a random part of it, as
// Discord asks) and when the gateway asks; a beat due with the previous one
// unacknowledged means the connection is dead: drop it to resume.
func (c *Channel) heartbeat(ctx context.Context, conn *websocket.Conn, interval time.Duration, s *gwSession,
	send func(int, any) error, now <-chan struct{}, acked, zombie *atomic.Bool) {
	acked.Store(true)
	t := time.NewTimer(rand.N(interval) + time.Millisecond)
	defer t.Stop()
	beat := func() bool {
		var seq any // null until a dispatch was seen
		if n := s.seq.Load(); n > 0 {
			seq = n
		}
		acked.Store(false)
		if err := send(opHeartbeat, seq); err != nil {
			conn.CloseNow()
			return false
		}
		return true
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-now:
			if !beat() {
				return
			}
		case <-t.C:
			if !acked.Load() {
				zombie.Store(true)
				conn.CloseNow()
				return
			}
			if !beat() {
				return
			}
			t.Reset(interval)
		}
	}
}

func readPayload(ctx context.Context, conn *websocket.Conn) (gwPayload, error) {
	var p gwPayload
	typ, b, err := conn.Read(ctx)
	if err != nil {
		return p, err
	}
	if typ != websocket.MessageText {
		return p, errors.New("gateway: unexpected binary message")
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, errors.New("gateway: malformed payload")
	}
	return p, nil
}

// gatewayURL asks GET /gateway/bot where to connect.
func (c *Channel) gatewayURL(ctx context.Context) (string, error) {
	var g struct {
		URL string `json:"url"`
	}
	if err := c.call(ctx, "GET", "/gateway/bot", nil, &g); err != nil {
		return "", err
	}
	return g.URL, nil
}

// wsURL checks a gateway URL from Discord (wss, or ws when api-base itself
// is plain http) and adds the version and encoding.
func (c *Channel) wsURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || u.User != nil {
		return "", errors.New("gateway: bad gateway URL")
	}
	if !approval.SecureScheme(u, "wss", "ws") {
		return "", errors.New("gateway: gateway URL must be wss (ws only to a loopback address)")
	}
	q := u.Query()
	q.Set("v", "10")
	q.Set("encoding", "json")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// gatewayInteraction answers one INTERACTION_CREATE with a callback.
func (c *Channel) gatewayInteraction(ctx context.Context, raw json.RawMessage, d approval.Decider) {
	var in interaction
	if err := json.Unmarshal(raw, &in); err != nil {
		c.log.Warn("discord: malformed interaction")
		return
	}
	resp, err := c.answer(ctx, &in, d)
	if err != nil {
		c.log.Info("discord interaction ignored", zap.Error(err))
		return
	}
	if !validToken(in.Token) {
		c.log.Warn("discord interaction has a malformed token")
		return
	}
	b, _ := json.Marshal(resp)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The interaction token authenticates the callback; the bot token is
	// not sent along.
	status, body, _, err := c.do(cctx, "POST", c.api+"/interactions/"+in.ID+"/"+in.Token+"/callback", b, false)
	if err == nil && status/100 != 2 {
		err = errors.New(apiError(status, body))
	}
	if err != nil {
		c.log.Warn("discord interaction callback failed", zap.Error(err))
	}
}

func validToken(t string) bool {
	if t == "" || len(t) > 1000 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Exclusive: in gateway mode the bot's Gateway session is one consumer of
// its interactions.
func (c *Channel) Exclusive() bool { return c.mode == ModeGateway }

package fake

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

type gwEvent struct {
	seq int64
	t   string
	d   any
}

type gwState struct {
	interval   time.Duration
	noACK      bool
	conn       *websocket.Conn // the identified (or resumed) connection
	session    string
	seq        int64
	log        []gwEvent
	identifies int
	resumes    int
	heartbeats int
	changed    chan struct{}
}

// GatewayStats counts what the client did on the Gateway.
type GatewayStats struct {
	Identifies, Resumes, Heartbeats int
	Connected                       bool // a connection is identified or resumed
	Session                         string
}

// Gateway reports the Gateway counters.
func (s *Server) Gateway() GatewayStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsLocked()
}

func (s *Server) statsLocked() GatewayStats {
	return GatewayStats{Identifies: s.gw.identifies, Resumes: s.gw.resumes, Heartbeats: s.gw.heartbeats,
		Connected: s.gw.conn != nil, Session: s.gw.session}
}

// WaitGateway waits until cond holds for the Gateway counters.
func (s *Server) WaitGateway(ctx context.Context, cond func(GatewayStats) bool) (GatewayStats, error) {
	for {
		s.mu.Lock()
		st := s.statsLocked()
		ch := s.gw.changed
		s.mu.Unlock()
		if cond(st) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("gateway: condition not met (%+v): %w", st, ctx.Err())
		case <-ch:
		}
	}
}

func (s *Server) gwChangedLocked() {
	close(s.gw.changed)
	s.gw.changed = make(chan struct{})
}

// SetHeartbeatInterval is the interval the next Hello announces.
func (s *Server) SetHeartbeatInterval(d time.Duration) {
	s.mu.Lock()
	s.gw.interval = d
	s.mu.Unlock()
}

// StopACKs makes the Gateway ignore heartbeats (a zombied connection) until
// a new connection is identified or resumed.
func (s *Server) StopACKs() {
	s.mu.Lock()
	s.gw.noACK = true
	s.mu.Unlock()
}

// Drop cuts the current Gateway connection without a close frame; the
// session stays resumable and dispatches queue until it is resumed.
func (s *Server) Drop() {
	s.mu.Lock()
	c := s.gw.conn
	s.gw.conn = nil
	s.gwChangedLocked()
	s.mu.Unlock()
	if c != nil {
		c.CloseNow()
	}
}

// SendReconnect sends op 7 Reconnect on the current connection.
func (s *Server) SendReconnect(ctx context.Context) error {
	return s.sendCurrent(ctx, map[string]any{"op": 7, "d": nil})
}

// InvalidateSession sends op 9 Invalid Session; when not resumable the
// session is forgotten and the client must identify anew.
func (s *Server) InvalidateSession(ctx context.Context, resumable bool) error {
	if !resumable {
		s.mu.Lock()
		s.gw.session = ""
		s.mu.Unlock()
	}
	return s.sendCurrent(ctx, map[string]any{"op": 9, "d": resumable})
}

func (s *Server) sendCurrent(ctx context.Context, v any) error {
	s.gwWrite.Lock()
	defer s.gwWrite.Unlock()
	s.mu.Lock()
	c := s.gw.conn
	s.mu.Unlock()
	if c == nil {
		return errNoSession
	}
	return writeWS(ctx, c, v)
}

func writeWS(ctx context.Context, c *websocket.Conn, v any) error {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, b)
}

// dispatch sends an op 0 event in the current session (queued for a
// resume when no connection is live).
func (s *Server) dispatch(t string, d any) error {
	s.gwWrite.Lock()
	defer s.gwWrite.Unlock()
	s.mu.Lock()
	ev, ok := s.logLocked(t, d)
	c := s.gw.conn
	s.mu.Unlock()
	if !ok {
		return errNoSession
	}
	if c != nil {
		writeEvent(context.Background(), c, ev)
	}
	return nil
}

func (s *Server) logLocked(t string, d any) (gwEvent, bool) {
	if s.gw.session == "" {
		return gwEvent{}, false
	}
	s.gw.seq++
	ev := gwEvent{seq: s.gw.seq, t: t, d: d}
	s.gw.log = append(s.gw.log, ev)
	return ev, true
}

func writeEvent(ctx context.Context, c *websocket.Conn, ev gwEvent) error {
	return writeWS(ctx, c, map[string]any{"op": 0, "s": ev.seq, "t": ev.t, "d": ev.d})
}

type gwIn struct {
	Op *int            `json:"op"`
	D  json.RawMessage `json:"d"`
	S  any             `json:"s"`
	T  any             `json:"t"`
}

// gateway serves /gateway (from GET /gateway/bot) and /resume (the READY's
// resume_gateway_url).
func (s *Server) gateway(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("v") != "10" || q.Get("encoding") != "json" {
		s.violation("gateway: connect with ?v=10&encoding=json, got %q", r.URL.RawQuery)
	}
	if !strings.HasPrefix(r.Header.Get("User-Agent"), "DiscordBot (") {
		s.violation("gateway: User-Agent %q", r.Header.Get("User-Agent"))
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	s.mu.Lock()
	interval := s.gw.interval
	s.mu.Unlock()
	ctx := r.Context()
	if writeWS(ctx, c, map[string]any{"op": 10, "d": map[string]any{"heartbeat_interval": interval.Milliseconds()}}) != nil {
		return
	}
	authed := false
	defer func() {
		s.mu.Lock()
		if s.gw.conn == c {
			s.gw.conn = nil
			s.gwChangedLocked()
		}
		s.mu.Unlock()
	}()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		if len(b) > 4096 {
			s.violation("gateway: payload of %d bytes, limit 4096", len(b))
			c.Close(4002, "Decode error")
			return
		}
		var p gwIn
		if typ != websocket.MessageText || json.Unmarshal(b, &p) != nil || p.Op == nil {
			s.violation("gateway: undecodable payload")
			c.Close(4002, "Decode error")
			return
		}
		switch *p.Op {
		case 1:
			var seq *int64
			if err := json.Unmarshal(p.D, &seq); err != nil {
				s.violation("gateway: heartbeat d must be the last sequence number or null")
				c.Close(4002, "Decode error")
				return
			}
			s.mu.Lock()
			s.gw.heartbeats++
			if seq != nil && *seq > s.gw.seq {
				s.violation("gateway: heartbeat seq %d beyond the last dispatched %d", *seq, s.gw.seq)
			}
			ack := !s.gw.noACK || s.gw.conn != c
			s.gwChangedLocked()
			s.mu.Unlock()
			if ack {
				writeWS(ctx, c, map[string]any{"op": 11})
			}
		case 2:
			if authed {
				c.Close(4005, "Already authenticated")
				return
			}
			var id struct {
				Token      string             `json:"token"`
				Intents    *int64             `json:"intents"`
				Properties *map[string]string `json:"properties"`
			}
			if json.Unmarshal(p.D, &id) != nil || id.Intents == nil || id.Properties == nil {
				s.violation("gateway: Identify needs token, intents and properties")
				c.Close(4002, "Decode error")
				return
			}
			for _, k := range []string{"os", "browser", "device"} {
				if (*id.Properties)[k] == "" {
					s.violation("gateway: Identify properties.%s missing", k)
				}
			}
			if id.Token != s.Token {
				s.violation("gateway: Identify with a wrong token")
				c.Close(4004, "Authentication failed.")
				return
			}
			if r.URL.Path != "/gateway" {
				s.violation("gateway: Identify on %s, not on the URL from GET /gateway/bot", r.URL.Path)
			}
			authed = true
			// READY goes out before the connection counts as live, and no
			// dispatch can come between.
			s.gwWrite.Lock()
			s.mu.Lock()
			old := s.gw.conn
			s.gw.session, s.gw.seq, s.gw.log = randHex(16), 0, nil
			s.gw.identifies++
			ready, _ := s.logLocked("READY", map[string]any{
				"v":                  10,
				"user":               map[string]any{"id": s.BotID, "username": "clawd-fake", "bot": true},
				"guilds":             []any{map[string]any{"id": s.GuildID, "unavailable": true}},
				"session_id":         s.gw.session,
				"resume_gateway_url": "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/resume",
				"application":        map[string]any{"id": s.AppID, "flags": 0},
			})
			s.gw.conn = nil
			s.mu.Unlock()
			if old != nil && old != c {
				old.CloseNow()
			}
			writeEvent(ctx, c, ready)
			s.mu.Lock()
			s.gw.conn, s.gw.noACK = c, false
			s.gwChangedLocked()
			s.mu.Unlock()
			s.gwWrite.Unlock()
		case 6:
			if authed {
				c.Close(4005, "Already authenticated")
				return
			}
			var rs struct {
				Token     string `json:"token"`
				SessionID string `json:"session_id"`
				Seq       *int64 `json:"seq"`
			}
			if json.Unmarshal(p.D, &rs) != nil || rs.Seq == nil {
				s.violation("gateway: Resume needs token, session_id and seq")
				c.Close(4002, "Decode error")
				return
			}
			if rs.Token != s.Token {
				s.violation("gateway: Resume with a wrong token")
				c.Close(4004, "Authentication failed.")
				return
			}
			if r.URL.Path != "/resume" {
				s.violation("gateway: Resume on %s, not on resume_gateway_url", r.URL.Path)
			}
			s.mu.Lock()
			if rs.SessionID == "" || rs.SessionID != s.gw.session || *rs.Seq > s.gw.seq {
				s.mu.Unlock()
				writeWS(ctx, c, map[string]any{"op": 9, "d": false})
				continue
			}
			authed = true
			s.mu.Unlock()
			s.gwWrite.Lock()
			s.mu.Lock()
			old := s.gw.conn
			s.gw.conn = nil
			s.gw.resumes++
			var replay []gwEvent
			for _, ev := range s.gw.log {
				if ev.seq > *rs.Seq {
					replay = append(replay, ev)
				}
			}
			resumed, _ := s.logLocked("RESUMED", nil)
			s.mu.Unlock()
			if old != nil && old != c {
				old.CloseNow()
			}
			for _, ev := range append(replay, resumed) {
				writeEvent(ctx, c, ev)
			}
			s.mu.Lock()
			s.gw.conn, s.gw.noACK = c, false
			s.gwChangedLocked()
			s.mu.Unlock()
			s.gwWrite.Unlock()
		default:
			s.violation("gateway: unknown opcode %d", *p.Op)
			c.Close(4001, "Unknown opcode")
			return
		}
		if !authed && *p.Op != 1 {
			c.Close(4003, "Not authenticated")
			return
		}
	}
}

// deliverGateway dispatches INTERACTION_CREATE and waits for the callback.
func (s *Server) deliverGateway(ctx context.Context, in *Interaction) (Reply, error) {
	if _, err := s.WaitGateway(ctx, func(st GatewayStats) bool { return st.Session != "" }); err != nil {
		return Reply{}, err
	}
	p := &pendingInteraction{token: in.Token, sent: s.Now(), reply: make(chan Reply, 1)}
	s.mu.Lock()
	s.pending[in.ID] = p
	s.mu.Unlock()
	if err := s.dispatch("INTERACTION_CREATE", in); err != nil {
		return Reply{}, err
	}
	select {
	case rep := <-p.reply:
		return rep, nil
	case <-ctx.Done():
		return Reply{}, fmt.Errorf("no callback for interaction %s: %w", in.ID, ctx.Err())
	}
}

// DispatchInteraction sends in as INTERACTION_CREATE without waiting for an
// answer (for interactions clawd must ignore); Answered tells later.
func (s *Server) DispatchInteraction(in *Interaction) error {
	s.mu.Lock()
	s.pending[in.ID] = &pendingInteraction{token: in.Token, sent: s.Now(), reply: make(chan Reply, 1)}
	s.mu.Unlock()
	return s.dispatch("INTERACTION_CREATE", in)
}

// NewInteraction is the click Click would send, for DispatchInteraction
// and the forging helpers.
func (s *Server) NewInteraction(approvalID, act, userID string) (*Interaction, error) {
	return s.interaction(approvalID, act, userID)
}

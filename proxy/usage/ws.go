package usage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
)

// WSMeter reads the usage of an upgraded websocket session (OpenAI
// Realtime) from the server's frames as they stream past: every
// `response.done` event reports one response's usage, and a session costs
// their sum. A response started (`response.created`) and not done when the
// session ends costs the request's estimate, as an unmetered answer does.
// Frames it cannot read (compressed: permessage-deflate, which the proxy
// does not let the agent negotiate under a budget; any other extension)
// make the session unmetered. A text message over maxLine is skipped. It
// never holds bytes back.
type WSMeter struct {
	hdr  []byte // the current frame's header so far
	need int    // header bytes needed: 2, then the whole header
	left uint64 // payload bytes of the current frame still to come

	mask   [4]byte
	masked bool
	off    uint64 // payload offset, for unmasking
	ctl    bool   // the current frame is a control frame
	fin    bool   // the current frame ends its message
	text   bool   // the message in progress is text
	over   bool   // ... and is over maxLine
	msg    bytes.Buffer

	broken  bool
	total   int64
	open    bool // a response is in progress
	reports int  // response.done events read
}

// NewWSMeter returns a meter for the server-to-client half of a session.
func NewWSMeter() *WSMeter { return &WSMeter{need: 2} }

// Write feeds server bytes; it always succeeds.
func (m *WSMeter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && !m.broken {
		if m.left > 0 {
			k := int(min(uint64(len(p)), m.left))
			m.payload(p[:k])
			p = p[k:]
			m.left -= uint64(k)
			if m.left == 0 {
				m.frameEnd()
			}
			continue
		}
		k := min(m.need-len(m.hdr), len(p))
		m.hdr = append(m.hdr, p[:k]...)
		p = p[k:]
		if len(m.hdr) < m.need {
			continue
		}
		if len(m.hdr) == 2 {
			switch m.hdr[1] & 0x7f {
			case 126:
				m.need += 2
			case 127:
				m.need += 8
			}
			if m.hdr[1]&0x80 != 0 {
				m.need += 4
			}
			if len(m.hdr) < m.need {
				continue
			}
		}
		m.frame()
	}
	return n, nil
}

// frame starts a frame whose whole header is in m.hdr.
func (m *WSMeter) frame() {
	h := m.hdr
	m.hdr, m.need = m.hdr[:0], 2
	if h[0]&0x70 != 0 {
		m.broken = true // compressed, or an extension clawd does not read
		return
	}
	op := h[0] & 0x0f
	l, i := uint64(h[1]&0x7f), 2
	switch l {
	case 126:
		l, i = uint64(binary.BigEndian.Uint16(h[2:])), 4
	case 127:
		l, i = binary.BigEndian.Uint64(h[2:]), 10
	}
	m.masked = h[1]&0x80 != 0
	if m.masked {
		copy(m.mask[:], h[i:i+4])
	}
	m.off, m.fin, m.ctl = 0, h[0]&0x80 != 0, op >= 8
	switch op {
	case 1:
		m.text, m.over = true, false
		m.msg.Reset()
	case 2:
		m.text = false
	}
	m.left = l
	if l == 0 {
		m.frameEnd()
	}
}

func (m *WSMeter) payload(p []byte) {
	if m.ctl || !m.text || m.over {
		return
	}
	if m.msg.Len()+len(p) > maxLine {
		m.over = true
		m.msg = bytes.Buffer{}
		return
	}
	start := m.msg.Len()
	m.msg.Write(p)
	if m.masked {
		b := m.msg.Bytes()[start:]
		for j := range b {
			b[j] ^= m.mask[(m.off+uint64(j))%4]
		}
	}
	m.off += uint64(len(p))
}

func (m *WSMeter) frameEnd() {
	if m.ctl || !m.fin || !m.text {
		return
	}
	m.text = false
	if !m.over {
		m.message(m.msg.Bytes())
	}
	m.msg.Reset()
}

// message reads one server event.
func (m *WSMeter) message(b []byte) {
	var e struct {
		Type     string `json:"type"`
		Response *struct {
			Usage *wireUsage `json:"usage"`
		} `json:"response"`
	}
	if json.Unmarshal(b, &e) != nil {
		return
	}
	switch e.Type {
	case "response.created":
		m.open = true
	case "response.done":
		m.open = false
		if e.Response != nil && e.Response.Usage != nil {
			u := e.Response.Usage
			t := max(clamp(u.TotalTokens), clamp(u.InputTokens)+clamp(u.OutputTokens))
			m.total = min(m.total+t, maxTokens)
			m.reports++
		}
	}
}

// Cost is what the session costs when est was its estimate: the usage its
// response.done events reported, plus est for a response in progress at
// the end, at least floor. Unmetered (with a reason): frames clawd could
// not read, or no report at all; then at least the estimate.
func (m *WSMeter) Cost(est Estimate, floor int64) (tokens int64, unmetered bool, reason string) {
	tokens = m.total
	if m.open {
		tokens += est.Total()
	}
	if m.broken || m.reports == 0 {
		return min(max(tokens, est.Total(), floor), maxTokens), true, ReasonUpgrade
	}
	return min(max(tokens, floor), maxTokens), false, ""
}

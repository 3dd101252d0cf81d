package dns

import (
	"context"
	"encoding/binary"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzHandle feeds arbitrary bytes to the packet handler. Whatever arrives,
// the handler must not panic, and any answer it gives must parse, be a
// response, carry the query's ID and fit the client's UDP limit. The
// upstream is a stub answering every query with a CNAME chain, so the answer
// memory is exercised too. Seeds live in testdata/fuzz/FuzzHandle.
func FuzzHandle(f *testing.F) {
	for _, m := range seedMessages() {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	r, err := New(Config{Upstreams: []string{"127.0.0.1:53"}, MayResolve: denyBlocked, MaxEntries: 100})
	if err != nil {
		f.Fatal(err)
	}
	r.exchange = stubExchange

	f.Fuzz(func(t *testing.T, packet []byte) {
		out := r.handle(context.Background(), agent, packet, true, nil)
		if out == nil {
			return
		}
		m := new(mdns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if !m.Response {
			t.Error("answer is not a response")
		}
		if len(packet) < 2 || m.Id != binary.BigEndian.Uint16(packet) {
			t.Errorf("answer ID %d does not match the query", m.Id)
		}
		if len(out) > mdns.MaxMsgSize {
			t.Errorf("answer of %d bytes", len(out))
		}
	})
}

// stubExchange answers q with qname CNAME alias.test. A 192.0.2.9.
func stubExchange(_ context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	m := new(mdns.Msg).SetReply(q)
	name := q.Question[0].Name
	m.Answer = append(m.Answer,
		&mdns.CNAME{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeCNAME, Class: mdns.ClassINET, Ttl: 60}, Target: "alias.test."},
		&mdns.A{Hdr: mdns.RR_Header{Name: "alias.test.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 9}},
	)
	return m, nil
}

func seedMessages() []*mdns.Msg {
	a := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
	edns := new(mdns.Msg).SetQuestion("www.cdn.test.", mdns.TypeAAAA)
	edns.SetEdns0(4096, true)
	blocked := new(mdns.Msg).SetQuestion("x.blocked.test.", mdns.TypeA)
	two := a.Copy()
	two.Question = append(two.Question, two.Question[0])
	resp := a.Copy()
	resp.Response = true
	return []*mdns.Msg{a, edns, blocked, two, resp}
}

package dns

import (
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// Two different odd names in a CNAME chain both normalise to
// hostname.Invalid; they must not join into one link that carries the
// query name to an unrelated name's address.
func TestOddCNAMEsDoNotLink(t *testing.T) {
	var answer []mdns.RR
	for _, s := range []string{
		`q.test. 60 IN CNAME a\.x.test.`,
		`b\.y.test. 60 IN CNAME victim.test.`,
		`victim.test. 60 IN A 192.0.2.77`,
		`Q.Test. 60 IN A 192.0.2.78`,
	} {
		rr, err := mdns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		answer = append(answer, rr)
	}
	now := time.Unix(1e9, 0)
	s := newAnswerSet(100)
	s.record("q.test", answer, now, time.Minute)
	if s.has("q.test", netip.MustParseAddr("192.0.2.77"), now) || s.has("victim.test", netip.MustParseAddr("192.0.2.77"), now) {
		t.Error("an odd CNAME chain linked q.test to victim.test's address")
	}
	if !s.has("q.test", netip.MustParseAddr("192.0.2.78"), now) {
		t.Error("q.test's own A record (owner in upper case) was not recorded")
	}
}

package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/policy"
)

// The buffered-bytes budget counts bodies only. A held request's head is
// kept too (and cloned onto the approval card): with a ~1 MiB header and an
// empty body, every hold is admitted whatever the budget, so 16 held
// requests pin ~32 MiB (head + card copy) against a 2 MiB budget. Memory
// of held requests grows with the flood, the thing class 7 forbids.
func TestAttackHeldHeadsEscapeTheBudget(t *testing.T) {
	const n = 16
	up := newUpstream(t, false, false, nil)
	ap := &gateApprover{open: make(chan struct{}), holds: make(chan approval.Hold, n)}
	e := newEnv(t, newDecider(policy.Approve), func(c *Config) {
		c.Approver = ap
		c.MaxBufferedBytes, c.MaxBufferedBytesPerContainer = 2<<20, 2<<20
	})
	t.Cleanup(func() { close(ap.open) })
	big := strings.Repeat("a", 1<<20-100)
	for i := 0; i < n; i++ {
		c := e.dial(up.addr())
		fmt.Fprintf(c, "POST /upload/%d HTTP/1.1\r\nHost: api.example.com\r\nX-Pad: %s\r\nContent-Length: 1\r\n\r\nx", i, big)
	}
	held := 0
	var bytes int
	deadline := time.After(5 * time.Second)
	for held < n {
		select {
		case h := <-ap.holds:
			held++
			for _, vs := range h.Header {
				for _, v := range vs {
					bytes += len(v)
				}
			}
		case <-deadline:
			t.Logf("held %d", held)
			return
		}
	}
	t.Errorf("%d holds admitted, %d MiB of header kept in memory on approval cards, against a 2 MiB buffered-bytes budget", held, bytes>>20)
}

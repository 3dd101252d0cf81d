package proxy

import (
	"bufio"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// The container resolved strict.example to the address it dials, so clawd
// knows the destination is strict.example's server, whose rules deny
// DELETE and /admin/**. A request that names the address instead of the
// name (Host: the IP literal, or HTTP/1.0 with no Host at all) is decided
// as a request to "the address", which no name rule covers, and the
// default lets it through to strict.example's server: another name's (the
// address's) rule passes a destination that is a name with HTTP-level
// rules.
func TestAttackHostAsAddressLiteral(t *testing.T) {
	for _, pol := range []string{atkPolicy, atkPolicyCIDR} {
		t.Run(map[string]string{atkPolicy: "default-allow", atkPolicyCIDR: "cidr-allow"}[pol], func(t *testing.T) { attackHostAsAddress(t, pol) })
	}
}

func attackHostAsAddress(t *testing.T, pol string) {
	up := newUpstream(t, false, false, nil)
	ip := up.addr().Addr()
	p, err := policy.Parse([]byte(pol), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = p
		c.Names = fakeNames{"strict.example": ip}
	})
	send := func(req string) int {
		c := e.dial(up.addr())
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0
		}
		return resp.StatusCode
	}
	// Control: by name it is denied.
	if code := send("DELETE /admin/x HTTP/1.1\r\nHost: strict.example\r\n\r\n"); code != 403 {
		t.Fatalf("control: %d", code)
	}
	for name, req := range map[string]string{
		"host-ip":        fmt.Sprintf("DELETE /admin/x HTTP/1.1\r\nHost: %s\r\n\r\n", ip),
		"host-ip-port":   fmt.Sprintf("DELETE /admin/x HTTP/1.1\r\nHost: %s\r\n\r\n", up.addr()),
		"http10-no-host": "DELETE /admin/x HTTP/1.0\r\n\r\n",
	} {
		before := up.hits.Load()
		code := send(req)
		if up.hits.Load() != before {
			t.Errorf("%s: DELETE /admin/x reached strict.example's server (status %d)", name, code)
		}
	}
}

package daemon

import (
	"slices"
	"testing"
)

// Wildcard and loopback listens give the proxy their ports, so host
// addresses added after start (new containers' veths) are refused too.
func TestForbiddenPortsForWildcardAndLoopbackListens(t *testing.T) {
	got := forbiddenPorts("0.0.0.0:8787", "127.0.0.1:9787", "[::]:7000", "192.0.2.1:6000", "")
	for _, want := range []uint16{8787, 9787, 7000} {
		if !slices.Contains(got, want) {
			t.Errorf("forbiddenPorts = %v lacks %d", got, want)
		}
	}
	if slices.Contains(got, 6000) {
		t.Errorf("forbiddenPorts = %v includes a specific non-loopback listen", got)
	}
}

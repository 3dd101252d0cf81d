package harness

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// CleanupStale removes what a dead test process left behind and keeps what
// a live one (here: this process) still uses.
func TestCleanupStale(t *testing.T) {
	RequireRoot(t)
	mk := func(owner string) (id string) {
		id = shortID(8)
		if owner == "self" {
			if err := markOwned(id); err != nil {
				t.Fatal(err)
			}
		} else {
			os.MkdirAll(ownersDir, 0o700)
			// A PID that cannot exist (above pid_max) stands for a dead owner.
			os.WriteFile(filepath.Join(ownersDir, id), []byte("99999999 1\n"), 0o600)
		}
		ns, err := newNamedNetns("clawd-c-" + id)
		if err != nil {
			t.Fatal(err)
		}
		err = setupVeth(vethSpec{hostName: "cc" + id, nsPath: ns, nsName: "eth0",
			hostV4: netip.MustParsePrefix("203.0.113.253/30"), hostV6: netip.MustParsePrefix("2001:db8:c:fff::1/64"),
			innerV4: netip.MustParsePrefix("203.0.113.254/30"), innerV6: netip.MustParsePrefix("2001:db8:c:fff::2/64")})
		if err != nil {
			t.Fatal(err)
		}
		deleteLink("cc" + id) // both would use the same subnet; only existence matters here
		if err := allowForward(id, netip.MustParsePrefix("203.0.113.252/30")); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(os.TempDir(), tmpPrefix+id), 0o700)
		return id
	}
	dead := mk("dead")
	live := mk("self")
	t.Cleanup(func() { removeID(live); removeID(dead) })

	CleanupStale()

	exists := func(id string) []string {
		var have []string
		if _, err := os.Stat(filepath.Join(netnsDir, "clawd-c-"+id)); err == nil {
			have = append(have, "netns")
		}
		if _, err := os.Stat(filepath.Join(os.TempDir(), tmpPrefix+id)); err == nil {
			have = append(have, "dir")
		}
		if _, err := os.Stat(filepath.Join(ownersDir, id)); err == nil {
			have = append(have, "owner")
		}
		if _, err := net.InterfaceByName("cc" + id); err == nil {
			have = append(have, "link")
		}
		out, _ := execOut("iptables", "-w", "-S", "FORWARD")
		if contains(out, fmt.Sprintf(ruleTagFmt, id)) {
			have = append(have, "rule")
		}
		return have
	}
	if got := exists(dead); len(got) != 0 {
		t.Errorf("dead owner's %v survived CleanupStale", got)
	}
	if got := exists(live); len(got) != 4 { // netns, dir, owner, rule
		t.Errorf("live owner's resources: have %v, want netns, dir, owner and rule", got)
	}
}

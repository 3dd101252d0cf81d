package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
	"github.com/clawd-dev/clawd/internal/pgtest"
)

// startFleetHost starts a daemon as fleet host name against db: its own
// state dir, pin root, socket, API port and containerd namespace; the
// password from a file, as a mounted Secret gives it.
func startFleetHost(t *testing.T, ctd *harness.Containerd, pg *pgtest.Server, db, name string) *Clawd {
	t.Helper()
	pwDir := t.TempDir()
	pw := pg.PasswordFile(pwDir)
	return StartClawd(t, ctd, ClawdOpts{Extra: fmt.Sprintf(`namespaces: [fleet-%s]
fleet:
  database: %s
  password-file: %s
  host: %s
  heartbeat: 300ms
`, name, pg.DSN(db), pw, name)})
}

// fleetStates is host:state for each host one daemon lists, or the error.
func fleetStates(c *Clawd) string {
	fh, err := c.Client().FleetHosts(context.Background())
	if err != nil {
		return "error: " + err.Error()
	}
	var s []string
	for _, h := range fh.Hosts {
		s = append(s, h.Name+":"+h.State)
	}
	return strings.Join(s, " ")
}

// TestFleetHosts: three daemons on this machine as three hosts of one
// fleet; each sees all three; a killed one is shown down, a stopped one
// stopped; the database going away neither stops the daemons nor is
// hidden from fleet ls, and they re-join by themselves when it returns.
func TestFleetHosts(t *testing.T) {
	harness.RequireRoot(t)
	pg := pgtest.Start(t)
	db := pg.CreateDB(t)
	ctd := harness.SharedContainerd(t)
	a := startFleetHost(t, ctd, pg, db, "host-a")
	b := startFleetHost(t, ctd, pg, db, "host-b")
	c := startFleetHost(t, ctd, pg, db, "host-c")
	all := "host-a:up host-b:up host-c:up"
	for _, h := range []*Clawd{a, b, c} {
		eventually(t, "every host sees three hosts up", func() bool { return fleetStates(h) == all })
	}
	out := a.MustCLI("fleet", "ls")
	for _, want := range []string{"HOST", "host-a (this host)", "host-b", "host-c", daemon.Version} {
		if !strings.Contains(out, want) {
			t.Errorf("clawd fleet ls lacks %q:\n%s", want, out)
		}
	}
	if got := pg.SQL(t, db, "SELECT count(*) FROM clawd_schema_version"); got == "0" {
		t.Fatal("no schema version recorded")
	}

	// A crash: c's heartbeats stop; a and b show it down, themselves up.
	c.Kill()
	for _, h := range []*Clawd{a, b} {
		eventually(t, "host-c shown down", func() bool { return fleetStates(h) == "host-a:up host-b:up host-c:down" })
	}
	out = b.MustCLI("fleet", "ls")
	if !strings.Contains(out, "down") {
		t.Errorf("clawd fleet ls does not show the down host:\n%s", out)
	}
	// A clean stop is told apart from a crash.
	b.Stop()
	eventually(t, "host-b shown stopped", func() bool { return fleetStates(a) == "host-a:up host-b:stopped host-c:down" })

	// The database goes away: fleet ls says so (not a stale list), the
	// daemon keeps serving.
	pg.Stop()
	eventually(t, "fleet ls reports the outage", func() bool {
		return strings.Contains(fleetStates(a), "error: fleet database")
	})
	if _, err := a.Client().Status(context.Background()); err != nil {
		t.Fatalf("daemon stopped answering during the database outage: %v", err)
	}
	pg.Restart()
	// c restarts into its old name (it was down) while the DB is back.
	c.Start()
	eventually(t, "a and c up again after the outage", func() bool { return fleetStates(a) == "host-a:up host-b:stopped host-c:up" })

	// A host without fleet.database says it is not in a fleet.
	solo := StartClawd(t, ctd, ClawdOpts{})
	if out, err := solo.CLI("fleet", "ls"); err == nil || !strings.Contains(out, "not in a fleet") {
		t.Errorf("fleet ls on a single host = %v:\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(solo.StateDir, "approvals.db")); err != nil {
		t.Errorf("single host does not keep its bbolt store: %v", err)
	}
}

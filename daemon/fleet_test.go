package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/fleet"
)

func TestFleetConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(yaml string) (Config, error) {
		t.Helper()
		p := filepath.Join(dir, "clawd.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(newFlags(t, "--config", p, "--state-dir", dir))
	}
	// Unset: single host, nothing to validate.
	c, err := load("")
	if err != nil || c.Fleet != (FleetConfig{}) {
		t.Fatalf("no fleet: %+v, %v", c.Fleet, err)
	}
	c, err = load("fleet:\n  database: postgres://clawd@db.example/clawd\n  password-file: /run/secrets/pg\n  host: node-1\n  heartbeat: 2s\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (FleetConfig{Database: "postgres://clawd@db.example/clawd", PasswordFile: "/run/secrets/pg", Host: "node-1", Heartbeat: 2 * time.Second}); c.Fleet != want {
		t.Fatalf("fleet = %+v, want %+v", c.Fleet, want)
	}
	for yaml, want := range map[string]string{
		"fleet:\n  password-file: /f\n": "without fleet.database",
		"fleet:\n  database: postgres://x@h/d\n  password-file: f\n  password-secret: s\n": "not both",
		"fleet:\n  database: postgres://x@h/d\n  host: \"a b\"\n":                          "host name",
		"fleet:\n  database: postgres://x@h/d\n  heartbeat: -1s\n":                         "negative",
	} {
		if _, err := load(yaml); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", yaml, err, want)
		}
	}
	// The DSN can come from the environment (a Kubernetes Secret as env).
	t.Setenv("CLAWD_FLEET_DATABASE", "postgres://env@h/d")
	if c, err = load(""); err != nil || c.Fleet.Database != "postgres://env@h/d" {
		t.Fatalf("from env: %q, %v", c.Fleet.Database, err)
	}
}

func TestFleetPasswordFile(t *testing.T) {
	dir := t.TempDir()
	d := &Daemon{log: zap.NewNop(), cfg: Config{Fleet: FleetConfig{Database: "postgres://clawd@127.0.0.1:1/clawd", Host: "h"}}}
	for content, ok := range map[string]bool{"s3cret\n": true, "s3cret": true, "": false, "\n": false, "a\nb\n": false} {
		p := filepath.Join(dir, "pw")
		os.WriteFile(p, []byte(content), 0o600)
		d.cfg.Fleet.PasswordFile = p
		f, err := d.newFleet()
		if ok != (err == nil) {
			t.Errorf("password file %q: err = %v, want ok=%v", content, err, ok)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
		if f != nil {
			f.Close()
		}
	}
	d.cfg.Fleet.PasswordFile = filepath.Join(dir, "missing")
	if _, err := d.newFleet(); err == nil || !strings.Contains(err.Error(), "password-file") {
		t.Errorf("missing password file: %v", err)
	}
}

func TestFormatFleetHosts(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var b bytes.Buffer
	FormatFleetHosts(&b, FleetHosts{Self: "a", Hosts: []fleet.Host{
		{Name: "a", State: "up", Version: "1.2", Attachments: 3, LastSeen: now.Add(-2 * time.Second), Started: now.Add(-time.Hour), Self: true},
		{Name: "evil\x1b[2J", State: "down", Version: "x\ny", LastSeen: now.Add(-time.Minute), Started: now},
	}, Leases: []fleet.Lease{
		{Channel: "telegram", Holder: "a", Live: true}, {Channel: "slack\x1b", Holder: "a", Live: true},
		{Channel: "discord", Holder: "evil\x1b[2J", Live: false}, // expired: nobody runs it
	}}, now)
	out := b.String()
	for _, want := range []string{"a (this host)", "up", "1.2", "3", "2s ago", "down", "1m0s ago", "evil?[2J", "x?y", "RUNS", "slack?,telegram"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b") {
		t.Errorf("a control character reached the terminal:\n%q", out)
	}
	if strings.Contains(out, "discord") {
		t.Errorf("an expired lease is shown as run:\n%s", out)
	}
}

func TestFormatFleetApprovals(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mk := func(id, host, state string) fleet.Held {
		return fleet.Held{HeldOn: host, HostState: state, Approval: &approval.Approval{ID: id, Method: "POST", URL: "http://x/" + id, Created: now}}
	}
	var b bytes.Buffer
	FormatFleetApprovals(&b, []fleet.Held{mk("one", "zeta", "down"), mk("two", "alpha\x1b]0;x\a", "up"), mk("three", "zeta", "down")}, now)
	out := b.String()
	ia, iz := strings.Index(out, "alpha?]0;x? (up):"), strings.Index(out, "zeta (down):")
	if ia < 0 || iz < 0 || ia > iz || strings.Count(out, "zeta (down):") != 1 {
		t.Fatalf("hosts not grouped by name:\n%s", out)
	}
	if !strings.Contains(out[iz:], "one") || !strings.Contains(out[iz:], "three") || strings.Contains(out[iz:], "two") {
		t.Fatalf("approvals under the wrong host:\n%s", out)
	}
	if strings.ContainsAny(out, "\x1b\a") {
		t.Fatalf("control characters reached the terminal: %q", out)
	}
	b.Reset()
	FormatFleetApprovals(&b, nil, now)
	if !strings.Contains(b.String(), "no held requests") {
		t.Fatalf("empty: %q", b.String())
	}
}

package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/internal/pgtest"
)

// One real server for the package's tests; each subtest has its own database.
func TestFleet(t *testing.T) {
	s := pgtest.Start(t)
	t.Run("MigrateConcurrently", func(t *testing.T) { testMigrateConcurrently(t, s) })
	t.Run("MigrationIsAtomic", func(t *testing.T) { testMigrationIsAtomic(t, s) })
	t.Run("NewerSchemaRefused", func(t *testing.T) { testNewerSchemaRefused(t, s) })
	t.Run("Hosts", func(t *testing.T) { testHosts(t, s) })
	t.Run("NameInUse", func(t *testing.T) { testNameInUse(t, s) })
	t.Run("PasswordNeverShown", func(t *testing.T) { testPasswordNeverShown(t, s) })
	t.Run("DecideOnAnotherHost", func(t *testing.T) { testDecideOnAnotherHost(t, s) })
	t.Run("HolderDown", func(t *testing.T) { testHolderDown(t, s) })
	t.Run("WithdrawnNeverApplied", func(t *testing.T) { testWithdrawnNeverApplied(t, s) })
	t.Run("GrantSurvivesRestart", func(t *testing.T) { testGrantSurvivesRestart(t, s) })
	t.Run("PendingFleetWide", func(t *testing.T) { testPendingFleetWide(t, s) })
	t.Run("ShipAudit", func(t *testing.T) { testShipAudit(t, s) })
	t.Run("Leases", func(t *testing.T) { testLeases(t, s) })
	t.Run("GrantSync", func(t *testing.T) { testGrantSync(t, s) })
	t.Run("DatabaseDownHolds", func(t *testing.T) { testDatabaseDownHolds(t, s) })
	t.Run("StartDuringOutage", func(t *testing.T) { testStartDuringOutage(t, s) })
	t.Run("SpoolSurvivesRestart", func(t *testing.T) { testSpoolSurvivesRestart(t, s) })
	t.Run("SpoolUnreadable", func(t *testing.T) { testSpoolUnreadable(t, s) })
	t.Run("DatabaseOutage", func(t *testing.T) { testDatabaseOutage(t, s) }) // last: stops the server
}

func pool(t *testing.T, s *pgtest.Server, db string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), s.WithPassword(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func open(t *testing.T, s *pgtest.Server, db, host string, attachments int) *Fleet {
	t.Helper()
	f, err := Open(Config{Database: s.DSN(db), Password: s.Password, Host: host, Version: "v-" + host,
		Heartbeat: time.Second, Attachments: func() int { return attachments }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.pool.Close)
	return f
}

func testMigrateConcurrently(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	list := []string{
		`CREATE TABLE a (v int)`,
		`INSERT INTO a VALUES (1)`, // applied twice would show as two rows
		`CREATE TABLE b (v int)`,
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		p := pool(t, s, db)
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = Migrate(context.Background(), p, list) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("daemon %d: %v", i, err)
		}
	}
	if got := s.SQL(t, db, "SELECT count(*) FROM a"); got != "1" {
		t.Errorf("migration 2 applied %s times, want once", got)
	}
	if got := s.SQL(t, db, "SELECT string_agg(version::text, ',' ORDER BY version) FROM clawd_schema_version"); got != "1,2,3" {
		t.Errorf("versions = %q, want 1,2,3", got)
	}
	// Again: nothing to do, the version found is returned.
	before, err := Migrate(context.Background(), pool(t, s, db), list)
	if err != nil || before != 3 {
		t.Errorf("re-migrate = %d, %v; want 3, nil", before, err)
	}
}

func testMigrationIsAtomic(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	p := pool(t, s, db)
	bad := []string{`CREATE TABLE a (v int)`, `CREATE TABLE half (v int); SELECT no_such_function()`}
	_, err := Migrate(context.Background(), p, bad)
	if err == nil || !strings.Contains(err.Error(), "schema migration 2") {
		t.Fatalf("Migrate = %v, want the error of migration 2", err)
	}
	if got := s.SQL(t, db, "SELECT max(version) FROM clawd_schema_version"); got != "1" {
		t.Errorf("version after failed migration = %s, want 1", got)
	}
	if got := s.SQL(t, db, "SELECT count(*) FROM pg_tables WHERE tablename = 'half'"); got != "0" {
		t.Errorf("the failed migration left its table behind")
	}
	good := []string{bad[0], `CREATE TABLE half (v int)`}
	if _, err := Migrate(context.Background(), p, good); err != nil {
		t.Fatal(err)
	}
	if got := s.SQL(t, db, "SELECT max(version) FROM clawd_schema_version"); got != "2" {
		t.Errorf("version = %s, want 2", got)
	}
}

func testNewerSchemaRefused(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	p := pool(t, s, db)
	if _, err := Migrate(context.Background(), p, migrations); err != nil {
		t.Fatal(err)
	}
	s.SQL(t, db, fmt.Sprintf("INSERT INTO clawd_schema_version (version) VALUES (%d)", SchemaVersion+1))
	f := open(t, s, db, "old", 0)
	err := f.Beat(context.Background())
	if err == nil || !strings.Contains(err.Error(), "newer than this clawd") {
		t.Fatalf("Beat = %v, want the newer-schema refusal", err)
	}
	if _, err := f.Hosts(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Errorf("Hosts = %v, want ErrNotReady", err)
	}
	if got := s.SQL(t, db, "SELECT count(*) FROM clawd_hosts"); got != "0" {
		t.Errorf("an old clawd registered into a newer schema")
	}
}

func hostStates(t *testing.T, f *Fleet) string {
	t.Helper()
	hs, err := f.Hosts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var b []string
	for _, h := range hs {
		self := ""
		if h.Self {
			self = "*"
		}
		b = append(b, fmt.Sprintf("%s%s:%s:%s:%d", h.Name, self, h.State, h.Version, h.Attachments))
	}
	return strings.Join(b, " ")
}

func testHosts(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	ctx := context.Background()
	a, b, c := open(t, s, db, "host-a", 2), open(t, s, db, "host-b", 0), open(t, s, db, "host-c", 5)
	if _, err := a.Hosts(ctx); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Hosts before the first beat = %v, want ErrNotReady", err)
	}
	for _, f := range []*Fleet{a, b, c} {
		if err := f.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := hostStates(t, b), "host-a:up:v-host-a:2 host-b*:up:v-host-b:0 host-c:up:v-host-c:5"; got != want {
		t.Fatalf("hosts = %q, want %q", got, want)
	}
	// c stops heartbeating: its last beat is now older than MissedBeats
	// heartbeats (moved back in the database instead of waiting).
	s.SQL(t, db, "UPDATE clawd_hosts SET last_seen = last_seen - interval '4 seconds' WHERE name = 'host-c'")
	if got, want := hostStates(t, a), "host-a*:up:v-host-a:2 host-b:up:v-host-b:0 host-c:down:v-host-c:5"; got != want {
		t.Fatalf("hosts = %q, want %q", got, want)
	}
	// Two missed beats are not yet down.
	s.SQL(t, db, "UPDATE clawd_hosts SET last_seen = now() - interval '2 seconds' WHERE name = 'host-b'")
	if got := hostStates(t, a); !strings.Contains(got, "host-b:up") {
		t.Fatalf("host-b two beats late shown as %q, want up", got)
	}
	// A beat brings c back; a clean stop shows as stopped, not down.
	if err := c.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := hostStates(t, a); !strings.Contains(got, "host-c:stopped") {
		t.Fatalf("hosts = %q, want host-c stopped", got)
	}
	// Attachments follow the beats.
	a.cfg.Attachments = func() int { return 7 }
	if err := a.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if got := hostStates(t, b); !strings.Contains(got, "host-a:up:v-host-a:7") {
		t.Fatalf("hosts = %q, want host-a with 7 attachments", got)
	}
}

func testNameInUse(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	ctx := context.Background()
	first, second := open(t, s, db, "dup", 1), open(t, s, db, "dup", 9)
	if err := first.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	// A second daemon with the same name does not take over a live host.
	if err := second.Beat(ctx); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("second daemon's Beat = %v, want ErrNameInUse", err)
	}
	if got := s.SQL(t, db, "SELECT attachments FROM clawd_hosts WHERE name = 'dup'"); got != "1" {
		t.Fatalf("the refused daemon changed the row: attachments %s", got)
	}
	// Once the first is down, the name is free; the first, coming back,
	// finds its row taken and is refused in turn.
	s.SQL(t, db, "UPDATE clawd_hosts SET last_seen = now() - interval '1 hour'")
	if err := second.Beat(ctx); err != nil {
		t.Fatalf("takeover of a down host's name: %v", err)
	}
	if err := first.Beat(ctx); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("first daemon back: Beat = %v, want ErrNameInUse", err)
	}
	if got := s.SQL(t, db, "SELECT attachments FROM clawd_hosts WHERE name = 'dup'"); got != "9" {
		t.Fatalf("attachments = %s, want the second daemon's 9", got)
	}
	// A daemon's Close does not mark another instance's row stopped.
	first.Close()
	if got := s.SQL(t, db, "SELECT stopped IS NULL FROM clawd_hosts WHERE name = 'dup'"); got != "t" {
		t.Fatal("the refused daemon's Close marked the live host stopped")
	}
}

func testPasswordNeverShown(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	// In the URL: refused, and the refusal does not repeat it.
	_, err := Open(Config{Database: s.WithPassword(db), Host: "h"})
	if err == nil || strings.Contains(err.Error(), s.Password) || !strings.Contains(err.Error(), "password-file") {
		t.Fatalf("Open with a password in the URL = %v", err)
	}
	for _, dsn := range []string{
		strings.Replace(s.DSN(db), "?", "?password="+s.Password+"&", 1),
		"host=127.0.0.1 password=" + s.Password,
		"mysql://x@127.0.0.1/db",
	} {
		if _, err := Open(Config{Database: dsn, Host: "h"}); err == nil || strings.Contains(err.Error(), s.Password) {
			t.Errorf("Open(%q) = %v, want a refusal without the password", dsn, err)
		}
	}
	// PGPASSWORD of whoever runs clawd is not used.
	t.Setenv("PGPASSWORD", s.Password)
	core, logs := observer.New(zap.DebugLevel)
	f, err := Open(Config{Database: s.DSN(db), Password: "", Host: "h", Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Beat(context.Background()); err == nil {
		t.Fatal("connected with PGPASSWORD instead of the configured password")
	}
	f.Close()
	os.Unsetenv("PGPASSWORD")
	// A wrong password: the error, the log and Hosts' answer never show
	// the one configured.
	wrong := "Wr0ng-" + s.Password[:8]
	f, err = Open(Config{Database: s.DSN(db), Password: wrong, Host: "h", Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = f.Beat(context.Background())
	f.note(err)
	_, herr := f.Hosts(context.Background())
	if err == nil || herr == nil {
		t.Fatal("a wrong password connected")
	}
	all := err.Error() + herr.Error()
	for _, e := range logs.All() {
		all += e.Message + fmt.Sprint(e.ContextMap())
	}
	if strings.Contains(all, wrong) || strings.Contains(all, s.Password) {
		t.Fatalf("a password was shown: %s", all)
	}
	if !strings.Contains(all, "password authentication failed") {
		t.Fatalf("the error does not say why: %s", all)
	}
}

func testDatabaseOutage(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	ctx := context.Background()
	a, b := open(t, s, db, "a", 0), open(t, s, db, "b", 0)
	for _, f := range []*Fleet{a, b} {
		if err := f.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s.Stop()
	if err := a.Beat(ctx); err == nil {
		t.Fatal("Beat succeeded with the database stopped")
	}
	if _, err := a.Hosts(ctx); err == nil {
		t.Fatal("Hosts succeeded with the database stopped")
	}
	s.Restart()
	// The pool reconnects by itself; nothing to restart on the host.
	for _, f := range []*Fleet{a, b} {
		if err := f.Beat(ctx); err != nil {
			t.Fatalf("Beat after the database came back: %v", err)
		}
	}
	if got := hostStates(t, a); got != "a*:up:v-a:0 b:up:v-b:0" {
		t.Fatalf("hosts = %q", got)
	}
}

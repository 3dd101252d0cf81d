// Package fleet joins the clawd daemons of many hosts through one
// PostgreSQL database: enforcement stays on each host, what people share
// (the host registry now; approvals, grants, audit and channel leases
// next, see docs/fleet.md) lives in the database. It is switched on by
// fleet.database; without it nothing here runs and clawd keeps its bbolt
// state alone.
//
// The database is never on the enforcement path: the daemon starts, and
// its containers' traffic is decided by local policy, whether or not the
// database answers. Run connects, migrates and registers in the background
// and keeps retrying.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// DefaultHeartbeat is how often a host says it is alive; a host is shown
// as down after MissedBeats of its own heartbeats.
const (
	DefaultHeartbeat = 5 * time.Second
	MissedBeats      = 3
)

// Config configures a Fleet. Database and Host are required.
type Config struct {
	// Database is a postgres:// or postgresql:// URL without a password.
	Database string
	// Password is the database password ("" = none, e.g. a client
	// certificate or peer auth); the daemon reads it from a file or the
	// secret store. It never appears in logs or errors.
	Password string
	// Host is this host's name in the fleet (unique among live hosts).
	Host    string
	Version string
	// Heartbeat is how often this host updates its row; 0 = DefaultHeartbeat.
	Heartbeat time.Duration
	// Attachments reports the host's attached containers; nil = 0.
	Attachments func() int
	// Spool is the file keeping the approval writes the database did not
	// take (an outage) across a restart; "" = in memory only (catchup.go).
	Spool string
	Log   *zap.Logger
}

// Errors of Hosts and Run.
var (
	ErrNotReady  = errors.New("the fleet database has not answered yet")
	ErrNameInUse = errors.New("host name in use by another live clawd")
)

// Fleet is this host's membership of the fleet.
type Fleet struct {
	cfg      Config
	log      *zap.Logger
	pool     *pgxpool.Pool
	instance string // random per start: tells two daemons claiming one name apart

	up    atomic.Bool   // the last beat worked and no operation failed since (Store's breaker)
	kickC chan struct{} // wakes serveDecisions

	mu      sync.Mutex
	ready   bool  // migrated and registered
	lastErr error // of the last attempt, for status and fleet ls
	decider Decider
	waiters map[string]chan struct{} // forwarded decisions awaiting an answer, by key

	grantSync   func() error  // the Manager's SyncGrants (Store.OnGrants)
	grantsC     chan struct{} // wakes serveGrants
	apprChanged chan struct{} // closed and replaced when approval rows changed (card keepers)
	leases      sync.WaitGroup
	held        map[string]bool // channels whose lease this host holds

	recoverAt   time.Time                  // a start's recovery put off by an outage (Recover), until catchUp
	onRecovered func([]*approval.Approval) // audits what catchUp expired (the Manager's Recovered)

	spoolMu sync.Mutex          // held across PutApproval and each spooled write
	spool   map[string]*spooled // approval writes the database did not take, by ID
}

// Open checks the configuration and prepares the connection pool; it does
// not wait for the database (see Run).
func Open(cfg Config) (*Fleet, error) {
	if cfg.Host == "" {
		return nil, errors.New("fleet: host name is empty")
	}
	if err := ValidHostName(cfg.Host); err != nil {
		return nil, err
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Heartbeat < 100*time.Millisecond || cfg.Heartbeat > time.Hour {
		return nil, fmt.Errorf("fleet: heartbeat %s out of range (100ms to 1h)", cfg.Heartbeat)
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Attachments == nil {
		cfg.Attachments = func() int { return 0 }
	}
	pc, err := poolConfig(cfg.Database, cfg.Password)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("fleet: %s", redact(err.Error(), cfg.Password))
	}
	var b [12]byte
	rand.Read(b[:])
	f := &Fleet{cfg: cfg, log: cfg.Log, pool: pool, instance: hex.EncodeToString(b[:]),
		kickC: make(chan struct{}, 1), waiters: map[string]chan struct{}{},
		grantsC: make(chan struct{}, 1), apprChanged: make(chan struct{}), held: map[string]bool{},
		spool: map[string]*spooled{}}
	f.loadSpool()
	return f, nil
}

// poolConfig parses the DSN; a password in it is refused (config files and
// environments are read by more people than the secret store is).
func poolConfig(dsn, password string) (*pgxpool.Config, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" && u.Query().Get("host") == "" {
		return nil, errors.New("fleet: database must be a URL postgres://USER@HOST[:PORT]/DB[?sslmode=...]")
	}
	if _, set := u.User.Password(); set || u.Query().Has("password") {
		return nil, errors.New("fleet: database URL must not contain a password; use fleet.password-file or fleet.password-secret")
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("fleet: database URL: %s", redact(err.Error(), password))
	}
	// Only the configured password: not PGPASSWORD or a .pgpass file of
	// whoever runs clawd.
	pc.ConnConfig.Password = password
	pc.ConnConfig.Fallbacks = nil
	if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > 10*time.Second {
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pc.MaxConns = 4
	// Ping every connection taken from the pool (the default: only those
	// idle over a second): after a database restart the first use of a
	// pooled connection fails otherwise. Fleet traffic is light; one round
	// trip more is cheaper than a failed beat or decision.
	pc.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	pc.ConnConfig.RuntimeParams["application_name"] = "clawd"
	return pc, nil
}

// redact removes the password from an error text, should a driver ever
// quote it.
func redact(s, password string) string {
	if password == "" {
		return s
	}
	return strings.ReplaceAll(s, password, "[redacted]")
}

// ValidHostName: names are shown to people and used as keys; 1 to 63
// letters, digits, '.', '-' or '_'.
func ValidHostName(s string) error {
	if len(s) == 0 || len(s) > 63 {
		return fmt.Errorf("fleet: host name %q: want 1 to 63 characters", s)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("fleet: host name %q: only letters, digits, '.', '-' and '_'", s)
		}
	}
	return nil
}

// Name is this host's name in the fleet.
func (f *Fleet) Name() string { return f.cfg.Host }

// Run migrates the schema, registers this host and heartbeats until ctx
// ends. Until the first success it retries every heartbeat; errors are
// logged when they change, never fatal.
func (f *Fleet) Run(ctx context.Context) {
	go f.listen(ctx)
	go f.serveDecisions(ctx)
	go f.serveGrants(ctx)
	t := time.NewTicker(f.cfg.Heartbeat)
	defer t.Stop()
	for {
		err := f.Beat(ctx)
		if err == nil {
			// What an outage put off: the recovery of a start during it,
			// approvals written during it.
			err = f.catchUp(ctx)
		}
		f.note(err)
		f.kick()         // the poll backstop: decisions whose notification was lost
		f.kickGrants()   // and grants
		f.cardsChanged() // and approvals whose cards a lease holder keeps
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *Fleet) note(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if (err == nil) != (f.lastErr == nil) || err != nil && err.Error() != f.lastErr.Error() {
		if err != nil {
			f.log.Warn("fleet database", zap.Error(err))
		} else {
			f.log.Info("fleet database reachable", zap.String("host", f.cfg.Host))
		}
	}
	f.lastErr = err
}

// Beat does one step of Run: migrate and register until that succeeded
// once, then update this host's heartbeat.
func (f *Fleet) Beat(ctx context.Context) error {
	err := f.beat(ctx)
	if ctx.Err() == nil { // a beat cut short by shutdown says nothing of the database
		f.up.Store(err == nil)
	}
	return err
}

func (f *Fleet) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(f.cfg.Heartbeat, 5*time.Second))
	defer cancel()
	f.mu.Lock()
	ready := f.ready
	f.mu.Unlock()
	if !ready {
		if _, err := Migrate(ctx, f.pool, migrations); err != nil {
			return f.clean(err)
		}
		if err := f.register(ctx); err != nil {
			return f.clean(err)
		}
		f.mu.Lock()
		f.ready = true
		f.mu.Unlock()
		return nil
	}
	tag, err := f.pool.Exec(ctx, `UPDATE clawd_hosts SET last_seen = now(), attachments = $3, version = $4
		WHERE name = $1 AND instance = $2`, f.cfg.Host, f.instance, f.cfg.Attachments(), f.cfg.Version)
	if err != nil {
		return f.clean(err)
	}
	if tag.RowsAffected() == 0 {
		// Another daemon took the name while we were taken for down
		// (an outage longer than MissedBeats): register again, which
		// fails while it is alive.
		if err := f.register(ctx); err != nil {
			return f.clean(err)
		}
	}
	return nil
}

func (f *Fleet) clean(err error) error {
	if errors.Is(err, ErrNameInUse) {
		return err
	}
	return errors.New(redact(err.Error(), f.cfg.Password))
}

// register claims this host's row: a new name, the name of a host that is
// down or stopped, or our own.
func (f *Fleet) register(ctx context.Context) error {
	var got string
	err := f.pool.QueryRow(ctx, `INSERT INTO clawd_hosts AS h (name, instance, version, attachments, heartbeat_ms, started, last_seen)
		VALUES ($1, $2, $3, $4, $5, now(), now())
		ON CONFLICT (name) DO UPDATE SET instance = EXCLUDED.instance, version = EXCLUDED.version,
			attachments = EXCLUDED.attachments, heartbeat_ms = EXCLUDED.heartbeat_ms,
			started = now(), last_seen = now(), stopped = NULL
		WHERE h.instance = EXCLUDED.instance OR h.stopped IS NOT NULL
			OR h.last_seen < now() - make_interval(secs => h.heartbeat_ms * $6 / 1000.0)
		RETURNING instance`,
		f.cfg.Host, f.instance, f.cfg.Version, f.cfg.Attachments(), f.cfg.Heartbeat.Milliseconds(), MissedBeats).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %q is heartbeating from another daemon; give each host its own fleet.host", ErrNameInUse, f.cfg.Host)
	}
	if err != nil {
		return fmt.Errorf("register host: %w", err)
	}
	return nil
}

// Host is one host as `clawd fleet ls` shows it.
type Host struct {
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Attachments int       `json:"attachments"`
	Started     time.Time `json:"started"`
	LastSeen    time.Time `json:"last_seen"`
	// State: "up"; "down" (missed MissedBeats heartbeats: crashed, cut
	// off, or its database connection is); "stopped" (shut down cleanly).
	State string `json:"state"`
	Self  bool   `json:"self,omitempty"` // the host that answered
}

// Host states.
const (
	StateUp      = "up"
	StateDown    = "down"
	StateStopped = "stopped"
)

// Hosts lists the fleet's hosts by name. Up or down is judged by the
// database's clock against each host's own heartbeat, so hosts' clocks
// need not agree.
func (f *Fleet) Hosts(ctx context.Context) ([]Host, error) {
	f.mu.Lock()
	ready, lastErr := f.ready, f.lastErr
	f.mu.Unlock()
	if !ready {
		if lastErr != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotReady, lastErr)
		}
		return nil, ErrNotReady
	}
	rows, err := f.pool.Query(ctx, `SELECT name, version, attachments, started, last_seen,
			CASE WHEN stopped IS NOT NULL THEN 'stopped'
			     WHEN last_seen < now() - make_interval(secs => heartbeat_ms * $1 / 1000.0) THEN 'down'
			     ELSE 'up' END
		FROM clawd_hosts ORDER BY name`, MissedBeats)
	if err != nil {
		return nil, f.clean(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Host, error) {
		var h Host
		err := r.Scan(&h.Name, &h.Version, &h.Attachments, &h.Started, &h.LastSeen, &h.State)
		h.Self = h.Name == f.cfg.Host
		return h, err
	})
	if err != nil {
		return nil, f.clean(err)
	}
	return out, nil
}

// Close marks this host stopped (best effort, bounded) and closes the pool.
func (f *Fleet) Close() {
	// The channels this host ran stop first (their run contexts end with
	// the daemon's), then their leases are given up for another host to
	// take at once.
	done := make(chan struct{})
	go func() { f.leases.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		f.log.Warn("fleet: a leased channel did not stop within 5s")
	}
	f.mu.Lock()
	ready := f.ready
	f.mu.Unlock()
	if ready {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if _, err := f.pool.Exec(ctx, `UPDATE clawd_hosts SET stopped = now() WHERE name = $1 AND instance = $2`,
			f.cfg.Host, f.instance); err != nil {
			f.log.Warn("fleet: mark host stopped", zap.Error(f.clean(err)))
		}
		cancel()
	}
	f.pool.Close()
}

// Held is a pending approval of some host of the fleet.
type Held struct {
	HeldOn    string `json:"held_on"`    // the host holding the request: only it can release it
	HostState string `json:"host_state"` // that host's State
	*approval.Approval
}

// Pending lists the fleet's pending approvals, oldest first. Those of a
// down host stay listed (its holds are its own) with its state.
func (f *Fleet) Pending(ctx context.Context) ([]Held, error) {
	if !f.up.Load() {
		return nil, ErrDown
	}
	rows, err := f.pool.Query(ctx, `SELECT a.host, a.data,
			CASE WHEN h.name IS NULL OR h.stopped IS NOT NULL THEN 'stopped'
			     WHEN h.last_seen < now() - make_interval(secs => h.heartbeat_ms * $2 / 1000.0) THEN 'down'
			     ELSE 'up' END
		FROM clawd_approvals a LEFT JOIN clawd_hosts h ON h.name = a.host
		WHERE a.status = $1 ORDER BY a.created, a.id LIMIT 10000`, approval.Pending, MissedBeats)
	if err != nil {
		return nil, f.failed(err)
	}
	out := []Held{}
	var host, state string
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&host, &data, &state}, func() error {
		a, err := decode(data)
		if err != nil {
			return nil // an unreadable row is not shown, not fatal
		}
		out = append(out, Held{HeldOn: host, HostState: state, Approval: a})
		return nil
	})
	if err != nil {
		return nil, f.failed(err)
	}
	return out, nil
}

package fleet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// ErrDown is what store operations return, at once, while the database is
// taken for unreachable (from a failed operation until the next good
// heartbeat): the approval Manager calls its store under its lock, and a
// hanging database must not stall every hold on the host.
var ErrDown = errors.New("fleet database unreachable")

// opTimeout bounds one store operation.
const opTimeout = 2 * time.Second

// keepDecided is how long decided approvals stay in the database (as in
// the bbolt store).
const keepDecided = 7 * 24 * time.Hour

// Store is the fleet's approval.Store and approval.Forwarder: approvals
// and grants of every host in PostgreSQL, decisions on another host's
// approval passed to it. Serve gives it the Manager that judges decisions
// passed to this host.
type Store struct {
	f *Fleet
}

var (
	_ approval.Store     = (*Store)(nil)
	_ approval.Forwarder = (*Store)(nil)
)

// Store returns the fleet's approval store.
func (f *Fleet) Store() *Store { return &Store{f: f} }

// Decider judges decisions (the approval Manager).
type Decider interface {
	Decide(ctx context.Context, d approval.Decision) approval.Result
}

// Serve sets who judges the decisions other hosts pass to this one; until
// it is called they wait.
func (s *Store) Serve(d Decider) {
	s.f.mu.Lock()
	s.f.decider = d
	s.f.mu.Unlock()
	s.f.kick()
}

func (f *Fleet) op() (context.Context, context.CancelFunc, error) {
	if !f.up.Load() {
		return nil, nil, ErrDown
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	return ctx, cancel, nil
}

// failed notes an operation's error: anything but an error the server
// answered with means the database is taken for down until a good beat.
func (f *Fleet) failed(err error) error {
	if err == nil || errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	var pe *pgconn.PgError
	off := !errors.As(err, &pe)
	if off {
		f.up.Store(false)
	}
	return &dbError{msg: "fleet database: " + f.clean(err).Error(), offline: off}
}

// dbError is an operation's error, the password redacted; errors.Is(err,
// ErrDown) when the database did not answer (rather than refused).
type dbError struct {
	msg     string
	offline bool
}

func (e *dbError) Error() string        { return e.msg }
func (e *dbError) Is(target error) bool { return e.offline && target == ErrDown }

// stored is an approval as kept: Refs too (approval.Approval hides them
// from JSON), for card updates by the host that posted them.
type stored struct {
	*approval.Approval
	Refs map[string]string `json:"refs,omitempty"`
}

func decode(b []byte) (*approval.Approval, error) {
	r := stored{Approval: &approval.Approval{}}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	r.Approval.Refs = r.Refs
	return r.Approval, nil
}

func (s *Store) LinkKey() ([]byte, error) {
	ctx, cancel, err := s.f.op()
	if err != nil {
		// Started during an outage: a key of this run only (its links
		// verify on this host alone) rather than no start at all.
		s.f.log.Warn("fleet database unreachable at start: signed links of this run work on this host only")
		key := make([]byte, 32)
		rand.Read(key)
		return key, nil
	}
	defer cancel()
	key := make([]byte, 32)
	rand.Read(key)
	// One key for the fleet: a link signed by one host verifies on all.
	var got []byte
	err = s.f.pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO clawd_meta (key, value) VALUES ('link_key', $1) ON CONFLICT (key) DO NOTHING RETURNING value)
		SELECT value FROM ins UNION ALL SELECT value FROM clawd_meta WHERE key = 'link_key' LIMIT 1`, key).Scan(&got)
	if err != nil {
		return nil, s.f.failed(err)
	}
	if len(got) < 32 {
		return nil, errors.New("fleet database: link key too short")
	}
	return got, nil
}

func (s *Store) PutApproval(a *approval.Approval) error {
	v, err := json.Marshal(stored{Approval: a, Refs: a.Refs})
	if err != nil {
		return err
	}
	var decided *time.Time
	if !a.Decided.IsZero() {
		d := a.Decided
		decided = &d
	}
	f := s.f
	f.spoolMu.Lock()
	defer f.spoolMu.Unlock()
	err = s.putApproval(a, v, decided)
	switch {
	case err == nil:
		f.unspoolLocked(a.ID)
	case offline(err):
		// The database did not answer: kept, and written once it does
		// (catchup.go). The Manager logs the error.
		f.spoolPutLocked(a, v, decided)
	}
	return err
}

func (s *Store) putApproval(a *approval.Approval, v []byte, decided *time.Time) error {
	ctx, cancel, err := s.f.op()
	if err != nil {
		return err
	}
	defer cancel()
	// Upsert by ID, but only by the host that holds it: another host's row
	// is never overwritten (IDs are random; a collision is an attack).
	// The notification wakes the hosts holding channel leases, which post
	// and update the cards of Exclusive channels (cards.go).
	var n int
	err = s.f.pool.QueryRow(ctx, `WITH up AS (
			INSERT INTO clawd_approvals AS x (id, host, status, created, decided, data, run)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, decided = EXCLUDED.decided, data = EXCLUDED.data, run = EXCLUDED.run
			WHERE x.host = EXCLUDED.host RETURNING 1)
		SELECT count(*) FROM up WHERE pg_notify('clawd_approvals', $2)::text = ''`,
		a.ID, s.f.cfg.Host, a.Status, a.Created, decided, v, s.f.instance).Scan(&n)
	if err != nil {
		return s.f.failed(err)
	}
	if n == 0 {
		return fmt.Errorf("fleet database: approval %s belongs to another host", a.ID)
	}
	return nil
}

func (s *Store) GetApproval(id string) (*approval.Approval, error) {
	ctx, cancel, err := s.f.op()
	if err != nil {
		return nil, err
	}
	defer cancel()
	var v []byte
	err = s.f.pool.QueryRow(ctx, `SELECT data FROM clawd_approvals WHERE id = $1`, id).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, approval.ErrNotFound
	}
	if err != nil {
		return nil, s.f.failed(err)
	}
	return decode(v)
}

func (s *Store) PutGrant(g *approval.Grant) error {
	ctx, cancel, err := s.f.op()
	if err != nil {
		return err
	}
	defer cancel()
	v, err := json.Marshal(g)
	if err != nil {
		return err
	}
	// Other hosts LISTEN on clawd_grants and load the fleet's grants
	// (their poll every heartbeat is the backstop).
	_, err = s.f.pool.Exec(ctx, `WITH up AS (
			INSERT INTO clawd_grants (id, host, expires, data) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires, data = EXCLUDED.data RETURNING 1)
		SELECT pg_notify('clawd_grants', $2) FROM up`, g.ID, s.f.cfg.Host, g.Expires, v)
	return s.f.failed(err)
}

// Grants returns the fleet's grants (approval.GrantLister): the approval
// Manager's SyncGrants makes the unexpired ones its own (by its clock, as
// Recover; expired rows are deleted by the hosts' grant sweeps).
func (s *Store) Grants() ([]*approval.Grant, error) {
	ctx, cancel, err := s.f.op()
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.f.pool.Query(ctx, `SELECT data FROM clawd_grants ORDER BY expires LIMIT 100000`)
	if err != nil {
		return nil, s.f.failed(err)
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, s.f.failed(err)
	}
	out := make([]*approval.Grant, 0, len(datas))
	for _, v := range datas {
		var g approval.Grant
		if json.Unmarshal(v, &g) == nil {
			out = append(out, &g)
		}
	}
	return out, nil
}

// OnGrants sets what runs when the fleet's grants may have changed: on a
// notification from another host and every heartbeat (the Manager's
// SyncGrants).
func (s *Store) OnGrants(sync func() error) {
	s.f.mu.Lock()
	s.f.grantSync = sync
	s.f.mu.Unlock()
	s.f.kickGrants()
}

func (s *Store) DeleteGrant(id string) error {
	ctx, cancel, err := s.f.op()
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.f.pool.Exec(ctx, `WITH d AS (DELETE FROM clawd_grants WHERE id = $1 RETURNING 1)
		SELECT pg_notify('clawd_grants', $2) FROM d`, id, s.f.cfg.Host)
	return s.f.failed(err)
}

// Recover expires what this host left pending (other hosts' pending
// approvals stay theirs; a previous run's approvals still in the spool
// are written, the pending ones as expired), drops old decided approvals
// and expired grants, and returns the fleet's live grants: a grant
// applies wherever its container runs.
//
// Started during an outage, it returns nothing and puts the recovery off
// until the database answers (catchUp, after a good heartbeat): then the
// previous run's pending approvals are expired and passed to the
// OnRecovered hook to be audited, and the fleet's grants are loaded by
// the grant sync of every heartbeat (until then their requests are asked
// again: closed, not open).
func (s *Store) Recover(now time.Time) (stale []*approval.Approval, grants []*approval.Grant, err error) {
	ctx, cancel, err := s.f.op()
	if err != nil {
		s.f.putOff(now)
		return nil, nil, nil
	}
	defer cancel()
	var done map[string]*spooled
	err = pgx.BeginFunc(ctx, s.f.pool, func(tx pgx.Tx) error {
		var err error
		if stale, done, err = s.f.recoverTx(ctx, tx, now); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT data FROM clawd_grants ORDER BY expires`)
		if err != nil {
			return err
		}
		gs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return err
		}
		for _, v := range gs {
			var g approval.Grant
			if json.Unmarshal(v, &g) == nil {
				grants = append(grants, &g)
			}
		}
		return nil
	})
	if err != nil {
		if offline(s.f.failed(err)) {
			// Lost the database on the way: as a start during an outage.
			s.f.putOff(now)
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("fleet database: %w", s.f.clean(err))
	}
	s.f.forgetSpooled(done)
	return stale, grants, nil
}

// putOff notes that the recovery of a start waits for the database.
func (f *Fleet) putOff(now time.Time) {
	f.log.Warn("fleet database unreachable at start: the previous run's approvals are expired, and the fleet's grants loaded, once it answers")
	f.mu.Lock()
	f.recoverAt = now
	f.mu.Unlock()
}

func (s *Store) RecentDecided(n int) ([]*approval.Approval, error) {
	ctx, cancel, err := s.f.op()
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.f.pool.Query(ctx, `SELECT data FROM clawd_approvals WHERE status <> $1 ORDER BY decided DESC LIMIT $2`, approval.Pending, n)
	if err != nil {
		return nil, s.f.failed(err)
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, s.f.failed(err)
	}
	var out []*approval.Approval
	for _, v := range datas {
		if a, err := decode(v); err == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// Close is a no-op: the Fleet owns the pool (Fleet.Close).
func (s *Store) Close() error { return nil }

// Timeouts of a forwarded decision: how long the holding host has to take
// it up (after that it is withdrawn and never applied), and to answer
// once it has.
var (
	claimTimeout  = 10 * time.Second
	answerTimeout = 30 * time.Second
)

// Forward passes d to the host holding its approval, if that is another
// live host, and waits for its answer. ok is false when the decision is
// for this host to make: the approval is unknown, this host's, or ended
// (the Manager then answers from GetApproval), or the database is down
// (the Manager then says it could not read the approval).
func (s *Store) Forward(ctx context.Context, d approval.Decision) (approval.Result, bool) {
	f := s.f
	qctx, cancel, err := f.op()
	if err != nil {
		return approval.Result{}, false
	}
	defer cancel()
	var holder, state string
	err = f.pool.QueryRow(qctx, `SELECT a.host,
			CASE WHEN h.name IS NULL OR h.stopped IS NOT NULL THEN 'stopped'
			     WHEN h.last_seen < now() - make_interval(secs => h.heartbeat_ms * $3 / 1000.0) THEN 'down'
			     ELSE 'up' END
		FROM clawd_approvals a LEFT JOIN clawd_hosts h ON h.name = a.host
		WHERE a.id = $1 AND a.status = $2`, d.ID, approval.Pending, MissedBeats).Scan(&holder, &state)
	if err != nil {
		f.failed(err)
		return approval.Result{}, false
	}
	if holder == f.cfg.Host {
		return approval.Result{}, false
	}
	if state != StateUp {
		return approval.Result{Outcome: approval.ResultError, Message: fmt.Sprintf(
			"This request is held on host %s, which is %s: only it can release it; nothing changed.", holder, state)}, true
	}
	dec, err := json.Marshal(d)
	if err != nil {
		return approval.Result{Outcome: approval.ResultInvalid, Message: "Decision cannot be encoded."}, true
	}
	key := newKey()
	w := f.waiter(key)
	defer f.unwait(key)
	err = pgx.BeginFunc(qctx, f.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(qctx, `INSERT INTO clawd_decisions (id, approval_id, host, from_host, decision) VALUES ($1, $2, $3, $4, $5)`,
			key, d.ID, holder, f.cfg.Host, dec); err != nil {
			return err
		}
		_, err := tx.Exec(qctx, `SELECT pg_notify('clawd_decide', $1)`, holder)
		return err
	})
	if err != nil {
		f.failed(err)
		return approval.Result{Outcome: approval.ResultError, Message: "clawd could not pass the decision on (fleet database); try again."}, true
	}
	f.log.Info("decision passed to the holding host", zap.String("id", d.ID), zap.String("host", holder))
	claimBy := time.Now().Add(claimTimeout)
	answerBy := time.Now().Add(answerTimeout)
	poll := time.NewTicker(500 * time.Millisecond) // backstop for a lost notification
	defer poll.Stop()
	for {
		r, claimed, done := s.answer(key)
		if done {
			return r, true
		}
		now := time.Now()
		if !claimed && now.After(claimBy) {
			if s.withdraw(key) {
				return approval.Result{Outcome: approval.ResultError, Message: fmt.Sprintf(
					"Host %s did not take the decision up; it was withdrawn and nothing changed. Try again.", holder)}, true
			}
			// Taken up just now: its answer follows.
		}
		if now.After(answerBy) {
			return approval.Result{Outcome: approval.ResultError, Message: fmt.Sprintf(
				"Host %s took the decision up but has not answered; see clawd approvals there.", holder)}, true
		}
		select {
		case <-ctx.Done():
			// The asker went away; the holding host may still apply it.
			return approval.Result{Outcome: approval.ResultError, Message: "No answer from host " + holder + " yet."}, true
		case <-w:
		case <-poll.C:
		}
	}
}

// answer reads a forwarded decision's state.
func (s *Store) answer(key string) (r approval.Result, claimed, done bool) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var res []byte
	var cl *time.Time
	if err := s.f.pool.QueryRow(ctx, `SELECT claimed, result FROM clawd_decisions WHERE id = $1`, key).Scan(&cl, &res); err != nil {
		return r, false, false
	}
	if res == nil {
		return r, cl != nil, false
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return approval.Result{Outcome: approval.ResultError, Message: "unreadable answer from the holding host"}, true, true
	}
	return r, true, true
}

// withdraw cancels a forwarded decision nobody took up; false if it was.
func (s *Store) withdraw(key string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	tag, err := s.f.pool.Exec(ctx, `UPDATE clawd_decisions SET result = '{"Outcome":"error","Message":"withdrawn"}', answered = now()
		WHERE id = $1 AND claimed IS NULL AND result IS NULL`, key)
	return err == nil && tag.RowsAffected() == 1
}

func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}

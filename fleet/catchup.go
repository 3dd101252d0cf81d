package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/internal/atomicfile"
)

// Catching up after an outage. The approval Manager writes approvals
// through the Store; a write the database does not take (it is down) is
// kept, latest version per approval ID, in a spool: in memory, and in the
// file Config.Spool so a restart during the outage keeps it. After every
// good heartbeat the spool is written to clawd_approvals (upserts by ID:
// a retry or a restart never doubles a row, and an ended row is never put
// back to pending). A run that started during an outage does, once the
// database answers, the recovery a start with it up does (Recover): the
// previous run's pending rows of this host are expired and audited
// (Store.OnRecovered), its spooled approvals written (still pending ones
// as expired), old rows dropped; the fleet's grants are loaded by the
// grant sync of every heartbeat.

// maxSpool bounds the approvals kept for the database during an outage;
// past it a new approval is not kept for the database (its audit lines
// are, in the audit file) and that is logged.
const maxSpool = 10000

// spooled is one approval write the database did not take.
type spooled struct {
	Run     string          `json:"run"` // the Fleet.instance that wrote it
	Host    string          `json:"host"`
	Status  string          `json:"status"`
	Created time.Time       `json:"created"`
	Decided *time.Time      `json:"decided,omitempty"`
	Data    json.RawMessage `json:"data"`
}

// loadSpool reads the spool file of previous runs. An unreadable file is
// set aside (never silently overwritten) and said so.
func (f *Fleet) loadSpool() {
	p := f.cfg.Spool
	if p == "" {
		return
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var m map[string]*spooled
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		aside := p + ".unreadable"
		os.Rename(p, aside)
		f.log.Error("fleet: approvals spool unreadable, set aside; its approvals are not written to the database (the audit file has them)",
			zap.String("file", aside), zap.Error(err))
		return
	}
	for id, e := range m {
		if e == nil || e.Host != f.cfg.Host || e.Run == "" || len(f.spool) >= maxSpool {
			f.log.Warn("fleet: spooled approval dropped (another host name, or unreadable)", zap.String("id", id))
			continue
		}
		if _, err := decode(e.Data); err != nil {
			continue
		}
		f.spool[id] = e
	}
}

// saveSpoolLocked writes the spool file; callers hold spoolMu.
func (f *Fleet) saveSpoolLocked() {
	p := f.cfg.Spool
	if p == "" {
		return
	}
	if len(f.spool) == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.log.Warn("fleet: remove approvals spool", zap.Error(err))
		}
		return
	}
	b, err := json.Marshal(f.spool)
	if err == nil {
		err = atomicfile.WriteFile(p, b, 0o600)
	}
	if err != nil {
		f.log.Warn("fleet: write approvals spool (kept in memory)", zap.Error(err))
	}
}

// spoolPutLocked keeps an approval write the database did not take.
func (f *Fleet) spoolPutLocked(a *approval.Approval, data []byte, decided *time.Time) {
	if _, ok := f.spool[a.ID]; !ok && len(f.spool) >= maxSpool {
		f.log.Error("fleet: approvals spool full; this approval reaches the database only through its audit lines", zap.String("id", a.ID))
		return
	}
	f.spool[a.ID] = &spooled{Run: f.instance, Host: f.cfg.Host, Status: a.Status, Created: a.Created, Decided: decided, Data: data}
	f.saveSpoolLocked()
}

// unspoolLocked forgets an approval's spooled write (a newer one reached
// the database).
func (f *Fleet) unspoolLocked(id string) {
	if _, ok := f.spool[id]; ok {
		delete(f.spool, id)
		f.saveSpoolLocked()
	}
}

// Spooled is how many approval writes wait for the database.
func (f *Fleet) Spooled() int {
	f.spoolMu.Lock()
	defer f.spoolMu.Unlock()
	return len(f.spool)
}

// offline reports whether err (of op or failed) means the database did
// not answer, as opposed to refusing.
func offline(err error) bool { return errors.Is(err, ErrDown) }

// upsertSpooled writes one spooled approval: inserted, or replacing this
// host's row unless that row has ended otherwise (never back to
// pending). It reports whether a row was written.
func upsertSpooled(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id string, e *spooled) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `WITH up AS (
			INSERT INTO clawd_approvals AS x (id, host, status, created, decided, data, run)
			VALUES ($1, $2, $3, $4, $5, $6, $8)
			ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, decided = EXCLUDED.decided, data = EXCLUDED.data, run = EXCLUDED.run
			WHERE x.host = EXCLUDED.host AND (x.status = $7 OR x.status = EXCLUDED.status) RETURNING 1)
		SELECT count(*) FROM up WHERE pg_notify('clawd_approvals', $2)::text = ''`,
		id, e.Host, e.Status, e.Created, e.Decided, []byte(e.Data), approval.Pending, e.Run).Scan(&n)
	return n > 0, err
}

// recoverTx is the recovery of a start, in tx: this host's approvals that
// a previous run left pending (spooled, or in the table by another run)
// are expired, as of now; old decided approvals and expired grants dropped. It
// returns the approvals it expired and the spool entries it wrote.
func (f *Fleet) recoverTx(ctx context.Context, tx pgx.Tx, now time.Time) (stale []*approval.Approval, done map[string]*spooled, err error) {
	f.spoolMu.Lock()
	prev := map[string]*spooled{}
	for id, e := range f.spool {
		if e.Run != f.instance {
			prev[id] = e
		}
	}
	f.spoolMu.Unlock()
	for id, e := range prev {
		a, err := decode(e.Data)
		if err != nil {
			continue
		}
		w := *e
		expired := a.Status == approval.Pending
		if expired {
			a.Status, a.Decided, a.Reason = approval.Expired, now.UTC(), "clawd restarted"
			b, _ := json.Marshal(stored{Approval: a, Refs: a.Refs})
			d := a.Decided
			w.Status, w.Decided, w.Data = a.Status, &d, b
		}
		ok, err := upsertSpooled(ctx, tx, id, &w)
		if err != nil {
			return nil, nil, err
		}
		if ok && expired {
			stale = append(stale, a)
		}
	}
	rows, err := tx.Query(ctx, `SELECT data FROM clawd_approvals WHERE host = $1 AND status = $2 AND run IS DISTINCT FROM $3 FOR UPDATE`,
		f.cfg.Host, approval.Pending, f.instance)
	if err != nil {
		return nil, nil, err
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, nil, err
	}
	for _, v := range datas {
		a, err := decode(v)
		if err != nil {
			continue
		}
		a.Status, a.Decided, a.Reason = approval.Expired, now.UTC(), "clawd restarted"
		b, _ := json.Marshal(stored{Approval: a, Refs: a.Refs})
		if _, err := tx.Exec(ctx, `UPDATE clawd_approvals SET status = $2, decided = $3, data = $4 WHERE id = $1`,
			a.ID, a.Status, a.Decided, b); err != nil {
			return nil, nil, err
		}
		stale = append(stale, a)
	}
	if len(stale) > 0 { // the lease holders update their cards
		if _, err := tx.Exec(ctx, `SELECT pg_notify('clawd_approvals', $1)`, f.cfg.Host); err != nil {
			return nil, nil, err
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM clawd_approvals WHERE decided < $1`, now.Add(-keepDecided)); err != nil {
		return nil, nil, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM clawd_grants WHERE expires <= $1`, now); err != nil {
		return nil, nil, err
	}
	return stale, prev, nil
}

// forgetSpooled drops the spool entries a committed transaction wrote
// (unless replaced since).
func (f *Fleet) forgetSpooled(done map[string]*spooled) {
	if len(done) == 0 {
		return
	}
	f.spoolMu.Lock()
	defer f.spoolMu.Unlock()
	for id, e := range done {
		if f.spool[id] == e {
			delete(f.spool, id)
		}
	}
	f.saveSpoolLocked()
}

// OnRecovered sets what audits the approvals that a recovery put off by
// an outage at start expires later (the Manager's Recovered); the
// deferred recovery waits for it.
func (s *Store) OnRecovered(hook func([]*approval.Approval)) {
	s.f.mu.Lock()
	s.f.onRecovered = hook
	s.f.mu.Unlock()
}

// catchUp runs after a good heartbeat: the recovery a start during an
// outage put off, then this run's spooled approval writes.
func (f *Fleet) catchUp(ctx context.Context) error {
	f.mu.Lock()
	at, hook := f.recoverAt, f.onRecovered
	f.mu.Unlock()
	if !at.IsZero() && hook != nil {
		var stale []*approval.Approval
		var done map[string]*spooled
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := pgx.BeginFunc(cctx, f.pool, func(tx pgx.Tx) error {
			var err error
			stale, done, err = f.recoverTx(cctx, tx, at)
			return err
		})
		cancel()
		if err != nil {
			return f.failed(fmt.Errorf("recovery put off at start: %w", err))
		}
		f.forgetSpooled(done)
		f.mu.Lock()
		f.recoverAt = time.Time{}
		f.mu.Unlock()
		f.log.Info("fleet: recovery put off at start done", zap.Int("expired", len(stale)))
		hook(stale)
	}
	return f.flushSpool(ctx)
}

// flushSpool writes this run's spooled approvals, oldest first.
func (f *Fleet) flushSpool(ctx context.Context) error {
	f.spoolMu.Lock()
	var ids []string
	for id, e := range f.spool {
		if e.Run == f.instance {
			ids = append(ids, id)
		}
	}
	f.spoolMu.Unlock()
	for _, id := range ids {
		if err := f.flushOne(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// flushOne writes one spooled approval under spoolMu, so no write of the
// Manager (PutApproval) passes it.
func (f *Fleet) flushOne(ctx context.Context, id string) error {
	f.spoolMu.Lock()
	defer f.spoolMu.Unlock()
	e := f.spool[id]
	if e == nil || e.Run != f.instance {
		return nil
	}
	if !f.up.Load() {
		return ErrDown
	}
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ok, err := upsertSpooled(cctx, f.pool, id, e)
	if err != nil {
		if err = f.failed(err); offline(err) {
			return err
		}
		f.log.Warn("fleet: spooled approval refused by the database; dropped (its audit lines are shipped)", zap.String("id", id), zap.Error(f.clean(err)))
	} else if !ok {
		f.log.Warn("fleet: spooled approval not written: its row belongs to another host or has ended otherwise", zap.String("id", id))
	}
	delete(f.spool, id)
	f.saveSpoolLocked()
	return nil
}

package fleet

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Decisions between hosts: the host where a person decided writes a row to
// clawd_decisions and notifies clawd_decide with the holding host's name;
// the holder claims the row, judges it with its own Manager (every check
// stays there) and writes the answer, notifying clawd_decided with the
// row's key. Notifications only wake: a lost one (a dropped connection) is
// made up for by the poll every heartbeat, and by the forwarder's poll.

func (f *Fleet) kick() {
	select {
	case f.kickC <- struct{}{}:
	default:
	}
}

func (f *Fleet) waiter(key string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan struct{}, 1)
	f.waiters[key] = c
	return c
}

func (f *Fleet) unwait(key string) {
	f.mu.Lock()
	delete(f.waiters, key)
	f.mu.Unlock()
}

func (f *Fleet) wake(key string) {
	f.mu.Lock()
	c := f.waiters[key]
	f.mu.Unlock()
	if c != nil {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// listen keeps one connection LISTENing to both channels, reconnecting
// after a loss (and kicking, for what it missed meanwhile).
func (f *Fleet) listen(ctx context.Context) {
	for ctx.Err() == nil {
		if err := f.listenOnce(ctx); err != nil && ctx.Err() == nil {
			f.log.Debug("fleet listener", zap.Error(f.clean(err)))
		}
		select {
		case <-ctx.Done():
		case <-time.After(f.cfg.Heartbeat):
		}
	}
}

func (f *Fleet) listenOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, f.pool.Config().ConnConfig.Copy())
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, ch := range []string{"clawd_decide", "clawd_decided", "clawd_grants", "clawd_approvals"} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	f.kick()
	f.kickGrants()
	f.cardsChanged()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case "clawd_decide":
			if n.Payload == f.cfg.Host {
				f.kick()
			}
		case "clawd_decided":
			f.wake(n.Payload)
		case "clawd_grants":
			if n.Payload != f.cfg.Host { // our own are in the Manager already
				f.kickGrants()
			}
		case "clawd_approvals":
			f.cardsChanged()
		}
	}
}

// serveDecisions judges the decisions passed to this host, one at a time.
func (f *Fleet) serveDecisions(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kickC:
		}
		f.mu.Lock()
		d := f.decider
		f.mu.Unlock()
		if d == nil || !f.up.Load() {
			continue
		}
		if err := f.serveOpen(ctx, d); err != nil && ctx.Err() == nil {
			f.log.Warn("fleet: decisions passed to this host", zap.Error(f.failed(err)))
		}
	}
}

func (f *Fleet) serveOpen(ctx context.Context, dec Decider) error {
	qctx, cancel := context.WithTimeout(ctx, opTimeout)
	rows, err := f.pool.Query(qctx, `SELECT id FROM clawd_decisions WHERE host = $1 AND result IS NULL AND claimed IS NULL ORDER BY created`, f.cfg.Host)
	var keys []string
	if err == nil {
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	cancel()
	if err != nil {
		return err
	}
	for _, key := range keys {
		if err := f.serveOne(ctx, dec, key); err != nil {
			return err
		}
	}
	return nil
}

// serveOne claims one decision (exactly once: a withdrawn or claimed one
// is left alone), judges it and writes the answer.
func (f *Fleet) serveOne(ctx context.Context, dec Decider, key string) error {
	qctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var raw []byte
	var from string
	err := f.pool.QueryRow(qctx, `UPDATE clawd_decisions SET claimed = now()
		WHERE id = $1 AND host = $2 AND claimed IS NULL AND result IS NULL RETURNING decision, from_host`, key, f.cfg.Host).Scan(&raw, &from)
	if err == pgx.ErrNoRows {
		return nil
	}
	if err != nil {
		return err
	}
	var d approval.Decision
	var r approval.Result
	if err := json.Unmarshal(raw, &d); err != nil {
		r = approval.Result{Outcome: approval.ResultInvalid, Message: "Unreadable decision."}
	} else {
		dctx, dcancel := context.WithTimeout(ctx, opTimeout)
		r = dec.Decide(dctx, d)
		dcancel()
		f.log.Info("decision from another host", zap.String("id", d.ID), zap.String("from", from),
			zap.String("by", d.Identity()), zap.String("outcome", r.Outcome))
	}
	res, err := json.Marshal(r)
	if err != nil {
		return err
	}
	actx, acancel := context.WithTimeout(ctx, opTimeout)
	defer acancel()
	return pgx.BeginFunc(actx, f.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(actx, `UPDATE clawd_decisions SET result = $2, answered = now() WHERE id = $1`, key, res); err != nil {
			return err
		}
		_, err := tx.Exec(actx, `SELECT pg_notify('clawd_decided', $1)`, key)
		return err
	})
}

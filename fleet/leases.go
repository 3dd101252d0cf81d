package fleet

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
)

// Leases of single-consumer channels (approval.Exclusive: Telegram
// getUpdates, Slack Socket Mode, the Discord Gateway). One host at a time
// holds a channel's lease in clawd_leases and runs its listener; it also
// posts and updates that channel's cards for the approvals of every host
// (cards.go). Clicks it receives are decided as any: Decide, which passes
// them to the holding host (Forward).
//
// The lease is taken or renewed every heartbeat by one conditional
// statement judged by the database's clock: expires = now() + LeaseBeats
// heartbeats; another host takes it over only after it has expired. The
// holder stops the channel before that can happen: it counts its lease as
// ending LeaseBeats-1 heartbeats after it sent the renewal that
// succeeded (its own clock, which only needs to run at the database's
// rate), and stops the channel when a renewal fails past that point, when
// the database says another host holds it, or at that point itself should
// renewals hang. A stopped host's lease is given up at once (Close).

// LeaseBeats is a lease's length in heartbeats.
const LeaseBeats = MissedBeats

// RunExclusive runs ch's listener (run) and keeps ch's cards while this
// host holds ch's lease, taking it whenever it is free; it returns when
// ctx ends, after run and the card keeper have returned and the lease was
// given up.
func (f *Fleet) RunExclusive(ctx context.Context, ch approval.Channel, run func(ctx context.Context)) {
	f.leases.Add(1)
	defer f.leases.Done()
	name := ch.Name()
	hb := f.cfg.Heartbeat
	ttl := LeaseBeats * hb
	var (
		held     bool
		deadline time.Time // local: stop by then unless renewed
		stop     func()
	)
	start := func() {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{}, 2)
		go func() { run(rctx); done <- struct{}{} }()
		go func() { f.keepCards(rctx, ch); done <- struct{}{} }()
		stop = func() {
			cancel()
			slow := time.AfterFunc(hb, func() {
				f.log.Warn("channel slow to stop: another host may take it over before it has", zap.String("channel", name))
			})
			<-done
			<-done
			slow.Stop()
		}
		held = true
		f.setHeld(name, true)
		f.log.Info("channel lease taken: this host runs the channel", zap.String("channel", name))
	}
	halt := func(why string) {
		if !held {
			return
		}
		stop()
		held = false
		f.setHeld(name, false)
		f.log.Info("channel stopped on this host", zap.String("channel", name), zap.String("why", why))
	}
	t := time.NewTicker(hb)
	defer t.Stop()
	for {
		if f.leasable() {
			t0 := time.Now()
			qctx, cancel := context.WithTimeout(ctx, opTimeout)
			if held && deadline.Before(t0.Add(opTimeout)) {
				cancel()
				qctx, cancel = context.WithDeadline(ctx, deadline)
			}
			ok, err := f.tryLease(qctx, name, ttl)
			cancel()
			switch {
			case ctx.Err() != nil:
			case err == nil && ok:
				deadline = t0.Add(ttl - hb)
				if !held {
					start()
				}
			case err == nil && !ok:
				halt("another host holds the lease")
			case held && !time.Now().Before(deadline):
				halt("the lease could not be renewed: " + f.clean(err).Error())
			case err != nil:
				f.log.Debug("channel lease", zap.String("channel", name), zap.Error(f.clean(err)))
			}
		} else if held {
			halt("this host is not registered in the fleet under its name")
		}
		var expire <-chan time.Time
		et := time.NewTimer(time.Until(deadline))
		if held {
			expire = et.C
		}
		select {
		case <-ctx.Done():
			et.Stop()
			wasHeld := held
			halt("clawd is stopping")
			if wasHeld {
				f.releaseLease(name)
			}
			return
		case <-t.C:
		case <-expire:
			halt("the lease may have expired (no renewal in time)")
		}
		et.Stop()
	}
}

// leasable: registered under our name (a daemon that lost its name to
// another must not hold that name's leases, and stops what it runs).
func (f *Fleet) leasable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready && !errors.Is(f.lastErr, ErrNameInUse)
}

func (f *Fleet) setHeld(name string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		f.held[name] = true
	} else {
		delete(f.held, name)
	}
}

// Leases are the channels whose lease this host holds, by name.
func (f *Fleet) Leases() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.held))
	for n := range f.held {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// tryLease takes or renews the lease: ok when this host holds it now.
func (f *Fleet) tryLease(ctx context.Context, channel string, ttl time.Duration) (bool, error) {
	var holder string
	err := f.pool.QueryRow(ctx, `INSERT INTO clawd_leases AS l (channel, holder, expires)
		VALUES ($1, $2, now() + make_interval(secs => $3))
		ON CONFLICT (channel) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
		WHERE l.holder = EXCLUDED.holder OR l.expires < now()
		RETURNING holder`, channel, f.cfg.Host, ttl.Seconds()).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return holder == f.cfg.Host, nil
}

// releaseLease gives a stopped channel's lease up (best effort: otherwise
// it expires).
func (f *Fleet) releaseLease(channel string) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := f.pool.Exec(ctx, `UPDATE clawd_leases SET expires = now() - interval '1 millisecond'
		WHERE channel = $1 AND holder = $2`, channel, f.cfg.Host); err != nil {
		f.log.Debug("give up channel lease", zap.String("channel", channel), zap.Error(f.clean(err)))
	}
}

// Lease is one channel's lease as the database has it.
type Lease struct {
	Channel string    `json:"channel"`
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
	Live    bool      `json:"live"` // not expired by the database's clock
}

// AllLeases lists the fleet's channel leases by channel.
func (f *Fleet) AllLeases(ctx context.Context) ([]Lease, error) {
	if !f.up.Load() {
		return nil, ErrDown
	}
	rows, err := f.pool.Query(ctx, `SELECT channel, holder, expires, expires >= now() FROM clawd_leases ORDER BY channel`)
	if err != nil {
		return nil, f.failed(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Lease, error) {
		var l Lease
		err := r.Scan(&l.Channel, &l.Holder, &l.Expires, &l.Live)
		return l, err
	})
	if err != nil {
		return nil, f.failed(err)
	}
	return out, nil
}

package fleet

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the schema, in order: migration i brings the schema to
// version i+1. Never edit one that has shipped; append a new one.
var migrations = []string{
	// 1: the host registry.
	`CREATE TABLE clawd_hosts (
		name         text PRIMARY KEY,
		instance     text NOT NULL,
		version      text NOT NULL,
		attachments  integer NOT NULL DEFAULT 0,
		heartbeat_ms bigint NOT NULL,
		started      timestamptz NOT NULL,
		last_seen    timestamptz NOT NULL,
		stopped      timestamptz
	)`,
	// 2: approvals, grants, the link key, and decisions passed between
	// hosts (id is the forwarding host's idempotency key).
	`CREATE TABLE clawd_approvals (
		id      text PRIMARY KEY,
		host    text NOT NULL,
		status  text NOT NULL,
		created timestamptz NOT NULL,
		decided timestamptz,
		data    jsonb NOT NULL
	);
	CREATE INDEX clawd_approvals_host_status ON clawd_approvals (host, status);
	CREATE INDEX clawd_approvals_decided ON clawd_approvals (decided);
	CREATE TABLE clawd_grants (
		id      text PRIMARY KEY,
		host    text NOT NULL,
		expires timestamptz NOT NULL,
		data    jsonb NOT NULL
	);
	CREATE TABLE clawd_meta (
		key   text PRIMARY KEY,
		value bytea NOT NULL
	);
	CREATE TABLE clawd_decisions (
		id          text PRIMARY KEY,
		approval_id text NOT NULL,
		host        text NOT NULL,
		from_host   text NOT NULL,
		decision    jsonb NOT NULL,
		created     timestamptz NOT NULL DEFAULT now(),
		claimed     timestamptz,
		result      jsonb,
		answered    timestamptz
	);
	CREATE INDEX clawd_decisions_open ON clawd_decisions (host) WHERE result IS NULL`,
	// 3: the audit trail of every host, shipped from each host's file.
	// line is the exact bytes (a copy that clawd audit verify can check);
	// entry is it as jsonb, for queries (NULL for the rare line jsonb
	// refuses, such as one with an escaped NUL from an agent). The key includes the line's hash:
	// the same line again is a no-op, a chain restarted from seq 1 (a lost
	// state dir) is kept, not taken for a duplicate.
	`CREATE TABLE clawd_audit (
		host     text NOT NULL,
		seq      bigint NOT NULL,
		sha256   bytea NOT NULL,
		time     timestamptz,
		event    text,
		line     text NOT NULL,
		entry    jsonb,
		shipped  timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (host, seq, sha256)
	);
	CREATE INDEX clawd_audit_time ON clawd_audit (time)`,
	// 4: leases of single-consumer channels (Telegram polling, Slack
	// Socket Mode, the Discord Gateway): only holder runs the channel,
	// until expires by the database's clock; and the cards the holder
	// posted there for every host's approvals (ref as the channel gave
	// it, shown = fingerprint of what the card shows, final = updated
	// after the approval ended).
	`CREATE TABLE clawd_leases (
		channel text PRIMARY KEY,
		holder  text NOT NULL,
		expires timestamptz NOT NULL
	);
	CREATE TABLE clawd_cards (
		approval_id text NOT NULL REFERENCES clawd_approvals (id) ON DELETE CASCADE,
		channel     text NOT NULL,
		ref         text NOT NULL,
		posted_by   text NOT NULL,
		shown       text NOT NULL,
		final       boolean NOT NULL DEFAULT false,
		PRIMARY KEY (approval_id, channel)
	);
	CREATE INDEX clawd_cards_open ON clawd_cards (channel) WHERE NOT final`,
	// 5: the run (Fleet instance) that wrote an approval: a start expires
	// the pending approvals of this host's other runs, whenever it gets
	// to (a start during an outage: once the database answers), without
	// comparing clocks. NULL for rows written before.
	`ALTER TABLE clawd_approvals ADD COLUMN run text`,
}

// SchemaVersion is the schema version this clawd creates and expects.
var SchemaVersion = len(migrations)

// migrateLock is the advisory lock key under which the schema is changed
// (any constant unique to clawd: "clawd.mig" in ASCII).
const migrateLock int64 = 0x636c6177642e6d69

// Migrate brings the schema to len(list) and returns the version found
// before. Each migration runs in its own transaction with its version row,
// under a transaction-scoped advisory lock, so daemons migrating at once
// apply each step exactly once and a failed step leaves the previous
// version whole. A schema newer than list is refused: this clawd is older
// than one that already ran against the database.
func Migrate(ctx context.Context, pool *pgxpool.Pool, list []string) (int, error) {
	before := -1
	for {
		done, cur, err := migrateStep(ctx, pool, list)
		if before < 0 {
			before = cur
		}
		if err != nil || done {
			return before, err
		}
	}
}

func migrateStep(ctx context.Context, pool *pgxpool.Pool, list []string) (done bool, cur int, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS clawd_schema_version (
			version integer PRIMARY KEY,
			applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM clawd_schema_version`).Scan(&cur); err != nil {
			return err
		}
		switch {
		case cur > len(list):
			return fmt.Errorf("fleet: database schema is version %d, newer than this clawd's %d: upgrade clawd on this host", cur, len(list))
		case cur == len(list):
			done = true
			return nil
		}
		if _, err := tx.Exec(ctx, list[cur]); err != nil {
			return fmt.Errorf("fleet: schema migration %d: %w", cur+1, err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO clawd_schema_version (version) VALUES ($1)`, cur+1)
		return err
	})
	return done, cur, err
}

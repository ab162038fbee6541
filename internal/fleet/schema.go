package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/phonehome/phonehome/resolver"
)

// migrations are the fleet's tables, as the ordered steps that made them:
// a database at version v has had migrations[:v] applied. A step is never
// edited once released; a change is a new step at the end, and only adds,
// so that an older phonehome still reads the table.
//
// pause has a row per pause or resume ever set (the newest 30 days' and
// the newest of all): who set it (instance), when (set_at, its clock),
// until when (until_at; a resume is a row whose until_at is not after its
// set_at),
// which categories (none: all) and why (reason). The newest row by set_at
// is the one in force.
var migrations = []string{
	// 1: the pause.
	`CREATE TABLE pause (
		id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		instance   text NOT NULL,
		set_at     timestamptz NOT NULL,
		until_at   timestamptz NOT NULL,
		categories text[] NOT NULL DEFAULT '{}',
		reason     text NOT NULL DEFAULT ''
	);
	CREATE INDEX pause_newest ON pause (set_at DESC, id DESC);`,
}

// component is the fleet's row in schema_version, the table of each
// part's schema version in a database that phonehome's parts share.
const component = "fleet"

// migrateLock is the advisory lock (pg_advisory_xact_lock) under which an
// instance migrates, so that instances starting together take turns.
const migrateLock int64 = 0x70686f6e65686f6d // "phonehom"

// migrate brings the fleet's tables to the version this phonehome
// writes. It reads the version first and changes nothing when the tables
// are up to date, so a user that may only read and add rows works once
// the tables' owner has migrated: PostgreSQL checks CREATE on the schema
// before it sees that a table exists, even for CREATE TABLE IF NOT
// EXISTS. Behind, it migrates in one transaction under migrateLock. A
// database written by a newer phonehome is left alone: its steps only
// add.
func migrate(ctx context.Context, conn *pgx.Conn) error {
	v, err := schemaVersion(ctx, conn)
	if err != nil {
		return fmt.Errorf("reading the fleet's schema version: %w", err)
	}
	if v >= len(migrations) {
		return nil
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			component text PRIMARY KEY,
			version   integer NOT NULL
		)`); err != nil {
			return err
		}
		// Again, under the lock: another instance may have migrated
		// meanwhile.
		v, err := schemaVersion(ctx, tx)
		if err != nil || v >= len(migrations) {
			return err
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO schema_version (component, version) VALUES ($1, $2)
			ON CONFLICT (component) DO UPDATE SET version = excluded.version`, component, len(migrations))
		return err
	})
	if err != nil {
		return fmt.Errorf("migrating the fleet's tables: %w", err)
	}
	return nil
}

// querier is a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaVersion is the fleet's version in schema_version: 0 when neither
// the table nor the row is there.
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass('schema_version') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var v int
	err := q.QueryRow(ctx, "SELECT version FROM schema_version WHERE component = $1", component).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

// prune deletes the rows older than 30 days, but never the newest: it
// says what is in force. It needs DELETE on pause, which a user may lack;
// then the table keeps them (the caller says so and goes on).
func prune(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `DELETE FROM pause WHERE set_at < now() - interval '30 days'
		AND id <> (SELECT id FROM pause ORDER BY set_at DESC, id DESC LIMIT 1)`)
	return err
}

// row is a row of pause; id 0 is none (an empty table).
type row struct {
	id         int64
	instance   string
	setAt      time.Time
	until      time.Time
	categories []string
	reason     string
}

// rowKey tells rows apart, even in a database made anew (whose ids start
// again).
type rowKey struct {
	id    int64
	setAt time.Time
}

func (r row) key() rowKey { return rowKey{r.id, r.setAt} }

// pause is the row as the resolver takes it: nil for a resume, a pause
// that has ended, or none.
func (r row) pause(now time.Time) *resolver.Pause {
	if r.id == 0 || !r.until.After(now) {
		return nil
	}
	p := &resolver.Pause{Until: r.until, Reason: r.reason, By: r.instance}
	if len(r.categories) > 0 {
		p.Categories = r.categories
	}
	return p
}

// latest reads the row in force.
func latest(ctx context.Context, conn *pgx.Conn) (row, error) {
	var r row
	err := conn.QueryRow(ctx, `SELECT id, instance, set_at, until_at, categories, reason FROM pause
		ORDER BY set_at DESC, id DESC LIMIT 1`).Scan(&r.id, &r.instance, &r.setAt, &r.until, &r.categories, &r.reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return row{}, nil
	}
	return r, err
}

// insert writes a pause or resume and notifies every instance, in one
// statement (the notification goes out when it commits), and returns the
// row's key. One set while the database was reachable is made the newest
// row even if this instance's clock is behind the one that wrote the
// newest so far: a resume pressed a second after a pause must win. One
// set during an outage keeps its time, so that it loses to what others
// set since.
func insert(ctx context.Context, conn *pgx.Conn, instance string, pub *publication) (rowKey, error) {
	until, cats, reason := pub.setAt, []string{}, ""
	if p := pub.pause; p != nil {
		until, reason = p.Until, p.Reason
		cats = append(cats, p.Categories...)
	}
	var k rowKey
	err := conn.QueryRow(ctx, `WITH p AS (
			INSERT INTO pause (instance, set_at, until_at, categories, reason)
			SELECT $1, CASE WHEN $6 THEN greatest($2, (SELECT max(set_at) FROM pause) + interval '1 microsecond') ELSE $2 END, $3, $4, $5
			RETURNING id, set_at
		)
		SELECT id, set_at, pg_notify('`+channel+`', id::text) FROM p`,
		instance, pub.setAt, until, cats, reason, pub.online).Scan(&k.id, &k.setAt, nil)
	return k, err
}

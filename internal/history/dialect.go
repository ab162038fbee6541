package history

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// dialect is what differs between the two databases a history can be in:
// the embedded SQLite file (the default) and a PostgreSQL database that
// several instances share (history.dsn). The queries are written once, in
// SQLite's spelling with ? placeholders, and sql rewrites them:
//
//   - for PostgreSQL, ? becomes $1, $2, ..., and CROSS JOIN (SQLite's way
//     of fixing the join order) a plain JOIN, which PostgreSQL plans;
//   - every row of a shared database says which instance wrote it; the
//     file, which one instance writes, has no such column. So "{i}" and
//     "{x.i}" are "instance, " and "x.instance, " in PostgreSQL and
//     nothing in SQLite (column lists, keys, GROUP BY), "{'i'}" is this
//     instance's name as a literal and a comma in PostgreSQL, nothing in
//     SQLite (values), and "{own}" is "instance = 'name'" in PostgreSQL,
//     true in SQLite (the rows this instance wrote); "{seen}" is the
//     first and last seen per client and pattern (a shared database's
//     seen has a row per instance too).
//
// Where the two differ more than that (the schema, the size of the
// database, a list as one parameter, the lock that keeps two instances
// from maintaining the tables at once) a method says it.
type dialect struct {
	pg       bool
	instance string // this instance's name: history.instance, else the host name

	mu    sync.Mutex
	cache map[string]string // query as written → as sent
}

func newDialect(pg bool, instance string) *dialect {
	return &dialect{pg: pg, instance: instance, cache: map[string]string{}}
}

var instanceToken = regexp.MustCompile(`\{(\w+\.)?i\}`)

// sql is q as this database reads it. The rewrites are kept: a query is
// rewritten once.
func (d *dialect) sql(q string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.cache[q]; ok {
		return s
	}
	s := q
	if d.pg {
		s = instanceToken.ReplaceAllString(s, "${1}instance, ")
		s = strings.ReplaceAll(s, "{'i'}", quote(d.instance)+", ")
		s = strings.ReplaceAll(s, "{own}", "instance = "+quote(d.instance))
		s = strings.ReplaceAll(s, "CROSS JOIN", "JOIN")
		s = strings.ReplaceAll(s, "{seen}", "(SELECT client, pattern, min(first_ms) AS first_ms, max(last_ms) AS last_ms FROM seen GROUP BY 1, 2) AS seen")
		s = numberPlaceholders(s)
	} else {
		s = instanceToken.ReplaceAllString(s, "")
		s = strings.ReplaceAll(s, "{'i'}", "")
		s = strings.ReplaceAll(s, "{own}", "true")
		s = strings.ReplaceAll(s, "{seen}", "seen")
	}
	if len(d.cache) < 1000 { // the queries are constants, but for a few built from filters
		d.cache[q] = s
	}
	return s
}

// quote is s as an SQL string literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// numberPlaceholders turns each ? outside string literals into $1, $2, ...
func numberPlaceholders(q string) string {
	var b strings.Builder
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c == '\'':
			quoted = !quoted
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// in is a condition that col is one of values, with its one argument:
// a JSON array read by json_each in SQLite, an array in PostgreSQL.
func (d *dialect) in(col string, values any) (string, any) {
	if d.pg {
		return col + " = ANY(?)", values
	}
	list, _ := json.Marshal(values)
	return col + " IN (SELECT value FROM json_each(?))", string(list)
}

// instanceIs is a condition that the rows of alias (a table or "") are
// instance's, with its argument: in the file, every row is this
// instance's.
func (d *dialect) instanceIs(alias, instance string) (string, any) {
	if !d.pg {
		return quote(d.instance) + " = ?", instance
	}
	if alias != "" {
		alias += "."
	}
	return alias + "instance = ?", instance
}

// lockMaintenance keeps other instances from maintaining the shared
// tables (roll-up, retention) while tx does: a roll-up that two ran at
// once would count the same minutes twice. The lock is the transaction's.
func (d *dialect) lockMaintenance(ctx context.Context, tx *sql.Tx) error {
	if !d.pg {
		return nil // SQLite's write lock is the file's
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, maintainLock)
	return err
}

// Advisory lock keys of the shared database: migrateLock is the fleet's
// too (internal/fleet), so that the components create schema_version
// one at a time.
const (
	migrateLock  int64 = 0x70686f6e65686f6d // "phonehom"
	maintainLock int64 = 0x70682d6869737421 // "ph-hist!"
)

// pgMigrations are the schema of a shared database, as the ordered steps
// that made it, like migrations for the file (and never edited once
// released). The tables are the file's at schema 5 (see migrations),
// with the instance that wrote each row in its key: instances never
// write the same row, so no two writers wait for each other, and every
// read can be cut to one instance. counts are an instance's through their
// series, the events through their details.
var pgMigrations = []string{
	`CREATE TABLE series (
		id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		instance text NOT NULL,
		client   text NOT NULL,
		grp      text NOT NULL,
		pattern  text NOT NULL,
		category text NOT NULL,
		action   text NOT NULL,
		UNIQUE (instance, client, grp, pattern, category, action)
	);
	CREATE TABLE counts (
		span   bigint NOT NULL,
		bucket bigint NOT NULL,
		series bigint NOT NULL REFERENCES series (id),
		n      bigint NOT NULL,
		PRIMARY KEY (span, bucket, series)
	);
	CREATE INDEX counts_series ON counts (series, bucket) INCLUDE (n);
	CREATE TABLE seen (
		instance text NOT NULL,
		client   text NOT NULL,
		pattern  text NOT NULL,
		first_ms bigint NOT NULL,
		last_ms  bigint NOT NULL,
		PRIMARY KEY (instance, client, pattern)
	);
	CREATE INDEX seen_pattern ON seen (pattern, first_ms);
	CREATE INDEX seen_client ON seen (client, first_ms);
	CREATE TABLE totals (
		span     bigint NOT NULL,
		bucket   bigint NOT NULL,
		instance text NOT NULL,
		grp      text NOT NULL,
		category text NOT NULL,
		action   text NOT NULL,
		n        bigint NOT NULL,
		PRIMARY KEY (span, bucket, instance, grp, category, action)
	);
	CREATE TABLE pattern_totals (
		bucket   bigint NOT NULL,
		instance text NOT NULL,
		pattern  text NOT NULL,
		category text NOT NULL,
		action   text NOT NULL,
		n        bigint NOT NULL,
		PRIMARY KEY (bucket, instance, pattern, category, action)
	);
	CREATE TABLE event_details (
		id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		instance text NOT NULL,
		client   text NOT NULL,
		grp      text NOT NULL,
		name     text NOT NULL,
		type     text NOT NULL,
		action   text NOT NULL,
		category text NOT NULL,
		pattern  text NOT NULL,
		windows  text NOT NULL,
		family   text NOT NULL,
		cname    text NOT NULL,
		edition  text NOT NULL,
		rcode    text NOT NULL,
		source   text NOT NULL,
		last_ms  bigint NOT NULL,
		UNIQUE (instance, client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source)
	);
	CREATE TABLE event_blocks (
		id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		first_ms bigint NOT NULL,
		last_ms  bigint NOT NULL,
		n        bigint NOT NULL,
		data     bytea NOT NULL
	);
	CREATE INDEX event_blocks_first ON event_blocks (first_ms);
	CREATE TABLE client_names (
		instance   text NOT NULL,
		client     text NOT NULL,
		name       text NOT NULL,
		updated_ms bigint NOT NULL,
		PRIMARY KEY (instance, client)
	);`,
}

// pgComponent is the history's row in the shared schema_version table,
// which it shares with the fleet's pause (internal/fleet).
const pgComponent = "history"

// migratePG brings the shared database's history tables to the newest
// schema, in one transaction under the lock every instance takes to
// migrate: the first instance of a new version migrates, the others find
// it done. A database of a newer phonehome is refused.
func migratePG(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		component text PRIMARY KEY,
		version   integer NOT NULL
	)`); err != nil {
		return fmt.Errorf("creating schema_version: %w", err)
	}
	v, err := pgSchemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if v > len(pgMigrations) {
		return fmt.Errorf("the shared database's history has schema version %d; this phonehome knows up to %d: it was written by a newer phonehome", v, len(pgMigrations))
	}
	if v == len(pgMigrations) {
		return nil
	}
	for i := v; i < len(pgMigrations); i++ {
		if _, err := tx.ExecContext(ctx, pgMigrations[i]); err != nil {
			return fmt.Errorf("migrating the history schema to version %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (component, version) VALUES ($1, $2)
		ON CONFLICT (component) DO UPDATE SET version = excluded.version`, pgComponent, len(pgMigrations)); err != nil {
		return err
	}
	return tx.Commit()
}

// pgSchemaVersion is the history's schema version in the shared database,
// 0 before the first migration.
func pgSchemaVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var exists bool
	if err := q.QueryRowContext(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	err := q.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE component = $1`, pgComponent).Scan(&v)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	return v, nil
}

// pgWhere names the shared database in logs and errors: its user, host,
// port and database, never a password.
func pgWhere(conn string) string {
	c, err := pgconn.ParseConfig(conn)
	if err != nil {
		return "the shared database (history.dsn)"
	}
	u := url.URL{Scheme: "postgres", User: url.User(c.User), Host: net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), Path: "/" + c.Database}
	if strings.HasPrefix(c.Host, "/") { // a Unix socket's directory
		u.Host, u.RawQuery = "", url.Values{"host": {c.Host}, "port": {strconv.Itoa(int(c.Port))}}.Encode()
	}
	return u.String()
}

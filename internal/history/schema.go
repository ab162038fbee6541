package history

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are the schema, as the ordered steps that made it: a file at
// schema version v has had migrations[:v] applied. A step is never edited
// once released; a change is a new step at the end.
//
// The tables:
//
//   - series: one row per (client, group, pattern, category, action) ever
//     counted, so that counts rows are three integers. Clients are spelled
//     as the query log spells them (anonymized with anonymize_clients);
//     pattern is "" for a name outside the catalog and lists (counted only
//     with all_queries), whose category is "unlisted".
//   - counts: queries per series and time bucket. span is the bucket's
//     length in seconds: 60 for recent data, 3600 once rolled up; bucket is
//     the Unix time of its start. A time range is bucket >= from AND bucket
//     < to over both spans: roll-up moves whole hours, so they never
//     overlap.
//   - seen: first and last query (Unix milliseconds) per client and
//     pattern.
//   - events: the matches themselves, with the query log's fields; kept
//     for a shorter time than counts.
var migrations = []string{
	// 1: the first schema.
	`CREATE TABLE series (
		id       INTEGER PRIMARY KEY,
		client   TEXT NOT NULL,
		grp      TEXT NOT NULL,
		pattern  TEXT NOT NULL,
		category TEXT NOT NULL,
		action   TEXT NOT NULL,
		UNIQUE (client, grp, pattern, category, action)
	);
	CREATE TABLE counts (
		span   INTEGER NOT NULL,
		bucket INTEGER NOT NULL,
		series INTEGER NOT NULL REFERENCES series (id),
		n      INTEGER NOT NULL,
		PRIMARY KEY (span, bucket, series)
	) WITHOUT ROWID;
	CREATE TABLE seen (
		client   TEXT NOT NULL,
		pattern  TEXT NOT NULL,
		first_ms INTEGER NOT NULL,
		last_ms  INTEGER NOT NULL,
		PRIMARY KEY (client, pattern)
	) WITHOUT ROWID;
	CREATE TABLE events (
		id       INTEGER PRIMARY KEY,
		time_ms  INTEGER NOT NULL,
		client   TEXT NOT NULL,
		grp      TEXT NOT NULL,
		name     TEXT NOT NULL,
		type     TEXT NOT NULL,
		action   TEXT NOT NULL,
		category TEXT NOT NULL,
		pattern  TEXT NOT NULL
	);
	CREATE INDEX events_time ON events (time_ms);`,

	// 2: what the query log says of a match besides (windows, family,
	// cname, edition, rcode, source, duration), and the indexes that the
	// queries by series over time, by client over time and "new endpoints
	// since" need.
	`ALTER TABLE events ADD COLUMN windows TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN family TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN cname TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN edition TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN rcode TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT '';
	ALTER TABLE events ADD COLUMN duration REAL NOT NULL DEFAULT 0;
	CREATE INDEX counts_series ON counts (series, bucket);
	CREATE INDEX events_client ON events (client, time_ms);
	CREATE INDEX seen_pattern ON seen (pattern, first_ms);`,
}

// SchemaVersion is the schema this build writes.
var SchemaVersion = len(migrations)

// migrate brings the file's schema to the newest version, each step in a
// transaction of its own with the version it reaches. A file from a newer
// phonehome is refused: its schema may mean what this one cannot know.
func migrate(ctx context.Context, db *sql.DB) error {
	return migrateTo(ctx, db, len(migrations))
}

func migrateTo(ctx context.Context, db *sql.DB, to int) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("creating schema_version: %w", err)
	}
	v, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("the history file has schema version %d; this phonehome knows up to %d: it was written by a newer phonehome", v, len(migrations))
	}
	for ; v < to; v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, migrations[v])
		if err == nil {
			_, err = tx.ExecContext(ctx, `DELETE FROM schema_version`)
		}
		if err == nil {
			_, err = tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, v+1)
		}
		if err == nil {
			err = tx.Commit()
		}
		if err != nil {
			tx.Rollback()
			return fmt.Errorf("migrating the history schema to version %d: %w", v+1, err)
		}
	}
	return nil
}

// schemaVersion is the file's schema version, 0 for a new file.
func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	return v, nil
}

package history

import (
	"context"
	"database/sql"
	"fmt"
	"math"
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
//   - totals: the counts of every client together, per span, bucket,
//     group, category and action: minutes (span 60, until roll-up) and
//     hours (span 3600, from the start), written with counts. The time
//     series of a household (query.go) reads these.
//   - pattern_totals: the counts of every client together per hour,
//     pattern, category and action; the household's top endpoints.
//   - event_details and event_blocks (from schema 4, in place of
//     events): the events packed, a block of them to a row
//     (eventblocks.go). A detail is what events repeat: the query log's
//     fields but the time and the duration; last_ms is about the last
//     event that names it (an hour late at most: the writer updates it
//     once an hour), so that retention can tell the details no event
//     names any longer. An id is never used again (AUTOINCREMENT), so a
//     reader may keep what it read of a detail.
//   - client_names (from schema 5): each client's name, from the config
//     or its PTR record, as the query log spells the client; updated_ms
//     is when it was last known to be its name (rewritten hourly while
//     it is), so that rows of machines gone for the retention are
//     dropped. Readers join it to what they list (names.go).
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

	// 3: the totals of every client, written beside counts, so that a
	// household's time series and top endpoints over a month read
	// thousands of rows, not millions; and counts_series again with n in
	// it, so that a client's counts are read from the index alone.
	`CREATE TABLE totals (
		span     INTEGER NOT NULL,
		bucket   INTEGER NOT NULL,
		grp      TEXT NOT NULL,
		category TEXT NOT NULL,
		action   TEXT NOT NULL,
		n        INTEGER NOT NULL,
		PRIMARY KEY (span, bucket, grp, category, action)
	) WITHOUT ROWID;
	CREATE TABLE pattern_totals (
		bucket   INTEGER NOT NULL,
		pattern  TEXT NOT NULL,
		category TEXT NOT NULL,
		action   TEXT NOT NULL,
		n        INTEGER NOT NULL,
		PRIMARY KEY (bucket, pattern, category, action)
	) WITHOUT ROWID;
	INSERT INTO totals (span, bucket, grp, category, action, n)
		SELECT 3600, c.bucket - c.bucket % 3600, s.grp, s.category, s.action, sum(c.n)
		FROM counts c JOIN series s ON s.id = c.series GROUP BY 2, 3, 4, 5;
	INSERT INTO totals (span, bucket, grp, category, action, n)
		SELECT 60, c.bucket, s.grp, s.category, s.action, sum(c.n)
		FROM counts c JOIN series s ON s.id = c.series WHERE c.span = 60 GROUP BY 2, 3, 4, 5;
	INSERT INTO pattern_totals (bucket, pattern, category, action, n)
		SELECT c.bucket - c.bucket % 3600, s.pattern, s.category, s.action, sum(c.n)
		FROM counts c JOIN series s ON s.id = c.series WHERE s.pattern <> '' GROUP BY 1, 2, 3, 4;
	DROP INDEX counts_series;
	CREATE INDEX counts_series ON counts (series, bucket, n);`,

	// 4: the events packed in blocks, a week of a busy household in a
	// twenty-fifth of the space (eventblocks.go); packEvents moves the
	// events of schema 3 into them and drops their table.
	`CREATE TABLE event_details (
		id       INTEGER PRIMARY KEY AUTOINCREMENT,
		client   TEXT NOT NULL,
		grp      TEXT NOT NULL,
		name     TEXT NOT NULL,
		type     TEXT NOT NULL,
		action   TEXT NOT NULL,
		category TEXT NOT NULL,
		pattern  TEXT NOT NULL,
		windows  TEXT NOT NULL,
		family   TEXT NOT NULL,
		cname    TEXT NOT NULL,
		edition  TEXT NOT NULL,
		rcode    TEXT NOT NULL,
		source   TEXT NOT NULL,
		last_ms  INTEGER NOT NULL,
		UNIQUE (client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source)
	);
	CREATE TABLE event_blocks (
		id       INTEGER PRIMARY KEY,
		first_ms INTEGER NOT NULL,
		last_ms  INTEGER NOT NULL,
		n        INTEGER NOT NULL,
		data     BLOB NOT NULL
	);
	CREATE INDEX event_blocks_first ON event_blocks (first_ms);`,

	// 5: machines' names (internal/clientnames), written by names.go.
	`CREATE TABLE client_names (
		client     TEXT PRIMARY KEY,
		name       TEXT NOT NULL,
		updated_ms INTEGER NOT NULL
	) WITHOUT ROWID;`,
}

// migrationCode is what SQL cannot do of a migration: by the version the
// step reaches, a function run after the step's SQL, in its transaction.
var migrationCode = map[int]func(context.Context, *sql.Tx) error{
	4: packEvents,
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
		if code := migrationCode[v+1]; err == nil && code != nil {
			err = code(ctx, tx)
		}
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

// packEvents moves the events of schema 3, one row each, into blocks, and
// drops their table. It reads them a page at a time, in time order.
func packEvents(ctx context.Context, tx *sql.Tx) error {
	detail, err := prepareDetails(ctx, tx, newDialect(false, ""))
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range []*sql.Stmt{detail.find, detail.insert, detail.stamp} {
			if s != nil {
				s.Close()
			}
		}
	}()
	insert, err := tx.PrepareContext(ctx, insertBlock)
	if err != nil {
		return err
	}
	defer insert.Close()
	details := newDetailCache()
	const pageSize = 10_000
	after, afterID := int64(math.MinInt64), int64(0)
	for {
		var page []packedEvent
		var ds []eventDetail
		err := func() error {
			rows, err := tx.QueryContext(ctx, `SELECT id, time_ms, client, grp, name, type, action, category, pattern, windows, family, cname,
				edition, rcode, source, duration FROM events WHERE time_ms >= ? AND (time_ms > ? OR id > ?) ORDER BY time_ms, id LIMIT ?`,
				after, after, afterID, pageSize)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var d eventDetail
				var seconds float64
				if err := rows.Scan(&afterID, &after, &d.client, &d.group, &d.name, &d.qtype, &d.action, &d.category, &d.pattern,
					&d.windows, &d.family, &d.cname, &d.edition, &d.rcode, &d.source, &seconds); err != nil {
					return err
				}
				page = append(page, packedEvent{ms: after, us: max(0, int64(math.Round(seconds*1e6)))})
				ds = append(ds, d)
			}
			return rows.Err()
		}()
		for i := range page {
			if err == nil {
				page[i].detail, err = details.ref(ctx, detail, ds[i], page[i].ms)
			}
		}
		if err == nil {
			_, err = writeBlocks(ctx, insert, page)
		}
		if err != nil {
			return fmt.Errorf("moving the events into blocks: %w", err)
		}
		details.commit()
		if len(page) < pageSize {
			break
		}
	}
	_, err = tx.ExecContext(ctx, `DROP TABLE events`)
	return err
}

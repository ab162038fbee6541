package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// RollupAfter is the age past which minute counts become hour counts.
const RollupAfter = 48 * time.Hour

// maintain rolls minute counts older than RollupAfter up into hours,
// deletes what is past its retention, and keeps the file under max_size.
func (s *Store) maintain() error {
	if s.db == nil {
		return errors.New("history: not open")
	}
	ctx := context.Background()
	cfg := s.cfg.Load()
	now := s.now()
	if err := s.rollup(ctx, now); err != nil {
		return err
	}
	if err := s.expire(ctx, now, cfg); err != nil {
		return err
	}
	return s.enforceSize(ctx)
}

// rollup turns the minute rows of every whole hour that ended more than
// RollupAfter ago into one hour row per series, in one transaction: a
// query over any time range sees each query once, before and after.
func (s *Store) rollup(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-RollupAfter).Truncate(time.Hour).Unix()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.d.lockMaintenance(ctx, tx); err != nil {
		return fmt.Errorf("history: rolling up: %w", err)
	}
	// "WHERE true" tells SQLite's parser that ON CONFLICT belongs to the
	// INSERT, not to the SELECT's join.
	if _, err := tx.ExecContext(ctx, s.d.sql(`INSERT INTO counts (span, bucket, series, n)
		SELECT CAST(? AS BIGINT), bucket - bucket % ?, series, sum(n) FROM counts WHERE span = ? AND bucket < ? AND true
		GROUP BY 2, 3
		ON CONFLICT (span, bucket, series) DO UPDATE SET n = counts.n + excluded.n`),
		hourSpan, hourSpan, minuteSpan, cutoff); err != nil {
		return fmt.Errorf("history: rolling up: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.d.sql(`DELETE FROM counts WHERE span = ? AND bucket < ?`), minuteSpan, cutoff); err != nil {
		return fmt.Errorf("history: rolling up: %w", err)
	}
	// The totals' hours were written with their minutes: the minutes go.
	if _, err := tx.ExecContext(ctx, s.d.sql(`DELETE FROM totals WHERE span = ? AND bucket < ?`), minuteSpan, cutoff); err != nil {
		return fmt.Errorf("history: rolling up: %w", err)
	}
	return tx.Commit()
}

// expire deletes counts and first/last-seen rows older than retention,
// events older than events_retention, series no count uses and event
// details no event names.
func (s *Store) expire(ctx context.Context, now time.Time, cfg *Config) error {
	counts := now.Add(-time.Duration(cfg.Retention))
	events := now.Add(-time.Duration(cfg.EventsRetention))
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.d.lockMaintenance(ctx, tx); err != nil {
		return fmt.Errorf("history: retention: %w", err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		// A bucket is kept while any of it is within the retention; one
		// statement per span, so that each is a range of the primary key.
		{`DELETE FROM counts WHERE span = 60 AND bucket <= ?`, []any{counts.Unix() - minuteSpan}},
		{`DELETE FROM counts WHERE span = 3600 AND bucket <= ?`, []any{counts.Unix() - hourSpan}},
		{`DELETE FROM totals WHERE span = 60 AND bucket <= ?`, []any{counts.Unix() - minuteSpan}},
		{`DELETE FROM totals WHERE span = 3600 AND bucket <= ?`, []any{counts.Unix() - hourSpan}},
		{`DELETE FROM pattern_totals WHERE bucket <= ?`, []any{counts.Unix() - hourSpan}},
		{`DELETE FROM seen WHERE last_ms < ?`, []any{counts.UnixMilli()}},
		// A block of events goes once its last event is past the
		// retention: an event may stay up to blockSpan longer.
		{`DELETE FROM event_blocks WHERE first_ms < ? AND last_ms < ?`, []any{events.UnixMilli(), events.UnixMilli()}},
	} {
		if _, err := tx.ExecContext(ctx, s.d.sql(q.sql), q.args...); err != nil {
			return fmt.Errorf("history: retention: %w", err)
		}
	}
	if err := dropUnused(ctx, tx, s.d); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	clear(s.series) // some of them may be gone
	s.details.forget()
	return nil
}

// dropUnused deletes the series that no count row uses, and the event
// details that no event names: those whose last_ms is more than
// detailStamp before the oldest event. In a shared database it deletes
// only this instance's, which only its writer, whose memory of them it
// clears, may be about to use again.
func dropUnused(ctx context.Context, tx *sql.Tx, d *dialect) error {
	if _, err := tx.ExecContext(ctx, d.sql(`DELETE FROM series WHERE {own} AND NOT EXISTS (SELECT 1 FROM counts WHERE counts.series = series.id)`)); err != nil {
		return fmt.Errorf("history: deleting unused series: %w", err)
	}
	if _, err := tx.ExecContext(ctx, d.sql(`DELETE FROM event_details WHERE {own} AND last_ms < coalesce((SELECT min(first_ms) FROM event_blocks), `+never+`) - ?`),
		detailStamp); err != nil {
		return fmt.Errorf("history: deleting unused event details: %w", err)
	}
	return nil
}

// pages reads the file's page size, page count and free pages.
func (s *Store) pages(ctx context.Context) (size, count, free int64, err error) {
	for _, p := range []struct {
		pragma string
		v      *int64
	}{{"page_size", &size}, {"page_count", &count}, {"freelist_count", &free}} {
		if err = s.db.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(p.v); err != nil {
			return
		}
	}
	return
}

// enforceSize keeps the file under max_size: past it, it deletes the
// oldest events, then (with no event left) the oldest counts, until the
// pages in use come to 90% of the bound, and gives the freed pages back to
// the file system. Free pages left by retention are given back too once
// they are a quarter of the file.
func (s *Store) enforceSize(ctx context.Context) error {
	if s.d.pg {
		return nil // a shared database's size is its administrator's: retention bounds it
	}
	limit := int64(s.cfg.Load().MaxSize)
	over := fileSize(s.path) > limit
	if over {
		// The WAL counts against the bound: fold it into the file first.
		if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			return fmt.Errorf("history: checkpoint: %w", err)
		}
	}
	target := limit / 10 * 9
	deleted := false
	for range 1000 {
		size, count, free, err := s.pages(ctx)
		if err != nil {
			return fmt.Errorf("history: reading the file's size: %w", err)
		}
		used := (count - free) * size
		if !over || used <= target {
			break
		}
		// Delete a share of the rows a little larger than the share of
		// pages to free, at least a block of events or 100 rows of
		// counts; then look again.
		share := float64(used-target)/float64(used)*1.1 + 0.001
		n, err := s.deleteOldest(ctx, `event_blocks`, `first_ms`, share, 1)
		if err == nil && n == 0 {
			n, err = s.deleteOldest(ctx, `counts`, `bucket`, share, 100)
			if err == nil && n > 0 {
				err = trimTotals(ctx, s.db, s.d)
			}
		}
		if err != nil {
			return fmt.Errorf("history: deleting the oldest rows to stay under max_size: %w", err)
		}
		if n == 0 {
			break // nothing left but series and first seen
		}
		deleted = true
	}
	if deleted {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, s.d.sql(`DELETE FROM seen WHERE last_ms < coalesce((SELECT min(bucket) FROM counts), 0) * 1000`)); err != nil {
			return fmt.Errorf("history: deleting first seen: %w", err)
		}
		if err := dropUnused(ctx, tx, s.d); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		clear(s.series)
		s.details.forget()
	}
	_, count, free, err := s.pages(ctx)
	if err != nil {
		return fmt.Errorf("history: reading the file's size: %w", err)
	}
	if deleted || free > 0 && free >= count/4 {
		if _, err := s.db.ExecContext(ctx, `PRAGMA incremental_vacuum`); err != nil {
			return fmt.Errorf("history: incremental vacuum: %w", err)
		}
		if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			return fmt.Errorf("history: checkpoint: %w", err)
		}
	}
	return nil
}

// trimTotals deletes the totals of the times that counts no longer has:
// minutes before its oldest bucket, hours before that bucket's hour; and
// counts again the totals of that hour, of which only a part may be left.
func trimTotals(ctx context.Context, db *sql.DB, d *dialect) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var oldest int64
	if err := tx.QueryRowContext(ctx, d.sql(`SELECT `+oldestCount)).Scan(&oldest); err != nil {
		return err
	}
	hour := oldest - mod(oldest, hourSpan)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DELETE FROM totals WHERE span = 60 AND bucket < ?`, []any{oldest}},
		{`DELETE FROM totals WHERE span = 3600 AND bucket <= ?`, []any{hour}},
		{`DELETE FROM pattern_totals WHERE bucket <= ?`, []any{hour}},
		{`INSERT INTO totals (span, bucket, grp, category, action, n)
			SELECT 3600, CAST(? AS BIGINT), s.grp, s.category, s.action, sum(c.n) FROM counts c JOIN series s ON s.id = c.series
			WHERE c.span IN (60, 3600) AND c.bucket >= ? AND c.bucket < ? GROUP BY 3, 4, 5`, []any{hour, hour, hour + hourSpan}},
		{`INSERT INTO pattern_totals (bucket, pattern, category, action, n)
			SELECT CAST(? AS BIGINT), s.pattern, s.category, s.action, sum(c.n) FROM counts c JOIN series s ON s.id = c.series
			WHERE c.span IN (60, 3600) AND c.bucket >= ? AND c.bucket < ? AND s.pattern <> '' GROUP BY 2, 3, 4`, []any{hour, hour, hour + hourSpan}},
	} {
		if _, err := tx.ExecContext(ctx, d.sql(q.sql), q.args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// deleteOldest deletes about share of table's rows, oldest by column
// first, and at least least (or all there are).
func (s *Store) deleteOldest(ctx context.Context, table, column string, share float64, least int64) (int64, error) {
	var rows int64
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&rows); err != nil || rows == 0 {
		return 0, err
	}
	n := max(least, int64(float64(rows)*share))
	var edge int64
	err := s.db.QueryRowContext(ctx, s.d.sql(`SELECT `+column+` FROM `+table+` ORDER BY `+column+` LIMIT 1 OFFSET ?`), min(n, rows)-1).Scan(&edge)
	if err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, s.d.sql(`DELETE FROM `+table+` WHERE `+column+` <= ?`), edge)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

package history

import (
	"context"
	"database/sql"
	"fmt"
	"maps"

	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/policy"
)

// statements are the writer's prepared statements.
type statements struct {
	series, count, seen, event, total, patternTotal *sql.Stmt
}

func (st *statements) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		// The no-op update makes RETURNING give the id of a row that was
		// already there.
		{&st.series, `INSERT INTO series (client, grp, pattern, category, action) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (client, grp, pattern, category, action) DO UPDATE SET client = excluded.client RETURNING id`},
		{&st.count, `INSERT INTO counts (span, bucket, series, n) VALUES (?, ?, ?, ?)
			ON CONFLICT (span, bucket, series) DO UPDATE SET n = n + excluded.n`},
		{&st.seen, `INSERT INTO seen (client, pattern, first_ms, last_ms) VALUES (?, ?, ?, ?)
			ON CONFLICT (client, pattern) DO UPDATE SET first_ms = min(first_ms, excluded.first_ms), last_ms = max(last_ms, excluded.last_ms)`},
		{&st.total, `INSERT INTO totals (span, bucket, grp, category, action, n) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (span, bucket, grp, category, action) DO UPDATE SET n = n + excluded.n`},
		{&st.patternTotal, `INSERT INTO pattern_totals (bucket, pattern, category, action, n) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (bucket, pattern, category, action) DO UPDATE SET n = n + excluded.n`},
		{&st.event, `INSERT INTO events (time_ms, client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source, duration)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
	} {
		s, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("preparing statements: %w", err)
		}
		*p.stmt = s
	}
	return nil
}

// seriesKey is a series as the file spells it.
type seriesKey struct {
	client, group, pattern, category, action string
}

type seenKey struct{ client, pattern string }

// totalKey is a row of totals (pattern "") or of pattern_totals (group "").
type totalKey struct {
	span, bucket                     int64
	group, pattern, category, action string
}

// written counts the rows a transaction wrote, per table.
type written struct{ counts, seen, events int }

// write writes b in one transaction. The series ids it creates join the
// cache only once it commits.
func (s *Store) write(ctx context.Context, b *batch) (written, error) {
	var w written
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return w, err
	}
	defer tx.Rollback()
	series, count, seen, event := tx.StmtContext(ctx, s.stmts.series), tx.StmtContext(ctx, s.stmts.count),
		tx.StmtContext(ctx, s.stmts.seen), tx.StmtContext(ctx, s.stmts.event)
	created := map[seriesKey]int64{}
	seens := map[seenKey]agg{}
	totals, patternTotals := map[totalKey]int64{}, map[totalKey]int64{}
	for k, i := range b.index {
		g := b.aggs[i]
		sk := seriesKey{client: k.client.String(), group: k.group.Name, pattern: policy.Match{Literal: g.literal, Shape: k.shape}.Pattern(),
			category: string(policy.Decision{Match: policy.Match{Rule: k.rule}}.Category()), action: k.action.String()}
		id, ok := s.series[sk]
		if !ok {
			id, ok = created[sk]
		}
		if !ok {
			if err := series.QueryRowContext(ctx, sk.client, sk.group, sk.pattern, sk.category, sk.action).Scan(&id); err != nil {
				return w, fmt.Errorf("writing series: %w", err)
			}
			created[sk] = id
		}
		if _, err := count.ExecContext(ctx, minuteSpan, k.bucket, id, g.n); err != nil {
			return w, fmt.Errorf("writing counts: %w", err)
		}
		w.counts++
		hour := k.bucket - k.bucket%hourSpan
		totals[totalKey{span: minuteSpan, bucket: k.bucket, group: sk.group, category: sk.category, action: sk.action}] += g.n
		totals[totalKey{span: hourSpan, bucket: hour, group: sk.group, category: sk.category, action: sk.action}] += g.n
		if sk.pattern == "" {
			continue // first seen and pattern totals are per pattern: not for unlisted names
		}
		patternTotals[totalKey{span: hourSpan, bucket: hour, pattern: sk.pattern, category: sk.category, action: sk.action}] += g.n
		c := seenKey{sk.client, sk.pattern}
		if h, ok := seens[c]; ok {
			g.first, g.last = min(g.first, h.first), max(g.last, h.last)
		}
		seens[c] = g
	}
	for c, g := range seens {
		if _, err := seen.ExecContext(ctx, c.client, c.pattern, g.first, g.last); err != nil {
			return w, fmt.Errorf("writing first and last seen: %w", err)
		}
		w.seen++
	}
	total, patternTotal := tx.StmtContext(ctx, s.stmts.total), tx.StmtContext(ctx, s.stmts.patternTotal)
	for t, n := range totals {
		if _, err := total.ExecContext(ctx, t.span, t.bucket, t.group, t.category, t.action, n); err != nil {
			return w, fmt.Errorf("writing totals: %w", err)
		}
	}
	for t, n := range patternTotals {
		if _, err := patternTotal.ExecContext(ctx, t.bucket, t.pattern, t.category, t.action, n); err != nil {
			return w, fmt.Errorf("writing pattern totals: %w", err)
		}
	}
	for i := range b.events {
		a := &b.events[i]
		r := querylog.NewRecord(a, false) // the client was anonymized when it was counted
		if _, err := event.ExecContext(ctx, a.Start.UnixMilli(), r.Client, r.Group, r.Name, r.Type, r.Action, r.Category, r.Pattern,
			r.Windows, r.Family, r.CNAME, r.Edition, r.Rcode, r.Source, r.Duration); err != nil {
			return w, fmt.Errorf("writing events: %w", err)
		}
		w.events++
	}
	if err := tx.Commit(); err != nil {
		return w, err
	}
	if len(s.series)+len(created) > maxSeriesCache {
		clear(s.series) // it is a cache: the file has them all
	}
	maps.Copy(s.series, created)
	return w, nil
}

// maxSeriesCache bounds the series ids the writer remembers.
const maxSeriesCache = 100_000

// The spans of counts rows, in seconds.
const (
	minuteSpan = 60
	hourSpan   = 3600
)

package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/policy"
)

// statements are the writer's prepared statements.
type statements struct {
	series, count, seen, total, patternTotal, block *sql.Stmt
	detail                                          detailStmts
}

// The statements of event details. A detail is looked up before it is
// inserted, not upserted: an upsert that finds the row still takes an id
// of the AUTOINCREMENT sequence, and the ids, which the blocks hold as
// varints, would grow with every hour.
const (
	findDetail = `SELECT id, last_ms FROM event_details WHERE {own} AND client = ? AND grp = ? AND name = ? AND type = ? AND action = ?
		AND category = ? AND pattern = ? AND windows = ? AND family = ? AND cname = ? AND edition = ? AND rcode = ? AND source = ?`
	insertDetail = `INSERT INTO event_details ({i}client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source, last_ms)
		VALUES ({'i'}?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`
	stampDetail = `UPDATE event_details SET last_ms = ? WHERE id = ? AND last_ms < ?`
)

// detailStmts are the statements of event details.
type detailStmts struct{ find, insert, stamp *sql.Stmt }

// in binds them to tx.
func (st detailStmts) in(ctx context.Context, tx *sql.Tx) detailStmts {
	return detailStmts{tx.StmtContext(ctx, st.find), tx.StmtContext(ctx, st.insert), tx.StmtContext(ctx, st.stamp)}
}

// prepareDetails prepares them on p (the pool or a transaction).
func prepareDetails(ctx context.Context, p interface {
	PrepareContext(context.Context, string) (*sql.Stmt, error)
}, d *dialect) (detailStmts, error) {
	var st detailStmts
	var err error
	for _, s := range []struct {
		stmt **sql.Stmt
		sql  string
	}{{&st.find, findDetail}, {&st.insert, insertDetail}, {&st.stamp, stampDetail}} {
		if *s.stmt, err = p.PrepareContext(ctx, d.sql(s.sql)); err != nil {
			return st, err
		}
	}
	return st, nil
}

const insertBlock = `INSERT INTO event_blocks (first_ms, last_ms, n, data) VALUES (?, ?, ?, ?)`

func (st *statements) prepare(ctx context.Context, db *sql.DB, d *dialect) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		// The no-op update makes RETURNING give the id of a row that was
		// already there.
		{&st.series, `INSERT INTO series ({i}client, grp, pattern, category, action) VALUES ({'i'}?, ?, ?, ?, ?)
			ON CONFLICT ({i}client, grp, pattern, category, action) DO UPDATE SET client = excluded.client RETURNING id`},
		{&st.count, `INSERT INTO counts (span, bucket, series, n) VALUES (?, ?, ?, ?)
			ON CONFLICT (span, bucket, series) DO UPDATE SET n = counts.n + excluded.n`},
		{&st.seen, `INSERT INTO seen ({i}client, pattern, first_ms, last_ms) VALUES ({'i'}?, ?, ?, ?)
			ON CONFLICT ({i}client, pattern) DO UPDATE SET
				first_ms = CASE WHEN excluded.first_ms < seen.first_ms THEN excluded.first_ms ELSE seen.first_ms END,
				last_ms = CASE WHEN excluded.last_ms > seen.last_ms THEN excluded.last_ms ELSE seen.last_ms END`},
		{&st.total, `INSERT INTO totals (span, bucket, {i}grp, category, action, n) VALUES (?, ?, {'i'}?, ?, ?, ?)
			ON CONFLICT (span, bucket, {i}grp, category, action) DO UPDATE SET n = totals.n + excluded.n`},
		{&st.patternTotal, `INSERT INTO pattern_totals (bucket, {i}pattern, category, action, n) VALUES (?, {'i'}?, ?, ?, ?)
			ON CONFLICT (bucket, {i}pattern, category, action) DO UPDATE SET n = pattern_totals.n + excluded.n`},
		{&st.block, insertBlock},
	} {
		s, err := db.PrepareContext(ctx, d.sql(p.sql))
		if err != nil {
			return fmt.Errorf("preparing statements: %w", err)
		}
		*p.stmt = s
	}
	var err error
	if st.detail, err = prepareDetails(ctx, db, d); err != nil {
		return fmt.Errorf("preparing statements: %w", err)
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

// written counts the rows a transaction wrote, per table (events: the
// events, not their blocks).
type written struct{ counts, seen, totals, patternTotals, events int }

// write writes b in one transaction. The series ids it creates join the
// cache only once it commits.
func (s *Store) write(ctx context.Context, b *batch) (written, error) {
	var w written
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return w, err
	}
	defer tx.Rollback()
	defer s.details.rollback() // the ids it learns are known once it commits
	series, count, seen := tx.StmtContext(ctx, s.stmts.series), tx.StmtContext(ctx, s.stmts.count), tx.StmtContext(ctx, s.stmts.seen)
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
		w.totals++
	}
	for t, n := range patternTotals {
		if _, err := patternTotal.ExecContext(ctx, t.bucket, t.pattern, t.category, t.action, n); err != nil {
			return w, fmt.Errorf("writing pattern totals: %w", err)
		}
		w.patternTotals++
	}
	if len(b.events) > 0 {
		detail := s.stmts.detail.in(ctx, tx)
		events := make([]packedEvent, len(b.events))
		for i := range b.events {
			a := &b.events[i]
			r := querylog.NewRecord(a, false) // the client was anonymized when it was counted
			ms := a.Start.UnixMilli()
			id, err := s.details.ref(ctx, detail, eventDetail{client: r.Client, group: r.Group, name: r.Name, qtype: r.Type, action: r.Action,
				category: r.Category, pattern: r.Pattern, windows: r.Windows, family: r.Family, cname: r.CNAME, edition: r.Edition, rcode: r.Rcode, source: r.Source}, ms)
			if err != nil {
				return w, fmt.Errorf("writing event details: %w", err)
			}
			events[i] = packedEvent{ms: ms, detail: id, us: micros(a.Duration)}
		}
		n, err := writeBlocks(ctx, tx.StmtContext(ctx, s.stmts.block), events)
		if err != nil {
			return w, fmt.Errorf("writing events: %w", err)
		}
		w.events = n
	}
	if err := tx.Commit(); err != nil {
		return w, err
	}
	s.details.commit()
	if len(s.series)+len(created) > maxSeriesCache {
		clear(s.series) // it is a cache: the file has them all
	}
	maps.Copy(s.series, created)
	return w, nil
}

// maxSeriesCache bounds the series ids the writer remembers.
const maxSeriesCache = 100_000

// eventDetail is a row of event_details but for its id and last_ms: what
// an event has in common with others, the query log's fields but its time
// and duration.
type eventDetail struct {
	client, group, name, qtype, action, category, pattern, windows, family, cname, edition, rcode, source string
	instance                                                                                              string // what a Reader read; the writer's are its own
}

// detailRef is a detail's id, and the last_ms the file has for it.
type detailRef struct{ id, lastMs int64 }

// detailStamp is how far an event may be past its detail's last_ms before
// the writer moves last_ms on: once an hour per detail in use, not once
// per event.
const detailStamp = int64(time.Hour / time.Millisecond)

// maxDetailCache bounds the details the writer remembers, the most
// recently used: about 2 MB. Every distinct name a client asks for is a
// detail, so with all_queries they come and go by the thousand; one that
// is forgotten costs an indexed SELECT when it comes back. (A map cleared
// when full would keep its high-water size for good: Go's maps do not
// shrink.)
const maxDetailCache = 4096

// detailCache is the writer's memory of event details: those known to be
// in the file, and those a transaction wrote, known once it commits.
type detailCache struct {
	known   *lru.Cache[eventDetail, detailRef]
	pending map[eventDetail]detailRef
}

func newDetailCache() *detailCache {
	known, _ := lru.New[eventDetail, detailRef](maxDetailCache) // only a size <= 0 fails
	return &detailCache{known: known, pending: map[eventDetail]detailRef{}}
}

// ref is the id of d for an event at ms: from memory, or found in the
// file, or inserted; and it moves the file's last_ms of d on to ms when
// ms is more than detailStamp past it. So every event written has ms <=
// its detail's last_ms + detailStamp, and the memory's last_ms is never
// more than the file's.
func (c *detailCache) ref(ctx context.Context, st detailStmts, d eventDetail, ms int64) (int64, error) {
	r, ok := c.pending[d]
	if !ok {
		r, ok = c.known.Get(d)
	}
	if !ok {
		fields := []any{d.client, d.group, d.name, d.qtype, d.action, d.category, d.pattern, d.windows, d.family, d.cname, d.edition, d.rcode, d.source}
		err := st.find.QueryRowContext(ctx, fields...).Scan(&r.id, &r.lastMs)
		if errors.Is(err, sql.ErrNoRows) {
			if err := st.insert.QueryRowContext(ctx, append(fields, ms)...).Scan(&r.id); err != nil {
				return 0, err
			}
			r.lastMs = ms
		} else if err != nil {
			return 0, err
		}
	}
	if ms > r.lastMs+detailStamp {
		if _, err := st.stamp.ExecContext(ctx, ms, r.id, ms); err != nil {
			return 0, err
		}
		r.lastMs = ms
	}
	c.pending[d] = r
	return r.id, nil
}

// commit makes what the transaction wrote known.
func (c *detailCache) commit() {
	for d, r := range c.pending {
		c.known.Add(d, r)
	}
	clear(c.pending)
}

// rollback forgets what a transaction that did not commit wrote.
func (c *detailCache) rollback() { clear(c.pending) }

// forget forgets every detail: some may have been deleted.
func (c *detailCache) forget() {
	c.known.Purge()
	clear(c.pending)
}

// writeBlocks packs events into blocks and inserts them with insert (an
// insertBlock statement), returning the events written.
func writeBlocks(ctx context.Context, insert *sql.Stmt, events []packedEvent) (int, error) {
	n := 0
	for _, b := range packBlocks(events) {
		if _, err := insert.ExecContext(ctx, b.first, b.last, b.n, b.data); err != nil {
			return n, err
		}
		n += b.n
	}
	return n, nil
}

// The spans of counts rows, in seconds.
const (
	minuteSpan = 60
	hourSpan   = 3600
)

package history

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"strings"
	"time"
)

// MaxPoints bounds the buckets of a time series.
const MaxPoints = 2000

// Filter narrows a query to one client, group, category and action; an
// empty field is any. Client is spelled as the history spells it (as the
// query log does, anonymized with anonymize_clients).
type Filter struct {
	Client, Group, Category, Action string
	// Instance is one instance's queries (a shared history); "" for
	// every instance's.
	Instance string
}

// SeriesQuery asks for the queries counted from From to To in buckets of
// Step (ParseStep's steps; AutoStep when zero), by category.
type SeriesQuery struct {
	From, To time.Time
	Step     time.Duration
	Filter
}

// Series is a time series of counts, one row of Buckets per category,
// ready to be stacked: Counts[i] is the count of the bucket starting at
// Buckets[i]. From and To are the query's, widened to whole buckets.
type Series struct {
	From        time.Time        `json:"from"`
	To          time.Time        `json:"to"`
	Step        string           `json:"step"`
	StepSeconds int64            `json:"step_seconds"`
	Buckets     []time.Time      `json:"buckets"`
	Categories  []CategorySeries `json:"categories"`
	Total       int64            `json:"total"`
}

// CategorySeries is one category's counts, bucket by bucket.
type CategorySeries struct {
	Category string  `json:"category"`
	Total    int64   `json:"total"`
	Counts   []int64 `json:"counts"`
}

// Series returns the counts of q, by category, busiest category first.
//
// Where it reads: the household's counts (no client) from totals, hours
// for a step of an hour or more and minutes below; a client's from counts
// through the client's series and counts_series, which holds n, so that
// no row of counts itself is read. Steps under an hour need from within
// RollupAfter: older minutes are kept only as hours.
func (r *Reader) Series(ctx context.Context, q SeriesQuery) (*Series, error) {
	now := r.now()
	if err := checkRange(q.From, q.To); err != nil {
		return nil, err
	}
	if q.Step == 0 {
		q.Step = AutoStep(q.From, q.To, now)
	}
	if q.Step < MinStep || q.Step > MaxStep || q.Step < time.Hour && q.Step%time.Minute != 0 || q.Step > time.Hour && q.Step%time.Hour != 0 {
		return nil, paramError("step", "%v: %s", q.Step, StepSyntax)
	}
	if edge := now.Add(-RollupAfter); q.Step < time.Hour && q.From.Before(edge) {
		return nil, paramError("step", "%s is under an hour, but from (%s) is more than 48h ago, where counts are kept per hour: want a step of 1h or more, or from after %s",
			FormatStep(q.Step), q.From.UTC().Format(time.RFC3339), edge.UTC().Format(time.RFC3339))
	}
	start, n := align(q.From, q.To, q.Step)
	if n > MaxPoints {
		return nil, paramError("step", "%s from %s to %s is %d buckets; at most %d: want a step of %s or more",
			FormatStep(q.Step), q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339), n, MaxPoints, FormatStep(fewerPoints(q.From, q.To, q.Step)))
	}
	step := int64(q.Step / time.Second)
	s := &Series{From: start, To: start.Add(time.Duration(n) * q.Step), Step: FormatStep(q.Step), StepSeconds: step,
		Buckets: make([]time.Time, n), Categories: []CategorySeries{}}
	for i := range s.Buckets {
		s.Buckets[i] = start.Add(time.Duration(i) * q.Step)
	}
	sqlText, args := seriesSQL(r.d, q.Filter, step, start.Unix(), s.To.Unix())
	byCategory := map[string]int{}
	err := r.each(ctx, func(rows *sql.Rows) error {
		var b, n int64
		var category string
		if err := rows.Scan(&b, &category, &n); err != nil {
			return err
		}
		i, ok := byCategory[category]
		if !ok {
			i = len(s.Categories)
			byCategory[category] = i
			s.Categories = append(s.Categories, CategorySeries{Category: category, Counts: make([]int64, len(s.Buckets))})
		}
		c := &s.Categories[i]
		if j := (b - start.Unix()) / step; j >= 0 && j < int64(len(c.Counts)) {
			c.Counts[j] += n
			c.Total += n
			s.Total += n
		}
		return nil
	}, sqlText, args...)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(s.Categories, func(x, y CategorySeries) int {
		return cmp.Or(cmp.Compare(y.Total, x.Total), cmp.Compare(x.Category, y.Category))
	})
	return s, nil
}

// seriesSQL is the query of Series: bucket start, category, count.
func seriesSQL(d *dialect, f Filter, step, from, to int64) (string, []any) {
	var where []string
	var args []any
	add := func(cond string, v string) {
		if v != "" {
			where = append(where, cond)
			args = append(args, v)
		}
	}
	if f.Client == "" {
		span := int64(hourSpan)
		if step < hourSpan {
			span = minuteSpan
		}
		args = append(args, step, span, from, to)
		add("grp = ?", f.Group)
		add("category = ?", f.Category)
		add("action = ?", f.Action)
		if f.Instance != "" {
			cond, arg := d.instanceIs("", f.Instance)
			where, args = append(where, cond), append(args, arg)
		}
		return `SELECT bucket - bucket % ?, category, sum(n) FROM totals
			WHERE span = ? AND bucket >= ? AND bucket < ?` + and(where) + ` GROUP BY 1, 2`, args
	}
	// The client's series first (CROSS JOIN keeps that order), then their
	// counts by counts_series: both spans, as a range of bucket.
	args = append(args, step, f.Client, from, to)
	add("s.grp = ?", f.Group)
	add("s.category = ?", f.Category)
	add("s.action = ?", f.Action)
	if f.Instance != "" {
		cond, arg := d.instanceIs("s", f.Instance)
		where, args = append(where, cond), append(args, arg)
	}
	return `SELECT c.bucket - c.bucket % ?, s.category, sum(c.n) FROM series s CROSS JOIN counts c ON c.series = s.id
		WHERE s.client = ? AND c.bucket >= ? AND c.bucket < ?` + and(where) + ` GROUP BY 1, 2`, args
}

func and(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " AND " + strings.Join(conds, " AND ")
}

// fewerPoints is the first step of AutoStep's list over step that makes
// at most MaxPoints buckets from from to to, or enough whole days.
func fewerPoints(from, to time.Time, step time.Duration) time.Duration {
	for _, s := range autoSteps {
		if s > step && points(from, to, s) <= MaxPoints {
			return s
		}
	}
	day := 24 * time.Hour
	return (to.Sub(from)/MaxPoints + 2*day) / day * day
}

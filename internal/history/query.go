package history

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"time"
)

// EndpointsQuery asks for the endpoint patterns asked for from From to
// To (widened to whole hours), by one client or by all, a page of them.
type EndpointsQuery struct {
	Client        string
	Instance      string // one instance's queries; "" for every instance's
	From, To      time.Time
	Limit, Offset int // Limit 0 is DefaultLimit
}

// Endpoint is one pattern: the queries counted in the range, by action,
// and the first and last query for it that the history remembers (by the
// client, or by any client), which may lie outside the range.
type Endpoint struct {
	Pattern   string           `json:"pattern"`
	Category  string           `json:"category"`
	Count     int64            `json:"count"`
	Actions   map[string]int64 `json:"actions"`
	FirstSeen time.Time        `json:"first_seen"`
	LastSeen  time.Time        `json:"last_seen"`
}

// Endpoints is a page of endpoints, busiest first. Total counts the
// patterns of every page; NextOffset is the next page's offset, or nil
// after the last.
type Endpoints struct {
	Client string `json:"client,omitempty"`
	// ClientName is the client's name, filled in from Reader.Names by
	// who shows it (the API).
	ClientName string     `json:"client_name,omitempty"`
	From       time.Time  `json:"from"`
	To         time.Time  `json:"to"`
	Endpoints  []Endpoint `json:"endpoints"`
	Total      int        `json:"total"`
	NextOffset *int       `json:"next_offset"`
}

// Endpoints returns the patterns q's client (or the household) asked for
// in q's range, busiest first. The household's are read from
// pattern_totals, a client's from counts through its series.
func (r *Reader) Endpoints(ctx context.Context, q EndpointsQuery) (*Endpoints, error) {
	if err := checkRange(q.From, q.To); err != nil {
		return nil, err
	}
	limit, err := page(q.Limit, q.Offset)
	if err != nil {
		return nil, err
	}
	start, n := align(q.From, q.To, time.Hour)
	end := start.Add(time.Duration(n) * time.Hour)
	out := &Endpoints{Client: q.Client, From: start, To: end, Endpoints: []Endpoint{}}
	type key struct{ pattern, category string }
	byKey := map[key]int{}
	var all []Endpoint
	where, args := "", []any{start.Unix(), end.Unix()}
	if q.Instance != "" {
		cond, arg := r.d.instanceIs("", q.Instance)
		where, args = " AND "+cond, append(args, arg)
	}
	sqlText := `SELECT pattern, category, action, sum(n) FROM pattern_totals WHERE bucket >= ? AND bucket < ?` + where + ` GROUP BY 1, 2, 3`
	if q.Client != "" {
		where, args = "", []any{q.Client, start.Unix(), end.Unix()}
		if q.Instance != "" {
			cond, arg := r.d.instanceIs("s", q.Instance)
			where, args = " AND "+cond, append(args, arg)
		}
		sqlText = `SELECT s.pattern, s.category, s.action, sum(c.n) FROM series s CROSS JOIN counts c ON c.series = s.id
			WHERE s.client = ? AND s.pattern <> '' AND c.bucket >= ? AND c.bucket < ?` + where + ` GROUP BY 1, 2, 3`
	}
	err = r.each(ctx, func(rows *sql.Rows) error {
		var k key
		var action string
		var n int64
		if err := rows.Scan(&k.pattern, &k.category, &action, &n); err != nil {
			return err
		}
		i, ok := byKey[k]
		if !ok {
			i = len(all)
			byKey[k] = i
			all = append(all, Endpoint{Pattern: k.pattern, Category: k.category, Actions: map[string]int64{}})
		}
		all[i].Count += n
		all[i].Actions[action] += n
		return nil
	}, sqlText, args...)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(x, y Endpoint) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Pattern, y.Pattern), cmp.Compare(x.Category, y.Category))
	})
	out.Total = len(all)
	if q.Offset < len(all) {
		out.Endpoints = all[q.Offset:min(len(all), q.Offset+limit)]
	}
	if next := q.Offset + limit; next < len(all) {
		out.NextOffset = &next
	}
	return out, r.seen(ctx, q.Client, out.Endpoints)
}

// seen fills in the first and last seen of es, by client or by any.
func (r *Reader) seen(ctx context.Context, client string, es []Endpoint) error {
	if len(es) == 0 {
		return nil
	}
	patterns := make([]string, len(es))
	for i, e := range es {
		patterns[i] = e.Pattern
	}
	in, list := r.d.in("pattern", patterns)
	sqlText := `SELECT pattern, min(first_ms), max(last_ms) FROM seen WHERE ` + in + ` GROUP BY 1`
	args := []any{list}
	if client != "" {
		// A shared database has a row per instance.
		sqlText = `SELECT pattern, min(first_ms), max(last_ms) FROM seen WHERE client = ? AND ` + in + ` GROUP BY 1`
		args = []any{client, list}
	}
	type span struct{ first, last int64 }
	got := map[string]span{}
	err := r.each(ctx, func(rows *sql.Rows) error {
		var p string
		var s span
		if err := rows.Scan(&p, &s.first, &s.last); err != nil {
			return err
		}
		got[p] = s
		return nil
	}, sqlText, args...)
	if err != nil {
		return err
	}
	for i := range es {
		if s, ok := got[es[i].Pattern]; ok {
			es[i].FirstSeen, es[i].LastSeen = time.UnixMilli(s.first).UTC(), time.UnixMilli(s.last).UTC()
		}
	}
	return nil
}

// NewQuery asks for the patterns that a client (or each client) asked for
// the first time since Since, a page of them.
type NewQuery struct {
	Client        string
	Since         time.Time
	Limit, Offset int // Limit 0 is DefaultLimit
}

// NewEndpoint is a pattern a client asked for first at FirstSeen.
type NewEndpoint struct {
	Client     string    `json:"client"`
	ClientName string    `json:"client_name,omitempty"` // from Reader.Names, by who shows it
	Pattern    string    `json:"pattern"`
	Category   string    `json:"category"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
}

// NewEndpoints is a page of first contacts, by client, then by time.
// HistorySince is the oldest count the history holds (nil when it holds
// none): a pattern is new only as far as the history remembers, and
// everything is new to a history younger than Since.
type NewEndpoints struct {
	Since        time.Time     `json:"since"`
	HistorySince *time.Time    `json:"history_since"`
	Endpoints    []NewEndpoint `json:"endpoints"`
	Total        int           `json:"total"`
	NextOffset   *int          `json:"next_offset"`
}

// New returns the first contacts since q.Since, from the first-seen table.
func (r *Reader) New(ctx context.Context, q NewQuery) (*NewEndpoints, error) {
	limit, err := page(q.Limit, q.Offset)
	if err != nil {
		return nil, err
	}
	out := &NewEndpoints{Since: q.Since.UTC(), Endpoints: []NewEndpoint{}}
	where, args := `first_ms >= ?`, []any{q.Since.UnixMilli()}
	if q.Client != "" {
		where, args = `client = ? AND `+where, []any{q.Client, q.Since.UnixMilli()}
	}
	err = r.each(ctx, func(rows *sql.Rows) error {
		var oldest sql.NullInt64
		if err := rows.Scan(&out.Total, &oldest); err != nil {
			return err
		}
		if oldest.Valid {
			t := time.Unix(oldest.Int64, 0).UTC()
			out.HistorySince = &t
		}
		return nil
	}, `SELECT (SELECT count(*) FROM {seen} WHERE `+where+`), nullif(`+oldestCount+`, `+never+`)`, args...)
	if err != nil {
		return nil, err
	}
	// The category of a page's rows only: a subquery of the outer select.
	err = r.each(ctx, func(rows *sql.Rows) error {
		var e NewEndpoint
		var first, last int64
		if err := rows.Scan(&e.Client, &e.Pattern, &first, &last, &e.Category); err != nil {
			return err
		}
		e.FirstSeen, e.LastSeen = time.UnixMilli(first).UTC(), time.UnixMilli(last).UTC()
		out.Endpoints = append(out.Endpoints, e)
		return nil
	}, `SELECT p.client, p.pattern, p.first_ms, p.last_ms,
			coalesce((SELECT category FROM series s WHERE s.client = p.client AND s.pattern = p.pattern LIMIT 1), '')
		FROM (SELECT client, pattern, first_ms, last_ms FROM {seen} WHERE `+where+` ORDER BY client, first_ms, pattern LIMIT ? OFFSET ?) p
		ORDER BY p.client, p.first_ms, p.pattern`, append(args, limit, q.Offset)...)
	if err != nil {
		return nil, err
	}
	if next := q.Offset + limit; next < out.Total {
		out.NextOffset = &next
	}
	return out, nil
}

// oldestCount is the bucket of the oldest count, 1 << 62 with none: one
// min per span, each the first row of a range of the primary key.
const oldestCount = `(SELECT min(b) FROM (SELECT coalesce((SELECT min(bucket) FROM counts WHERE span = 60), ` + never + `) AS b
	UNION ALL SELECT coalesce((SELECT min(bucket) FROM counts WHERE span = 3600), ` + never + `)) AS m)`

// never is 1 << 62 as SQL spells it, a time after every other.
const never = "4611686018427387904"

// Instances are the phonehome instances whose history a Reader reads,
// with the matches each counted from From to To (whole hours). A file
// has one, this instance; a shared database every instance that has
// written to it.
type Instances struct {
	Shared    bool            `json:"shared"`
	From      time.Time       `json:"from"`
	To        time.Time       `json:"to"`
	Instances []InstanceTotal `json:"instances"`
}

// InstanceTotal is an instance and its count.
type InstanceTotal struct {
	Instance string `json:"instance"`
	Total    int64  `json:"total"`
}

// Instances lists the instances, by name, with their counts in from-to.
func (r *Reader) Instances(ctx context.Context, from, to time.Time) (*Instances, error) {
	if err := checkRange(from, to); err != nil {
		return nil, err
	}
	start, n := align(from, to, time.Hour)
	end := start.Add(time.Duration(n) * time.Hour)
	out := &Instances{Shared: r.d.pg, From: start, To: end, Instances: []InstanceTotal{}}
	sqlText := `SELECT ` + quote(r.d.instance) + `, coalesce(sum(n), 0) FROM totals WHERE span = 3600 AND bucket >= ? AND bucket < ?`
	if r.d.pg {
		sqlText = `SELECT i.instance, coalesce(t.n, 0) FROM (SELECT DISTINCT instance FROM series) i
			LEFT JOIN (SELECT instance, sum(n) AS n FROM totals WHERE span = 3600 AND bucket >= ? AND bucket < ? GROUP BY 1) t
			ON t.instance = i.instance ORDER BY 1`
	}
	err := r.each(ctx, func(rows *sql.Rows) error {
		var it InstanceTotal
		if err := rows.Scan(&it.Instance, &it.Total); err != nil {
			return err
		}
		out.Instances = append(out.Instances, it)
		return nil
	}, sqlText, start.Unix(), end.Unix())
	if err != nil {
		return nil, err
	}
	return out, nil
}

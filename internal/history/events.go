package history

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/phonehome/phonehome/internal/querylog"
)

// EventCursor is a place in the stored events: the events before it are
// those older than TimeMs (Unix milliseconds), or as old with an id below
// ID. A cursor made from a time alone has ID 0: strictly older.
type EventCursor struct {
	TimeMs, ID int64
}

// String spells c as ParseCursor reads it: "1764244800123-4567".
func (c EventCursor) String() string {
	return strconv.FormatInt(c.TimeMs, 10) + "-" + strconv.FormatInt(c.ID, 10)
}

// ParseCursor reads where a page of older events ends: the next of the
// page before it, or a time as ParseTime reads it.
func ParseCursor(s string, now time.Time) (EventCursor, error) {
	if ms, id, ok := strings.Cut(s, "-"); ok && ms != "" {
		m, err1 := strconv.ParseInt(ms, 10, 64)
		i, err2 := strconv.ParseInt(id, 10, 64)
		if err1 == nil && err2 == nil && m >= 0 && i >= 0 {
			return EventCursor{TimeMs: m, ID: i}, nil
		}
	}
	t, err := ParseTime(s, now)
	if err != nil {
		return EventCursor{}, fmt.Errorf("%q is neither a time nor the next of a page: %s, or a page's next", s, strings.TrimPrefix(TimeSyntax, "want "))
	}
	return EventCursor{TimeMs: t.UnixMilli()}, nil
}

// EventsQuery asks for a page of stored events before a cursor, newest
// first.
type EventsQuery struct {
	Before EventCursor
	Filter
	Limit int // 0 is DefaultLimit
}

// EventPage is a page of stored events, newest first, with the query
// log's fields. Next is the Before of the page after it, "" after the last.
type EventPage struct {
	Events []querylog.Record `json:"events"`
	Next   string            `json:"next"`
}

const eventColumns = `id, time_ms, client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source, duration`

// scanEvent reads a row of eventColumns.
func scanEvent(rows *sql.Rows) (EventCursor, querylog.Record, error) {
	var c EventCursor
	var e querylog.Record
	err := rows.Scan(&c.ID, &c.TimeMs, &e.Client, &e.Group, &e.Name, &e.Type, &e.Action, &e.Category, &e.Pattern,
		&e.Windows, &e.Family, &e.CNAME, &e.Edition, &e.Rcode, &e.Source, &e.Duration)
	e.Time = time.UnixMilli(c.TimeMs).UTC()
	return c, e, err
}

// Events returns the events before q.Before, newest first: through
// events_client with a client, else events_time; a category, group or
// action is a condition on the rows that range reads.
func (r *Reader) Events(ctx context.Context, q EventsQuery) (*EventPage, error) {
	limit, err := page(q.Limit, 0)
	if err != nil {
		return nil, err
	}
	where := []string{`time_ms <= ? AND (time_ms < ? OR id < ?)`}
	args := []any{q.Before.TimeMs, q.Before.TimeMs, q.Before.ID}
	for _, c := range []struct{ col, v string }{{"client", q.Client}, {"grp", q.Group}, {"category", q.Category}, {"action", q.Action}} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	out := &EventPage{Events: []querylog.Record{}}
	var last EventCursor
	err = r.each(ctx, func(rows *sql.Rows) error {
		c, e, err := scanEvent(rows)
		last = c
		out.Events = append(out.Events, e)
		return err
	}, `SELECT `+eventColumns+` FROM events WHERE `+strings.Join(where, " AND ")+` ORDER BY time_ms DESC, id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	if len(out.Events) == limit {
		out.Next = last.String()
	}
	return out, nil
}

// exportPage is how many rows an export reads per query: each page is a
// read of its own, so an export as long as it likes holds no snapshot for
// long.
var exportPage = 2000

// EachEvent calls fn for each stored event from from to to, oldest first.
// A page is read, then handed to fn, so a slow fn holds no read open.
func (r *Reader) EachEvent(ctx context.Context, from, to time.Time, fn func(*querylog.Record) error) error {
	if err := checkRange(from, to); err != nil {
		return err
	}
	after := EventCursor{TimeMs: from.UnixMilli(), ID: -1}
	for {
		var recs []querylog.Record
		err := r.each(ctx, func(rows *sql.Rows) error {
			c, e, err := scanEvent(rows)
			after = c
			recs = append(recs, e)
			return err
		}, `SELECT `+eventColumns+` FROM events WHERE time_ms >= ? AND (time_ms > ? OR id > ?) AND time_ms < ?
			ORDER BY time_ms, id LIMIT ?`, after.TimeMs, after.TimeMs, after.ID, to.UnixMilli(), exportPage)
		if err != nil {
			return err
		}
		for i := range recs {
			if err := fn(&recs[i]); err != nil {
				return err
			}
		}
		if len(recs) < exportPage {
			return nil
		}
	}
}

// CountRow is a row of counts with its series spelled out: N queries in
// the Span (60 or 3600 seconds) starting at Time.
type CountRow struct {
	Time     time.Time `json:"time"`
	Span     int       `json:"span"`
	Client   string    `json:"client"`
	Group    string    `json:"group"`
	Pattern  string    `json:"pattern"`
	Category string    `json:"category"`
	Action   string    `json:"action"`
	N        int64     `json:"n"`
}

// EachCount calls fn for each row of counts whose bucket starts from from
// to to: the hours first, then the minutes (which, but for a minute
// written late, come after them), each in time order, in pages.
func (r *Reader) EachCount(ctx context.Context, from, to time.Time, fn func(*CountRow) error) error {
	if err := checkRange(from, to); err != nil {
		return err
	}
	for _, span := range []int{hourSpan, minuteSpan} {
		bucket, series := from.Unix(), int64(-1)
		for {
			var rs []CountRow
			err := r.each(ctx, func(rows *sql.Rows) error {
				var c CountRow
				var b int64
				if err := rows.Scan(&b, &series, &c.Client, &c.Group, &c.Pattern, &c.Category, &c.Action, &c.N); err != nil {
					return err
				}
				bucket = b
				c.Time, c.Span = time.Unix(b, 0).UTC(), span
				rs = append(rs, c)
				return nil
			}, `SELECT c.bucket, c.series, s.client, s.grp, s.pattern, s.category, s.action, c.n FROM counts c JOIN series s ON s.id = c.series
				WHERE c.span = ? AND c.bucket >= ? AND (c.bucket > ? OR c.series > ?) AND c.bucket < ?
				ORDER BY c.bucket, c.series LIMIT ?`, span, bucket, bucket, series, to.Unix(), exportPage)
			if err != nil {
				return err
			}
			for i := range rs {
				if err := fn(&rs[i]); err != nil {
					return err
				}
			}
			if len(rs) < exportPage {
				break
			}
		}
	}
	return nil
}

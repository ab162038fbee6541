package history

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
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

// foundEvent is a stored event a read found, with its place.
type foundEvent struct {
	at EventCursor
	e  packedEvent
}

// errEnough stops a read of blocks once no later block can change what it
// returns.
var errEnough = errors.New("enough")

// Events returns the events before q.Before, newest first. It reads blocks
// by first_ms down from the cursor, keeping the events the filter's
// details name, until it holds a page of events newer than any block left
// can hold (first_ms + blockSpan); a filter that no detail matches reads
// no block.
func (r *Reader) Events(ctx context.Context, q EventsQuery) (*EventPage, error) {
	limit, err := page(q.Limit, 0)
	if err != nil {
		return nil, err
	}
	out := &EventPage{Events: []querylog.Record{}}
	before := q.Before
	err = r.read(ctx, func(tx *sql.Tx) error {
		keep, err := r.detailFilter(ctx, tx, q.Filter)
		if err != nil || keep.none {
			return err
		}
		var found []foundEvent
		err = r.eachOn(ctx, tx, func(rows *sql.Rows) error {
			var id, first int64
			var data []byte
			if err := rows.Scan(&id, &first, &data); err != nil {
				return err
			}
			if err := eachPacked(id, first, data, func(eid int64, e packedEvent) error {
				if (e.ms < before.TimeMs || e.ms == before.TimeMs && eid < before.ID) && keep.has(e.detail) {
					found = append(found, foundEvent{EventCursor{e.ms, eid}, e})
				}
				return nil
			}); err != nil {
				return err
			}
			final := 0 // events no block left can come before: none holds one after first + blockSpan
			for _, f := range found {
				if f.at.TimeMs > first+blockSpan {
					final++
				}
			}
			if final >= limit {
				return errEnough
			}
			return nil
		}, `SELECT id, first_ms, data FROM event_blocks WHERE first_ms <= ? ORDER BY first_ms DESC, id DESC`, before.TimeMs)
		if err != nil && !errors.Is(err, errEnough) {
			return err
		}
		slices.SortFunc(found, func(x, y foundEvent) int {
			return cmp.Or(cmp.Compare(y.at.TimeMs, x.at.TimeMs), cmp.Compare(y.at.ID, x.at.ID))
		})
		found = found[:min(limit, len(found))]
		if out.Events, err = r.spell(ctx, tx, found, map[int64]eventDetail{}); err != nil {
			return err
		}
		if len(found) == limit {
			out.Next = found[limit-1].at.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
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
	end := to.UnixMilli()
	details := map[int64]eventDetail{} // the details read for pages before, at most maxReadDetails
	for {
		if len(details) > maxReadDetails {
			clear(details)
		}
		var recs []querylog.Record
		err := r.read(ctx, func(tx *sql.Tx) error {
			var found []foundEvent
			err := r.eachOn(ctx, tx, func(rows *sql.Rows) error {
				var id, first int64
				var data []byte
				if err := rows.Scan(&id, &first, &data); err != nil {
					return err
				}
				if err := eachPacked(id, first, data, func(eid int64, e packedEvent) error {
					if (e.ms > after.TimeMs || e.ms == after.TimeMs && eid > after.ID) && e.ms < end {
						found = append(found, foundEvent{EventCursor{e.ms, eid}, e})
					}
					return nil
				}); err != nil {
					return err
				}
				final := 0 // events no block left can come before: none starts before first
				for _, f := range found {
					if f.at.TimeMs < first {
						final++
					}
				}
				if final >= exportPage {
					return errEnough
				}
				return nil
			}, `SELECT id, first_ms, data FROM event_blocks WHERE first_ms >= ? AND first_ms < ? ORDER BY first_ms, id`,
				after.TimeMs-blockSpan, end)
			if err != nil && !errors.Is(err, errEnough) {
				return err
			}
			slices.SortFunc(found, func(x, y foundEvent) int {
				return cmp.Or(cmp.Compare(x.at.TimeMs, y.at.TimeMs), cmp.Compare(x.at.ID, y.at.ID))
			})
			found = found[:min(exportPage, len(found))]
			if len(found) > 0 {
				after = found[len(found)-1].at
			}
			recs, err = r.spell(ctx, tx, found, details)
			return err
		})
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

// detailSet is the event details a Filter keeps.
type detailSet struct {
	all  bool // no filter
	none bool // no detail matches
	ids  map[int64]struct{}
}

func (d *detailSet) has(id int64) bool {
	if d.all {
		return true
	}
	_, ok := d.ids[id]
	return ok
}

// detailFilter reads the details f keeps: through the details' unique
// index with a client, else by reading them all (a detail per client,
// name, type and answer: thousands, not millions).
func (r *Reader) detailFilter(ctx context.Context, tx *sql.Tx, f Filter) (*detailSet, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, v string }{{"client", f.Client}, {"grp", f.Group}, {"category", f.Category}, {"action", f.Action}} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	if f.Instance != "" {
		cond, arg := r.d.instanceIs("", f.Instance)
		where, args = append(where, cond), append(args, arg)
	}
	if len(where) == 0 {
		return &detailSet{all: true}, nil
	}
	d := &detailSet{ids: map[int64]struct{}{}}
	err := r.eachOn(ctx, tx, func(rows *sql.Rows) error {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		d.ids[id] = struct{}{}
		return nil
	}, `SELECT id FROM event_details WHERE `+strings.Join(where, " AND "), args...)
	d.none = len(d.ids) == 0
	return d, err
}

// spell makes query log records of found events, with their details:
// those in details (read before: an id always names the same detail), and
// the others, which it reads and adds to details.
func (r *Reader) spell(ctx context.Context, tx *sql.Tx, found []foundEvent, details map[int64]eventDetail) ([]querylog.Record, error) {
	ids := map[int64]struct{}{}
	for _, f := range found {
		if _, ok := details[f.e.detail]; !ok {
			ids[f.e.detail] = struct{}{}
		}
	}
	if len(ids) == 0 {
		return records(found, details), nil
	}
	in, list := r.d.in("id", slices.Collect(maps.Keys(ids)))
	err := r.eachOn(ctx, tx, func(rows *sql.Rows) error {
		var id int64
		var d eventDetail
		dest := []any{&id, &d.client, &d.group, &d.name, &d.qtype, &d.action, &d.category, &d.pattern, &d.windows, &d.family,
			&d.cname, &d.edition, &d.rcode, &d.source}
		if r.d.pg { // the file has one instance's events, and does not say it
			dest = append(dest, &d.instance)
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		details[id] = d
		return nil
	}, `SELECT id, client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source`+
		map[bool]string{true: ", instance"}[r.d.pg]+` FROM event_details WHERE `+in, list)
	if err != nil {
		return nil, err
	}
	return records(found, details), nil
}

// records makes query log records of found events, with their details.
func records(found []foundEvent, details map[int64]eventDetail) []querylog.Record {
	recs := make([]querylog.Record, len(found))
	for i, f := range found {
		d := details[f.e.detail] // always there: retention keeps the details of the events it keeps
		recs[i] = querylog.Record{Time: time.UnixMilli(f.at.TimeMs).UTC(), Client: d.client, Group: d.group, Name: d.name, Type: d.qtype,
			Action: d.action, Category: d.category, Pattern: d.pattern, Windows: d.windows, Family: d.family, CNAME: d.cname,
			Edition: d.edition, Rcode: d.rcode, Source: d.source, Duration: float64(f.e.us) / 1e6, Instance: d.instance}
	}
	return recs
}

// CountRow is a row of counts with its series spelled out: N queries in
// the Span (60 or 3600 seconds) starting at Time.
type CountRow struct {
	Time   time.Time `json:"time"`
	Span   int       `json:"span"`
	Client string    `json:"client"`
	// ClientName is the client's name, from Reader.Names, filled in by
	// who shows it (phonehome history export).
	ClientName string `json:"client_name,omitempty"`
	Group      string `json:"group"`
	Pattern    string `json:"pattern"`
	Category   string `json:"category"`
	Action     string `json:"action"`
	N          int64  `json:"n"`
	// Instance is the phonehome that counted them, in a shared history.
	Instance string `json:"instance,omitempty"`
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
				dest := []any{&b, &series, &c.Client, &c.Group, &c.Pattern, &c.Category, &c.Action, &c.N}
				if r.d.pg {
					dest = append(dest, &c.Instance)
				}
				if err := rows.Scan(dest...); err != nil {
					return err
				}
				bucket = b
				c.Time, c.Span = time.Unix(b, 0).UTC(), span
				rs = append(rs, c)
				return nil
			}, `SELECT c.bucket, c.series, s.client, s.grp, s.pattern, s.category, s.action, c.n`+map[bool]string{true: ", s.instance"}[r.d.pg]+`
				FROM counts c JOIN series s ON s.id = c.series
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

// maxReadDetails bounds the details an export remembers from one page to
// the next.
const maxReadDetails = 100_000

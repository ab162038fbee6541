package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/querylog"
)

const (
	clientA = "192.168.1.23"
	clientB = "192.168.1.40"
	patTel  = "v10.events.data.microsoft.com"
	patLog  = "arc.msn.com"
)

// filled is a history written through the store, with the clock at t0,
// flushed and maintained (the hour 50 h ago rolled up):
//
//	clientA  telemetry  3 at t0-50h (10:00, 10:01, 10:02), 2 at t0-2h30m, 1 at t0-10m
//	clientB  logged     1 at t0-90m
//	clientB  telemetry  4 at t0-5m, all in the same millisecond
func filled(t *testing.T) (*Store, *Reader, *clock) {
	t.Helper()
	return filledIn(t, testConfig(t.TempDir()))
}

// filledIn is filled in cfg's database.
func filledIn(t *testing.T, cfg Config) (*Store, *Reader, *clock) {
	t.Helper()
	clk := &clock{t: t0}
	s, _ := open(t, cfg, Options{Now: clk.Now})
	old := t0.Add(-50 * time.Hour)
	for _, a := range []struct {
		client, name string
		at           time.Time
	}{
		{clientA, telemetry, old}, {clientA, telemetry, old.Add(time.Minute)}, {clientA, telemetry, old.Add(2 * time.Minute)},
		{clientA, telemetry, t0.Add(-150 * time.Minute)}, {clientA, telemetry, t0.Add(-150 * time.Minute)},
		{clientA, telemetry, t0.Add(-10 * time.Minute)},
		{clientB, logged, t0.Add(-90 * time.Minute)},
		{clientB, telemetry, t0.Add(-5 * time.Minute)}, {clientB, telemetry, t0.Add(-5 * time.Minute)},
		{clientB, telemetry, t0.Add(-5 * time.Minute)}, {clientB, telemetry, t0.Add(-5 * time.Minute)},
	} {
		s.Answered(answer(t, a.client, a.name, a.at))
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Reader()
	if err != nil {
		t.Fatal(err)
	}
	r.now = clk.Now
	t.Cleanup(func() { r.Close() })
	return s, r, clk
}

func openReader(t *testing.T, path string, clk *clock) *Reader {
	t.Helper()
	r, err := OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	r.now = clk.Now
	t.Cleanup(func() { r.Close() })
	return r
}

// spell writes a series as "category total: n n n" lines.
func spell(s *Series) string {
	var b strings.Builder
	for _, c := range s.Categories {
		fmt.Fprintf(&b, "%s %d: %v\n", c.Category, c.Total, c.Counts)
	}
	return b.String()
}

func wantParamError(t *testing.T, err error, param, says string) {
	t.Helper()
	var pe *ParamError
	if !errors.As(err, &pe) || pe.Param != param || !strings.Contains(pe.Msg, says) {
		t.Errorf("error %v; want a ParamError of %s saying %q", err, param, says)
	}
}

// TestSeries: counts per bucket and category, for the household (from
// totals) and for a client (from counts), narrowed by each filter, at
// hour and minute steps; a step under an hour cannot reach the hours
// rolled up, and a series has at most MaxPoints buckets.
func TestSeries(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		_, r, _ := filledIn(t, cfg)
		ctx := context.Background()
		series := func(q SeriesQuery) *Series {
			t.Helper()
			s, err := r.Series(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		last3h := SeriesQuery{From: t0.Add(-3 * time.Hour), To: t0, Step: time.Hour}
		s := series(last3h)
		if want := "telemetry 7: [2 0 5]\nspotlight 1: [0 1 0]\n"; spell(s) != want || s.Total != 8 {
			t.Errorf("the household's last 3 hours:\n%swant\n%s", spell(s), want)
		}
		if len(s.Buckets) != 3 || !s.Buckets[0].Equal(t0.Add(-3*time.Hour)) || !s.To.Equal(t0) || s.Step != "1h" || s.StepSeconds != 3600 {
			t.Errorf("buckets %v, to %v, step %s %d", s.Buckets, s.To, s.Step, s.StepSeconds)
		}
		for _, c := range []struct {
			f    Filter
			want string
		}{
			{Filter{Client: clientB}, "telemetry 4: [0 0 4]\nspotlight 1: [0 1 0]\n"},
			{Filter{Client: clientA}, "telemetry 3: [2 0 1]\n"},
			{Filter{Category: "spotlight"}, "spotlight 1: [0 1 0]\n"},
			{Filter{Action: "sinkhole"}, "telemetry 7: [2 0 5]\n"},
			{Filter{Client: clientB, Action: "log"}, "spotlight 1: [0 1 0]\n"},
			{Filter{Group: "default", Category: "telemetry"}, "telemetry 7: [2 0 5]\n"},
			{Filter{Group: "kids"}, ""},
			{Filter{Client: "10.9.9.9"}, ""},
		} {
			q := last3h
			q.Filter = c.f
			if got := spell(series(q)); got != c.want {
				t.Errorf("%+v:\n%swant\n%s", c.f, got, c.want)
			}
		}

		// Minutes, for the last quarter of an hour: from a time within a
		// minute, widened to whole minutes.
		s = series(SeriesQuery{From: t0.Add(-15*time.Minute + 20*time.Second), To: t0.Add(-30 * time.Second), Step: time.Minute})
		if len(s.Buckets) != 15 || s.Categories[0].Counts[5] != 1 || s.Categories[0].Counts[10] != 4 || s.Total != 5 {
			t.Errorf("the last 15 minutes: %d buckets, %s", len(s.Buckets), spell(s))
		}
		s = series(SeriesQuery{From: t0.Add(-15 * time.Minute), To: t0, Step: 5 * time.Minute, Filter: Filter{Client: clientB}})
		if want := "telemetry 4: [0 0 4]\n"; spell(s) != want {
			t.Errorf("clientB by 5 minutes:\n%swant\n%s", spell(s), want)
		}

		// Three days by the hour see the hour rolled up; a day step sums it.
		s = series(SeriesQuery{From: t0.Add(-72 * time.Hour), To: t0, Step: time.Hour})
		if c := s.Categories[0]; len(s.Buckets) != 72 || c.Counts[22] != 3 || c.Total != 10 {
			t.Errorf("three days: %d buckets, %v", len(s.Buckets), c)
		}
		s = series(SeriesQuery{From: t0.Add(-72 * time.Hour), To: t0, Step: 24 * time.Hour})
		if want := "telemetry 10: [0 3 0 7]\nspotlight 1: [0 0 0 1]\n"; spell(s) != want || !s.From.Equal(t0.Add(-84*time.Hour)) {
			t.Errorf("three days by UTC day, from %v:\n%swant\n%s", s.From, spell(s), want)
		}
		// The household is the sum of its clients, before and after roll-up.
		for _, step := range []time.Duration{time.Hour, 3 * time.Hour} {
			q := SeriesQuery{From: t0.Add(-72 * time.Hour), To: t0, Step: step}
			all := series(q)
			sum := make([]int64, len(all.Buckets))
			for _, c := range []string{clientA, clientB} {
				q.Client = c
				for _, cs := range series(q).Categories {
					for i, n := range cs.Counts {
						sum[i] += n
					}
				}
			}
			total := make([]int64, len(all.Buckets))
			for _, cs := range all.Categories {
				for i, n := range cs.Counts {
					total[i] += n
				}
			}
			if !slices.Equal(sum, total) {
				t.Errorf("step %v: the household %v, its clients %v", step, total, sum)
			}
		}

		_, err := r.Series(ctx, SeriesQuery{From: t0.Add(-50 * time.Hour), To: t0, Step: 30 * time.Minute})
		wantParamError(t, err, "step", "want a step of 1h or more, or from after")
		_, err = r.Series(ctx, SeriesQuery{From: t0.Add(-40 * time.Hour), To: t0, Step: time.Minute})
		wantParamError(t, err, "step", "2400 buckets; at most 2000: want a step of 2m or more")
		_, err = r.Series(ctx, SeriesQuery{From: t0.Add(-400 * 24 * time.Hour), To: t0, Step: time.Hour})
		wantParamError(t, err, "step", "want a step of 6h or more")
		_, err = r.Series(ctx, SeriesQuery{From: t0, To: t0.Add(-time.Hour), Step: time.Hour})
		wantParamError(t, err, "from", "not before to")
		_, err = r.Series(ctx, SeriesQuery{From: t0.Add(-time.Hour), To: t0, Step: 90 * time.Minute})
		wantParamError(t, err, "step", "whole hours")

		// No step: AutoStep's.
		if s := series(SeriesQuery{From: t0.Add(-24 * time.Hour), To: t0}); s.Step != "5m" || len(s.Buckets) != 288 {
			t.Errorf("24 hours with no step: %s, %d buckets", s.Step, len(s.Buckets))
		}
	})
}

// TestEndpoints: per pattern, the count in the range by action, and the
// first and last seen, of the household and of one client; pages.
func TestEndpoints(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		_, r, _ := filledIn(t, cfg)
		ctx := context.Background()
		spellE := func(es *Endpoints) string {
			var b strings.Builder
			for _, e := range es.Endpoints {
				fmt.Fprintf(&b, "%s %s %d %v %s..%s\n", e.Pattern, e.Category, e.Count, e.Actions,
					t0.Sub(e.FirstSeen), t0.Sub(e.LastSeen))
			}
			return b.String()
		}
		for _, c := range []struct {
			q    EndpointsQuery
			want string
		}{
			{EndpointsQuery{From: t0.Add(-72 * time.Hour), To: t0},
				patTel + " telemetry 10 map[sinkhole:10] 50h0m0s..5m0s\n" + patLog + " spotlight 1 map[log:1] 1h30m0s..1h30m0s\n"},
			{EndpointsQuery{From: t0.Add(-time.Hour), To: t0}, patTel + " telemetry 5 map[sinkhole:5] 50h0m0s..5m0s\n"},
			// A range within an hour is widened to the hour.
			{EndpointsQuery{From: t0.Add(-50*time.Minute - time.Hour), To: t0.Add(-70 * time.Minute)},
				patLog + " spotlight 1 map[log:1] 1h30m0s..1h30m0s\n"},
			{EndpointsQuery{Client: clientB, From: t0.Add(-72 * time.Hour), To: t0},
				patTel + " telemetry 4 map[sinkhole:4] 5m0s..5m0s\n" + patLog + " spotlight 1 map[log:1] 1h30m0s..1h30m0s\n"},
			{EndpointsQuery{Client: clientA, From: t0.Add(-72 * time.Hour), To: t0}, patTel + " telemetry 6 map[sinkhole:6] 50h0m0s..10m0s\n"},
			{EndpointsQuery{Client: clientA, From: t0.Add(-24 * time.Hour), To: t0}, patTel + " telemetry 3 map[sinkhole:3] 50h0m0s..10m0s\n"},
		} {
			es, err := r.Endpoints(ctx, c.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := spellE(es); got != c.want {
				t.Errorf("%+v:\n%swant\n%s", c.q, got, c.want)
			}
		}
		q := EndpointsQuery{From: t0.Add(-72 * time.Hour), To: t0, Limit: 1}
		es, err := r.Endpoints(ctx, q)
		if err != nil || len(es.Endpoints) != 1 || es.Endpoints[0].Pattern != patTel || es.Total != 2 || es.NextOffset == nil || *es.NextOffset != 1 {
			t.Fatalf("the first page of one: %+v, %v", es, err)
		}
		q.Offset = *es.NextOffset
		es, err = r.Endpoints(ctx, q)
		if err != nil || len(es.Endpoints) != 1 || es.Endpoints[0].Pattern != patLog || es.NextOffset != nil {
			t.Errorf("the second page of one: %+v, %v", es, err)
		}
		q.Offset = 5
		if es, err = r.Endpoints(ctx, q); err != nil || len(es.Endpoints) != 0 || es.Total != 2 {
			t.Errorf("a page past the last: %+v, %v", es, err)
		}
		_, err = r.Endpoints(ctx, EndpointsQuery{From: t0.Add(-time.Hour), To: t0, Limit: MaxLimit + 1})
		wantParamError(t, err, "limit", "want 1 to 1000")
		_, err = r.Endpoints(ctx, EndpointsQuery{From: t0.Add(-time.Hour), To: t0, Offset: -1})
		wantParamError(t, err, "offset", "want 0 to")
	})
}

// TestNew: the patterns each client asked for first since a time, from
// the first-seen table, and how far back the history goes.
func TestNew(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		_, r, _ := filledIn(t, cfg)
		ctx := context.Background()
		spellN := func(n *NewEndpoints) string {
			var b strings.Builder
			for _, e := range n.Endpoints {
				fmt.Fprintf(&b, "%s %s %s %s\n", e.Client, e.Pattern, e.Category, t0.Sub(e.FirstSeen))
			}
			return b.String()
		}
		for _, c := range []struct {
			q    NewQuery
			want string
		}{
			{NewQuery{Since: t0.Add(-time.Hour)}, clientB + " " + patTel + " telemetry 5m0s\n"},
			{NewQuery{Since: t0.Add(-2 * time.Hour)}, clientB + " " + patLog + " spotlight 1h30m0s\n" + clientB + " " + patTel + " telemetry 5m0s\n"},
			{NewQuery{Since: t0.Add(-60 * time.Hour)}, clientA + " " + patTel + " telemetry 50h0m0s\n" +
				clientB + " " + patLog + " spotlight 1h30m0s\n" + clientB + " " + patTel + " telemetry 5m0s\n"},
			{NewQuery{Since: t0.Add(-60 * time.Hour), Client: clientA}, clientA + " " + patTel + " telemetry 50h0m0s\n"},
			{NewQuery{Since: t0.Add(-60 * time.Hour), Limit: 1, Offset: 1}, clientB + " " + patLog + " spotlight 1h30m0s\n"},
			{NewQuery{Since: t0}, ""},
		} {
			n, err := r.New(ctx, c.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := spellN(n); got != c.want {
				t.Errorf("%+v:\n%swant\n%s", c.q, got, c.want)
			}
			if n.HistorySince == nil || !n.HistorySince.Equal(t0.Add(-50*time.Hour)) {
				t.Errorf("history_since %v, want the hour 50 h ago", n.HistorySince)
			}
		}
		n, _ := r.New(ctx, NewQuery{Since: t0.Add(-60 * time.Hour), Limit: 2})
		if n.Total != 3 || n.NextOffset == nil || *n.NextOffset != 2 {
			t.Errorf("a page of 2 of 3: total %d, next %v", n.Total, n.NextOffset)
		}
	})
}

// TestEventsPages: pages of stored events before a cursor, newest first,
// cover every event once, ties in a millisecond included; filters narrow
// them.
func TestEventsPages(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		_, r, _ := filledIn(t, cfg)
		ctx := context.Background()
		pageAll := func(q EventsQuery) []string {
			t.Helper()
			var got []string
			for range 20 {
				p, err := r.Events(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range p.Events {
					got = append(got, fmt.Sprintf("%s %s %s", t0.Sub(e.Time), e.Client, e.Category))
				}
				if p.Next == "" {
					return got
				}
				if q.Before, err = ParseCursor(p.Next, t0); err != nil {
					t.Fatal(err)
				}
			}
			t.Fatal("no end of the pages")
			return nil
		}
		all := pageAll(EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Limit: 1000})
		want := []string{"5m0s " + clientB + " telemetry", "5m0s " + clientB + " telemetry", "5m0s " + clientB + " telemetry", "5m0s " + clientB + " telemetry",
			"10m0s " + clientA + " telemetry", "1h30m0s " + clientB + " spotlight", "2h30m0s " + clientA + " telemetry", "2h30m0s " + clientA + " telemetry",
			"49h58m0s " + clientA + " telemetry", "49h59m0s " + clientA + " telemetry", "50h0m0s " + clientA + " telemetry"}
		equal(t, "all events in one page", all, want)
		for _, limit := range []int{1, 2, 3} {
			equal(t, fmt.Sprintf("all events in pages of %d", limit), pageAll(EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Limit: limit}), want)
		}
		equal(t, "before t0-10m", pageAll(EventsQuery{Before: EventCursor{TimeMs: t0.Add(-10 * time.Minute).UnixMilli()}, Limit: 2}), want[5:])
		equal(t, "clientB's", pageAll(EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Filter: Filter{Client: clientB}, Limit: 2}), append(want[:4:4], want[5]))
		equal(t, "spotlight", pageAll(EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Filter: Filter{Category: "spotlight", Action: "log"}}), want[5:6])
		for _, q := range []EventsQuery{
			{Before: EventCursor{TimeMs: t0.Add(-72 * time.Hour).UnixMilli()}},                                 // before every event
			{Before: EventCursor{TimeMs: t0.UnixMilli()}, Filter: Filter{Client: clientB, Category: "update"}}, // no detail
		} {
			if p, err := r.Events(ctx, q); err != nil || p.Events == nil || len(p.Events) != 0 || p.Next != "" {
				t.Errorf("%+v: %+v, %v; want an empty page, not null", q, p, err)
			}
		}

		p, err := r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Limit: 1})
		if err != nil || len(p.Events) != 1 {
			t.Fatal(p, err)
		}
		e := p.Events[0]
		if e.Name != telemetry || e.Type != "A" || e.Action != "sinkhole" || e.Pattern != patTel || e.Group != "default" || e.Source != "sinkhole" || e.Duration == 0 {
			t.Errorf("an event's fields: %+v", e)
		}
	})
}

// TestExport: every event and every row of counts in a range, in time
// order, read a page at a time.
func TestExport(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		_, r, _ := filledIn(t, cfg)
		ctx := context.Background()
		defer func(n int) { exportPage = n }(exportPage)
		for _, page := range []int{1, 2, 1000} {
			exportPage = page
			var events []string
			err := r.EachEvent(ctx, t0.Add(-3*time.Hour), t0, func(e *querylog.Record) error {
				events = append(events, fmt.Sprintf("%s %s", t0.Sub(e.Time), e.Client))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			equal(t, fmt.Sprintf("events, pages of %d", page), events, []string{"2h30m0s " + clientA, "2h30m0s " + clientA, "1h30m0s " + clientB,
				"10m0s " + clientA, "5m0s " + clientB, "5m0s " + clientB, "5m0s " + clientB, "5m0s " + clientB})
			var counts []string
			err = r.EachCount(ctx, t0.Add(-72*time.Hour), t0, func(c *CountRow) error {
				counts = append(counts, fmt.Sprintf("%s %d %s %s %s %s %d", t0.Sub(c.Time), c.Span, c.Client, c.Pattern, c.Category, c.Action, c.N))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			equal(t, fmt.Sprintf("counts, pages of %d", page), counts, []string{
				"50h0m0s 3600 " + clientA + " " + patTel + " telemetry sinkhole 3",
				"2h30m0s 60 " + clientA + " " + patTel + " telemetry sinkhole 2",
				"1h30m0s 60 " + clientB + " " + patLog + " spotlight log 1",
				"10m0s 60 " + clientA + " " + patTel + " telemetry sinkhole 1",
				"5m0s 60 " + clientB + " " + patTel + " telemetry sinkhole 4",
			})
		}
		stop := errors.New("stop")
		if err := r.EachEvent(ctx, t0.Add(-3*time.Hour), t0, func(*querylog.Record) error { return stop }); err != stop {
			t.Errorf("fn's error: %v", err)
		}
	})
}

// TestTotalsFollowCounts: totals and pattern_totals add up to counts
// after writes, roll-up, retention and max_size.
func TestTotalsFollowCounts(t *testing.T) {
	s, _, clk := filled(t)
	db := readDB(t, s.Path())
	check := func(when string) {
		t.Helper()
		counts := one(t, db, `SELECT sum(n) FROM counts`)
		minutes := one(t, db, `SELECT sum(n) FROM counts WHERE span = 60`)
		patterns := one(t, db, `SELECT sum(c.n) FROM counts c JOIN series s ON s.id = c.series WHERE s.pattern <> ''`)
		if h, m, p := one(t, db, `SELECT sum(n) FROM totals WHERE span = 3600`), one(t, db, `SELECT sum(n) FROM totals WHERE span = 60`),
			one(t, db, `SELECT sum(n) FROM pattern_totals`); h != counts || m != minutes || p != patterns {
			t.Errorf("%s: totals %d by hour, %d by minute, %d by pattern; counts %d, %d by minute, %d with a pattern", when, h, m, p, counts, minutes, patterns)
		}
	}
	check("after the first flush")
	clk.Set(t0.Add(50 * time.Hour)) // every minute of filled's is past 48 h
	s.Answered(answer(t, clientA, logged, t0.Add(49*time.Hour)))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	if n := one(t, db, `SELECT count(*) FROM counts WHERE span = 60 AND bucket < ?`, t0.Add(2*time.Hour).Unix()); n != 0 {
		t.Fatalf("%d minutes not rolled up", n)
	}
	check("after a roll-up")
	cfg := testConfig(filepath.Dir(s.Path()))
	cfg.Retention = Duration(49 * time.Hour) // all but t0+49h is past it
	s.Apply(cfg, querylogConfig(false, false))
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	check("after retention")
	if n := one(t, db, `SELECT count(*) FROM totals WHERE bucket < ?`, t0.Add(-time.Hour).Unix()); n != 0 {
		t.Errorf("%d totals rows past retention", n)
	}
	if n := one(t, db, `SELECT sum(n) FROM totals WHERE span = 3600`); n != 1 {
		t.Errorf("%d queries left in totals, want 1", n)
	}

	// Past max_size, the oldest counts go, and their totals with them,
	// with the hour the oldest count left is in counted again.
	for m := range 180 {
		for c := range 20 {
			s.Answered(answer(t, fmt.Sprintf("10.0.0.%d", c), telemetry, t0.Add(46*time.Hour+time.Duration(m)*time.Minute)))
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	check("before max_size")
	cfg.MaxSize = 160 << 10
	s.Apply(cfg, querylogConfig(false, false))
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	if oldest := one(t, db, `SELECT min(bucket) FROM counts`); oldest <= t0.Add(46*time.Hour).Unix() {
		t.Errorf("no counts deleted under max_size: the oldest is %v", time.Unix(oldest, 0).UTC())
	}
	t.Logf("oldest count left: %v", time.Unix(one(t, db, `SELECT min(bucket) FROM counts`), 0).UTC())
	check("after max_size")
}

// TestMigrateTotals: a file of schema 2 with counts gets its totals from
// them, and counts_series with n.
func TestMigrateTotals(t *testing.T) {
	cfg := testConfig(t.TempDir())
	db, err := sql.Open("sqlite", dsn(cfg.Path, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrateTo(context.Background(), db, 2); err != nil {
		t.Fatal(err)
	}
	h := t0.Add(-72 * time.Hour).Unix()
	for _, q := range []string{
		`INSERT INTO series VALUES (1, '` + clientA + `', 'default', '` + patTel + `', 'telemetry', 'sinkhole'),
			(2, '` + clientB + `', 'default', '` + patTel + `', 'telemetry', 'sinkhole'), (3, '` + clientB + `', 'default', '', 'unlisted', 'allow')`,
		fmt.Sprintf(`INSERT INTO counts VALUES (3600, %d, 1, 5), (3600, %d, 2, 7), (60, %d, 1, 1), (60, %d, 1, 2), (60, %d, 3, 9)`,
			h, h, t0.Unix()-120, t0.Unix()-60, t0.Unix()-60),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, _ := open(t, cfg, Options{})
	r := readDB(t, s.Path())
	equal(t, "totals", rows(t, r, `SELECT span, bucket, grp, category, action, n FROM totals ORDER BY span, bucket, category`), []string{
		fmt.Sprintf("60|%d|default|telemetry|sinkhole|1", t0.Unix()-120),
		fmt.Sprintf("60|%d|default|telemetry|sinkhole|2", t0.Unix()-60),
		fmt.Sprintf("60|%d|default|unlisted|allow|9", t0.Unix()-60),
		fmt.Sprintf("3600|%d|default|telemetry|sinkhole|12", h),
		fmt.Sprintf("3600|%d|default|telemetry|sinkhole|3", t0.Unix()-3600),
		fmt.Sprintf("3600|%d|default|unlisted|allow|9", t0.Unix()-3600),
	})
	equal(t, "pattern_totals", rows(t, r, `SELECT bucket, pattern, n FROM pattern_totals ORDER BY bucket`), []string{
		fmt.Sprintf("%d|%s|12", h, patTel), fmt.Sprintf("%d|%s|3", t0.Unix()-3600, patTel),
	})
	equal(t, "counts_series", rows(t, r, `SELECT name FROM pragma_index_info('counts_series') ORDER BY seqno`), []string{"series", "bucket", "n"})
}

// TestReaderCheck: a missing file, a file that is not a history, and
// schemas older and newer than this build's say so.
func TestReaderCheck(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	check := func(path, says string) {
		t.Helper()
		r, err := OpenReader(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		err = r.Check(ctx)
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("Check(%s) = %v, want %q", filepath.Base(path), err, says)
		}
		if _, err2 := r.Series(ctx, SeriesQuery{From: t0.Add(-time.Hour), To: t0, Step: time.Hour}); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("a query of %s: %v, want Check's error", filepath.Base(path), err2)
		}
	}
	check(filepath.Join(dir, "missing.db"), "does not exist: phonehome serve creates it")
	other := filepath.Join(dir, "other.db")
	db, _ := sql.Open("sqlite", other)
	db.Exec(`CREATE TABLE t (x)`)
	db.Close()
	check(other, "not a phonehome history file")
	for _, c := range []struct {
		v    int
		says string
	}{{1, "start phonehome serve on it once"}, {SchemaVersion + 1, "written by a newer phonehome"}} {
		path := filepath.Join(dir, fmt.Sprintf("v%d.db", c.v))
		db, _ := sql.Open("sqlite", dsn(path, time.Second))
		if err := migrateTo(ctx, db, min(c.v, SchemaVersion)); err != nil {
			t.Fatal(err)
		}
		db.Exec(`UPDATE schema_version SET version = ?`, c.v)
		db.Close()
		check(path, c.says)
	}
	if _, err := OpenReader(""); err == nil {
		t.Error("OpenReader with no path")
	}
}

// TestReadWhileWriting: a Reader reads, over and over, while the store
// writes a flush every few milliseconds: no read fails or waits long, and
// what it reads only grows.
func TestReadWhileWriting(t *testing.T) {
	clk := &clock{t: t0}
	s, _ := open(t, testConfig(t.TempDir()), Options{Now: clk.Now})
	s.Answered(answer(t, clientA, telemetry, t0.Add(-time.Minute)))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	r := openReader(t, s.Path(), clk)
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for j := range 20 {
				s.Answered(answer(t, fmt.Sprintf("10.0.%d.%d", i%4, j), telemetry, t0.Add(-time.Duration(j)*time.Second)))
			}
			if err := s.Flush(); err != nil {
				t.Error(err)
				return
			}
			written = int64(i)
		}
	}()
	var last int64
	var slowest time.Duration
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		sr, err := r.Series(ctx, SeriesQuery{From: t0.Add(-time.Hour), To: t0, Step: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Limit: 10}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Endpoints(ctx, EndpointsQuery{Client: "10.0.1.3", From: t0.Add(-time.Hour), To: t0}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
		if sr.Total < last {
			t.Fatalf("the total went from %d to %d", last, sr.Total)
		}
		last = sr.Total
	}
	close(stop)
	wg.Wait()
	if last < 100 {
		t.Errorf("read %d queries at the end; the writer wrote %d flushes", last, written)
	}
	t.Logf("%d flushes written, %d queries read last, slowest read %v", written, last, slowest)
	if slowest > 2*time.Second {
		t.Errorf("a read took %v beside the writer", slowest)
	}
}

// TestReaderWhileStopped: a Reader reads a file whose writer has closed
// (no write-ahead log left) and the file is not changed by it.
func TestReaderWhileStopped(t *testing.T) {
	s, r0, clk := filled(t)
	path := r0.Path()
	s.Close()
	before, _ := os.Stat(path)
	r := openReader(t, path, clk)
	if _, err := r.Events(context.Background(), EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Error("reading changed the file")
	}
}

// TestQueryPlans: every query a Reader runs reads a range of an index,
// never a whole table of counts, totals or events.
func TestQueryPlans(t *testing.T) {
	_, r, _ := filled(t)
	ctx := context.Background()
	type traced struct {
		sql  string
		args []any
	}
	var qs []traced
	r.trace = func(q string, args []any) { qs = append(qs, traced{q, args}) }
	f := Filter{Client: clientA, Group: "default", Category: "telemetry", Action: "sinkhole"}
	r.Series(ctx, SeriesQuery{From: t0.Add(-72 * time.Hour), To: t0, Step: time.Hour})
	r.Series(ctx, SeriesQuery{From: t0.Add(-time.Hour), To: t0, Step: time.Minute, Filter: Filter{Category: "telemetry"}})
	r.Series(ctx, SeriesQuery{From: t0.Add(-72 * time.Hour), To: t0, Step: time.Hour, Filter: f})
	r.Endpoints(ctx, EndpointsQuery{From: t0.Add(-72 * time.Hour), To: t0})
	r.Endpoints(ctx, EndpointsQuery{Client: clientA, From: t0.Add(-72 * time.Hour), To: t0})
	r.New(ctx, NewQuery{Since: t0.Add(-time.Hour), Client: clientA})
	r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Filter: Filter{Category: "telemetry"}})
	r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Filter: Filter{Client: clientA}})
	r.EachEvent(ctx, t0.Add(-time.Hour), t0, func(*querylog.Record) error { return nil })
	r.EachCount(ctx, t0.Add(-time.Hour), t0, func(*CountRow) error { return nil })
	r.trace = nil
	for _, q := range qs {
		plan := strings.Join(rows(t, r.db, "EXPLAIN QUERY PLAN "+q.sql, q.args...), "\n")
		for _, line := range strings.Split(plan, "\n") {
			// (event_details is read whole for a filter of events without
			// a client: a row per client, name and answer, not per event.)
			for _, table := range []string{"counts", "totals", "pattern_totals", "event_blocks", "series", "s", "c"} {
				if strings.Contains(line, "|SCAN "+table+" ") || strings.HasSuffix(line, "|SCAN "+table) {
					t.Errorf("a whole table read:\n%s\n%s", q.sql, plan)
				}
			}
		}
		if testing.Verbose() {
			t.Logf("%s\n%s", strings.Join(strings.Fields(q.sql), " "), plan)
		}
	}
	if len(qs) < 12 {
		t.Errorf("%d queries traced", len(qs))
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"now", t0}, {"NOW", t0}, {"24h", t0.Add(-24 * time.Hour)}, {"-24h", t0.Add(-24 * time.Hour)}, {"7d", t0.Add(-7 * 24 * time.Hour)},
		{"2w", t0.Add(-14 * 24 * time.Hour)}, {"-90m", t0.Add(-90 * time.Minute)}, {"2026-11-01T08:30:00Z", time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC)},
		{"2026-11-01T08:30:00.5+01:00", time.Date(2026, 11, 1, 7, 30, 0, 5e8, time.UTC)},
	} {
		if got, err := ParseTime(c.in, t0); err != nil || !got.Equal(c.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-", "yesterday", "24", "0h", "-0d", "2026-11-01", "1h-"} {
		if _, err := ParseTime(bad, t0); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
			t.Errorf("ParseTime(%q) = %v", bad, err)
		}
	}
	for in, want := range map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "1h": time.Hour, "6h": 6 * time.Hour, "1d": 24 * time.Hour, "1w": 7 * 24 * time.Hour, "120m": 2 * time.Hour} {
		if got, err := ParseStep(in); err != nil || got != want {
			t.Errorf("ParseStep(%q) = %v, %v", in, got, err)
		}
		if got := FormatStep(want); in != "120m" && got != in && !(in == "1w" && got == "7d") {
			t.Errorf("FormatStep(%v) = %s", want, got)
		}
	}
	for _, bad := range []string{"", "30s", "90s", "90m", "1h30m", "400d", "x"} {
		if _, err := ParseStep(bad); err == nil {
			t.Errorf("ParseStep(%q) took it", bad)
		}
	}
	if c, err := ParseCursor("1764244800123-4567", t0); err != nil || c != (EventCursor{1764244800123, 4567}) || c.String() != "1764244800123-4567" {
		t.Errorf("ParseCursor: %v, %v", c, err)
	}
	if c, err := ParseCursor("-1h", t0); err != nil || c != (EventCursor{TimeMs: t0.Add(-time.Hour).UnixMilli()}) {
		t.Errorf("ParseCursor(-1h): %v, %v", c, err)
	}
	if _, err := ParseCursor("12-x", t0); err == nil || !strings.Contains(err.Error(), "a page's next") {
		t.Errorf("ParseCursor(12-x): %v", err)
	}
	for _, c := range []struct {
		from time.Duration
		want time.Duration
	}{{time.Hour, time.Minute}, {24 * time.Hour, 5 * time.Minute}, {47 * time.Hour, 10 * time.Minute}, {72 * time.Hour, time.Hour},
		{30 * 24 * time.Hour, 3 * time.Hour}, {90 * 24 * time.Hour, 12 * time.Hour}, {10 * 365 * 24 * time.Hour, 28 * 24 * time.Hour}} {
		if got := AutoStep(t0.Add(-c.from), t0, t0); got != c.want {
			t.Errorf("AutoStep(%v) = %v, want %v", c.from, got, c.want)
		}
	}
}

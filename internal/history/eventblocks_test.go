package history

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/querylog"
)

// TestEventBlocks: events written over several flushes, some late (older
// than those of the flush before, so that blocks overlap in time), many
// in one millisecond, more than a block holds in a flush, and a flush
// spanning more than a block may: every read, newest first in pages of
// any size and oldest first from any time, returns them in the order of
// (time, as written), each once, and a filter returns its own.
func TestEventBlocks(t *testing.T) {
	clk := &clock{t: t0}
	s, _ := open(t, testConfig(t.TempDir()), Options{Now: clk.Now})
	rng := rand.New(rand.NewPCG(3, 4))
	type written struct {
		ms     int64
		seq    int // as written: the duration in microseconds
		client string
	}
	var all []written
	at := t0.Add(-time.Hour)
	for f, n := range []int{10, 700, 3, 300, 1, 90} {
		for range n {
			ms := at.Add(time.Duration(rng.IntN(5000)-1000) * time.Millisecond) // up to a second late
			switch {
			case f == 1 && rng.IntN(3) == 0:
				ms = at // many in one millisecond
			case f == 3 && rng.IntN(10) == 0:
				ms = at.Add(-time.Duration(rng.IntN(200)) * time.Second) // a flush spanning minutes
			}
			w := written{ms: ms.UnixMilli(), seq: len(all), client: fmt.Sprintf("192.168.1.%d", rng.IntN(3))}
			a := answer(t, w.client, telemetry, ms)
			a.Duration = time.Duration(w.seq) * time.Microsecond
			s.Answered(a)
			all = append(all, w)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		at = at.Add(5 * time.Second)
	}
	slices.SortStableFunc(all, func(x, y written) int { return cmp.Compare(x.ms, y.ms) })
	db := readDB(t, s.Path())
	if n := one(t, db, `SELECT count(*) FROM event_blocks`); n < 9 {
		t.Errorf("%d blocks; want the flush of 700 in three at least, the one of minutes in several", n)
	}
	if n := one(t, db, `SELECT count(*) FROM event_blocks a JOIN event_blocks b ON b.id > a.id AND b.first_ms < a.last_ms`); n == 0 {
		t.Error("no block overlaps one written before it")
	}
	if n := one(t, db, `SELECT max(last_ms - first_ms) FROM event_blocks`); n > blockSpan {
		t.Errorf("a block spans %d ms", n)
	}
	r := openReader(t, s.Path(), clk)
	ctx := context.Background()
	seqs := func(ws []written) []string {
		var out []string
		for _, w := range ws {
			out = append(out, fmt.Sprint(w.seq))
		}
		return out
	}
	spelled := func(e *querylog.Record) string { return fmt.Sprint(int(math.Round(e.Duration * 1e6))) }
	newest := slices.Clone(all)
	slices.Reverse(newest)
	for _, limit := range []int{1, 7, 100, 1000} {
		for _, f := range []Filter{{}, {Client: "192.168.1.1"}, {Category: "telemetry"}, {Client: "192.168.1.9"}} {
			var want []written
			for _, w := range newest {
				if f.Client == "" || f.Client == w.client {
					want = append(want, w)
				}
			}
			var got []string
			q := EventsQuery{Before: EventCursor{TimeMs: t0.UnixMilli()}, Filter: f, Limit: limit}
			for range 2000 {
				p, err := r.Events(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for i := range p.Events {
					got = append(got, spelled(&p.Events[i]))
				}
				if p.Next == "" {
					break
				}
				if q.Before, err = ParseCursor(p.Next, t0); err != nil {
					t.Fatal(err)
				}
			}
			equal(t, fmt.Sprintf("pages of %d, %+v", limit, f), got, seqs(want))
		}
	}
	defer func(n int) { exportPage = n }(exportPage)
	for _, page := range []int{1, 5, 2000} {
		exportPage = page
		for _, from := range []int{0, 17, 400, 1103} {
			from, to := all[from].ms, all[len(all)-1].ms+1
			var want []written
			for _, w := range all {
				if w.ms >= from && w.ms < to {
					want = append(want, w)
				}
			}
			var got []string
			if err := r.EachEvent(ctx, time.UnixMilli(from), time.UnixMilli(to), func(e *querylog.Record) error {
				got = append(got, spelled(e))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			equal(t, fmt.Sprintf("export in pages of %d from %d", page, from), got, seqs(want))
		}
	}
}

// TestPackBlocks: a block ends at blockEvents events or when the next
// event is more than blockSpan after its first; what is packed reads back
// as it was, in time order; a block cut short or of another format is an
// error, not a panic.
func TestPackBlocks(t *testing.T) {
	var events []packedEvent
	for i := range 600 {
		events = append(events, packedEvent{ms: 1_000_000 + int64(i/3), detail: int64(i % 7 * 1000), us: int64(i * 977)})
	}
	events = append(events, packedEvent{ms: 1_000_000 + blockSpan}, packedEvent{ms: 1_200_000 + blockSpan + 1, detail: 1 << 40}, packedEvent{ms: 900_000, us: 5})
	want := slices.Clone(events)
	slices.SortStableFunc(want, func(x, y packedEvent) int { return cmp.Compare(x.ms, y.ms) })
	blocks := packBlocks(events)
	var sizes []string
	var got []packedEvent
	for i, b := range blocks {
		sizes = append(sizes, fmt.Sprint(b.n))
		if b.last-b.first > blockSpan {
			t.Errorf("block %d spans %d ms", i, b.last-b.first)
		}
		var ids []int64
		if err := eachPacked(int64(i+1), b.first, b.data, func(id int64, e packedEvent) error {
			got = append(got, e)
			ids = append(ids, id)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(ids) != b.n || ids[0] != int64(i+1)*blockEvents || ids[len(ids)-1] != int64(i+1)*blockEvents+int64(b.n)-1 {
			t.Errorf("block %d: ids %v…, %d events", i, ids[:1], len(ids))
		}
	}
	// 900,000 alone (the next is 100 s later); 256 and 256 more; the
	// rest up to 1,000,000 + blockSpan; the last, more than blockSpan
	// after that.
	equal(t, "block sizes", sizes, []string{"1", "256", "256", "89", "1"})
	if !slices.Equal(got, want) {
		t.Errorf("read back %v…, want %v…", got[:3], want[:3])
	}
	b := blocks[1]
	for _, bad := range [][]byte{nil, {2}, b.data[:len(b.data)-1]} {
		if err := eachPacked(1, b.first, bad, func(int64, packedEvent) error { return nil }); !errors.Is(err, errBlock) {
			t.Errorf("eachPacked(%x…) = %v", bad[:min(4, len(bad))], err)
		}
	}
}

// TestDetailIDs: a detail is written once, its last_ms moved on once an
// hour it is in use (and across a restart), and its id stays; a new one
// takes the next id, and an id whose detail retention deleted is not given
// again.
func TestDetailIDs(t *testing.T) {
	clk := &clock{t: t0}
	cfg := testConfig(t.TempDir())
	cfg.EventsRetention = Duration(2 * time.Hour)
	s, _ := open(t, cfg, Options{Now: clk.Now})
	db := readDB(t, cfg.Path)
	flush := func(s *Store, at time.Time, names ...string) {
		t.Helper()
		clk.Set(at)
		for _, name := range names {
			for i := range 3 {
				s.Answered(answer(t, clientA, name, at.Add(time.Duration(i)*time.Second)))
			}
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for m := range 5 * 60 / 10 { // five hours, a flush every 10 minutes
		flush(s, t0.Add(time.Duration(m)*10*time.Minute), telemetry)
	}
	s.Close()
	s, _ = open(t, cfg, Options{Now: clk.Now})
	flush(s, t0.Add(5*time.Hour), telemetry, logged)
	equal(t, "details", rows(t, db, `SELECT id, pattern, last_ms FROM event_details ORDER BY id`), []string{
		// Moved on by the first event more than an hour past it: at 1:00:01,
		// 2:00:02, 3:10:00, 4:10:01; not at 5:00, after the restart.
		fmt.Sprintf("1|%s|%d", patTel, t0.Add(4*time.Hour+10*time.Minute+time.Second).UnixMilli()),
		fmt.Sprintf("2|%s|%d", patLog, t0.Add(5*time.Hour).UnixMilli()),
	})
	// arc.msn.com's events go with retention (and its detail, the last
	// id, with them); a new detail does not take its id.
	flush(s, t0.Add(8*time.Hour), telemetry)
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	flush(s, t0.Add(8*time.Hour+time.Minute), "settings-win.data.microsoft.com.")
	equal(t, "ids", rows(t, db, `SELECT id FROM event_details ORDER BY id`), []string{"1", "3"})
}

// TestDetailCacheBounded: with all_queries every distinct name is a
// detail; the writer remembers at most maxDetailCache of them, and a
// detail it has forgotten keeps its id when it comes back.
func TestDetailCacheBounded(t *testing.T) {
	clk := &clock{t: t0}
	cfg := testConfig(t.TempDir())
	s, _ := open(t, cfg, Options{Now: clk.Now, AllQueries: true, EventRate: 1 << 20})
	db := readDB(t, cfg.Path)
	n := maxDetailCache + 500
	for i := range n {
		s.Answered(answer(t, clientA, fmt.Sprintf("u%d.example.org.", i), t0.Add(time.Duration(i)*time.Millisecond)))
		if i%1000 == 999 {
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := s.details.known.Len(); got > maxDetailCache {
		t.Errorf("the writer remembers %d details, want at most %d", got, maxDetailCache)
	}
	// u0 was forgotten long ago: asked again, it is found, not inserted.
	clk.Set(t0.Add(time.Minute))
	s.Answered(answer(t, clientA, "u0.example.org.", t0.Add(time.Minute)))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	equal(t, "details", rows(t, db, `SELECT count(*), count(DISTINCT name) FROM event_details`), []string{fmt.Sprintf("%d|%d", n, n)})
}

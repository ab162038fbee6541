package history

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The busy household of issue 13: 50 machines, 20,000 matches each a day,
// for 30 days.
const (
	benchMachines = 50
	benchPerDay   = 20_000
	benchDays     = 30
	benchPatterns = 40 // each machine's; 80 in all
)

// benchNow is the benchmark database's "now": its data ends here.
var benchNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

var benchCategories = []string{"telemetry", "update", "store", "certificates", "defender", "connectivity", "licensing",
	"account", "spotlight", "settings", "edge", "push", "undocumented"}

// buildBenchDB writes the busy household's history to path as the store
// would have left it (minutes for the last 48 hours, hours before, the
// events of the last day, first and last seen) through direct inserts
// into the schema, in one transaction.
func buildBenchDB(tb testing.TB, path string) {
	tb.Helper()
	db, err := sql.Open("sqlite", dsn(path, 5*time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	// Schema 2, then the migration to the newest: it fills the totals
	// from the counts, as it does for a file the previous release wrote.
	if err := migrateTo(ctx, db, 2); err != nil {
		tb.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	rng := rand.New(rand.NewPCG(1, 2))
	type serie struct {
		id                        int64
		client, pattern, category string
	}
	// Each machine's patterns, with a weight falling with their rank
	// (a few chatty endpoints, a long tail).
	var series [][]serie
	weights := make([]float64, benchPatterns)
	var wsum float64
	for p := range weights {
		weights[p] = 1 / float64(p+1)
		wsum += weights[p]
	}
	insSeries, _ := tx.Prepare(`INSERT INTO series (client, grp, pattern, category, action) VALUES (?, ?, ?, ?, ?) RETURNING id`)
	for m := range benchMachines {
		client := fmt.Sprintf("192.168.1.%d", 10+m)
		grp := "default"
		if m%5 == 0 {
			grp = "kids"
		}
		var ss []serie
		for p := range benchPatterns {
			pi := (m + p*3) % (2 * benchPatterns)
			pattern := fmt.Sprintf("host%d.events.data.microsoft.com", pi)
			cat := benchCategories[pi%len(benchCategories)]
			action := "log"
			if cat == "telemetry" {
				action = "sinkhole"
			}
			var id int64
			if err := insSeries.QueryRow(client, grp, pattern, cat, action).Scan(&id); err != nil {
				tb.Fatal(err)
			}
			ss = append(ss, serie{id, client, pattern, cat})
		}
		series = append(series, ss)
	}
	insCount, _ := tx.Prepare(`INSERT INTO counts (span, bucket, series, n) VALUES (?, ?, ?, ?)`)
	insEvent, _ := tx.Prepare(`INSERT INTO events (time_ms, client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source, duration)
		VALUES (?, ?, ?, ?, 'A', 'log', ?, ?, '10-1809..11', '', '', 'all', 'NOERROR', 'upstream', 0.0012)`)
	start := benchNow.Add(-benchDays * 24 * time.Hour).Unix()
	edge := benchNow.Add(-RollupAfter).Unix()
	perHour := float64(benchPerDay) / 24
	for m, ss := range series {
		for h := start; h < benchNow.Unix(); h += hourSpan {
			if h < edge {
				// Rolled up: one row per pattern asked that hour.
				for p, s := range ss {
					if isNew(m, p) {
						continue
					}
					n := int64(perHour*weights[p]/wsum*(0.5+rng.Float64()) + 0.5)
					if n > 0 {
						if _, err := insCount.Exec(hourSpan, h, s.id, n); err != nil {
							tb.Fatal(err)
						}
					}
				}
				continue
			}
			// The last 48 hours, per minute: each match drawn by weight.
			for mi := h; mi < h+hourSpan; mi += minuteSpan {
				ns := map[int]int64{}
				for range benchPerDay / (24 * 60) {
					ns[draw(rng, weights, wsum)]++
				}
				for p, n := range ns {
					if isNew(m, p) && mi < benchNow.Add(-24*time.Hour).Unix() {
						continue
					}
					if _, err := insCount.Exec(minuteSpan, mi, ss[p].id, n); err != nil {
						tb.Fatal(err)
					}
				}
			}
		}
		// The last day's events.
		for i := range benchPerDay {
			p := draw(rng, weights, wsum)
			at := benchNow.Add(-24*time.Hour).UnixMilli() + int64(i)*(24*3600*1000/benchPerDay) + int64(m)
			if _, err := insEvent.Exec(at, ss[p].client, "default", ss[p].pattern+".", ss[p].category, ss[p].pattern); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if _, err := tx.Exec(`INSERT INTO seen (client, pattern, first_ms, last_ms)
		SELECT s.client, s.pattern, min(c.bucket) * 1000, max(c.bucket) * 1000 + 59000 FROM counts c JOIN series s ON s.id = c.series GROUP BY 1, 2`); err != nil {
		tb.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	began := time.Now()
	if err := migrate(ctx, db); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("migrating to schema %d took %v", SchemaVersion, time.Since(began).Round(time.Millisecond))
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		tb.Fatal(err)
	}
}

// isNew says whether machine m first asked for its pattern p in the last
// day: the two rarest patterns of every seventh machine.
func isNew(m, p int) bool { return m%7 == 0 && p >= benchPatterns-2 }

func draw(rng *rand.Rand, w []float64, sum float64) int {
	x := rng.Float64() * sum
	for i, v := range w {
		if x -= v; x < 0 {
			return i
		}
	}
	return len(w) - 1
}

// benchDB is the busy household's database, built once and kept in the
// temporary directory for later runs (it takes a while to build).
func benchDB(b *testing.B) string {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("phonehome-history-bench-v%d.db", SchemaVersion))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	start := time.Now()
	tmp := path + ".building"
	os.Remove(tmp)
	buildBenchDB(b, tmp)
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(path)
	b.Logf("built %s (%d MB) in %v", path, fi.Size()>>20, time.Since(start).Round(time.Second))
	return path
}

// BenchmarkReader runs the Reader's queries on the busy household's
// database (issue 13's target: /api/history over 30 days by the hour in
// under 100 ms). The database is built on the first run (a minute or so)
// and kept in the temporary directory.
func BenchmarkReader(b *testing.B) {
	path := benchDB(b)
	r, err := OpenReader(path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	r.now = func() time.Time { return benchNow }
	ctx := context.Background()
	month, day := benchNow.Add(-30*24*time.Hour), benchNow.Add(-24*time.Hour)
	client := "192.168.1.20"
	for _, c := range []struct {
		name string
		run  func() (int, error)
	}{
		{"history/household/30d/1h", func() (int, error) {
			s, err := r.Series(ctx, SeriesQuery{From: month, To: benchNow, Step: time.Hour})
			return len(s.Buckets) * len(s.Categories), err
		}},
		{"history/household/30d/auto", func() (int, error) {
			s, err := r.Series(ctx, SeriesQuery{From: month, To: benchNow})
			return len(s.Buckets) * len(s.Categories), err
		}},
		{"history/household/24h/5m", func() (int, error) {
			s, err := r.Series(ctx, SeriesQuery{From: day, To: benchNow, Step: 5 * time.Minute})
			return len(s.Buckets) * len(s.Categories), err
		}},
		{"history/telemetry/30d/1d", func() (int, error) {
			s, err := r.Series(ctx, SeriesQuery{From: month, To: benchNow, Step: 24 * time.Hour, Filter: Filter{Category: "telemetry"}})
			return len(s.Buckets) * len(s.Categories), err
		}},
		{"history/client/30d/1h", func() (int, error) {
			s, err := r.Series(ctx, SeriesQuery{From: month, To: benchNow, Step: time.Hour, Filter: Filter{Client: client}})
			return len(s.Buckets) * len(s.Categories), err
		}},
		{"history/client/24h/1m", func() (int, error) {
			s, err := r.Series(ctx, SeriesQuery{From: day, To: benchNow, Step: time.Minute, Filter: Filter{Client: client}})
			return len(s.Buckets) * len(s.Categories), err
		}},
		{"endpoints/household/30d", func() (int, error) {
			e, err := r.Endpoints(ctx, EndpointsQuery{From: month, To: benchNow})
			return e.Total, err
		}},
		{"endpoints/household/24h", func() (int, error) {
			e, err := r.Endpoints(ctx, EndpointsQuery{From: day, To: benchNow})
			return e.Total, err
		}},
		{"endpoints/client/30d", func() (int, error) {
			e, err := r.Endpoints(ctx, EndpointsQuery{Client: client, From: month, To: benchNow})
			return e.Total, err
		}},
		{"new/24h", func() (int, error) {
			n, err := r.New(ctx, NewQuery{Since: day})
			return n.Total, err
		}},
		{"events/before/100", func() (int, error) {
			p, err := r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: benchNow.Add(-6 * time.Hour).UnixMilli()}})
			return len(p.Events), err
		}},
		{"events/client/100", func() (int, error) {
			p, err := r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: benchNow.Add(-6 * time.Hour).UnixMilli()}, Filter: Filter{Client: client}})
			return len(p.Events), err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var n int
			for b.Loop() {
				var err error
				if n, err = c.run(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
			b.ReportMetric(float64(n), "results")
		})
	}
}

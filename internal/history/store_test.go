package history

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/internal/testlog"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

var testPolicy = sync.OnceValues(func() (*policy.Policy, error) {
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	return p, err
})

// The names the tests ask: sinkholed, logged, and allowed (not a match) by
// the default policy.
const (
	telemetry = "v10.events.data.microsoft.com."
	logged    = "arc.msn.com."
	unlisted  = "www.example.com."
)

// answer is the answer to a query of name from client at t, decided by
// the default policy.
func answer(tb testing.TB, client, name string, t time.Time) resolver.Answer {
	tb.Helper()
	p, err := testPolicy()
	if err != nil {
		tb.Fatal(err)
	}
	c := netip.MustParseAddr(client)
	d := p.Decide(c, name)
	src := resolver.SourceUpstream
	if d.Action == policy.Sinkhole {
		src = resolver.SourceSinkhole
	}
	return resolver.Answer{Start: t, Client: c, Question: dns.Question{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET},
		Decision: d, Source: src, Duration: 21 * time.Microsecond}
}

// clock is a clock the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// t0 is the tests' "now": a whole hour, so minute and hour buckets are
// easy to count.
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func slogTo(l *testlog.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// testConfig is a config on a file in dir that flushes only when the test
// says so.
func testConfig(dir string) Config {
	return Config{Path: filepath.Join(dir, "history.db"), Flush: time.Hour}
}

// open opens a Store that the test's cleanup closes.
func open(t *testing.T, cfg Config, opts Options) (*Store, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	opts.Log = slogTo(logs)
	if opts.Now == nil {
		opts.Now = (&clock{t: t0}).Now
	}
	if opts.MaintainEvery == 0 {
		opts.MaintainEvery = time.Hour
	}
	s, err := Open(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// readDB opens the file read-only beside the store.
func readDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// queryDB is what rows and one read: a *sql.DB of the file, or a
// store's database (storeDB).
type queryDB interface {
	Query(query string, args ...any) (*sql.Rows, error)
	QueryRow(query string, args ...any) *sql.Row
}

// testDB is a store's database, read beside it with queries in SQLite's
// spelling (the dialect's).
type testDB struct {
	db *sql.DB
	d  *dialect
}

func (db testDB) Query(q string, args ...any) (*sql.Rows, error) {
	return db.db.Query(db.d.sql(q), args...)
}
func (db testDB) QueryRow(q string, args ...any) *sql.Row {
	return db.db.QueryRow(db.d.sql(q), args...)
}
func (db testDB) Exec(q string, args ...any) (sql.Result, error) {
	return db.db.Exec(db.d.sql(q), args...)
}

// storeDB opens s's database beside it, the file or the shared database,
// for the test to read or to change behind the store's back.
func storeDB(t *testing.T, s *Store) testDB {
	t.Helper()
	driver, conn := "pgx", s.conn
	if !s.d.pg {
		driver, conn = "sqlite", dsn(s.Path(), 5*time.Second)
	}
	db, err := sql.Open(driver, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return testDB{db, s.d}
}

// rows runs a query and returns its rows, each spelled "a|b|c".
func rows(t *testing.T, db queryDB, query string, args ...any) []string {
	t.Helper()
	rs, err := db.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rs.Close()
	cols, _ := rs.Columns()
	var out []string
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b) // SQLite's text may come as bytes
			}
			s = append(s, fmt.Sprint(v))
		}
		out = append(out, strings.Join(s, "|"))
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func one(t *testing.T, db queryDB, query string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

// storedEvents reads every event the file keeps, oldest first, as a
// Reader does.
func storedEvents(t *testing.T, path string) []querylog.Record {
	t.Helper()
	r, err := OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	return readEvents(t, r)
}

// storeEvents reads every event s's database keeps, oldest first.
func storeEvents(t *testing.T, s *Store) []querylog.Record {
	t.Helper()
	r, err := s.Reader()
	if err != nil {
		t.Fatal(err)
	}
	return readEvents(t, r)
}

func readEvents(t *testing.T, r *Reader) []querylog.Record {
	t.Helper()
	defer r.Close()
	var out []querylog.Record
	if err := r.EachEvent(context.Background(), time.Unix(0, 0), time.Unix(1<<40, 0), func(e *querylog.Record) error {
		out = append(out, *e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

const countsBySeries = `SELECT c.span, c.bucket, s.client, s.grp, s.pattern, s.category, s.action, c.n
	FROM counts c JOIN series s ON s.id = c.series ORDER BY c.span, c.bucket, s.client, s.pattern`

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got  %s\n want %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// TestWhatItKeeps: with the query log's default rules, matches that were
// logged or sinkholed are counted per minute, client, group, pattern,
// category and action, their first and last time per client and pattern
// kept, and the events themselves stored with the query log's fields;
// allowed and unlisted queries, and queries the policy never saw, are not.
func TestWhatItKeeps(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		s, _ := open(t, cfg, Options{})
		at := t0.Add(30 * time.Second)
		for i := range 3 {
			s.Answered(answer(t, "192.168.1.23", telemetry, at.Add(time.Duration(i)*time.Second)))
		}
		s.Answered(answer(t, "192.168.1.23", telemetry, at.Add(time.Minute))) // the next minute
		s.Answered(answer(t, "192.168.1.40", logged, at))
		s.Answered(answer(t, "192.168.1.40", unlisted, at))                                 // allowed, not in the catalog
		s.Answered(resolver.Answer{Start: at, Client: netip.MustParseAddr("192.168.1.41")}) // refused before the policy
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		db := storeDB(t, s)
		b := t0.Unix()
		equal(t, "counts", rows(t, db, countsBySeries), []string{
			fmt.Sprintf("60|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|3", b),
			fmt.Sprintf("60|%d|192.168.1.40|default|arc.msn.com|spotlight|log|1", b),
			fmt.Sprintf("60|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|1", b+60),
		})
		ms := at.UnixMilli()
		equal(t, "seen", rows(t, db, `SELECT client, pattern, first_ms, last_ms FROM seen ORDER BY client`), []string{
			fmt.Sprintf("192.168.1.23|v10.events.data.microsoft.com|%d|%d", ms, ms+60_000),
			fmt.Sprintf("192.168.1.40|arc.msn.com|%d|%d", ms, ms),
		})
		events := storeEvents(t, s)
		var fields []string
		for _, e := range events {
			if e.Client == "192.168.1.40" {
				fields = append(fields, fmt.Sprintf("%d|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%v", e.Time.UnixMilli(), e.Client, e.Group, e.Name, e.Type,
					e.Action, e.Category, e.Pattern, e.Windows, e.Edition, e.Rcode, e.Source, e.Duration))
			}
		}
		equal(t, "events", fields, []string{
			fmt.Sprintf("%d|192.168.1.40|default|arc.msn.com.|A|log|spotlight|arc.msn.com|%s|all|NOERROR|upstream|2.1e-05", ms, answer(t, "192.168.1.40", logged, at).Decision.Match.Rule.Versions),
		})
		if len(events) != 5 {
			t.Errorf("%d events, want 5", len(events))
		}
		if got := testutil.ToFloat64(s.m.rowsEvents); got != 5 {
			t.Errorf("rows written (events) = %v, want 5", got)
		}
	})
}

// TestPrivacyRules: all_queries counts every decided query (an unlisted
// name under pattern ""), anonymize_clients spells clients as the query
// log does; a reload (Apply) changes both for what comes next.
func TestPrivacyRules(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		s, _ := open(t, cfg, Options{AllQueries: true, AnonymizeClients: true})
		s.Answered(answer(t, "192.168.1.23", unlisted, t0))
		s.Answered(answer(t, "2001:db8:1:2:3:4:5:6", telemetry, t0))
		s.Apply(cfg, querylogConfig(false, false))
		s.Answered(answer(t, "192.168.1.23", unlisted, t0)) // no longer kept
		s.Answered(answer(t, "192.168.1.23", logged, t0))
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		db := storeDB(t, s)
		b := t0.Unix()
		equal(t, "counts", rows(t, db, countsBySeries), []string{
			fmt.Sprintf("60|%d|192.168.1.0|default||unlisted|allow|1", b),
			fmt.Sprintf("60|%d|192.168.1.23|default|arc.msn.com|spotlight|log|1", b),
			fmt.Sprintf("60|%d|2001:db8:1::|default|v10.events.data.microsoft.com|telemetry|sinkhole|1", b),
		})
		equal(t, "seen (not for unlisted names)", rows(t, db, `SELECT client, pattern FROM seen ORDER BY client`), []string{
			"192.168.1.23|arc.msn.com", "2001:db8:1::|v10.events.data.microsoft.com",
		})
		var clients []string
		for _, e := range storeEvents(t, s) {
			clients = append(clients, e.Client)
		}
		equal(t, "event clients", clients, []string{"192.168.1.0", "2001:db8:1::", "192.168.1.23"})
	})
}

// TestRestart: what was written is there after Close and Open, and counts
// of the same minute written after the restart add up.
func TestRestart(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		s, _ := open(t, cfg, Options{})
		s.Answered(answer(t, "192.168.1.23", telemetry, t0))
		s.Answered(answer(t, "192.168.1.23", telemetry, t0))
		s.Close() // writes what is left
		s.Answered(answer(t, "192.168.1.23", telemetry, t0))
		if got := testutil.ToFloat64(s.m.droppedCounts); got != 1 {
			t.Errorf("an answer after Close: dropped %v, want 1", got)
		}

		s, _ = open(t, cfg, Options{})
		s.Answered(answer(t, "192.168.1.23", telemetry, t0.Add(time.Second)))
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		db := storeDB(t, s)
		equal(t, "counts", rows(t, db, countsBySeries), []string{
			fmt.Sprintf("60|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|3", t0.Unix()),
		})
		if n := one(t, db, `SELECT sum(n) FROM event_blocks`); n != 3 {
			t.Errorf("%d events, want 3", n)
		}
		if n := one(t, db, `SELECT count(*) FROM series`); n != 1 {
			t.Errorf("%d series, want 1", n)
		}
	})
}

// TestRollupAndRetention moves an injected clock: minute rows of hours
// that ended more than 48 h ago become hour rows with the same totals;
// counts and first seen go after retention, events after
// events_retention, and series and event details with them.
func TestRollupAndRetention(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		clk := &clock{t: t0}
		cfg.Retention, cfg.EventsRetention = Duration(10*24*time.Hour), Duration(3*24*time.Hour)
		s, _ := open(t, cfg, Options{Now: clk.Now})
		old := t0.Add(-50 * time.Hour) // 10:00 two days ago and two hours
		for _, at := range []time.Time{old, old.Add(time.Minute), old.Add(59 * time.Minute), old.Add(61 * time.Minute)} {
			s.Answered(answer(t, "192.168.1.23", telemetry, at))
		}
		s.Answered(answer(t, "192.168.1.23", telemetry, t0.Add(-47*time.Hour))) // recent: stays in minutes
		s.Answered(answer(t, "192.168.1.40", logged, t0.Add(-9*24*time.Hour)))  // old, but kept
		s.Answered(answer(t, "192.168.1.50", logged, t0.Add(-11*24*time.Hour))) // past retention
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := s.Maintain(); err != nil {
			t.Fatal(err)
		}
		db := storeDB(t, s)
		h := func(t time.Time) int64 { return t.Truncate(time.Hour).Unix() }
		equal(t, "counts after roll-up and retention", rows(t, db, countsBySeries), []string{
			fmt.Sprintf("60|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|1", t0.Add(-47*time.Hour).Unix()),
			fmt.Sprintf("3600|%d|192.168.1.40|default|arc.msn.com|spotlight|log|1", h(t0.Add(-9*24*time.Hour))),
			fmt.Sprintf("3600|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|3", h(old)),
			fmt.Sprintf("3600|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|1", h(old)+3600),
		})
		equal(t, "seen", rows(t, db, `SELECT client FROM seen ORDER BY client`), []string{"192.168.1.23", "192.168.1.40"})
		if n := one(t, db, `SELECT count(*) FROM series WHERE client = '192.168.1.50'`); n != 0 {
			t.Error("the series of a client past retention is still there")
		}
		if n := one(t, db, `SELECT sum(n) FROM event_blocks`); n != 5 {
			t.Errorf("%d events, want the 5 of the last 3 days", n)
		}
		equal(t, "the details of the events kept", rows(t, db, `SELECT client FROM event_details`), []string{"192.168.1.23"})

		// A minute written late into an hour already rolled up adds to it.
		s.Answered(answer(t, "192.168.1.23", telemetry, old.Add(2*time.Minute)))
		clk.Set(t0.Add(2 * time.Hour)) // and -47 h is now -49 h
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := s.Maintain(); err != nil {
			t.Fatal(err)
		}
		equal(t, "counts, two hours later", rows(t, db, countsBySeries), []string{
			fmt.Sprintf("3600|%d|192.168.1.40|default|arc.msn.com|spotlight|log|1", h(t0.Add(-9*24*time.Hour))),
			fmt.Sprintf("3600|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|4", h(old)),
			fmt.Sprintf("3600|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|1", h(old)+3600),
			fmt.Sprintf("3600|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|1", h(t0.Add(-47*time.Hour))),
		})
		if n := one(t, db, `SELECT sum(n) FROM counts`); n != 7 {
			t.Errorf("%d queries counted in all, want 7", n)
		}
	})
}

// TestMaxSize: past max_size the oldest events go first; with none left,
// the oldest counts; and the file shrinks back under the bound.
func TestMaxSize(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: t0}
	cfg := testConfig(dir)
	cfg.MaxSize = 256 << 10
	s, _ := open(t, cfg, Options{Now: clk.Now})
	// Counts for 20 clients a minute over two hours (2,400 rows), and the
	// events of 16 queries of each a minute (38,400, packed), enough to
	// pass the bound.
	var times []time.Time
	for m := range 120 {
		for c := range 20 {
			for q := range 16 {
				at := t0.Add(-3*time.Hour + time.Duration(m)*time.Minute + time.Duration(q)*time.Minute/16)
				s.Answered(answer(t, fmt.Sprintf("10.0.0.%d", c), telemetry, at))
				times = append(times, at)
			}
		}
	}
	slices.SortFunc(times, time.Time.Compare)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	db := readDB(t, cfg.Path)
	// The flush passed the bound, and brought the file back under it:
	// with events deleted, oldest first, and every count kept.
	if size := fileSize(cfg.Path); size > int64(cfg.MaxSize) {
		t.Errorf("file is %d bytes after the flush, over max_size %d", size, cfg.MaxSize)
	}
	events := one(t, db, `SELECT coalesce(sum(n), 0) FROM event_blocks`)
	if events == 0 || events >= int64(len(times)) {
		t.Errorf("%d of %d events left; want some deleted, not all", events, len(times))
	}
	if n := one(t, db, `SELECT count(*) FROM counts`); n != 2400 {
		t.Errorf("%d counts rows, want all 2400 while events were left", n)
	}
	if first := storedEvents(t, cfg.Path)[0].Time; !first.Equal(times[len(times)-int(events)]) {
		t.Errorf("the oldest event left is at %v; want the newest %d kept, from %v", first, events, times[len(times)-int(events)])
	}

	// A bound so low that no event can stay: counts go, oldest first.
	cfg.MaxSize = 96 << 10
	s.Apply(cfg, querylogConfig(false, false))
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	if n := one(t, db, `SELECT count(*) FROM event_blocks`); n != 0 {
		t.Errorf("%d blocks of events left under a bound that holds none", n)
	}
	if size := fileSize(cfg.Path); size > int64(cfg.MaxSize) {
		t.Errorf("file is %d bytes, over max_size %d", size, cfg.MaxSize)
	}
	if n := one(t, db, `SELECT min(bucket) FROM counts`); n <= t0.Add(-3*time.Hour).Unix() {
		t.Error("the oldest counts were not the ones deleted")
	}
}

func TestOff(t *testing.T) {
	s, err := Open(Config{Off: true}, Options{})
	if s != nil || err != nil {
		t.Errorf("Open(off) = %v, %v; want nil, nil", s, err)
	}
	s.Close()
	s.Apply(Config{}, querylogConfig(false, false))
}

// TestMetricsLint runs Prometheus' promlint over the store's metrics.
func TestMetricsLint(t *testing.T) {
	s, _ := open(t, testConfig(t.TempDir()), Options{})
	s.Answered(answer(t, "192.168.1.23", telemetry, t0))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(s.Collector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(s.Collector(), "phonehome_history_database_bytes"); n != 1 {
		t.Errorf("%d database size series", n)
	}
	if got := testutil.ToFloat64(sizeOnly{s.m}); got != float64(fileSize(s.Path())) || got == 0 {
		t.Errorf("database size %v, want %d", got, fileSize(s.Path()))
	}
}

// sizeOnly collects the database size alone.
type sizeOnly struct{ m *metrics }

func (c sizeOnly) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.sizeDesc }

func (c sizeOnly) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.m.sizeDesc, prometheus.GaugeValue, float64(fileSize(c.m.path)))
}

func querylogConfig(all, anonymize bool) querylog.Config {
	return querylog.Config{AllQueries: all, AnonymizeClients: anonymize}
}

// TestAnsweredAllocates: once its maps have grown, Answered allocates
// nothing, whether it keeps an answer's count, its event, or drops them.
func TestAnsweredAllocates(t *testing.T) {
	s, _ := open(t, testConfig(t.TempDir()), Options{Backlog: 1000})
	as := []resolver.Answer{answer(t, "192.168.1.23", telemetry, t0), answer(t, "192.168.1.40", logged, t0), answer(t, "192.168.1.40", unlisted, t0)}
	for i := range 2000 { // past the bound: events are dropped
		s.Answered(as[i%len(as)])
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() { s.Answered(as[i%len(as)]); i++ }); n != 0 {
		t.Errorf("Answered: %v allocations", n)
	}
}

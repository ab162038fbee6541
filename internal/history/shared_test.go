package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonehome/phonehome/internal/pgtest"
)

// backends runs fn on each kind of history database: the file (cfg has
// a path in a temporary directory) and a PostgreSQL database shared by
// instances (cfg has a DSN of a throwaway server; skipped without
// PostgreSQL, but under CI). Both flush only when the test says.
func backends(t *testing.T, fn func(t *testing.T, cfg Config)) {
	t.Run("file", func(t *testing.T) { fn(t, testConfig(t.TempDir())) })
	t.Run("postgres", func(t *testing.T) { fn(t, pgConfig(t, pgtest.Start(t, pgtest.Options{}), "dns1")) })
}

// pgConfig is a config on srv's database, as instance.
func pgConfig(t *testing.T, srv *pgtest.Server, instance string) Config {
	t.Setenv(EnvDSN, "")
	cfg := testConfig(t.TempDir())
	cfg.DSN, cfg.Instance = srv.DSN(), instance
	return cfg
}

// TestSharedInstances: two instances write one shared database at once,
// every flush a transaction over the same keys (no two wait for each
// other: each row has its instance in its key); a Reader sees the fleet
// added up, or one instance's part with Instance; events say which
// instance answered.
func TestSharedInstances(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	clk := &clock{t: t0}
	s1, _ := open(t, pgConfig(t, srv, "dns1"), Options{Now: clk.Now})
	s2, _ := open(t, pgConfig(t, srv, "dns2"), Options{Now: clk.Now})
	const rounds = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*rounds)
	for _, s := range []*Store{s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				for c := range 30 {
					s.Answered(answer(t, fmt.Sprintf("10.0.0.%d", c), telemetry, t0.Add(-time.Duration(i)*time.Minute)))
				}
				s.Answered(answer(t, clientA, logged, t0.Add(-time.Duration(i)*time.Minute)))
				errs <- s.Flush()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a flush beside another instance's: %v", err)
		}
	}
	if err := s2.Maintain(); err != nil {
		t.Fatal(err)
	}
	r, err := s1.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.now = clk.Now
	ctx := context.Background()
	count := func(instance string) (telemetryN, loggedN int64) {
		t.Helper()
		es, err := r.Endpoints(ctx, EndpointsQuery{From: t0.Add(-time.Hour), To: t0.Add(time.Minute), Instance: instance})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es.Endpoints {
			switch e.Pattern {
			case patTel:
				telemetryN = e.Count
			case patLog:
				loggedN = e.Count
			}
		}
		return
	}
	if tel, lg := count(""); tel != 2*rounds*30 || lg != 2*rounds {
		t.Errorf("the fleet: %d telemetry, %d logged; want %d, %d", tel, lg, 2*rounds*30, 2*rounds)
	}
	if tel, lg := count("dns2"); tel != rounds*30 || lg != rounds {
		t.Errorf("dns2: %d telemetry, %d logged; want %d, %d", tel, lg, rounds*30, rounds)
	}
	if tel, _ := count("dns9"); tel != 0 {
		t.Errorf("an instance that wrote nothing: %d", tel)
	}
	es, err := r.Endpoints(ctx, EndpointsQuery{Client: clientA, From: t0.Add(-time.Hour), To: t0.Add(time.Minute), Instance: "dns1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(es.Endpoints) != 1 || es.Endpoints[0].Count != rounds || !es.Endpoints[0].FirstSeen.Equal(t0.Add(-(rounds-1)*time.Minute)) {
		t.Errorf("clientA on dns1: %+v", es.Endpoints)
	}
	series, err := r.Series(ctx, SeriesQuery{From: t0.Add(-time.Hour), To: t0, Step: time.Hour, Filter: Filter{Instance: "dns1", Category: "spotlight"}})
	if err != nil {
		t.Fatal(err)
	}
	if series.Total != rounds-1 { // the minute at t0 is outside [t0-1h, t0)
		t.Errorf("dns1's spotlight series: %d, want %d", series.Total, rounds-1)
	}
	page, err := r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: t0.Add(time.Minute).UnixMilli()}, Filter: Filter{Client: clientA}, Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]int{}
	for _, e := range page.Events {
		by[e.Instance]++
	}
	if by["dns1"] != rounds || by["dns2"] != rounds || len(by) != 2 {
		t.Errorf("clientA's events by instance: %v", by)
	}
	page, err = r.Events(ctx, EventsQuery{Before: EventCursor{TimeMs: t0.Add(time.Minute).UnixMilli()}, Filter: Filter{Client: clientA, Instance: "dns2"}, Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != rounds || page.Events[rounds-1].Instance != "dns2" {
		t.Errorf("clientA's events on dns2: %d, want %d, all on dns2", len(page.Events), rounds)
	}
	is, err := r.Instances(ctx, t0.Add(-time.Hour), t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if want := []InstanceTotal{{"dns1", rounds * 31}, {"dns2", rounds * 31}}; !is.Shared || !slices.Equal(is.Instances, want) {
		t.Errorf("Instances: %+v, want shared, %v", is, want)
	}
	nw, err := r.New(ctx, NewQuery{Since: t0.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if nw.Total != 31 { // 30 clients' telemetry and clientA's spotlight, once each though two instances saw them
		t.Errorf("new endpoints: %d, want 31", nw.Total)
	}
}

// TestSharedDatabaseDown: with the shared database down, at start and
// later, the store keeps counting (Answered never waits), logs the
// failure once, says how many queries are behind, and writes them all
// when the database is back; neither the log nor the store's name for
// the database repeats the password.
func TestSharedDatabaseDown(t *testing.T) {
	const password = "Ph0neHome-s3cret"
	srv := pgtest.Start(t, pgtest.Options{Password: password}) // in the DSN: the log must not repeat it
	srv.Stop()
	clk := &clock{t: t0}
	cfg := pgConfig(t, srv, "dns1")
	s, logs := open(t, cfg, Options{Now: clk.Now})
	for i := range 5 {
		s.Answered(answer(t, clientA, telemetry, t0.Add(time.Duration(i)*time.Second)))
	}
	for range 3 {
		if err := s.Flush(); err == nil {
			t.Fatal("a flush with the database down did not fail")
		}
	}
	if n := logs.Count("history: cannot write"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, logs)
	}
	if got := testutil.ToFloat64(s.m.pending); got != 5 {
		t.Errorf("pending (behind) = %v, want 5", got)
	}
	srv.Start()
	s.Answered(answer(t, clientA, telemetry, t0.Add(time.Minute)))
	if err := s.Flush(); err != nil {
		t.Fatalf("the database is back: %v", err)
	}
	if got := testutil.ToFloat64(s.m.pending); got != 0 {
		t.Errorf("pending after the catch-up = %v", got)
	}
	// Down again, now that the store has a connection: the same.
	srv.Stop()
	s.Answered(answer(t, clientB, logged, t0.Add(2*time.Minute)))
	if err := s.Flush(); err == nil {
		t.Fatal("a flush with the database stopped did not fail")
	}
	srv.Start()
	if err := s.Flush(); err != nil {
		t.Fatalf("the database is back again: %v", err)
	}
	db := storeDB(t, s)
	if n := one(t, db, `SELECT sum(n) FROM counts`); n != 7 {
		t.Errorf("%d queries written, want 7", n)
	}
	if n := len(storeEvents(t, s)); n != 7 {
		t.Errorf("%d events written, want 7", n)
	}
	if n := logs.Count("history: cannot write"); n != 2 {
		t.Errorf("two outages logged %d times, want twice:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "history: writing again") {
		t.Errorf("no word that it writes again:\n%s", logs)
	}
	if !strings.Contains(s.Path(), "postgres://") || strings.Contains(logs.String(), password) || strings.Contains(s.Path(), password) {
		t.Errorf("the store's name for the database (%s) or its log repeats the password:\n%s", s.Path(), logs)
	}
}

// TestSharedMaintenance: two instances maintaining at once roll each
// minute up once (the advisory lock), and each drops only its own unused
// series.
func TestSharedMaintenance(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	clk := &clock{t: t0}
	s1, _ := open(t, pgConfig(t, srv, "dns1"), Options{Now: clk.Now})
	s2, _ := open(t, pgConfig(t, srv, "dns2"), Options{Now: clk.Now})
	old := t0.Add(-50 * time.Hour)
	for i := range 60 {
		s1.Answered(answer(t, clientA, telemetry, old.Add(time.Duration(i)*time.Minute)))
		s2.Answered(answer(t, clientB, telemetry, old.Add(time.Duration(i)*time.Minute)))
	}
	for _, s := range []*Store{s1, s2} {
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*Store{s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Maintain()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	db := storeDB(t, s1)
	equal(t, "counts rolled up once", rows(t, db, `SELECT c.span, s.instance, s.client, c.n FROM counts c JOIN series s ON s.id = c.series ORDER BY 2`),
		[]string{"3600|dns1|" + clientA + "|60", "3600|dns2|" + clientB + "|60"})
}

// TestInstancesOfAFile: a file is one instance's, history.instance or
// the host name, whatever instance filter asks for another.
func TestInstancesOfAFile(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Instance = "home"
	s, r, _ := filledIn(t, cfg)
	ctx := context.Background()
	is, err := r.Instances(ctx, t0.Add(-3*time.Hour), t0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []InstanceTotal{{"home", 8}}; is.Shared || !slices.Equal(is.Instances, want) {
		t.Errorf("Instances: %+v, want not shared, %v", is, want)
	}
	for instance, want := range map[string]int64{"home": 8, "dns2": 0} {
		series, err := r.Series(ctx, SeriesQuery{From: t0.Add(-3 * time.Hour), To: t0, Step: time.Hour, Filter: Filter{Instance: instance}})
		if err != nil {
			t.Fatal(err)
		}
		if series.Total != want {
			t.Errorf("the series of instance %s: %d, want %d", instance, series.Total, want)
		}
	}
	s.Close()
}

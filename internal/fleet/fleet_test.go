package fleet

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonehome/phonehome/internal/pgtest"
	"github.com/phonehome/phonehome/internal/testlog"
	"github.com/phonehome/phonehome/resolver"
)

// fast is the tuning of most tests: no polling, so that a change another
// instance makes arrives by NOTIFY or not at all, and quick retries.
var fast = tuning{listen: true, listenSQL: defaults.listenSQL, poll: time.Hour, minBackoff: 10 * time.Millisecond, maxBackoff: 50 * time.Millisecond,
	timeout: 10 * time.Second, wait: 20 * time.Second}

// recorder is an Apply that keeps every pause it was given.
type recorder struct {
	mu      sync.Mutex
	applied []*resolver.Pause
}

func (r *recorder) apply(p *resolver.Pause) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, p)
}

// last is the pause applied last, and how many were.
func (r *recorder) last() (*resolver.Pause, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return nil, 0
	}
	return r.applied[len(r.applied)-1], len(r.applied)
}

type instance struct {
	*Fleet
	rec  *recorder
	logs *testlog.Buffer
}

func newInstance(t *testing.T, dsn, name string, tune tuning) *instance {
	t.Helper()
	in := &instance{rec: &recorder{}, logs: &testlog.Buffer{}}
	f, err := start(Options{ConnString: dsn, Instance: name, Apply: in.rec.apply, Log: slog.New(slog.NewTextHandler(in.logs, nil))}, tune)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	in.Fleet = f
	return in
}

// waitFor waits until cond holds. The bound is generous: it is there to
// end a broken test, not to measure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not so after 30 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// synced waits until the instance has connected and applied what the
// table holds.
func (in *instance) synced(t *testing.T) {
	t.Helper()
	waitFor(t, "connected and read the table", func() bool {
		_, n := in.rec.last()
		return in.Connected() && n > 0
	})
}

// is reports whether p is the pause want, as set by instance by.
func is(p *resolver.Pause, want *resolver.Pause, by string) bool {
	return p != nil && want != nil && p.Until.Sub(want.Until).Abs() < time.Millisecond &&
		slices.Equal(p.Categories, want.Categories) && p.Reason == want.Reason && p.By == by
}

// TestPauseReachesOtherInstance: a pause set on one instance reaches the
// other by NOTIFY (polling is off), and a resume on the other comes back.
func TestPauseReachesOtherInstance(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	a := newInstance(t, db.DSN(), "a", fast)
	b := newInstance(t, db.DSN(), "b", fast)
	a.synced(t)
	b.synced(t)
	if p, _ := b.rec.last(); p != nil {
		t.Fatalf("an empty table applied %+v", p)
	}

	p := &resolver.Pause{Until: time.Now().Add(15 * time.Minute), Categories: []string{"telemetry"}, Reason: "testing an update"}
	start := time.Now()
	if err := a.SetPause(p); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.rec.last(); !is(got, p, "a") {
		t.Fatalf("a applied %+v, want %+v at once", got, p)
	}
	waitFor(t, "b has a's pause", func() bool {
		got, _ := b.rec.last()
		return is(got, p, "a")
	})
	t.Logf("a's pause reached b in %v", time.Since(start))
	if b.logs.Count("paused by another instance", "by=a", "reason=\"testing an update\"") != 1 {
		t.Errorf("b's log:\n%s", b.logs)
	}

	if err := b.SetPause(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a has b's resume", func() bool {
		got, n := a.rec.last()
		return got == nil && n > 2
	})
	if a.logs.Count("resumed by another instance", "by=b") != 1 {
		t.Errorf("a's log:\n%s", a.logs)
	}
	if a.logs.Count("level=ERROR") != 0 || b.logs.Count("level=ERROR") != 0 {
		t.Errorf("errors logged:\n%s\n%s", a.logs, b.logs)
	}
}

// TestPollingFallback: an instance that cannot LISTEN gets the pause by
// reading the table.
func TestPollingFallback(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	a := newInstance(t, db.DSN(), "a", fast)
	polling := fast
	polling.listen, polling.poll = false, 20*time.Millisecond
	b := newInstance(t, db.DSN(), "b", polling)
	a.synced(t)
	b.synced(t)
	p := &resolver.Pause{Until: time.Now().Add(time.Hour)}
	if err := a.SetPause(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b has a's pause", func() bool {
		got, _ := b.rec.last()
		return is(got, p, "a")
	})
	// And b's resume reaches a, which listens.
	if err := b.SetPause(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a has b's resume", func() bool {
		got, n := a.rec.last()
		return got == nil && n > 2
	})
}

// TestListenRefused: a database that refuses LISTEN is said so once, and
// polling brings the pause.
func TestListenRefused(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	a := newInstance(t, db.DSN(), "a", fast)
	refused := fast
	refused.listenSQL, refused.poll = `LISTEN ""`, 20*time.Millisecond // a zero-length name: an error from the server
	b := newInstance(t, db.DSN(), "b", refused)
	a.synced(t)
	b.synced(t)
	p := &resolver.Pause{Until: time.Now().Add(time.Hour)}
	if err := a.SetPause(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b has a's pause", func() bool {
		got, _ := b.rec.last()
		return is(got, p, "a")
	})
	if b.logs.Count("level=WARN", "refuses LISTEN") != 1 || b.logs.Count("level=ERROR") != 0 {
		t.Errorf("b's log:\n%s", b.logs)
	}
}

// TestRestartPicksUpPause: an instance that starts while a pause is in
// force applies it when it connects.
func TestRestartPicksUpPause(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	a := newInstance(t, db.DSN(), "a", fast)
	a.synced(t)
	p := &resolver.Pause{Until: time.Now().Add(time.Hour), Categories: []string{"telemetry", "spotlight"}}
	if err := a.SetPause(p); err != nil {
		t.Fatal(err)
	}
	a.Close()

	again := newInstance(t, db.DSN(), "a", fast)
	again.synced(t)
	if got, _ := again.rec.last(); !is(got, p, "a") {
		t.Fatalf("after a restart: %+v, want %+v", got, p)
	}
}

// TestDatabaseDown: with the server stopped the instance says so once,
// however often it retries, the metric is 0, and a pause still applies
// here; when the server is back it reconnects and writes that pause, which
// an instance started then picks up.
func TestDatabaseDown(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	a := newInstance(t, db.DSN(), "a", fast)
	a.synced(t)
	if v := testutil.ToFloat64(a.m.connected); v != 1 {
		t.Fatalf("phonehome_fleet_connected %v while connected", v)
	}

	db.Stop()
	waitFor(t, "several failed attempts", func() bool {
		return !a.Connected() && testutil.ToFloat64(a.m.failures) >= 5
	})
	if v := testutil.ToFloat64(a.m.connected); v != 0 {
		t.Errorf("phonehome_fleet_connected %v while the server is down", v)
	}
	p := &resolver.Pause{Until: time.Now().Add(time.Hour), Reason: "during the outage"}
	err := a.SetPause(p)
	if err == nil || !strings.Contains(err.Error(), "applied on this instance only: the shared database is unreachable") {
		t.Errorf("SetPause while down: %v", err)
	}
	if got, _ := a.rec.last(); !is(got, p, "a") {
		t.Errorf("the pause did not apply here: %+v", got)
	}
	waitFor(t, "more failed attempts", func() bool { return testutil.ToFloat64(a.m.failures) >= 10 })
	if n := a.logs.Count("level=ERROR", "the shared database is unreachable"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, a.logs)
	}

	db.Start()
	waitFor(t, "reconnected", a.Connected)
	if v := testutil.ToFloat64(a.m.connected); v != 1 {
		t.Errorf("phonehome_fleet_connected %v after reconnecting", v)
	}
	if a.logs.Count("level=INFO", "the shared database is back") != 1 {
		t.Errorf("a's log:\n%s", a.logs)
	}
	b := newInstance(t, db.DSN(), "b", fast)
	waitFor(t, "b has the pause a set during the outage", func() bool {
		got, _ := b.rec.last()
		return is(got, p, "a")
	})
	if got, _ := a.rec.last(); !is(got, p, "a") {
		t.Errorf("a after reconnecting: %+v", got)
	}
	if n := a.logs.Count("level=ERROR"); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, a.logs)
	}
}

// TestDatabaseSlow: statements stuck behind a lock time out; the instance
// counts the database as down, a pause applies here at once, and when the
// lock goes the pause is shared. The server gives up on them too, so the
// retries do not leave a backend each waiting for the lock.
func TestDatabaseSlow(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	tune := fast
	tune.poll, tune.timeout = 20*time.Millisecond, time.Second
	a := newInstance(t, db.DSN(), "a", tune)
	b := newInstance(t, db.DSN(), "b", fast)
	a.synced(t)
	b.synced(t)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE pause IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a gave up on the locked table", func() bool { return !a.Connected() })
	p := &resolver.Pause{Until: time.Now().Add(time.Hour)}
	a.SetPause(p) // an error: not shared yet
	if got, _ := a.rec.last(); !is(got, p, "a") {
		t.Errorf("the pause did not apply here: %+v", got)
	}
	waitFor(t, "a few more attempts", func() bool { return testutil.ToFloat64(a.m.failures) >= 5 })
	// One waits for the lock, the attempt under way; two if the server's
	// cancel of the one before is late.
	if waiting := count(db.DSN(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'phonehome a' AND wait_event_type = 'Lock'"); waiting < 0 || waiting > 2 {
		t.Errorf("%d of a's statements still wait for the lock after %v attempts", waiting, testutil.ToFloat64(a.m.failures))
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b has a's pause once the lock is gone", func() bool {
		got, _ := b.rec.last()
		return is(got, p, "a")
	})
	waitFor(t, "a reconnected", a.Connected)
}

// TestRefusedRow: a pause the database cannot store (a NUL byte in its
// reason) applies here, is an error for SetPause and is logged; the
// instance stays connected, and the next pause is shared.
func TestRefusedRow(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	a := newInstance(t, db.DSN(), "a", fast)
	b := newInstance(t, db.DSN(), "b", fast)
	a.synced(t)
	b.synced(t)
	bad := &resolver.Pause{Until: time.Now().Add(time.Hour), Reason: "nul\x00"}
	if err := a.SetPause(bad); err == nil || !strings.Contains(err.Error(), "applied on this instance only") {
		t.Errorf("SetPause of a row the database refuses: %v", err)
	}
	if got, _ := a.rec.last(); !is(got, bad, "a") {
		t.Errorf("the pause did not apply here: %+v", got)
	}
	if a.logs.Count("level=ERROR", "refused a pause or resume") != 1 {
		t.Errorf("a's log:\n%s", a.logs)
	}
	good := &resolver.Pause{Until: time.Now().Add(time.Hour), Reason: "fine"}
	if err := a.SetPause(good); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b has the good pause", func() bool {
		got, _ := b.rec.last()
		return is(got, good, "a")
	})
	if got, _ := b.rec.last(); got.Reason != "fine" || !a.Connected() || testutil.ToFloat64(a.m.failures) != 0 {
		t.Errorf("b has %+v; a connected %v, failures %v", got, a.Connected(), testutil.ToFloat64(a.m.failures))
	}
}

// TestWrongPassword: a refused password is one clear error, and the
// instance goes on: a pause applies here.
func TestWrongPassword(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{Password: "right"})
	a := newInstance(t, db.DSNWithPassword("wrong"), "a", fast)
	waitFor(t, "several failed attempts", func() bool { return testutil.ToFloat64(a.m.failures) >= 5 })
	if a.Connected() || testutil.ToFloat64(a.m.connected) != 0 {
		t.Error("connected with a wrong password")
	}
	if n := a.logs.Count("level=ERROR", "password authentication failed", "hint=", "check history.dsn"); n != 1 {
		t.Errorf("want one error naming the password:\n%s", a.logs)
	}
	if strings.Contains(a.logs.String(), "wrong") {
		t.Errorf("the log shows the password:\n%s", a.logs)
	}
	if n := a.logs.Count("level=ERROR"); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, a.logs)
	}
	p := &resolver.Pause{Until: time.Now().Add(time.Hour)}
	if err := a.SetPause(p); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("SetPause: %v", err)
	}
	if got, _ := a.rec.last(); !is(got, p, "a") {
		t.Errorf("the pause did not apply here: %+v", got)
	}

	right := newInstance(t, db.DSN(), "b", fast)
	right.synced(t)
}

// TestCloseWhileDown: Close returns at once while the instance waits to
// retry or connects.
func TestCloseWhileDown(t *testing.T) {
	slow := fast
	slow.minBackoff, slow.maxBackoff = time.Hour, time.Hour
	a := newInstance(t, "host=/nonexistent/phonehome-fleet-test user=x dbname=x", "a", slow)
	waitFor(t, "a failed attempt", func() bool { return testutil.ToFloat64(a.m.failures) >= 1 })
	done := make(chan struct{})
	go func() {
		a.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close waited for the backoff")
	}
}

// TestNewestWins: the row in force is the newest by set_at; one set
// while connected is made the newest even from a clock that is behind,
// one set during an outage keeps its time.
func TestNewestWins(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, conn); err != nil {
		t.Fatalf("a second migrate: %v", err)
	}
	now := time.Now()
	write := func(instance string, setAt time.Time, online bool, p *resolver.Pause) rowKey {
		t.Helper()
		k, err := insert(ctx, conn, instance, &publication{pause: p, setAt: setAt, online: online})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	newest := func() row {
		t.Helper()
		r, err := latest(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := newest(); r.id != 0 || r.pause(now) != nil {
		t.Fatalf("empty table: %+v", r)
	}
	if k := write("a", now, true, &resolver.Pause{Until: now.Add(time.Hour)}); newest().key() != k {
		t.Errorf("insert's key %+v is not the newest row's, %+v", k, newest().key())
	}
	b := write("b", now.Add(-2*time.Second), true, nil) // a resume from a clock 2 s behind
	if r := newest(); r.instance != "b" || r.pause(now) != nil || r.key() != b {
		t.Errorf("the resume set last lost: %+v", r)
	}
	c := write("c", now.Add(-time.Minute), false, &resolver.Pause{Until: now.Add(time.Hour)}) // set during an outage, before
	if r := newest(); r.instance != "b" || c == r.key() || c.id == 0 {
		t.Errorf("a pause set earlier during an outage won: %+v (its key %+v)", r, c)
	}
	if p := (row{id: 1, setAt: now.Add(-time.Hour), until: now.Add(-time.Minute)}).pause(now); p != nil {
		t.Errorf("an ended pause applies: %+v", p)
	}

	// A database a newer phonehome migrated is left as it is.
	if _, err := conn.Exec(ctx, "UPDATE schema_version SET version = 99 WHERE component = 'fleet'"); err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, conn); err != nil {
		t.Fatalf("a newer schema: %v", err)
	}
}

func TestBadConnString(t *testing.T) {
	_, err := New(Options{ConnString: "host=db password=s3cret sslmode=sometimes", Instance: "a", Apply: func(*resolver.Pause) {}})
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "sslmode is invalid") {
		t.Errorf("%v", err)
	}
}

// TestMetricsLint runs Prometheus' promlint over the fleet's metrics.
func TestMetricsLint(t *testing.T) {
	f, err := start(Options{ConnString: "host=/nonexistent/phonehome-fleet-test", Instance: "a", Apply: func(*resolver.Pause) {}}, fast)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	problems, err := testutil.CollectAndLint(f.Collector())
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", err, problems)
	}
}

// TestRestrictedUser: a user that may read and add rows but neither
// create tables nor delete rows works once the owner has migrated. Before
// that it is told it lacks a permission (once, not as an outage); the
// retention it may not do is a warning, once.
func TestRestrictedUser(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	// PostgreSQL 15 no longer lets every user create tables in public;
	// older servers did.
	db.Exec("CREATE ROLE app LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC")
	app := newInstance(t, db.DSNAs("app", ""), "app", fast)
	waitFor(t, "app refused a few times", func() bool { return testutil.ToFloat64(app.m.failures) >= 3 })
	if n := app.logs.Count("level=ERROR", "permission denied", "let the owner migrate first"); n != 1 || strings.Contains(app.logs.String(), "unreachable") {
		t.Errorf("want one error saying permission denied, and not unreachable:\n%s", app.logs)
	}
	early := &resolver.Pause{Until: time.Now().Add(time.Hour), Reason: "before the grant"}
	if err := app.SetPause(early); err == nil || !strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "unreachable") {
		t.Errorf("SetPause while refused: %v", err)
	}

	owner := newInstance(t, db.DSN(), "owner", fast)
	owner.synced(t)
	db.Exec("GRANT SELECT, INSERT ON schema_version, pause TO app")
	waitFor(t, "app connected", app.Connected)
	waitFor(t, "owner has the pause app set before the grant", func() bool {
		got, _ := owner.rec.last()
		return is(got, early, "app")
	})

	if err := owner.SetPause(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "app has owner's resume", func() bool {
		got, n := app.rec.last()
		return got == nil && n > 1
	})
	p := &resolver.Pause{Until: time.Now().Add(time.Hour), Categories: []string{"telemetry"}, Reason: "from app"}
	if err := app.SetPause(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "owner has app's pause", func() bool {
		got, _ := owner.rec.last()
		return is(got, p, "app")
	})
	if n := app.logs.Count("level=WARN", "permission denied for table pause", "grant DELETE"); n != 1 {
		t.Errorf("want one warning about the retention:\n%s", app.logs)
	}
	if n := app.logs.Count("level=ERROR"); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, app.logs)
	}
}

// TestStartupParameters: the connection asks the server for nothing at
// startup that PgBouncer refuses without ignore_startup_parameters
// ("unsupported startup parameter"): statement timeouts are the
// contexts'.
func TestStartupParameters(t *testing.T) {
	// Not this shell's: they would add their own.
	t.Setenv("PGAPPNAME", "")
	t.Setenv("PGOPTIONS", "")
	f, err := start(Options{ConnString: "host=/nonexistent/phonehome-fleet-test user=x dbname=x", Instance: "a", Apply: func(*resolver.Pause) {}}, fast)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// What PgBouncer accepts from a client (its track_extra_parameters
	// aside).
	accepted := []string{"application_name", "client_encoding", "datestyle", "timezone", "standard_conforming_strings"}
	for k := range f.cfg.RuntimeParams {
		if !slices.Contains(accepted, strings.ToLower(k)) {
			t.Errorf("startup parameter %s=%s: PgBouncer refuses it", k, f.cfg.RuntimeParams[k])
		}
	}
	if f.cfg.RuntimeParams["application_name"] != "phonehome a" {
		t.Errorf("application_name %q", f.cfg.RuntimeParams["application_name"])
	}
}

// TestOutagePauseLoses: a pause set during an outage on an instance whose
// clock is behind is written when the database returns, but a resume set
// before it by the others' clocks stays in force, and the instance goes
// back to it: it does not stay paused alone.
func TestOutagePauseLoses(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	behind := fast
	behind.now = func() time.Time { return time.Now().Add(-time.Minute) }
	a := newInstance(t, db.DSN(), "a", behind)
	b := newInstance(t, db.DSN(), "b", fast)
	a.synced(t)
	b.synced(t)
	first := &resolver.Pause{Until: time.Now().Add(time.Hour)}
	if err := b.SetPause(first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a has b's pause", func() bool {
		got, _ := a.rec.last()
		return is(got, first, "b")
	})
	if err := b.SetPause(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a has b's pause and resume", func() bool {
		got, n := a.rec.last()
		return got == nil && n >= 3
	})

	db.Stop()
	waitFor(t, "a saw the outage", func() bool { return !a.Connected() })
	p := &resolver.Pause{Until: time.Now().Add(time.Hour), Reason: "during the outage"}
	a.SetPause(p) // an error: not shared yet
	if got, _ := a.rec.last(); !is(got, p, "a") {
		t.Fatalf("the pause did not apply here: %+v", got)
	}
	db.Start()
	waitFor(t, "a wrote its pause", func() bool {
		return a.Connected() && count(db.DSN(), "SELECT count(*) FROM pause WHERE instance = 'a' AND reason = 'during the outage'") == 1
	})
	waitFor(t, "a is back to b's resume", func() bool {
		got, _ := a.rec.last()
		return got == nil
	})
	if got, _ := b.rec.last(); got != nil {
		t.Errorf("b has %+v, want the resume", got)
	}
	if a.logs.Count("resumed by another instance", "by=b") != 2 {
		t.Errorf("a's log:\n%s", a.logs)
	}
}

// count runs a query that counts (-1 when the database cannot say), on
// a connection of its own.
func count(dsn, query string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return -1
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		return -1
	}
	return n
}

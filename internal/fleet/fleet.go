// Package fleet shares one pause between phonehome instances through the
// PostgreSQL database they share (history.dsn): a pause or resume set on
// any instance is written as a row of the table pause and announced with
// NOTIFY; every instance LISTENs, reads the newest row and applies it,
// and also reads it every second in case a notification cannot reach it
// (a connection pooler in transaction mode drops LISTEN). A restarted
// instance reads the newest row when it connects, so it picks up a pause
// still in force.
//
// The database is never on the answer path. The resolver's pause is an
// atomic pointer that Apply sets; a pause set here is applied here at
// once, whatever the database does, and written to it when it can be.
// While the database is down, slow, refuses the password or denies this
// user a permission, the resolver answers as before and a pause stays
// local: the problem is logged once, phonehome_fleet_connected is 0, and
// a goroutine of its own reconnects with backoff (up to 30 s), then
// writes what was set meanwhile.
//
// The newest row by set_at is in force. A pause or resume set while the
// database is reachable is written as the newest, whatever this
// instance's clock says; one set here during an outage keeps the time it
// was set, so when the database returns it is shared unless another
// instance has set something since, which this one then applies.
//
// Once the tables are there, the database user needs SELECT and INSERT on
// them (and DELETE on pause for the retention, which is skipped without);
// creating or migrating them needs CREATE on the schema.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/resolver"
)

// Options are what New needs.
type Options struct {
	// ConnString is the database, as pgx reads it: a postgres:// URL or
	// key=value pairs, with what it leaves out taken from the PG*
	// environment variables ("" takes all of it from them).
	ConnString string
	// Instance names this phonehome in the table (who set a pause).
	Instance string
	// Apply installs the fleet's pause in this resolver (nil resumes):
	// resolver.Server.SetPause. It must not block.
	Apply func(*resolver.Pause)
	// Log gets the fleet's few lines; nil discards them.
	Log *slog.Logger
}

// tuning are the fleet's times, which tests shorten.
type tuning struct {
	// listen: LISTEN for notifications; without, only polling brings
	// other instances' changes. listenSQL is the statement.
	listen    bool
	listenSQL string
	// poll is how often the newest row is read even without a
	// notification.
	poll time.Duration
	// The wait before reconnecting starts at minBackoff and doubles up to
	// maxBackoff.
	minBackoff, maxBackoff time.Duration
	// timeout bounds a connection attempt and each statement.
	timeout time.Duration
	// wait is how long SetPause waits for its row to be written.
	wait time.Duration
	// now is the clock that dates a pause or resume set here (nil:
	// time.Now); tests set it behind.
	now func() time.Time
}

var defaults = tuning{listen: true, listenSQL: "LISTEN " + channel, poll: time.Second, minBackoff: 500 * time.Millisecond, maxBackoff: 30 * time.Second,
	timeout: 5 * time.Second, wait: 2 * time.Second}

// channel is the NOTIFY channel of the pause table.
const channel = "phonehome_pause"

// Fleet keeps this resolver's pause in step with the shared database's.
type Fleet struct {
	o    Options
	cfg  *pgx.ConnConfig
	tune tuning
	log  *slog.Logger
	m    *metrics

	cancel    context.CancelFunc
	done      chan struct{} // closed when run has returned
	closeOnce sync.Once
	connected atomic.Bool

	mu sync.Mutex
	// pending is a pause or resume set here and not written yet.
	pending *publication
	// applied is the row whose pause applies here: the row last applied,
	// or the one last written from here (rowKey{-1} before the first
	// read). sync applies the newest row when it is another.
	applied rowKey
	// interrupt ends the wait for a notification (nil when not waiting),
	// so that a pause set here is written at once.
	interrupt context.CancelFunc
	// lastErr is why the database is unreachable.
	lastErr error

	// down is true from a failure until a connection works; noListen
	// once the database has refused LISTEN, noPrune the retention's
	// DELETE. Read and written by run alone.
	down, noListen, noPrune bool
}

// publication is a pause (nil: a resume) set here, to be written.
type publication struct {
	pause  *resolver.Pause
	setAt  time.Time
	online bool       // set while the database was connected
	result chan error // the first attempt's outcome, for SetPause
}

// report gives SetPause the outcome of an attempt, if it still waits for
// one.
func (p *publication) report(err error) {
	select {
	case p.result <- err:
	default:
	}
}

// New checks the connection string and starts keeping the pause in step
// in a goroutine of its own: it returns without waiting for the database.
// Its error is a connection string pgx cannot read (the config check
// catches these first).
func New(o Options) (*Fleet, error) { return start(o, defaults) }

func start(o Options, tune tuning) (*Fleet, error) {
	if o.Apply == nil || o.Instance == "" {
		return nil, errors.New("fleet: Options need Apply and Instance")
	}
	if tune.now == nil {
		tune.now = time.Now
	}
	cfg, err := pgx.ParseConfig(o.ConnString)
	if err != nil {
		msg := err.Error()
		// pgx quotes the string, which may hold a password.
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			msg = msg[i+3:]
		}
		return nil, fmt.Errorf("fleet: the history.dsn connection string: %s", msg)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "phonehome " + o.Instance
	}
	// No other startup parameter (statement_timeout, say): PgBouncer
	// refuses a connection that sends one it does not know ("unsupported
	// startup parameter"). Each statement is bounded by its context
	// (tune.timeout), and the server gives up on it then too: when a
	// context ends, pgx closes the connection with a cancel request, so a
	// statement stuck behind a lock does not keep its backend waiting.
	// A few small statements: no statement cache to keep, and unnamed
	// statements work behind a pooler in transaction mode too.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{o: o, cfg: cfg, tune: tune, log: log, m: newMetrics(), cancel: cancel, done: make(chan struct{}), applied: rowKey{id: -1}}
	log.Info("fleet: sharing pause and resume through PostgreSQL", "instance", o.Instance, "host", cfg.Host, "database", cfg.Database, "user", cfg.User)
	go f.run(ctx)
	return f, nil
}

// SetPause applies a pause (nil: a resume) here at once and shares it
// with the other instances. An error means it is applied here but not yet
// shared: the database is unreachable, or has not confirmed within two
// seconds; it is written when the database is back, unless something
// newer has been set by then.
func (f *Fleet) SetPause(p *resolver.Pause) error {
	pub := &publication{setAt: f.tune.now(), online: f.connected.Load(), result: make(chan error, 1)}
	if p != nil {
		c := *p
		c.By = f.o.Instance
		pub.pause = &c
	}
	f.mu.Lock()
	f.o.Apply(pub.pause)
	if f.pending != nil {
		f.pending.report(nil) // superseded
	}
	f.pending = pub
	if f.interrupt != nil {
		f.interrupt()
	}
	lastErr := f.lastErr
	f.mu.Unlock()

	if !f.connected.Load() {
		if lastErr == nil {
			lastErr = errors.New("not connected yet")
		}
		return fmt.Errorf("applied on this instance only: %s; the others get it once this one reaches the database", describe(lastErr))
	}
	timer := time.NewTimer(f.tune.wait)
	defer timer.Stop()
	select {
	case err := <-pub.result:
		if err != nil {
			return fmt.Errorf("applied on this instance only: writing it to the shared database: %v; the others get it once this one reaches the database", err)
		}
		return nil
	case <-timer.C:
		return errors.New("applied on this instance; the shared database has not confirmed it yet, and the others get it once it does")
	case <-f.done:
		return errors.New("applied on this instance only: phonehome is stopping")
	}
}

// Connected reports whether the database is connected (and listened to).
func (f *Fleet) Connected() bool { return f.connected.Load() }

// Collector reports phonehome_fleet_connected and
// phonehome_fleet_connect_failures_total.
func (f *Fleet) Collector() prometheus.Collector { return f.m }

// Close stops keeping the pause in step and closes the connection. The
// pause in force stays as it is.
func (f *Fleet) Close() {
	f.closeOnce.Do(func() {
		f.cancel()
		<-f.done
	})
}

// run connects, and reconnects with backoff, until Close.
func (f *Fleet) run(ctx context.Context) {
	defer close(f.done)
	backoff := f.tune.minBackoff
	for {
		conn, listening, err := f.connect(ctx)
		if err == nil {
			backoff = f.tune.minBackoff
			f.up()
			err = f.session(ctx, conn, listening)
			closing, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(closing)
			cancel()
		}
		if ctx.Err() != nil {
			f.setConnected(false)
			f.mu.Lock()
			if f.pending != nil {
				f.log.Warn("fleet: a pause or resume set here was never written to the shared database")
			}
			f.mu.Unlock()
			return
		}
		f.fail(err)
		// ±20 %, so that instances that lost the database together do
		// not all knock at once when it returns.
		wait := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-ctx.Done():
			f.setConnected(false)
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, f.tune.maxBackoff)
	}
}

// connect opens a connection, brings the schema up to date and LISTENs,
// reporting whether it does: a server (or a proxy) that refuses LISTEN
// leaves polling alone to bring changes.
func (f *Fleet) connect(ctx context.Context) (conn *pgx.Conn, listening bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, f.tune.timeout)
	defer cancel()
	conn, err = pgx.ConnectConfig(ctx, f.cfg)
	if err != nil {
		return nil, false, err
	}
	err = migrate(ctx, conn)
	if err == nil {
		err = f.prune(ctx, conn)
	}
	if err == nil && f.tune.listen {
		_, err = conn.Exec(ctx, f.tune.listenSQL)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && !conn.IsClosed() {
			if !f.noListen {
				f.log.Warn("fleet: the database refuses LISTEN; other instances' pauses arrive by polling, once a second", "err", err)
				f.noListen = true
			}
			return conn, false, nil
		}
		listening = err == nil
	}
	if err != nil {
		conn.Close(ctx)
		return nil, false, err
	}
	return conn, listening, nil
}

// prune deletes old rows of pause, if this user may: a refusal is said
// once (a warning, with what to grant) and the connection goes on. A
// broken connection or a database too slow to answer is an error, as for
// any other statement.
func (f *Fleet) prune(ctx context.Context, conn *pgx.Conn) error {
	err := prune(ctx, conn)
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) || retryable(pgErr.Code) || conn.IsClosed() {
		return err
	}
	if f.noPrune {
		f.log.Debug("fleet: rows of pause older than 30 days are kept", "err", err)
		return nil
	}
	f.noPrune = true
	attrs := []any{"err", err}
	if pgErr.Code == insufficientPrivilege {
		attrs = append(attrs, "hint", "grant DELETE on pause to this user, or delete them as the tables' owner")
	}
	f.log.Warn("fleet: cannot delete the rows of pause older than 30 days; the table keeps them (logged once)", attrs...)
	return nil
}

// session keeps the pause in step over one connection until it fails or
// ctx ends: it writes what was set here, reads the newest row and applies
// it if it is new, then waits for a notification, a pause set here or the
// next poll.
func (f *Fleet) session(ctx context.Context, conn *pgx.Conn, listening bool) error {
	for {
		if err := f.publish(ctx, conn); err != nil {
			return err
		}
		if err := f.sync(ctx, conn); err != nil {
			return err
		}
		wait, cancel := context.WithTimeout(ctx, f.tune.poll)
		f.mu.Lock()
		f.interrupt = cancel
		more := f.pending != nil
		f.mu.Unlock()
		if more {
			cancel()
		}
		var err error
		if listening {
			_, err = conn.WaitForNotification(wait)
		} else {
			<-wait.Done()
		}
		f.mu.Lock()
		f.interrupt = nil
		f.mu.Unlock()
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && wait.Err() == nil, conn.IsClosed():
			return fmt.Errorf("waiting for notifications: %w", cmpErr(err, "the connection closed"))
		}
	}
}

// publish writes the pause or resume set here, if there is one. When the
// connection fails it stays pending, for the next one. One the database
// refuses (its data, or this user's rights) would be refused again: it
// stays on this instance alone.
func (f *Fleet) publish(ctx context.Context, conn *pgx.Conn) error {
	f.mu.Lock()
	pub := f.pending
	f.mu.Unlock()
	if pub == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.tune.timeout)
	defer cancel()
	key, err := insert(ctx, conn, f.o.Instance, pub)
	// SetPause hears of it last, once this is all done.
	defer pub.report(err)
	var pgErr *pgconn.PgError
	refused := errors.As(err, &pgErr) && !retryable(pgErr.Code) && !conn.IsClosed()
	if err != nil && !refused {
		return fmt.Errorf("writing a pause: %w", err)
	}
	if refused {
		attrs := []any{"err", err}
		if pgErr.Code == insufficientPrivilege {
			attrs = append(attrs, "hint", grantHint)
		}
		f.log.Error("fleet: the shared database refused a pause or resume; it applies on this instance only", attrs...)
	}
	f.mu.Lock()
	if f.pending == pub {
		f.pending = nil
		// What applies here is now this row, which is not the newest if
		// it was set during an outage and another instance has set
		// something since by the database's order: then sync applies
		// that one, even if it is the row applied before.
		if !refused {
			f.applied = key
		}
	}
	f.mu.Unlock()
	return nil
}

// retryable reports whether an error the server sent may go away: the
// connection, resources, a cancelled statement (statement_timeout), a
// shutdown, a conflict between transactions.
func retryable(code string) bool {
	switch code[:min(2, len(code))] {
	case "08", "40", "53", "57", "58":
		return true
	}
	return false
}

// sync reads the newest row and applies it when it is not the one applied
// last, unless a pause set here is still to be written (it is newer).
func (f *Fleet) sync(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, f.tune.timeout)
	defer cancel()
	r, err := latest(ctx, conn)
	if err != nil {
		return fmt.Errorf("reading the pause: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending != nil || r.key() == f.applied {
		return nil
	}
	f.applied = r.key()
	p := r.pause(time.Now())
	if r.id != 0 && r.instance != f.o.Instance {
		if p != nil {
			f.log.Info("fleet: paused by another instance", "by", r.instance, "until", p.Until.Format(time.RFC3339), "categories", strings.Join(p.Categories, ","), "reason", p.Reason)
		} else if !r.until.After(r.setAt) {
			f.log.Info("fleet: resumed by another instance", "by", r.instance)
		}
	}
	f.o.Apply(p)
	return nil
}

// up records a working connection (said before it is seen, so that
// whoever sees it finds the line logged).
func (f *Fleet) up() {
	if f.down {
		f.log.Info("fleet: the shared database is back; pause and resume are shared again")
	} else {
		f.log.Info("fleet: connected to the shared database")
	}
	f.down = false
	f.mu.Lock()
	f.lastErr = nil
	f.mu.Unlock()
	f.setConnected(true)
}

// fail records a failed attempt or a broken connection. The problem is
// logged once, when the database becomes unreachable, not at every retry,
// and before the metric and Connected show it.
func (f *Fleet) fail(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
	if !f.down {
		f.down = true
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == insufficientPrivilege:
			f.log.Error("fleet: permission denied in the shared database; DNS goes on, pause and resume stay on this instance until this user may (retrying with backoff, logged once)",
				"err", err, "user", f.cfg.User, "hint", grantHint)
		case errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000"):
			f.log.Error("fleet: the shared database is unreachable; DNS goes on, pause and resume stay on this instance until it is back (retrying with backoff, logged once)",
				"err", err, "hint", "the database refused this user or password: check history.dsn, $PGPASSWORD or ~/.pgpass")
		default:
			f.log.Error("fleet: the shared database is unreachable; DNS goes on, pause and resume stay on this instance until it is back (retrying with backoff, logged once)", "err", err)
		}
	}
	f.setConnected(false)
	f.m.failures.Inc()
}

func (f *Fleet) setConnected(ok bool) {
	f.connected.Store(ok)
	v := 0.0
	if ok {
		v = 1
	}
	f.m.connected.Set(v)
}

// insufficientPrivilege is the SQLSTATE of "permission denied".
const insufficientPrivilege = "42501"

// grantHint says what a user that is denied needs.
const grantHint = "grant this user SELECT and INSERT on the tables schema_version and pause, or let the owner migrate first (start phonehome once as a user that may create tables in the schema)"

// describe says why the database is not shared, for the log and
// SetPause: a permission this user lacks, or the database out of reach.
func describe(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == insufficientPrivilege {
		return fmt.Sprintf("permission denied: %v; %s", err, grantHint)
	}
	return fmt.Sprintf("the shared database is unreachable (%v)", err)
}

// cmpErr is err, or an error saying what when err is nil.
func cmpErr(err error, what string) error {
	if err != nil {
		return err
	}
	return errors.New(what)
}

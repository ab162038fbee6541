// Package history keeps what phonehome saw, for months, in an SQLite file:
// queries counted per minute (rolled up to hours after two days) by
// client, group, pattern, category and action; when each client first and
// last asked for each pattern; and the match events themselves for a
// shorter time. It is an observer of the resolver's request path, and
// never on it: Answered counts in memory, and a goroutine of its own writes
// one transaction per flush interval.
package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL through database/sql, for a shared history (history.dsn)
	_ "modernc.org/sqlite"             // the pure-Go SQLite driver: no cgo, the static image stays

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// Options are a Store's settings that are not in the config file.
type Options struct {
	Log *slog.Logger
	// Now is the clock of retention and roll-up (time.Now by default);
	// tests move it.
	Now func() time.Time
	// AllQueries and AnonymizeClients are the query log's privacy rules,
	// which the history follows: only catalog and list matches unless
	// all_queries, clients anonymized with anonymize_clients.
	AllQueries, AnonymizeClients bool
	// Backlog bounds what is held in memory for writing: this many counts
	// (distinct minute, client, group, pattern, category, action) and this
	// many events; beyond it records are dropped and counted. Default
	// 50,000 each.
	Backlog int
	// EventRate bounds the events stored: at most this many a second
	// (per flush interval, that many times its length); beyond it events
	// are dropped and counted, while the counts stay exact. It keeps the
	// writer's work, and so what the history costs the resolver, bounded
	// under any load. Default 500.
	EventRate int
	// MaintainEvery is how often roll-up, retention and the size bound
	// run (default 10 minutes; also once at open).
	MaintainEvery time.Duration

	busyTimeout time.Duration // SQLite's wait for a lock held elsewhere; 5 s

	// Names, if set, gives machines' names, which the file keeps beside
	// the clients (names.go).
	Names *clientnames.Names
}

// Defaults of Options.
const (
	DefaultBacklog   = 50_000
	DefaultEventRate = 500
)

// Store is the history database and what is waiting to be written to it.
// Answered may be called from any goroutine; every other method as well,
// but they are meant for one owner (serve).
type Store struct {
	path          string // the file, or where the shared database is (no password)
	conn          string // the shared database's connection string; "" for the file
	d             *dialect
	log           *slog.Logger
	now           func() time.Time
	limit         int
	maintainEvery time.Duration
	busyTimeout   time.Duration
	eventRate     int

	all       atomic.Bool
	anonymize atomic.Bool
	cfg       atomic.Pointer[Config]
	eventCap  atomic.Int64 // events taken per flush interval

	mu     sync.Mutex
	cur    *batch // what Answered adds to
	closed bool

	m *metrics

	reqs chan request
	stop chan struct{}
	done chan struct{}

	// The writer goroutine's own, after Open.
	db      *sql.DB
	stmts   statements
	series  map[seriesKey]int64 // series ids known to be in the file
	details *detailCache        // event details known to be in the file
	backlog *batch              // taken from cur, not yet written
	spare   *batch              // an empty batch to swap in
	failing bool                // the last write failed (and was logged)
	// maintFailing: the last maintenance failed (and was logged).
	maintFailing bool
	names        *namesWriter // nil without Options.Names
}

// key is what a count is kept by in memory: pointers and numbers only, so
// that Answered hashes no string. The pattern's literal is keyed by where
// its bytes are, in the matcher (a pointer, which keeps them there while
// the key is in the map, so no other string can take their place); the
// same pattern from two matchers (across a reload) makes two keys, which
// the file adds up. The group's name, the category and the pattern are
// spelled at write time.
type key struct {
	bucket int64 // Unix seconds of the minute's start
	client netip.Addr
	group  *policy.Group
	rule   *policy.Rule // nil: not in the catalog or lists (all_queries)
	lit    *byte
	litLen int
	shape  endpoints.Shape
	action policy.Action
}

type agg struct {
	n           int64
	first, last int64  // Unix milliseconds
	literal     string // the matched pattern's literal (see key)
}

// batch is what was counted during one flush interval (or, for the
// backlog, several that could not be written).
type batch struct {
	index  map[key]int32 // into aggs
	aggs   []agg
	events []resolver.Answer
}

func newBatch() *batch { return &batch{index: map[key]int32{}} }

func (b *batch) empty() bool { return len(b.aggs) == 0 && len(b.events) == 0 }

func (b *batch) reset() {
	clear(b.index)
	clear(b.aggs) // and the answers and literals: let go of the policy they point into
	b.aggs = b.aggs[:0]
	clear(b.events)
	b.events = b.events[:0]
}

// queries is the number of queries b counts.
func (b *batch) queries() int64 {
	var n int64
	for _, g := range b.aggs {
		n += g.n
	}
	return n
}

type request struct {
	fn   func() error
	done chan error
}

// Open starts a Store on cfg.Path and tries to open the file, creating it
// and its directory, and migrating its schema. It returns a running Store
// even when that fails (err says why): it tries again at every flush,
// holding what it counts meanwhile (up to Backlog), so that a history
// that cannot be written never stops the resolver. It returns nil for
// history: off.
func Open(cfg Config, opts Options) (*Store, error) {
	if cfg.Off {
		return nil, nil
	}
	cfg.SetDefaults()
	d, conn, where := newDialect(false, cfg.InstanceName()), "", cfg.Path
	if c, ok := cfg.Shared(); ok {
		d, conn, where = newDialect(true, cfg.InstanceName()), c, pgWhere(c)
	}
	s := &Store{
		path: where, conn: conn, d: d, log: opts.Log, now: opts.Now, limit: opts.Backlog, maintainEvery: opts.MaintainEvery, busyTimeout: opts.busyTimeout, eventRate: opts.EventRate,
		cur: newBatch(), m: newMetrics(where, !d.pg), reqs: make(chan request), stop: make(chan struct{}), done: make(chan struct{}),
		series: map[seriesKey]int64{}, details: newDetailCache(), names: newNamesWriter(opts.Names),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.limit <= 0 {
		s.limit = DefaultBacklog
	}
	if s.maintainEvery <= 0 {
		s.maintainEvery = 10 * time.Minute
	}
	if s.busyTimeout <= 0 {
		s.busyTimeout = 5 * time.Second
	}
	if s.eventRate <= 0 {
		s.eventRate = DefaultEventRate
	}
	s.all.Store(opts.AllQueries)
	s.anonymize.Store(opts.AnonymizeClients)
	s.setConfig(&cfg)
	var err error
	if !d.pg {
		err = s.open()
		if err != nil {
			s.failed(err)
		} else {
			s.maintainLogged() // an error here is not Open's: the file is open and written
		}
	}
	// A shared database may be out of reach for a while: the writer
	// connects, never Open, which the resolver's start waits for.
	go s.run()
	return s, err
}

// Apply takes a reloaded config: the flush interval, the retentions and
// the size bound, and the query log's privacy rules. The path is read at
// start.
func (s *Store) Apply(cfg Config, ql querylog.Config) {
	if s == nil || cfg.Off {
		return
	}
	cfg.SetDefaults()
	s.setConfig(&cfg)
	s.all.Store(ql.AllQueries)
	s.anonymize.Store(ql.AnonymizeClients)
}

func (s *Store) setConfig(cfg *Config) {
	s.cfg.Store(cfg)
	s.eventCap.Store(int64(min(s.limit, max(1, int(float64(s.eventRate)*cfg.Flush.Seconds())))))
}

// Path is the database file, or for a shared database where it is
// (postgres://user@host:port/db, without the password).
func (s *Store) Path() string { return s.path }

// Shared says whether the history is in a database shared by several
// instances (PostgreSQL), not in the file.
func (s *Store) Shared() bool { return s.d.pg }

// Reader opens a Reader of the store's database, for the API.
func (s *Store) Reader() (*Reader, error) {
	if s.d.pg {
		return openPGReader(s.conn, s.path, s.d.instance)
	}
	return openFileReader(s.path, s.d.instance)
}

// Answered counts a decided query that matched a catalog entry or a list
// and was not allowed, or every decided query with all_queries: in memory,
// under a mutex held for one map update and one append, allocating nothing
// once the maps have grown. Beyond the backlog bound it drops and counts.
func (s *Store) Answered(a resolver.Answer) { s.AnsweredBatch([]resolver.Answer{a}) }

// AnsweredBatch counts what Answered would of a batch of answers (the UDP
// loop's), under one hold of the mutex.
func (s *Store) AnsweredBatch(as []resolver.Answer) {
	all, anonymize, locked := s.all.Load(), s.anonymize.Load(), false
	var droppedCounts, droppedEvents int
	for i := range as {
		if !s.counts(&as[i], all) {
			continue
		}
		if !locked {
			s.mu.Lock()
			locked = true
		}
		c, e := s.add(as[i], anonymize)
		droppedCounts += b2i(c)
		droppedEvents += b2i(e)
	}
	if locked {
		s.mu.Unlock()
	}
	if droppedCounts > 0 {
		s.m.droppedCounts.Add(float64(droppedCounts))
	}
	if droppedEvents > 0 {
		s.m.droppedEvents.Add(float64(droppedEvents))
	}
}

// counts reports whether the history keeps an answer.
func (s *Store) counts(a *resolver.Answer, all bool) bool {
	return a.Decided() && (a.Match() || all)
}

// add counts one answer kept and queues its event; s.mu is held. It
// reports what it had to drop.
func (s *Store) add(a resolver.Answer, anonymize bool) (droppedCount, droppedEvent bool) {
	if anonymize {
		a.Client = querylog.Anonymize(a.Client)
	}
	if a.Start.IsZero() {
		a.Start = s.now()
	}
	ms := a.Start.UnixMilli()
	d := &a.Decision
	k := key{bucket: ms / 60_000 * 60, client: a.Client, group: d.Group, rule: d.Match.Rule,
		lit: unsafe.StringData(d.Match.Literal), litLen: len(d.Match.Literal), shape: d.Match.Shape, action: d.Action}
	b := s.cur
	if s.closed {
		return true, true
	}
	if i, ok := b.index[k]; ok {
		g := &b.aggs[i]
		g.n++
		g.first, g.last = min(g.first, ms), max(g.last, ms)
	} else if len(b.aggs) < s.limit {
		b.index[k] = int32(len(b.aggs))
		b.aggs = append(b.aggs, agg{n: 1, first: ms, last: ms, literal: d.Match.Literal})
	} else {
		droppedCount = true
	}
	if int64(len(b.events)) < s.eventCap.Load() {
		b.events = append(b.events, a)
	} else {
		droppedEvent = true
	}
	return droppedCount, droppedEvent
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Flush writes what was counted so far now, and returns the write's error.
func (s *Store) Flush() error { return s.do(s.flush) }

// Maintain runs roll-up, retention and the size bound now.
func (s *Store) Maintain() error { return s.do(s.maintain) }

// do runs fn on the writer goroutine.
func (s *Store) do(fn func() error) error {
	r := request{fn: fn, done: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.done
	case <-s.done:
		return errors.New("history: closed")
	}
}

// Close writes what is left and closes the file. Answers after Close are
// dropped and counted.
func (s *Store) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if !already {
		close(s.stop)
	}
	<-s.done
	return nil
}

// run is the writer: a flush every interval, maintenance now and then,
// and what Flush and Maintain ask for.
func (s *Store) run() {
	defer close(s.done)
	if s.d.pg {
		if err := s.open(); err != nil {
			s.failed(err)
		} else {
			s.maintainLogged()
		}
	}
	flush := time.NewTimer(s.cfg.Load().Flush)
	defer flush.Stop()
	maint := time.NewTicker(s.maintainEvery)
	defer maint.Stop()
	for {
		select {
		case <-flush.C:
			s.flush()
			flush.Reset(s.cfg.Load().Flush)
		case <-maint.C:
			if s.db != nil {
				s.maintainLogged()
			}
		case r := <-s.reqs:
			r.done <- r.fn()
		case <-s.stop:
			s.flush()
			if s.db != nil {
				s.db.Close()
			}
			return
		}
	}
}

// maintainLogged runs maintenance and logs the first of a run of
// failures, and the end of it.
func (s *Store) maintainLogged() {
	err := s.maintain()
	switch {
	case err != nil && !s.maintFailing:
		s.log.Error("history: maintenance (roll-up, retention, max_size) failed; it tries again every few minutes", "path", s.path, "err", err)
	case err == nil && s.maintFailing:
		s.log.Info("history: maintenance works again", "path", s.path)
	}
	s.maintFailing = err != nil
}

// flush swaps in an empty batch for Answered, adds what it took to the
// backlog, and writes the backlog in one transaction. On failure the
// backlog stays, bounded, for the next flush.
func (s *Store) flush() error {
	next := s.spare
	s.spare = nil
	if next == nil {
		next = newBatch()
	}
	s.mu.Lock()
	b := s.cur
	s.cur = next
	s.mu.Unlock()
	if s.backlog == nil {
		s.backlog = b
	} else {
		s.merge(s.backlog, b)
		s.recycle(b)
	}
	if s.backlog.empty() {
		s.recycle(s.backlog)
		s.backlog = nil
		s.m.pending.Set(0)
		return nil
	}
	err := s.writeBacklog()
	if err != nil {
		s.failed(err)
		s.m.pending.Set(float64(s.backlog.queries()))
		return err
	}
	s.m.pending.Set(0)
	if s.failing {
		s.failing = false
		s.log.Info("history: writing again", "path", s.path)
	}
	s.recycle(s.backlog)
	s.backlog = nil
	if maxSize := s.cfg.Load().MaxSize; !s.d.pg && fileSize(s.path) > int64(maxSize) {
		if err := s.enforceSize(context.Background()); err != nil {
			s.log.Error("history: keeping the file under max_size", "path", s.path, "err", err)
		}
	}
	return nil
}

func (s *Store) writeBacklog() error {
	if s.db == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	rows, err := s.write(ctx, s.backlog)
	if err != nil {
		return err
	}
	s.m.writeSeconds.Observe(time.Since(start).Seconds())
	s.m.rowsCounts.Add(float64(rows.counts))
	s.m.rowsSeen.Add(float64(rows.seen))
	s.m.rowsTotals.Add(float64(rows.totals))
	s.m.rowsPatternTotals.Add(float64(rows.patternTotals))
	s.m.rowsEvents.Add(float64(rows.events))
	s.writeNames(s.backlog)
	return nil
}

// failed counts a write that failed, and logs the first of a run of them:
// a database that stays read-only logs once, not once per flush.
func (s *Store) failed(err error) {
	s.m.failures.Inc()
	if !s.failing {
		s.failing = true
		s.log.Error("history: cannot write; answering goes on, and what is counted meanwhile is kept (up to the backlog bound) and written when the database takes it",
			"path", s.path, "err", err)
	}
}

// merge adds b to into, within the bound.
func (s *Store) merge(into, b *batch) {
	for k, i := range b.index {
		g := b.aggs[i]
		if j, ok := into.index[k]; ok {
			h := &into.aggs[j]
			h.n += g.n
			h.first, h.last = min(h.first, g.first), max(h.last, g.last)
		} else if len(into.aggs) < s.limit {
			into.index[k] = int32(len(into.aggs))
			into.aggs = append(into.aggs, g)
		} else {
			s.m.droppedCounts.Add(float64(g.n))
		}
	}
	room := max(0, s.limit-len(into.events))
	into.events = append(into.events, b.events[:min(room, len(b.events))]...)
	if len(b.events) > room {
		s.m.droppedEvents.Add(float64(len(b.events) - room))
	}
}

// recycle keeps b, emptied, to swap in at the next flush.
func (s *Store) recycle(b *batch) {
	if s.spare == nil {
		b.reset()
		s.spare = b
	}
}

// writeTimeout bounds a flush's transaction: a database that hangs (a
// shared one behind a network that drops packets) holds the writer this
// long, then the backlog waits for the next flush.
const writeTimeout = time.Minute

// open opens the database, sets it up and migrates the schema.
func (s *Store) open() error {
	if s.d.pg {
		return s.openPG()
	}
	if s.path == "" {
		return errors.New("history: no path: set history.path, or $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME")
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(s.path, s.busyTimeout))
	if err != nil {
		return fmt.Errorf("history: opening %s: %w", s.path, err)
	}
	// One connection: one writer, and the pragmas of the DSN hold for
	// every statement.
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return fmt.Errorf("history: opening %s: %w", s.path, err)
	}
	// A migration takes as long as the file is large, once: cut short by
	// the minute, it would start again at every flush and never end.
	if v, err := schemaVersion(ctx, db); err == nil && v > 0 && v < SchemaVersion {
		s.log.Info("history: bringing the file's schema up to date; on a large file this takes a while, once",
			"path", s.path, "from", v, "to", SchemaVersion)
	}
	if err := migrate(context.Background(), db); err != nil {
		db.Close()
		return fmt.Errorf("history: %s: %w", s.path, err)
	}
	return s.opened(ctx, db)
}

// opened prepares the writer's statements on db, a database whose schema
// is up to date, and makes it the store's.
func (s *Store) opened(ctx context.Context, db *sql.DB) error {
	if err := s.stmts.prepare(ctx, db, s.d); err != nil {
		db.Close()
		return fmt.Errorf("history: %s: %w", s.path, err)
	}
	s.db = db
	clear(s.series)
	s.details.forget()
	return nil
}

// pgTimeout bounds connecting to the shared database and migrating it.
const pgTimeout = 10 * time.Second

// openPG connects to the shared database and migrates its history
// tables. One connection: one writer per instance.
func (s *Store) openPG() error {
	db, err := sql.Open("pgx", s.conn)
	if err != nil {
		return fmt.Errorf("history: %s: %w", s.path, err)
	}
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return fmt.Errorf("history: connecting to %s: %w", s.path, err)
	}
	if err := migratePG(ctx, db); err != nil {
		db.Close()
		return fmt.Errorf("history: %s: %w", s.path, err)
	}
	return s.opened(ctx, db)
}

// dsn is the SQLite URI of path: WAL, so that a crash leaves a file that
// opens (losing at most the last transaction) and readers do not wait for
// the writer; synchronous=NORMAL, durable against a crash of the process
// (a power cut may lose the last flushes, never the file); incremental
// auto-vacuum (set when the file is created) so that the size bound can
// give pages back; a wait for locks held by another process.
func dsn(path string, busy time.Duration) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	q.Set("_auto_vacuum", "INCREMENTAL")
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "NORMAL")
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: q.Encode()}
	return u.String()
}

// fileSize is the database's size on disk: the file and its write-ahead
// log (not the WAL's index, -shm, a few pages that SQLite keeps at its own
// size).
func fileSize(path string) int64 {
	var n int64
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

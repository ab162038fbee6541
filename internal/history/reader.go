package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Reader reads a history file, beside the Store that writes it (serve's
// web API) or on its own (phonehome history). It opens the file read-only
// (mode=ro, query_only) on connections of its own: in WAL mode a reader
// reads a snapshot while the writer goes on writing, and neither waits for
// the other beyond SQLite's brief locks. Every query is a short read; the
// exports read in pages, each its own query, so that no read holds a
// snapshot (and keeps the write-ahead log from being reset) for long. A
// Reader is safe for concurrent use.
type Reader struct {
	path string // the file, or where the shared database is
	d    *dialect
	db   *sql.DB
	now  func() time.Time
	ok   atomic.Bool // the file was found, with a schema this build reads
	// trace, when set (by tests), sees every query and its arguments.
	trace func(query string, args []any)
}

// maxReaders bounds the read connections: the API's reads share the
// machine with the resolver.
const maxReaders = 2

// OpenReader returns a Reader of the file at path. It opens nothing yet:
// each query opens the file as it needs to, so that a Reader made before
// the writer has created the file works once it has. Check says whether
// the file is there and readable.
func OpenReader(path string) (*Reader, error) {
	return openFileReader(path, (&Config{}).InstanceName())
}

// NewReader returns a Reader of cfg's history: the shared database of
// history.dsn, else the file.
func NewReader(cfg Config) (*Reader, error) {
	if cfg.Off {
		return nil, errors.New("history: the history is off (history: off)")
	}
	if conn, ok := cfg.Shared(); ok {
		if err := checkDSN(conn); err != nil && conn != "" {
			return nil, fmt.Errorf("history: %w", err)
		}
		return openPGReader(conn, pgWhere(conn), cfg.InstanceName())
	}
	cfg.SetDefaults()
	return openFileReader(cfg.Path, cfg.InstanceName())
}

// openPGReader returns a Reader of the shared database conn (described
// as where), which connects as queries need it.
func openPGReader(conn, where, instance string) (*Reader, error) {
	db, err := sql.Open("pgx", conn)
	if err != nil {
		return nil, fmt.Errorf("history: %s: %w", where, err)
	}
	db.SetMaxOpenConns(maxReaders)
	db.SetConnMaxIdleTime(time.Minute)
	return &Reader{path: where, d: newDialect(true, instance), db: db, now: time.Now}, nil
}

// openFileReader is OpenReader, the file written by instance.
func openFileReader(path, instance string) (*Reader, error) {
	if path == "" {
		return nil, errors.New("history: no path: set history.path, or $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME")
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	db, err := sql.Open("sqlite", readDSN(path))
	if err != nil {
		return nil, fmt.Errorf("history: opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxReaders)
	db.SetConnMaxIdleTime(time.Minute)
	return &Reader{path: path, d: newDialect(false, instance), db: db, now: time.Now}, nil
}

// readDSN is the SQLite URI that reads path and never writes it.
func readDSN(path string) string {
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "query_only(1)")
	q.Set("_busy_timeout", "5000")
	u := url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: q.Encode()}
	return u.String()
}

// Path is the file the Reader reads, or where the shared database is.
func (r *Reader) Path() string { return r.path }

// Shared says whether the Reader reads a shared database, not a file.
func (r *Reader) Shared() bool { return r.d.pg }

// Close closes the Reader's connections.
func (r *Reader) Close() error {
	if r == nil {
		return nil
	}
	return r.db.Close()
}

// Check says whether the file is there and has a schema this build reads.
// Queries check it too, until it has once been found good.
func (r *Reader) Check(ctx context.Context) error {
	if r.ok.Load() {
		return nil
	}
	if r.d.pg {
		return r.checkPG(ctx)
	}
	if _, err := os.Stat(r.path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("history: %s does not exist: phonehome serve creates it when the history is on (is the path right?)", r.path)
		}
		return fmt.Errorf("history: %w", err)
	}
	var v int
	if err := r.db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return fmt.Errorf("history: %s is not a phonehome history file (it has no schema_version)", r.path)
		}
		return fmt.Errorf("history: reading %s: %w", r.path, err)
	}
	switch {
	case v < SchemaVersion:
		return fmt.Errorf("history: %s has schema version %d, this phonehome reads %d: start phonehome serve on it once to bring it up to date", r.path, v, SchemaVersion)
	case v > SchemaVersion:
		return fmt.Errorf("history: %s has schema version %d; this phonehome knows up to %d: it was written by a newer phonehome", r.path, v, SchemaVersion)
	}
	r.ok.Store(true)
	return nil
}

// checkPG is Check of a shared database.
func (r *Reader) checkPG(ctx context.Context) error {
	v, err := pgSchemaVersion(ctx, r.db)
	switch {
	case err != nil:
		return fmt.Errorf("history: reading %s: %w", r.path, err)
	case v == 0:
		return fmt.Errorf("history: %s has no history yet: phonehome serve with this history.dsn creates it", r.path)
	case v < len(pgMigrations):
		return fmt.Errorf("history: %s has schema version %d, this phonehome reads %d: start a phonehome serve of this version on it once to bring it up to date", r.path, v, len(pgMigrations))
	case v > len(pgMigrations):
		return fmt.Errorf("history: %s has schema version %d; this phonehome knows up to %d: it was written by a newer phonehome", r.path, v, len(pgMigrations))
	}
	r.ok.Store(true)
	return nil
}

// queryer is the connection pool or a read transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// query runs a read after Check.
func (r *Reader) query(ctx context.Context, on queryer, q string, args ...any) (*sql.Rows, error) {
	if err := r.Check(ctx); err != nil {
		return nil, err
	}
	q = r.d.sql(q)
	if r.trace != nil {
		r.trace(q, args)
	}
	rows, err := on.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("history: reading %s: %w", r.path, err)
	}
	return rows, nil
}

// read runs fn in a read transaction, so that its queries read one
// snapshot of the file.
func (r *Reader) read(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := r.Check(ctx); err != nil {
		return err
	}
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("history: reading %s: %w", r.path, err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// each runs q and calls fn for each row, which it scans.
func (r *Reader) each(ctx context.Context, fn func(*sql.Rows) error, q string, args ...any) error {
	return r.eachOn(ctx, r.db, fn, q, args...)
}

// eachOn is each on a read transaction (or the pool).
func (r *Reader) eachOn(ctx context.Context, on queryer, fn func(*sql.Rows) error, q string, args ...any) error {
	rows, err := r.query(ctx, on, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("history: reading %s: %w", r.path, err)
	}
	return nil
}

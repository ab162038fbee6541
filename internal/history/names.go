package history

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"time"

	"github.com/phonehome/phonehome/internal/clientnames"
)

// namesWriter is what the writer goroutine keeps of the names it wrote to
// client_names.
type namesWriter struct {
	names   *clientnames.Names
	version uint64            // of the names last written
	written map[string]string // client → name, as last written
	at      time.Time         // when every name was last written
	cleared bool              // the table was emptied since names were off
	failing bool              // the last write failed (and was logged)
}

// namesRewrite is how often every name known is written again, so that
// updated_ms says a name is still in use; a row not written for the
// counts' retention is dropped.
const namesRewrite = time.Hour

// maxNames bounds the names a Reader reads.
const maxNames = 10_000

func newNamesWriter(n *clientnames.Names) *namesWriter {
	if n == nil {
		return nil
	}
	return &namesWriter{names: n, written: map[string]string{}}
}

// writeNames runs on the writer goroutine after b was written. It asks for
// the names of b's clients (a lookup starts for a machine not named yet,
// and a later flush writes what it finds), then writes the names that
// changed, or all of them once an hour. With names off or clients
// anonymized it empties the table once: no name is kept then.
func (s *Store) writeNames(b *batch) {
	w := s.names
	if w == nil || s.db == nil {
		return
	}
	asked := map[netip.Addr]bool{}
	for k := range b.index {
		if !asked[k.client] {
			asked[k.client] = true
			w.names.Name(k.client)
		}
	}
	known, version, ok := w.names.Known()
	now := s.now()
	var err error
	switch {
	case !ok || s.anonymize.Load():
		if !w.cleared {
			if _, err = s.db.Exec(s.d.sql(`DELETE FROM client_names WHERE {own}`)); err == nil {
				w.cleared, w.written, w.version, w.at = true, map[string]string{}, 0, time.Time{}
			}
		}
	case version != w.version || now.Sub(w.at) >= namesRewrite || now.Before(w.at):
		err = s.putNames(known, version, now)
	}
	switch {
	case err != nil && !w.failing:
		s.log.Error("history: writing machines' names", "path", s.path, "err", err)
	case err == nil && w.failing:
		s.log.Info("history: writing machines' names again", "path", s.path)
	}
	w.failing = err != nil
}

// putNames writes the names that changed since the last write, or every
// one when an hour has passed, and drops those not written for the
// retention, in one transaction.
func (s *Store) putNames(known map[netip.Addr]string, version uint64, now time.Time) error {
	w := s.names
	all := now.Sub(w.at) >= namesRewrite || now.Before(w.at)
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	put, err := tx.Prepare(s.d.sql(`INSERT INTO client_names ({i}client, name, updated_ms) VALUES ({'i'}?, ?, ?)
		ON CONFLICT ({i}client) DO UPDATE SET name = excluded.name, updated_ms = excluded.updated_ms`))
	if err != nil {
		return err
	}
	defer put.Close()
	written := make(map[string]string, len(known))
	for a, name := range known {
		c := a.String()
		written[c] = name
		if !all && w.written[c] == name {
			continue
		}
		if _, err := put.Exec(c, name, now.UnixMilli()); err != nil {
			return err
		}
	}
	if all {
		if _, err := tx.Exec(s.d.sql(`DELETE FROM client_names WHERE updated_ms < ?`), now.Add(-time.Duration(s.cfg.Load().Retention)).UnixMilli()); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.written, w.version, w.cleared = written, version, false
	if all {
		w.at = now
	}
	return nil
}

// Names returns the machines' names the file keeps, by client as the
// history spells clients: what the API and phonehome history show beside
// the addresses they list. It reads at most maxNames, the most recently
// known first.
func (r *Reader) Names(ctx context.Context) (map[string]string, error) {
	names := map[string]string{}
	err := r.each(ctx, func(rows *sql.Rows) error {
		var c, n string
		if err := rows.Scan(&c, &n); err != nil {
			return fmt.Errorf("history: reading names: %w", err)
		}
		if _, ok := names[c]; !ok { // the newest, of a shared database's instances
			names[c] = n
		}
		return nil
	}, `SELECT client, name FROM client_names ORDER BY updated_ms DESC LIMIT ?`, maxNames)
	return names, err
}

package history

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMigrateFromFirstSchema writes a file with the first schema and rows
// in it, as the first release would have, then opens it: every migration
// runs, the rows are still there, and new rows take the new columns.
func TestMigrateFromFirstSchema(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	db, err := sql.Open("sqlite", dsn(cfg.Path, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := migrateTo(ctx, db, 1); err != nil {
		t.Fatal(err)
	}
	ms := t0.UnixMilli()
	for _, q := range []string{
		`INSERT INTO series VALUES (1, '192.168.1.23', 'default', 'v10.events.data.microsoft.com', 'telemetry', 'sinkhole')`,
		fmt.Sprintf(`INSERT INTO counts VALUES (60, %d, 1, 5)`, t0.Unix()),
		fmt.Sprintf(`INSERT INTO seen VALUES ('192.168.1.23', 'v10.events.data.microsoft.com', %d, %d)`, ms, ms),
		fmt.Sprintf(`INSERT INTO events (time_ms, client, grp, name, type, action, category, pattern)
			VALUES (%d, '192.168.1.23', 'default', 'v10.events.data.microsoft.com.', 'A', 'sinkhole', 'telemetry', 'v10.events.data.microsoft.com')`, ms),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, _ := open(t, cfg, Options{})
	s.Answered(answer(t, "192.168.1.23", telemetry, t0.Add(time.Second)))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	r := readDB(t, cfg.Path)
	if v := one(t, r, `SELECT version FROM schema_version`); v != int64(SchemaVersion) || SchemaVersion < 2 {
		t.Errorf("schema version %d after migrating, want %d", v, SchemaVersion)
	}
	equal(t, "counts", rows(t, r, countsBySeries), []string{
		fmt.Sprintf("60|%d|192.168.1.23|default|v10.events.data.microsoft.com|telemetry|sinkhole|6", t0.Unix()),
	})
	equal(t, "events", rows(t, r, `SELECT time_ms, source, edition FROM events ORDER BY id`), []string{
		fmt.Sprintf("%d||", ms), fmt.Sprintf("%d|sinkhole|all", ms+1000),
	})
	if got := rows(t, r, `PRAGMA integrity_check`); len(got) != 1 || got[0] != "ok" {
		t.Errorf("integrity_check: %v", got)
	}
	// Each migration leaves the schema it says: the indexes of step 2
	// are there.
	idx := strings.Join(rows(t, r, `SELECT name FROM sqlite_schema WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name`), " ")
	if idx != "counts_series events_client events_time seen_pattern" {
		t.Errorf("indexes: %s", idx)
	}
}

// TestNewerSchemaRefused: a file a newer phonehome wrote is not touched;
// Open says why, and the store keeps counting in memory.
func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	db, err := sql.Open("sqlite", dsn(cfg.Path, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE schema_version SET version = ?`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(cfg, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer phonehome") {
		t.Fatalf("Open = %v, want the newer schema refused", err)
	}
	defer s.Close()
	s.Answered(answer(t, "192.168.1.23", telemetry, t0))
	if err := s.Flush(); err == nil {
		t.Error("a flush to a newer schema succeeded")
	}
}

// TestDSN: the path is one SQLite URI path whatever it holds.
func TestDSN(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?#%")
	s, _ := open(t, Config{Path: filepath.Join(dir, "h?.db"), Flush: time.Hour}, Options{})
	s.Answered(answer(t, "192.168.1.23", telemetry, t0))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if fileSize(filepath.Join(dir, "h?.db")) == 0 {
		t.Error("the file is not where the path says")
	}
}

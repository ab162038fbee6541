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
	var events []string
	for _, e := range storedEvents(t, cfg.Path) {
		events = append(events, fmt.Sprintf("%d|%s|%s", e.Time.UnixMilli(), e.Source, e.Edition))
	}
	equal(t, "events", events, []string{fmt.Sprintf("%d||", ms), fmt.Sprintf("%d|sinkhole|all", ms+1000)})
	if got := rows(t, r, `PRAGMA integrity_check`); len(got) != 1 || got[0] != "ok" {
		t.Errorf("integrity_check: %v", got)
	}
	// Each migration leaves the schema it says: the indexes of step 2
	// are there, but those of the events, which step 4 packed.
	idx := strings.Join(rows(t, r, `SELECT name FROM sqlite_schema WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name`), " ")
	if idx != "counts_series event_blocks_first seen_pattern" {
		t.Errorf("indexes: %s", idx)
	}
}

// TestMigrateEvents: a file of schema 3, with its events a row each,
// migrates to blocks: every event reads back as it was, in the same
// order (time, then as written), across pages of the move and blocks;
// their details are written once each, with a time within detailStamp of
// their last use; the counts, first seen and totals stay as they were.
func TestMigrateEvents(t *testing.T) {
	cfg := testConfig(t.TempDir())
	db, err := sql.Open("sqlite", dsn(cfg.Path, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := migrateTo(ctx, db, 3); err != nil {
		t.Fatal(err)
	}
	base := t0.Add(-2 * time.Hour).UnixMilli()
	// 12,345 events (more than a page of the move) of three clients, a
	// few each millisecond, of twelve details, written out of time order;
	// and a few odd ones: a family, a CNAME, a long duration.
	for _, q := range []string{
		`INSERT INTO series VALUES (1, '` + clientA + `', 'default', '` + patTel + `', 'telemetry', 'sinkhole')`,
		fmt.Sprintf(`INSERT INTO counts VALUES (60, %d, 1, 12345)`, t0.Unix()-3600),
		fmt.Sprintf(`INSERT INTO seen VALUES ('%s', '%s', %d, %d)`, clientA, patTel, base, base+5000),
		fmt.Sprintf(`INSERT INTO totals VALUES (3600, %d, 'default', 'telemetry', 'sinkhole', 12345)`, t0.Unix()-7200),
		fmt.Sprintf(`WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 12344)
		INSERT INTO events (time_ms, client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source, duration)
		SELECT %d + (n * 7919) %% 12345 / 3, '192.168.1.' || (n %% 3), 'default', 'v10.events.data.microsoft.com.',
			CASE n %% 2 WHEN 0 THEN 'A' ELSE 'AAAA' END, 'sinkhole', 'telemetry', '%s', '10-1809..11', '', '', 'all', 'NOERROR',
			CASE n %% 4 WHEN 3 THEN 'cache' ELSE 'sinkhole' END, (n %% 100) / 1e6 FROM i`, base, patTel),
		fmt.Sprintf(`INSERT INTO events (time_ms, client, grp, name, type, action, category, pattern, windows, family, cname, edition, rcode, source, duration)
		VALUES (%d, '%s', 'kids', 'x.example.net.', 'HTTPS', 'log', 'store', '*.example.net', '', 'example', 'cdn.example.org', 'pro', 'SERVFAIL', 'upstream', 2.5)`,
			base+1000, clientA),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	type event struct {
		ms       int64
		fields   string
		duration float64
	}
	var before []event
	rs, err := db.Query(`SELECT time_ms, client || '|' || grp || '|' || name || '|' || type || '|' || action || '|' || category || '|' || pattern || '|' ||
		windows || '|' || family || '|' || cname || '|' || edition || '|' || rcode || '|' || source, duration FROM events ORDER BY time_ms, id`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var e event
		rs.Scan(&e.ms, &e.fields, &e.duration)
		before = append(before, e)
	}
	rs.Close()
	db.Close()

	s, _ := open(t, cfg, Options{Now: (&clock{t: t0}).Now})
	r := readDB(t, s.Path())
	var after []event
	for _, e := range storedEvents(t, cfg.Path) {
		after = append(after, event{e.Time.UnixMilli(), strings.Join([]string{e.Client, e.Group, e.Name, e.Type, e.Action, e.Category, e.Pattern,
			e.Windows, e.Family, e.CNAME, e.Edition, e.Rcode, e.Source}, "|"), e.Duration})
	}
	if len(after) != len(before) || len(before) != 12346 {
		t.Fatalf("%d events after the migration, %d before", len(after), len(before))
	}
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("event %d: %v before, %v after", i, before[i], after[i])
		}
	}
	// Three clients, each with A and AAAA sinkholed and AAAA from the
	// cache, and the odd one.
	if n := one(t, r, `SELECT count(*) FROM event_details`); n != 10 {
		t.Errorf("%d event details, want 10", n)
	}
	if n := one(t, r, `SELECT max(n) FROM event_blocks`); n != blockEvents {
		t.Errorf("the largest block holds %d events, want %d", n, blockEvents)
	}
	if n := one(t, r, `SELECT count(*) FROM event_details WHERE last_ms + ? < (SELECT max(last_ms) FROM event_blocks) OR last_ms < ?`, detailStamp, base); n != 0 {
		t.Errorf("%d details with a last_ms more than %d ms before their last event", n, detailStamp)
	}
	if n := one(t, r, `SELECT count(*) FROM sqlite_schema WHERE name = 'events'`); n != 0 {
		t.Error("the table of schema 3's events is still there")
	}
	equal(t, "counts, seen, totals", []string{
		strings.Join(rows(t, r, countsBySeries), " "), strings.Join(rows(t, r, `SELECT * FROM seen`), " "), strings.Join(rows(t, r, `SELECT * FROM totals`), " "),
	}, []string{
		fmt.Sprintf("60|%d|%s|default|%s|telemetry|sinkhole|12345", t0.Unix()-3600, clientA, patTel),
		fmt.Sprintf("%s|%s|%d|%d", clientA, patTel, base, base+5000),
		fmt.Sprintf("3600|%d|default|telemetry|sinkhole|12345", t0.Unix()-7200),
	})
	if got := rows(t, r, `PRAGMA integrity_check`); len(got) != 1 || got[0] != "ok" {
		t.Errorf("integrity_check: %v", got)
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

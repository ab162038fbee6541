package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/internal/querylog"
)

// TestMain points the history's default file (on unless a config says
// history: off) into a temporary state directory, so that no test of
// this package writes one into the home directory of whoever runs it.
//
// With PHONEHOME_TEST_PROCESS=1 the test binary is phonehome itself: a
// test starts it as a process of its own (fleet_process_test.go).
func TestMain(m *testing.M) {
	if os.Getenv("PHONEHOME_TEST_PROCESS") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	dir, err := os.MkdirTemp("", "phonehome-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("STATE_DIRECTORY", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestServeHistory runs serve with the history on a file of the test's,
// flushed every 100 ms: a sinkholed and a logged query are in the file
// after a flush, an allowed one is not; the store's metrics are on
// /metrics; and a reload that moves the file says it needs a restart.
func TestServeHistory(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "h.db")
	cfg := filepath.Join(dir, "phonehome.yaml")
	write := func(history string) {
		text := "http: \"127.0.0.1:0\"\naccess: {rate_limit: 0}\nquerylog: {output: \"off\"}\nhistory: " + history + "\n"
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("{path: %q, flush: 100ms}", path))
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr())
	if !strings.Contains(ph.logs.String(), "history="+path) {
		t.Errorf("the start line does not name the history file:\n%s", ph.logs)
	}
	if got := lookupA(t, ph.dns[0], "v10.events.data.microsoft.com."); got != "0.0.0.0" {
		t.Fatalf("telemetry: %s, want sinkholed", got)
	}
	if got := lookupA(t, ph.dns[0], "arc.msn.com."); got != dnstest.AnswerA {
		t.Fatalf("arc.msn.com: %s, want forwarded", got)
	}
	lookupA(t, ph.dns[0], "www.example.com.") // allowed: not kept

	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hr, err := history.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Close()
	var events []string
	for deadline := time.Now().Add(5 * time.Second); len(events) < 2 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		events = events[:0]
		err := hr.EachEvent(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour), func(e *querylog.Record) error {
			events = append(events, strings.Join([]string{e.Client, e.Name, e.Action, e.Category, e.Pattern}, " "))
			return nil
		})
		if err != nil {
			continue // not created yet
		}
		slices.SortFunc(events, func(a, b string) int { return strings.Compare(strings.Fields(a)[1], strings.Fields(b)[1]) })
	}
	want := "127.0.0.1 arc.msn.com. log spotlight arc.msn.com\n" +
		"127.0.0.1 v10.events.data.microsoft.com. sinkhole telemetry v10.events.data.microsoft.com"
	if got := strings.Join(events, "\n"); got != want {
		t.Fatalf("events in the history file:\n%s\nwant\n%s", got, want)
	}
	var counted int
	if err := db.QueryRow(`SELECT sum(n) FROM counts c JOIN series s ON s.id = c.series WHERE s.client = '127.0.0.1'`).Scan(&counted); err != nil || counted != 2 {
		t.Errorf("queries counted: %d, %v; want 2", counted, err)
	}

	metrics := getWhen(t, "http://"+ph.http+"/metrics", func(b string) bool {
		return strings.Contains(b, `phonehome_history_rows_written_total{table="events"} 2`)
	})
	for _, m := range []string{`phonehome_history_rows_written_total{table="events"} 2`, "phonehome_history_database_bytes ",
		"phonehome_history_write_duration_seconds_count ", "phonehome_history_flush_failures_total 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics has no %s", m)
		}
	}

	write(fmt.Sprintf("{path: %q, flush: 1s}", filepath.Join(dir, "other.db")))
	if code, body := post(t, "", "http://"+ph.http+"/api/reload", "{}"); code != 200 || !strings.Contains(body, `"restart_needed":["history.path"]`) {
		t.Errorf("reload moving the history file: %d %s", code, body)
	}
}

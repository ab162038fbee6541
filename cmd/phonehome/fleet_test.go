package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/pgtest"
)

// waitBody GETs url until ok says its body is so, for a minute at most:
// long enough for a reconnection's backoff on a loaded machine.
func waitBody(t *testing.T, url, what string, ok func(string) bool) string {
	t.Helper()
	var body string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, body = get(t, url); ok(body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after a minute, still not %s:\n%s", url, what, body)
		}
	}
}

// TestFleetPause runs two instances in-process that share a throwaway
// PostgreSQL: a pause pressed on one (the CLI) sinkholes nothing on the
// other, a resume on the other comes back; with the database stopped,
// both go on answering, /readyz stays ready, the metric says the link is
// down, and a pause applies on its instance alone, with a warning, until
// the database is back.
func TestFleetPause(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	up := dnstest.Start(t)
	dir := t.TempDir()
	start := func(name string) *running {
		t.Helper()
		cfg := filepath.Join(dir, name+".yaml")
		text := fmt.Sprintf("access: {rate_limit: 0}\nquerylog: {output: \"off\"}\nhistory: {path: %s.db, dsn: %q, instance: %s}\n", name, db.DSN(), name)
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	}
	one, two := start("one"), start("two")
	for _, ph := range []*running{one, two} {
		waitBody(t, "http://"+ph.http+"/metrics", "connected", func(b string) bool { return strings.Contains(b, "\nphonehome_fleet_connected 1\n") })
	}
	const telemetry = "v10.events.data.microsoft.com."
	if got := lookupA(t, two.dns[0], telemetry); got != "0.0.0.0" {
		t.Fatalf("telemetry before the pause: %s", got)
	}

	var stdout, stderr bytes.Buffer
	if code := run([]string{"pause", "15m", "-reason", "a Windows update", "-http", one.http}, &stdout, &stderr); code != 0 || stderr.Len() > 0 {
		t.Fatalf("phonehome pause: exit %d: %s", code, stderr.String())
	}
	if stdout.String() != "paused for 15m\n" {
		t.Errorf("phonehome pause said %q", stdout.String())
	}
	waitBody(t, "http://"+two.http+"/api/summary", "paused by one", func(b string) bool {
		return strings.Contains(b, `"reason":"a Windows update","by":"one"`)
	})
	if got := lookupA(t, two.dns[0], telemetry); got != dnstest.AnswerA {
		t.Errorf("telemetry on two while one paused: %s", got)
	}
	if code, body := post(t, "", "http://"+two.http+"/api/resume", ""); code != 200 || strings.Contains(body, "warning") {
		t.Errorf("resume on two: %d %s", code, body)
	}
	waitBody(t, "http://"+one.http+"/api/summary", "resumed", func(b string) bool { return strings.Contains(b, `"paused":null`) })
	if got := lookupA(t, one.dns[0], telemetry); got != "0.0.0.0" {
		t.Errorf("telemetry on one after two resumed: %s", got)
	}

	// The database goes away.
	db.Stop()
	waitBody(t, "http://"+one.http+"/metrics", "disconnected", func(b string) bool { return strings.Contains(b, "\nphonehome_fleet_connected 0\n") })
	for _, ph := range []*running{one, two} {
		if got := lookupA(t, ph.dns[0], "arc.msn.com."); got != dnstest.AnswerA {
			t.Errorf("an answer without the database: %s", got)
		}
		if code, body := get(t, "http://"+ph.http+"/readyz"); code != 200 {
			t.Errorf("/readyz without the database: %d %s", code, body)
		}
	}
	code, body := post(t, "", "http://"+one.http+"/api/pause", `{"duration":"5m"}`)
	if code != 200 || !strings.Contains(body, `"warning":"applied on this instance only`) || !strings.Contains(body, `"by":"one"`) {
		t.Errorf("pause without the database: %d %s", code, body)
	}
	if got := lookupA(t, one.dns[0], telemetry); got != dnstest.AnswerA {
		t.Errorf("telemetry on one, paused without the database: %s", got)
	}

	// It comes back: one writes its pause, and two follows.
	db.Start()
	waitBody(t, "http://"+two.http+"/api/summary", "paused by one again", func(b string) bool { return strings.Contains(b, `"by":"one"`) })
	if got := lookupA(t, two.dns[0], telemetry); got != dnstest.AnswerA {
		t.Errorf("telemetry on two after the outage: %s", got)
	}
	for _, ph := range []*running{one, two} {
		if n := strings.Count(ph.logs.String(), "the shared database is unreachable"); n != 1 {
			t.Errorf("the outage logged %d times:\n%s", n, ph.logs)
		}
	}
}

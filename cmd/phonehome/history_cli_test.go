package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/internal/pgtest"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// writingHistory is a history file filled through the store, whose store
// goes on writing (a flush every 20 ms, of queries from 10.0.0.x) until
// the test ends:
//
//	192.168.1.23  telemetry 5 at 2 hours ago, 2 at 10 days ago; arc.msn.com 1 at 3 hours ago
//	192.168.1.40  arc.msn.com 1 at 30 minutes ago (its first)
func writingHistory(t *testing.T) string {
	t.Helper()
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "history.db")
	st, err := history.Open(history.Config{Path: path, Flush: 20 * time.Millisecond}, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	answer := func(client, name string, at time.Time) resolver.Answer {
		c := netip.MustParseAddr(client)
		d := p.Decide(c, name)
		src := resolver.SourceUpstream
		if d.Action == policy.Sinkhole {
			src = resolver.SourceSinkhole
		}
		return resolver.Answer{Start: at, Client: c, Question: dns.Question{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET},
			Decision: d, Source: src, Duration: time.Millisecond}
	}
	now := time.Now()
	for range 5 {
		st.Answered(answer("192.168.1.23", "v10.events.data.microsoft.com.", now.Add(-2*time.Hour)))
	}
	for range 2 {
		st.Answered(answer("192.168.1.23", "v10.events.data.microsoft.com.", now.Add(-10*24*time.Hour)))
	}
	st.Answered(answer("192.168.1.23", "arc.msn.com.", now.Add(-3*time.Hour)))
	st.Answered(answer("192.168.1.40", "arc.msn.com.", now.Add(-30*time.Minute)))
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			st.Answered(answer(fmt.Sprintf("10.0.0.%d", i%50), "v10.events.data.microsoft.com.", time.Now()))
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		st.Close()
	})
	// Until the writer's first flushes are in the file.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if out, _, _ := phonehome(t, "history", "export", "-db", path, "-from", "1m"); strings.Count(out, `"client":"10.0.0.`) >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer wrote nothing")
		}
	}
	return path
}

// TestHistoryCLI runs each history command on a file its store keeps
// writing: top for a machine and for all, new, and export as CSV and
// JSON lines, reading beside the writer.
func TestHistoryCLI(t *testing.T) {
	path := writingHistory(t)

	out, errs, code := phonehome(t, "history", "top", "-db", path, "-client", "192.168.1.23", "-since", "7d")
	if code != 0 {
		t.Fatalf("top: %d %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "# 192.168.1.23, ") || !strings.HasSuffix(lines[0], ": 2 endpoints") ||
		!regexp.MustCompile(`^COUNT +PATTERN +CATEGORY +ACTIONS +FIRST SEEN +LAST SEEN$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^5 +v10\.events\.data\.microsoft\.com +telemetry +sinkhole 5 +\d{4}-\d\d-\d\d \d\d:\d\d +\d{4}`).MatchString(lines[2]) ||
		!regexp.MustCompile(`^1 +arc\.msn\.com +spotlight +log 1 `).MatchString(lines[3]) {
		t.Errorf("top of a machine for 7 days:\n%s", out)
	}
	// First seen is the first the history remembers, 10 days ago.
	if first := time.Now().Add(-10 * 24 * time.Hour).Local().Format("2006-01-02"); !strings.Contains(lines[2], first) {
		t.Errorf("first seen is not %s:\n%s", first, lines[2])
	}
	out, _, code = phonehome(t, "history", "top", "-db", path, "-since", "30d", "-limit", "1")
	if code != 0 || !regexp.MustCompile(`\n\d+ +v10\.events\.data\.microsoft\.com +telemetry +sinkhole \d+`).MatchString(out) || strings.Contains(out, "arc.msn.com") {
		t.Errorf("top of every machine, one line:\n%s", out)
	}

	out, errs, code = phonehome(t, "history", "new", "-db", path, "-since", "1h")
	if code != 0 || !regexp.MustCompile(`(?m)^192\.168\.1\.40 +\d{4}-\d\d-\d\d \d\d:\d\d +arc\.msn\.com +spotlight `).MatchString(out) ||
		strings.Contains(out, "192.168.1.23") {
		t.Errorf("new in the last hour: %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "10.0.0.") { // the writer's machines are new too
		t.Errorf("the writer's machines are not new:\n%s", out)
	}
	out, errs, code = phonehome(t, "history", "new", "-db", path, "-since", "30d", "-client", "192.168.1.23")
	if code != 0 || strings.Count(out, "192.168.1.23") != 2 || !strings.Contains(errs, "the history begins at") {
		t.Errorf("new to a machine in 30 days: %d\n%s%s", code, out, errs)
	}

	out, errs, code = phonehome(t, "history", "export", "-db", path, "-from", "4h", "-to", "1h", "-format", "csv")
	if code != 0 {
		t.Fatalf("export: %d %s", code, errs)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 7 || strings.Join(recs[0], ",") != "time,client,group,name,type,action,category,pattern,windows,family,cname,edition,rcode,source,duration,client_name" ||
		recs[1][1] != "192.168.1.23" || recs[1][3] != "arc.msn.com." || recs[2][6] != "telemetry" || recs[6][13] != "sinkhole" {
		t.Errorf("events 4 to 1 hours ago as CSV: %v\n%s", err, out)
	}
	out, _, code = phonehome(t, "history", "export", "-db", path, "-from", "11d", "-to", "9d", "-table", "counts")
	var row history.CountRow
	if code != 0 || strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &row) != nil || row.N != 2 || row.Span != 60 || row.Client != "192.168.1.23" {
		t.Errorf("counts 11 to 9 days ago as JSON lines: %+v\n%s", row, out)
	}

	// Reading over and over beside the writer: every read works.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				var o, e strings.Builder
				if code := run([]string{"history", "export", "-db", path, "-from", "1m"}, &o, &e); code != 0 {
					t.Errorf("export beside the writer: %d %s", code, e.String())
					return
				}
			}
		}()
	}
	wg.Wait()
	out, _, _ = phonehome(t, "history", "export", "-db", path, "-from", "1h")
	var last struct {
		Client string `json:"client"`
		Action string `json:"action"`
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 10 || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || !strings.HasPrefix(last.Client, "10.0.0.") || last.Action != "sinkhole" {
		t.Errorf("the writer's events, as JSON lines: %d lines, the last %s", len(lines), lines[len(lines)-1])
	}
}

// TestHistoryCLIFile: the file is -db, or -config's history.path
// (relative to the config file), or the default; a missing file, a
// history that is off and bad flags say so.
func TestHistoryCLIFile(t *testing.T) {
	path := writingHistory(t)
	dir := filepath.Dir(path)
	cfg := filepath.Join(dir, "phonehome.yaml")
	os.WriteFile(cfg, []byte("history: {path: history.db}\n"), 0o644)
	if out, errs, code := phonehome(t, "history", "top", "-config", cfg, "-client", "192.168.1.40"); code != 0 || !strings.Contains(out, "arc.msn.com") {
		t.Errorf("-config: %d\n%s%s", code, out, errs)
	}
	state := t.TempDir()
	t.Setenv("STATE_DIRECTORY", state)
	_, errs, code := phonehome(t, "history", "new")
	if code != 1 || !strings.Contains(errs, filepath.Join(state, "history.db")+" does not exist") || !strings.Contains(errs, "use -config or -db") {
		t.Errorf("no file at the default path: %d %s", code, errs)
	}
	os.Symlink(path, filepath.Join(state, "history.db"))
	if out, errs, code := phonehome(t, "history", "new", "-since", "1h"); code != 0 || !strings.Contains(out, "192.168.1.40") {
		t.Errorf("the default path: %d\n%s%s", code, out, errs)
	}

	off := filepath.Join(dir, "off.yaml")
	os.WriteFile(off, []byte("history: off\n"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"top", "-db", filepath.Join(dir, "nope.db")}, 1, "nope.db does not exist"},
		{[]string{"top", "-config", off}, 1, "the history is off in " + off},
		{[]string{"top", "-config", filepath.Join(dir, "missing.yaml")}, 1, "missing.yaml"},
		{[]string{"top", "-config", cfg, "-db", path}, 1, "give one of -config, -db and -dsn"},
		{[]string{"top", "-db", path, "-since", "last week"}, 2, `-since: "last week" is not a time: want an RFC 3339 time`},
		{[]string{"top", "-db", path, "-client", "pc1"}, 2, `-client: "pc1" is not an IP address`},
		{[]string{"top", "-db", path, "-limit", "0"}, 2, "-limit 0: want 1 to 1000"},
		{[]string{"top", "-db", path, "-since", "1h", "-until", "2h"}, 2, "-since 1h is not before -until 2h"},
		{[]string{"export", "-db", path, "-from", "1h", "-to", "2h"}, 2, "-from: "},
		{[]string{"export", "-db", path, "-format", "xml"}, 2, `-format "xml": want jsonl or csv`},
		{[]string{"export", "-db", path, "-table", "seen"}, 2, `-table "seen": want events or counts`},
		{[]string{"new", "-db", path, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"list"}, 2, `unknown command "list"`},
	} {
		_, errs, code := phonehome(t, append([]string{"history"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.says) {
			t.Errorf("history %s: %d %q; want %d saying %q", strings.Join(c.args, " "), code, errs, c.code, c.says)
		}
	}
	if out, _, code := phonehome(t, "history", "-h"); code != 0 || !strings.Contains(out, "export") {
		t.Errorf("history -h: %d %s", code, out)
	}
}

// TestServeHistoryAPI: serve hands its history file to the API, which
// reads what the resolver wrote; the command line reads it beside serve.
func TestServeHistoryAPI(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "phonehome.yaml")
	text := "http: \"127.0.0.1:0\"\naccess: {rate_limit: 0}\nquerylog: {output: \"off\"}\nhistory: {path: h.db, flush: 50ms}\n"
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr())
	lookupA(t, ph.dns[0], "v10.events.data.microsoft.com.")
	lookupA(t, ph.dns[0], "arc.msn.com.")
	body := getWhen(t, "http://"+ph.http+"/api/history?from=-1h&step=1m", func(b string) bool { return strings.Contains(b, `"total":2`) })
	if !strings.Contains(body, `"category":"telemetry","total":1`) {
		t.Errorf("/api/history: %s", body)
	}
	if code, body := get(t, "http://"+ph.http+"/api/events?before=now&limit=1"); code != 200 || !strings.Contains(body, `"next":"`) {
		t.Errorf("/api/events?before=now: %d %s", code, body)
	}
	if code, body := get(t, "http://"+ph.http+"/api/new?since=1h"); code != 200 || strings.Count(body, `"client":"127.0.0.1"`) != 2 {
		t.Errorf("/api/new: %d %s", code, body)
	}
	if code, body := get(t, "http://"+ph.http+"/api/history?step=1s"); code != 400 || !strings.Contains(body, "step: ") {
		t.Errorf("/api/history?step=1s: %d %s", code, body)
	}
	out, errs, code := phonehome(t, "history", "top", "-config", cfg, "-client", "127.0.0.1")
	if code != 0 || !strings.Contains(out, "v10.events.data.microsoft.com") || !strings.Contains(out, "arc.msn.com") {
		t.Errorf("history top beside serve: %d\n%s%s", code, out, errs)
	}
}

// TestHistoryCLIShared: the commands read a history that two instances
// share with -dsn, or $PHONEHOME_HISTORY_DSN: every instance's, or one's
// with -instance; an export says which instance counted each row.
func TestHistoryCLIShared(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	t.Setenv(history.EnvDSN, "")
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, instance := range []string{"dns1", "dns2"} {
		st, err := history.Open(history.Config{DSN: srv.DSN(), Instance: instance, Flush: time.Hour}, history.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c := netip.MustParseAddr("192.168.1.23")
		for range 1 + i {
			st.Answered(resolver.Answer{Start: now.Add(-time.Hour), Client: c, Question: dns.Question{Name: "v10.events.data.microsoft.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET},
				Decision: p.Decide(c, "v10.events.data.microsoft.com."), Source: resolver.SourceSinkhole})
		}
		if err := st.Flush(); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	top := regexp.MustCompile(`(?m)^(\d+) +v10\.events\.data\.microsoft\.com +telemetry `)
	out, errs, code := phonehome(t, "history", "top", "-dsn", srv.DSN(), "-instance", "dns2", "-since", "1d")
	if m := top.FindStringSubmatch(out); code != 0 || m == nil || m[1] != "2" {
		t.Errorf("top of dns2: %d\n%s%s", code, out, errs)
	}
	t.Setenv(history.EnvDSN, srv.DSN())
	out, errs, code = phonehome(t, "history", "top", "-since", "1d")
	if m := top.FindStringSubmatch(out); code != 0 || m == nil || m[1] != "3" {
		t.Errorf("top of the fleet, from $%s: %d\n%s%s", history.EnvDSN, code, out, errs)
	}
	out, errs, code = phonehome(t, "history", "export", "-format", "csv", "-from", "1d")
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(recs) != 4 || recs[0][len(recs[0])-1] != "instance" || recs[1][len(recs[1])-1] != "dns1" || recs[3][len(recs[3])-1] != "dns2" {
		t.Errorf("export as CSV: %d %v\n%s%s", code, err, out, errs)
	}
	// -db is the file, whatever the environment says.
	if _, errs, code := phonehome(t, "history", "top", "-db", filepath.Join(t.TempDir(), "none.db")); code != 1 || !strings.Contains(errs, "none.db does not exist") {
		t.Errorf("-db with $%s set: %d %s", history.EnvDSN, code, errs)
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// TestServeAlias runs the daemon and asks for two aliases, one through a
// sinkholed telemetry endpoint and one through a logged spotlight
// endpoint, and the telemetry endpoint itself: the query log, /metrics and
// /api/events say which CNAME decided the aliases, and nothing of a CNAME
// for the name asked directly.
func TestServeAlias(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("alias.example", "v10.events.data.microsoft.com", "cdn.example.net")
	up.SetChain("www.alias.example", "edge.example.net", "arc.msn.com", "cdn.example.net")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	qlog := filepath.Join(dir, "queries.jsonl")
	if err := os.WriteFile(cfg, []byte("access: {rate_limit: 0}\nquerylog: {output: "+qlog+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	b := ph.bound
	if got := lookupLast(t, b.dns[0], "alias.example."); got != "0.0.0.0" {
		t.Errorf("alias of a telemetry endpoint: %s", got)
	}
	if got := lookupLast(t, b.dns[0], "www.alias.example."); got != dnstest.AnswerA {
		t.Errorf("alias of a spotlight endpoint: %s", got)
	}
	if got := lookupA(t, b.dns[0], "v10.events.data.microsoft.com."); got != "0.0.0.0" {
		t.Errorf("the telemetry endpoint: %s", got)
	}
	want := map[string]string{ // name → cname
		"alias.example.":                 "v10.events.data.microsoft.com.",
		"www.alias.example.":             "arc.msn.com.",
		"v10.events.data.microsoft.com.": "",
	}

	t.Run("querylog", func(t *testing.T) {
		var lines []string
		for deadline := time.Now().Add(5 * time.Second); len(lines) < 3 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			data, _ := os.ReadFile(qlog)
			lines = strings.Split(strings.TrimSpace(string(data)), "\n")
		}
		var recs []map[string]any
		for _, l := range lines {
			var r map[string]any
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("query log line %q: %v", l, err)
			}
			recs = append(recs, r)
		}
		checkCNAMEs(t, "query log", recs, want)
		if len(lines) != 3 || !strings.Contains(lines[0], `"name":"alias.example.","type":"A","action":"sinkhole","category":"telemetry","pattern":"v10.events.data.microsoft.com","windows":"10-1809..11","cname":"v10.events.data.microsoft.com.","edition":"all","rcode":"NOERROR","source":"sinkhole"`) {
			t.Errorf("query log:\n%s", strings.Join(lines, "\n"))
		}
	})
	t.Run("metrics", func(t *testing.T) {
		wants := []string{
			`phonehome_alias_queries_total{action="sinkhole",category="telemetry",endpoint="v10.events.data.microsoft.com"} 1`,
			`phonehome_alias_queries_total{action="log",category="spotlight",endpoint="arc.msn.com"} 1`,
			// Aliases count under their endpoint too.
			`phonehome_endpoint_queries_total{action="sinkhole",category="telemetry",endpoint="v10.events.data.microsoft.com"} 2`,
			`phonehome_endpoint_queries_total{action="log",category="spotlight",endpoint="arc.msn.com"} 1`,
		}
		body := getWhen(t, "http://"+b.http+"/metrics", func(body string) bool {
			return !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(body, w) })
		})
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("/metrics lacks %s", w)
			}
		}
		if strings.Contains(body, "alias.example") {
			t.Error("a query name is a label")
		}
	})
	t.Run("api", func(t *testing.T) {
		body := getWhen(t, "http://"+b.http+"/api/events", func(s string) bool { return strings.Count(s, `"id":`) >= 3 })
		var evs []map[string]any
		if err := json.Unmarshal([]byte(body), &evs); err != nil {
			t.Fatalf("/api/events: %v\n%s", err, body)
		}
		checkCNAMEs(t, "/api/events", evs, want)
	})
}

// lookupLast asks for name's A record and returns the address at the end
// of the answer, after any CNAMEs, or the rcode.
func lookupLast(t *testing.T, addr, name string) string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(q, addr)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if n := len(r.Answer); n > 0 {
		if a, ok := r.Answer[n-1].(*dns.A); ok {
			return a.A.String()
		}
	}
	return dns.RcodeToString[r.Rcode]
}

// checkCNAMEs checks that recs hold one record for each name of want, with
// its "cname" ("" for none).
func checkCNAMEs(t *testing.T, what string, recs []map[string]any, want map[string]string) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range recs {
		name, _ := r["name"].(string)
		cname, ok := r["cname"]
		seen[name]++
		if w, known := want[name]; !known || w == "" && ok || w != "" && cname != w {
			t.Errorf("%s: %s has cname %v (%v), want %q", what, name, cname, ok, w)
		}
	}
	for name := range want {
		if seen[name] != 1 {
			t.Errorf("%s: %d records of %s, want 1", what, seen[name], name)
		}
	}
}

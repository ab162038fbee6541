package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/internal/pgtest"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// historyAPI serves a history file through the whole handler; hr nil is
// history: off.
func historyAPI(t *testing.T, hr *history.Reader) http.Handler {
	t.Helper()
	cfg := &resolver.Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"127.0.0.1:9"}}
	s, err := resolver.New(cfg, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	var opts []Option
	if hr != nil {
		opts = append(opts, WithHistory(hr))
	}
	return NewAPI(s, NewActivity(10, 10, false), nil, Config{}, nil, opts...).Handler()
}

// filledHistory writes, through the store, telemetry from 192.168.1.23
// 10 and 150 minutes ago and 50 hours ago (rolled up), and arc.msn.com
// (logged) from 192.168.1.40 90 minutes ago; and returns a Reader of it.
func filledHistory(t *testing.T) *history.Reader {
	t.Helper()
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "history.db")
	st, err := history.Open(history.Config{Path: path, Flush: time.Hour}, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for _, q := range []struct {
		client, name string
		ago          time.Duration
	}{
		{"192.168.1.23", "v10.events.data.microsoft.com.", 10 * time.Minute},
		{"192.168.1.23", "v10.events.data.microsoft.com.", 150 * time.Minute},
		{"192.168.1.23", "v10.events.data.microsoft.com.", 50 * time.Hour},
		{"192.168.1.40", "arc.msn.com.", 90 * time.Minute},
	} {
		c := netip.MustParseAddr(q.client)
		st.Answered(resolver.Answer{Start: now.Add(-q.ago), Client: c, Question: dns.Question{Name: q.name, Qtype: dns.TypeA, Qclass: dns.ClassINET},
			Decision: p.Decide(c, q.name), Source: resolver.SourceUpstream})
	}
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := st.Maintain(); err != nil {
		t.Fatal(err)
	}
	r, err := history.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// get sends a GET through h and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://127.0.0.1:8053"+path, nil))
	return w.Code, w.Body.String()
}

func getJSON(t *testing.T, h http.Handler, path string, v any) {
	t.Helper()
	code, body := get(t, h, path)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

// TestHistoryRoutes: each route answers from the file, with its filters
// and pages.
func TestHistoryRoutes(t *testing.T) {
	h := historyAPI(t, filledHistory(t))

	var s history.Series
	getJSON(t, h, "/api/history?from=-4h&step=1h", &s)
	if len(s.Buckets) != 5 && len(s.Buckets) != 4 || s.Total != 3 || len(s.Categories) != 2 || s.Categories[0].Category != "telemetry" ||
		s.Categories[0].Total != 2 || s.Categories[1].Category != "spotlight" || s.Step != "1h" {
		t.Errorf("the last 4 hours by the hour: %+v", s)
	}
	getJSON(t, h, "/api/history?from=-3d&to=now&step=1d&client=192.168.1.23&category=Telemetry&action=sinkhole&group=default", &s)
	if s.Total != 3 || len(s.Categories) != 1 || s.StepSeconds != 86400 {
		t.Errorf("three days of one client's telemetry: %+v", s)
	}
	getJSON(t, h, "/api/history", &s)
	if s.Total != 3 || s.Step != "5m" || len(s.Buckets) < 288 || len(s.Buckets) > 289 {
		t.Errorf("the defaults (24 hours, 5 minutes): %d buckets of %s, total %d", len(s.Buckets), s.Step, s.Total)
	}
	from := time.Now().Add(-3 * time.Hour).UTC().Format(time.RFC3339)
	getJSON(t, h, "/api/history?from="+from+"&step=15m&client=192.168.1.40", &s)
	if s.Total != 1 || len(s.Buckets) < 12 || len(s.Buckets) > 13 {
		t.Errorf("an RFC 3339 from and minutes: %d buckets, %+v", len(s.Buckets), s.Categories)
	}

	var es history.Endpoints
	getJSON(t, h, "/api/endpoints?from=-7d", &es)
	if len(es.Endpoints) != 2 || es.Endpoints[0].Pattern != "v10.events.data.microsoft.com" || es.Endpoints[0].Count != 3 ||
		es.Endpoints[0].Actions["sinkhole"] != 3 || es.Endpoints[0].FirstSeen.IsZero() || es.NextOffset != nil {
		t.Errorf("endpoints of a week: %+v", es)
	}
	getJSON(t, h, "/api/endpoints?client=192.168.1.40&from=-7d&limit=1", &es)
	if len(es.Endpoints) != 1 || es.Endpoints[0].Pattern != "arc.msn.com" || es.Client != "192.168.1.40" {
		t.Errorf("a client's endpoints: %+v", es)
	}
	getJSON(t, h, "/api/endpoints?from=-7d&limit=1&offset=1", &es)
	if len(es.Endpoints) != 1 || es.Endpoints[0].Pattern != "arc.msn.com" || es.Total != 2 {
		t.Errorf("the second page of one: %+v", es)
	}

	var n history.NewEndpoints
	getJSON(t, h, "/api/new", &n)
	if len(n.Endpoints) != 1 || n.Endpoints[0].Client != "192.168.1.40" || n.Endpoints[0].Category != "spotlight" || n.HistorySince == nil {
		t.Errorf("new in 24 hours: %+v", n)
	}
	getJSON(t, h, "/api/new?since=7d&client=192.168.1.23", &n)
	if len(n.Endpoints) != 1 || n.Endpoints[0].Pattern != "v10.events.data.microsoft.com" {
		t.Errorf("new to a client in a week: %+v", n)
	}

	var page history.EventPage
	getJSON(t, h, "/api/events?before=now&limit=3", &page)
	if len(page.Events) != 3 || page.Events[0].Pattern != "v10.events.data.microsoft.com" || page.Next == "" {
		t.Fatalf("the newest 3 events: %+v", page)
	}
	getJSON(t, h, "/api/events?before="+page.Next+"&limit=3", &page)
	if len(page.Events) != 1 || page.Next != "" || time.Since(page.Events[0].Time) < 49*time.Hour {
		t.Errorf("the page after: %+v", page)
	}
	getJSON(t, h, "/api/events?before=-1h&category=spotlight", &page)
	if len(page.Events) != 1 || page.Events[0].Client != "192.168.1.40" {
		t.Errorf("spotlight events before an hour ago: %+v", page)
	}
	// Without before, /api/events is the in-memory feed, as it was.
	if code, body := get(t, h, "/api/events?since=0"); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("the feed: %d %s", code, body)
	}
}

// TestHistoryParams: what a route cannot take is a 400 that names the
// parameter and says what is wanted.
func TestHistoryParams(t *testing.T) {
	h := historyAPI(t, filledHistory(t))
	for _, c := range []struct{ path, says string }{
		{"/api/history?from=yesterday", `from: "yesterday" is not a time: want an RFC 3339 time`},
		{"/api/history?to=12", `to: "12" is not a time`},
		{"/api/history?from=-1h&to=-2h", "from: "},
		{"/api/history?step=90m", `step: "90m" is not a step: want whole minutes under an hour`},
		{"/api/history?step=10s", `step: "10s" is out of bounds: want 1m to 366d`},
		{"/api/history?from=-3d&step=1m", "step: 1m is under an hour, but from"},
		{"/api/history?from=-400d&step=1h", "step: 1h from"},
		{"/api/history?client=pc1", `client: "pc1" is not an IP address`},
		{"/api/history?action=block", `action: unknown action "block"`},
		{"/api/history?clinet=192.168.1.23", "clinet: unknown parameter: want from, to, step, client, group, category, action"},
		{"/api/history?from=-1h&from=-2h", "from: given more than once"},
		{"/api/endpoints?limit=0", `limit: "0": want a whole number from 1 to 1000`},
		{"/api/endpoints?limit=5000", "limit: "},
		{"/api/endpoints?offset=-1", "offset: "},
		{"/api/endpoints?step=1h", "step: unknown parameter"},
		{"/api/new?since=soon", `since: "soon" is not a time`},
		{"/api/events?before=", `before: "" is neither a time nor the next of a page`},
		{"/api/events?before=12-x", "before: "},
		{"/api/events?before=now&since=3", "since: unknown parameter"},
		{"/api/events?before=now&limit=1001", "limit: "},
	} {
		code, body := get(t, h, c.path)
		if code != http.StatusBadRequest || !strings.Contains(body, c.says) {
			t.Errorf("GET %s: %d %q; want 400 saying %q", c.path, code, body, c.says)
		}
	}
}

// TestHistoryOff: with history: off the routes say so with 404, and the
// feed is as it was. A file not there yet is a 503 that says so.
func TestHistoryOff(t *testing.T) {
	h := historyAPI(t, nil)
	for _, path := range []string{"/api/history", "/api/endpoints?client=192.168.1.23", "/api/new?since=24h", "/api/events?before=now"} {
		if code, body := get(t, h, path); code != http.StatusNotFound || !strings.Contains(body, "history is off") {
			t.Errorf("GET %s with history off: %d %s", path, code, body)
		}
	}
	if code, body := get(t, h, "/api/events"); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("the feed with history off: %d %s", code, body)
	}

	r, err := history.OpenReader(filepath.Join(t.TempDir(), "not-yet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h = historyAPI(t, r)
	if code, body := get(t, h, "/api/history"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not-yet.db does not exist") {
		t.Errorf("GET /api/history of a file not there: %d %s", code, body)
	}
}

// TestHistoryFiltered: the routes are behind filter like every other: a
// rebound name gets nothing, and POST is not a method they take.
func TestHistoryFiltered(t *testing.T) {
	h := historyAPI(t, filledHistory(t))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://attacker.example:8053/api/history", nil))
	if w.Code != http.StatusMisdirectedRequest {
		t.Errorf("a rebound name: %d", w.Code)
	}
	r := httptest.NewRequest("POST", "http://127.0.0.1:8053/api/endpoints", strings.NewReader("{}"))
	r.Header.Set("Content-Type", "application/json")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/endpoints: %d", w.Code)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("HEAD", "http://127.0.0.1:8053/api/new", nil))
	if w.Code != 200 || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("HEAD /api/new: %d %v", w.Code, w.Header())
	}
}

// TestHistoryFleet: over a history shared by two instances, the routes
// show the whole fleet, /api/instances lists each with its count, and
// instance= cuts every route to one; stored events say which answered.
func TestHistoryFleet(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	t.Setenv(history.EnvDSN, "")
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var hr *history.Reader
	for i, instance := range []string{"dns1", "dns2"} {
		st, err := history.Open(history.Config{DSN: srv.DSN(), Instance: instance, Flush: time.Hour}, history.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range 1 + i { // dns1 one query, dns2 two
			c := netip.MustParseAddr("192.168.1.23")
			st.Answered(resolver.Answer{Start: now.Add(-time.Hour), Client: c, Question: dns.Question{Name: "v10.events.data.microsoft.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET},
				Decision: p.Decide(c, "v10.events.data.microsoft.com."), Source: resolver.SourceUpstream})
		}
		if err := st.Flush(); err != nil {
			t.Fatal(err)
		}
		if hr == nil {
			if hr, err = st.Reader(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { hr.Close() })
		}
		st.Close()
	}
	h := historyAPI(t, hr)
	var is history.Instances
	getJSON(t, h, "/api/instances?from=-1d", &is)
	if !is.Shared || len(is.Instances) != 2 || is.Instances[0] != (history.InstanceTotal{Instance: "dns1", Total: 1}) ||
		is.Instances[1] != (history.InstanceTotal{Instance: "dns2", Total: 2}) {
		t.Errorf("/api/instances: %+v", is)
	}
	var s history.Series
	for q, want := range map[string]int64{"": 3, "&instance=dns2": 2, "&instance=dns1&client=192.168.1.23": 1, "&instance=other": 0} {
		getJSON(t, h, "/api/history?from=-4h&step=1h"+q, &s)
		if s.Total != want {
			t.Errorf("/api/history%s: %d, want %d", q, s.Total, want)
		}
	}
	var es history.Endpoints
	getJSON(t, h, "/api/endpoints?from=-7d&instance=dns2", &es)
	if len(es.Endpoints) != 1 || es.Endpoints[0].Count != 2 {
		t.Errorf("dns2's endpoints: %+v", es)
	}
	var page history.EventPage
	getJSON(t, h, "/api/events?before=now&instance=dns1", &page)
	if len(page.Events) != 1 || page.Events[0].Instance != "dns1" {
		t.Errorf("dns1's events: %+v", page)
	}
	if code, body := get(t, h, "/api/history?instance=%00"); code != 400 || !strings.Contains(body, "instance") {
		t.Errorf("a bad instance name: %d %s", code, body)
	}
}

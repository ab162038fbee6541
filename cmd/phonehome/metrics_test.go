package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// post sends a POST from the address from ("" for any).
func post(t *testing.T, from, url, body string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	if from != "" {
		c.Transport = &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	}
	r, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// getWhen GETs url until ok says its body is complete, for 5 s at most,
// and returns the last body: observers see a query just after its answer
// was sent, so a count may lag the answer by a moment.
func getWhen(t *testing.T, url string, ok func(string) bool) string {
	t.Helper()
	var body string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, b := get(t, url)
		if code != 200 {
			t.Fatalf("%s: %d %s", url, code, b)
		}
		if body = b; ok(body) || time.Now().After(deadline) {
			return body
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// TestMetrics runs the daemon with its HTTP server and, over real DNS and
// HTTP, checks each thing that watches the queries, one subtest each, in
// order: the metrics after a sinkholed, a logged, a protected and an
// allowed query; the query log; the JSON API; pause; who may change
// things; the health checks.
func TestMetrics(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	qlog := filepath.Join(dir, "queries.jsonl")
	os.WriteFile(cfg, []byte("access: {rate_limit: 0, allow: [127.0.0.1/32]}\nquerylog: {output: "+qlog+", anonymize_clients: true}\npolicy:\n  default: {actions: {telemetry: sinkhole, certificates: sinkhole}}\n"), 0o644)
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	b := ph.bound
	lookupA(t, b.dns[0], "v10.events.data.microsoft.com.") // sinkholed
	lookupA(t, b.dns[0], "arc.msn.com.")                   // logged
	lookupA(t, b.dns[0], "arc.msn.com.")                   // logged, from the cache
	lookupA(t, b.dns[0], "ctldl.windowsupdate.com.")       // protected: logged, not sinkholed
	lookupA(t, b.dns[0], "www.example.com.")               // allowed

	t.Run("metrics", func(t *testing.T) {
		wants := []string{
			`phonehome_queries_total{action="sinkhole",category="telemetry",edition="all",group="default"} 1`,
			`phonehome_queries_total{action="log",category="spotlight",edition="all",group="default"} 2`,
			`phonehome_queries_total{action="allow",category="unlisted",edition="all",group="default"} 1`,
			`phonehome_endpoint_queries_total{action="sinkhole",category="telemetry",endpoint="v10.events.data.microsoft.com"} 1`,
			`phonehome_protected_overrides_total{endpoint="ctldl.windowsupdate.com"} 1`,
			`phonehome_responses_total{rcode="NOERROR",source="sinkhole",transport="udp"} 1`,
			`phonehome_responses_total{rcode="NOERROR",source="cache",transport="udp"} 1`,
			`phonehome_cache_requests_total{result="hit"} 1`,
			`phonehome_upstream_healthy{upstream="` + up.Addr() + `"} 1`,
			`phonehome_config_reloads_total{result="success"} 1`,
			`phonehome_catalog_endpoints{category="telemetry",edition="home"}`,
			`phonehome_refused_total{reason="malformed"} 0`,
			`phonehome_build_info{goversion="go`,
			`phonehome_querylog_dropped_total 0`,
			`phonehome_request_duration_seconds_bucket{source="upstream",le=`,
			"go_goroutines ", "process_resident_memory_bytes ",
		}
		body := getWhen(t, "http://"+b.http+"/metrics", func(body string) bool {
			return !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(body, w) })
		})
		for _, want := range wants {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if strings.Contains(body, "www.example.com") || strings.Contains(body, "127.0.0.1\"") {
			t.Error("a query name or client address is a label")
		}
		problems, err := promlint.New(strings.NewReader(body)).Lint()
		if err != nil || len(problems) > 0 {
			t.Errorf("promlint: %v %v", err, problems)
		}
	})
	t.Run("querylog", func(t *testing.T) {
		// The query log has the catalog matches, with the client anonymised,
		// and not the allowed www.example.com; SIGUSR1 starts a new file.
		deadline := time.Now().Add(5 * time.Second)
		var qlines []string
		for len(qlines) < 4 && time.Now().Before(deadline) {
			data, _ := os.ReadFile(qlog)
			qlines = strings.Split(strings.TrimSpace(string(data)), "\n")
			time.Sleep(20 * time.Millisecond)
		}
		if len(qlines) != 4 || !strings.Contains(qlines[0], `"client":"127.0.0.0","group":"default","name":"v10.events.data.microsoft.com.","type":"A","action":"sinkhole","category":"telemetry","pattern":"v10.events.data.microsoft.com","windows":"10-1809..11","edition":"all","rcode":"NOERROR","source":"sinkhole","transport":"udp"`) ||
			strings.Contains(strings.Join(qlines, "\n"), "www.example.com") {
			t.Errorf("query log:\n%s", strings.Join(qlines, "\n"))
		}
		os.Rename(qlog, qlog+".1")
		syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)
		for _, err := os.Stat(qlog); err != nil && time.Now().Before(deadline.Add(5*time.Second)); _, err = os.Stat(qlog) {
			time.Sleep(10 * time.Millisecond)
		}
		lookupA(t, b.dns[0], "watson.telemetry.microsoft.com.")
		for time.Now().Before(deadline.Add(5 * time.Second)) {
			if data, _ := os.ReadFile(qlog); strings.Contains(string(data), "watson") {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if data, _ := os.ReadFile(qlog); !strings.Contains(string(data), "watson.telemetry") {
			t.Errorf("after SIGUSR1 the query log goes to a new file: %q", data)
		}

	})
	t.Run("api", func(t *testing.T) {
		// The JSON API behind the web page.
		sum := getWhen(t, "http://"+b.http+"/api/summary", func(s string) bool {
			return strings.Contains(s, `{"category":"telemetry","action":"sinkhole","count":2}`)
		})
		if !strings.Contains(sum, `{"category":"telemetry","action":"sinkhole","count":2}`) || !strings.Contains(sum, `"pattern":"v10.events.data.microsoft.com"`) || !strings.Contains(sum, `"paused":null`) {
			t.Errorf("/api/summary: %s", sum)
		}
		_, clients := get(t, "http://"+b.http+"/api/clients")
		if !strings.Contains(clients, `"client":"127.0.0.0","group":"default","edition":"all"`) {
			t.Errorf("/api/clients: %s", clients)
		}
		_, evs := get(t, "http://"+b.http+"/api/events?since=4")
		if strings.Count(evs, `"id":`) != 1 || !strings.Contains(evs, `"id":5,`) {
			t.Errorf("/api/events?since=4: %s", evs)
		}
		// A name under Microsoft's domain that no document lists, however spelled.
		lookupA(t, b.dns[0], "foo.windows.com.")
		lookupA(t, b.dns[0], "Foo.Windows.COM.")
		undoc := getWhen(t, "http://"+b.http+"/api/undocumented", func(s string) bool { return strings.Contains(s, `"count":2`) })
		if !strings.HasPrefix(undoc, `{"hosts":[{"name":"foo.windows.com","domain":"windows.com","count":2,"first_seen":"`) ||
			!strings.HasSuffix(undoc, `"clients":["127.0.0.0"],"more_clients":0}],"others":0}`+"\n") {
			t.Errorf("/api/undocumented: %s", undoc)
		}

	})
	t.Run("pause", func(t *testing.T) {
		// Pause: telemetry is logged (forwarded) until resumed.
		if code := run([]string{"pause", "15m", "-category", "telemetry", "-http", b.http}, io.Discard, io.Discard); code != 0 {
			t.Fatalf("phonehome pause: exit %d", code)
		}
		if got := lookupA(t, b.dns[0], "v10.events.data.microsoft.com."); got != dnstest.AnswerA {
			t.Errorf("paused telemetry: %s", got)
		}
		if code, _ := post(t, "", "http://"+b.http+"/api/resume", ""); code != 200 {
			t.Errorf("resume: %d", code)
		}
		if got := lookupA(t, b.dns[0], "v10.events.data.microsoft.com."); got != "0.0.0.0" {
			t.Errorf("resumed telemetry: %s", got)
		}
	})
	t.Run("guard", func(t *testing.T) {
		// Only POST, only from access.allow.
		if code, _ := get(t, "http://"+b.http+"/api/pause"); code != http.StatusMethodNotAllowed {
			t.Errorf("GET /api/pause: %d", code)
		}
		if code, _ := post(t, "127.0.0.2", "http://"+b.http+"/api/pause", `{"duration":"1m"}`); code != http.StatusForbidden {
			t.Errorf("pause from outside access.allow: %d", code)
		}
		if code, _ := post(t, "", "http://"+b.http+"/api/reload", ""); code != 200 {
			t.Errorf("reload through the API: %d", code)
		}
		if code, page := get(t, "http://"+b.http+"/"); code != 200 || !strings.Contains(page, "<title>phonehome</title>") {
			t.Errorf("web page: %d", code)
		}

	})
	t.Run("health", func(t *testing.T) {
		if code, _ := get(t, "http://"+b.http+"/healthz"); code != 200 {
			t.Errorf("/healthz: %d", code)
		}
		if code, _ := get(t, "http://"+b.http+"/readyz"); code != 200 {
			t.Errorf("/readyz with a healthy upstream: %d", code)
		}
		up.SetMode(dnstest.Drop)
		// Three timeouts in a row back the only upstream off: three
		// queries at once, each SERVFAIL after the try timeout.
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				exchangeA("", b.dns[0], fmt.Sprintf("down%d.example.", i))
			}()
		}
		wg.Wait()
		if code, _ := get(t, "http://"+b.http+"/readyz"); code != 503 {
			t.Errorf("/readyz with no upstream: %d", code)
		}
	})
}

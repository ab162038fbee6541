package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// seedName is a name a seeded machine asks for, about perHour times an
// hour in the day (a quarter of that at night), from start ago until now.
type seedName struct {
	name, category string
	perHour        int
	start          time.Duration
}

// seedMachines is the household the history page's test seeds: ten days
// of a busy desktop, a laptop that began asking Edge's services and more
// telemetry three days ago, a children's PC with a new Cortana habit, and a
// quiet IPv6 machine. The names new within the week are the "new this
// week" the page must list.
var seedMachines = []struct {
	client string
	names  []seedName
}{
	{"192.168.1.23", []seedName{
		{"v10.events.data.microsoft.com.", "telemetry", 24, 10 * day},
		{"fe2cr.update.microsoft.com.", "update", 5, 10 * day},
		{"displaycatalog.mp.microsoft.com.", "store", 2, 10 * day},
	}},
	{"192.168.1.40", []seedName{
		{"arc.msn.com.", "spotlight", 6, 10 * day},
		{"watson.telemetry.microsoft.com.", "telemetry", 4, 10 * day},
		{"watson.telemetry.microsoft.com.", "telemetry", 8, 3 * day}, // more, since an update
		{"edge.microsoft.com.", "edge", 9, 3 * day},                  // new this week
	}},
	{"192.168.1.57", []seedName{
		{"displaycatalog.mp.microsoft.com.", "store", 5, 10 * day},
		{"api.msn.com.", "spotlight", 4, 10 * day},
		{"www.bing.com.", "cortana", 3, 2 * day}, // new this week
	}},
	{"fd00::23", []seedName{
		{"v10.events.data.microsoft.com.", "telemetry", 1, 10 * day},
		{"fe2cr.update.microsoft.com.", "update", 1, 5 * day}, // new this week
	}},
}

const day = 24 * time.Hour

// seedHistory writes the household's last ten days into a history file at
// path, through the store as serve does (Answered with the queries' own
// times), then rolls it up as serve's maintenance would and closes it.
func seedHistory(t *testing.T, path string, now time.Time) {
	t.Helper()
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := history.Open(history.Config{Path: path}, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(13, 5))
	start := now.Add(-10 * day).Truncate(time.Hour)
	for h := start; h.Before(now); h = h.Add(time.Hour) {
		for _, m := range seedMachines {
			client := netip.MustParseAddr(m.client)
			for _, n := range m.names {
				if h.Before(now.Add(-n.start)) {
					continue
				}
				rate := float64(n.perHour)
				if hour := h.UTC().Hour(); hour < 7 {
					rate /= 4
				}
				d := p.Decide(client, n.name)
				if d.Match.Rule == nil || d.Action == policy.Allow || string(d.Match.Rule.Category) != n.category {
					t.Fatalf("%s: decided %s %+v, want a match of %s", n.name, d.Action, d.Match, n.category)
				}
				src := resolver.SourceUpstream
				if d.Action == policy.Sinkhole {
					src = resolver.SourceSinkhole
				}
				for k := int(math.Round(rate * (0.6 + 0.8*rng.Float64()))); k > 0; k-- {
					at := h.Add(time.Duration(rng.Int64N(int64(time.Hour))))
					if at.After(now) {
						continue
					}
					s.Answered(resolver.Answer{Start: at, Client: client, Decision: d, Source: src,
						Question: dns.Question{Name: n.name, Qtype: dns.TypeA, Qclass: dns.ClassINET}, Duration: 300 * time.Microsecond})
				}
			}
		}
		if h.Hour() == 0 {
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// readPlots is what the page drew, read back from the SVG: each bar keeps
// its bucket and count (data-i, data-n), each plot the API call it was
// drawn from. It checks the geometry too: one scale per plot (height per
// count), and bars stacked from the baseline without gaps or overlaps.
const readPlots = `(() => {
  const read = svg => {
    const n = +svg.dataset.buckets, base = +svg.dataset.baseline;
    const categories = [...svg.querySelectorAll("g.cat")].map(g => {
      const counts = new Array(n).fill(0);
      for (const r of g.querySelectorAll("rect")) counts[+r.dataset.i] += +r.dataset.n;
      return {category: g.dataset.category, total: +g.dataset.total, counts};
    });
    const rects = [...svg.querySelectorAll("g.cat rect")], per = rects.map(r => +r.getAttribute("height") / +r.dataset.n);
    const byBucket = {};
    for (const r of rects) (byBucket[r.dataset.i] ||= []).push(r);
    let stackErr = 0;
    for (const rs of Object.values(byBucket)) {
      rs.sort((a, b) => +b.getAttribute("y") - +a.getAttribute("y"));
      let y = base;
      for (const r of rs) { const top = +r.getAttribute("y"); stackErr = Math.max(stackErr, Math.abs(top + +r.getAttribute("height") - y)); y = top; }
    }
    return {query: svg.dataset.query || "", range: svg.dataset.range || "", buckets: n, step: svg.dataset.step, total: +svg.dataset.total,
      categories, scaleMin: rects.length ? Math.min(...per) : 0, scaleMax: rects.length ? Math.max(...per) : 0, stackErr};
  };
  const table = document.querySelector("#h-new");
  return {chart: read(document.querySelector("#h-chart svg")),
    legend: [...document.querySelectorAll("#h-legend li")].map(li => li.dataset.category),
    summary: document.querySelector("#h-summary").innerText,
    machines: [...document.querySelectorAll("#h-machines .mrow")].map(r => ({client: r.dataset.client, total: +r.dataset.total, query: r.dataset.query, plot: read(r.querySelector("svg"))})),
    newQuery: table.dataset.query, newTotal: +table.dataset.total,
    fresh: [...table.querySelectorAll("tr[data-client]")].map(r => r.dataset.client + " " + r.dataset.pattern)};
})()`

type drawnPlot struct {
	Query, Range, Step string
	Buckets            int
	Total              int64
	Categories         []history.CategorySeries
	ScaleMin, ScaleMax float64
	StackErr           float64
}

type drawnPage struct {
	Chart    drawnPlot
	Legend   []string
	Summary  string
	Machines []struct {
		Client, Query string
		Total         int64
		Plot          drawnPlot
	}
	NewQuery string
	NewTotal int
	Fresh    []string
}

// TestHistoryPage drives the page's history section in headless Chromium
// over a seeded household (seedMachines: ten days, written through the
// history store before serve starts, with the queries' own times). For
// each range (24 hours, 30 days, then 7 days) it reads back what the page
// drew, bar by bar, and checks it against /api/history for the same call:
// the buckets, every category's counts, stacked busiest first on one
// scale, and the legend. The machines' rows are every seeded machine,
// busiest first, each as /api/history?client= has it, on one shared
// scale; "new this week" is /api/new's list, the names seeded within the
// week and none older. It saves a screenshot of the section at 7 days to
// a temporary file; with PHONEHOME_HISTORY_SCREENSHOT=docs/history.png (a
// path relative to the repository's root) it writes the README's too:
//
//	PHONEHOME_HISTORY_SCREENSHOT=docs/history.png go test -run TestHistoryPage ./cmd/phonehome/
//
// With history: off the section says so and shows no plots.
func TestHistoryPage(t *testing.T) {
	browser := chromium(t)
	up := dnstest.Start(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "h.db")
	seedHistory(t, db, time.Now())
	cfg := filepath.Join(dir, "p.yaml")
	writeConfig := func(history string) {
		text := "access: {rate_limit: 0}\nquerylog: {output: \"off\"}\nhistory: " + history + "\n"
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(fmt.Sprintf("{path: %q, flush: 100ms}", db))
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	base := "http://" + ph.http

	ctx := browse(t, browser, dir, 1000, 90*time.Second)

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	apiJSON := func(path string, v any) {
		t.Helper()
		code, body := get(t, base+path)
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	// checkPlot compares a drawn plot with /api/history for its call.
	checkPlot := func(what string, got drawnPlot, query string) *history.Series {
		t.Helper()
		var want history.Series
		apiJSON(query, &want)
		if got.Buckets != len(want.Buckets) || got.Step != want.Step || got.Total != want.Total {
			t.Errorf("%s: drew %d buckets of %s, %d in all; %s has %d of %s, %d", what, got.Buckets, got.Step, got.Total, query, len(want.Buckets), want.Step, want.Total)
		}
		if !reflect.DeepEqual(got.Categories, want.Categories) {
			t.Errorf("%s: drew\n%+v\n%s says\n%+v", what, got.Categories, query, want.Categories)
		}
		if got.ScaleMax-got.ScaleMin > 1e-6*got.ScaleMax || got.StackErr > 0.01 {
			t.Errorf("%s: bars not on one scale (height per count %v to %v) or not stacked (off by %v)", what, got.ScaleMin, got.ScaleMax, got.StackErr)
		}
		return &want
	}

	var page drawnPage
	for _, r := range []struct {
		rng, step string
		buckets   int
	}{{"24h", "1h", 24}, {"30d", "1d", 30}, {"7d", "6h", 28}} {
		if r.rng != "24h" { // the page opens on 24 hours
			if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#h-range button[data-range="`+r.rng+`"]`))); err != nil {
				t.Fatalf("picking %s: %v", r.rng, err)
			}
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#h-chart svg")?.dataset.range === "`+r.rng+`"`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("the history plot for %s never showed: %v\nlogs:\n%s", r.rng, err, ph.logs.String())
		}
		var err error
		if page, err = chromedp.Run(ctx, chromedp.Evaluate[drawnPage](readPlots)); err != nil {
			t.Fatalf("reading the plots at %s: %v", r.rng, err)
		}
		q, err := url.ParseQuery(strings.TrimPrefix(page.Chart.Query, "/api/history?"))
		if err != nil {
			t.Fatal(err)
		}
		from, _ := time.Parse(time.RFC3339, q.Get("from"))
		to, _ := time.Parse(time.RFC3339, q.Get("to"))
		if span, _ := history.ParseDuration(r.rng); to.Sub(from) != time.Duration(span) || q.Get("step") != r.step || page.Chart.Buckets != r.buckets {
			t.Errorf("%s: drew %d buckets from %s", r.rng, page.Chart.Buckets, page.Chart.Query)
		}
		series := checkPlot(r.rng, page.Chart, page.Chart.Query)
		var cats []string
		for _, c := range series.Categories {
			cats = append(cats, c.Category)
		}
		if !slices.Equal(page.Legend, cats) {
			t.Errorf("%s: legend %q, want %q", r.rng, page.Legend, cats)
		}

		// Every seeded machine asked for something in every range: a row
		// each, busiest first, all on the scale of the busiest.
		var clients []string
		for i, m := range page.Machines {
			clients = append(clients, m.Client)
			want := checkPlot(r.rng+" "+m.Client, m.Plot, m.Query)
			if mq, _ := url.ParseQuery(strings.TrimPrefix(m.Query, "/api/history?")); mq.Get("client") != m.Client || mq.Get("from") != q.Get("from") || mq.Get("to") != q.Get("to") || mq.Get("step") != r.step {
				t.Errorf("%s: the row of %s was drawn from %s", r.rng, m.Client, m.Query)
			}
			if m.Total != want.Total || i > 0 && m.Total > page.Machines[i-1].Total {
				t.Errorf("%s: row %d, %s: %d, not busiest first", r.rng, i, m.Client, m.Total)
			}
			if s := page.Machines[0].Plot.ScaleMin; math.Abs(m.Plot.ScaleMin-s) > 1e-6*s {
				t.Errorf("%s: %s is on a scale of its own: %v per count, the first row %v", r.rng, m.Client, m.Plot.ScaleMin, s)
			}
		}
		slices.Sort(clients)
		if want := []string{"192.168.1.23", "192.168.1.40", "192.168.1.57", "fd00::23"}; !slices.Equal(clients, want) {
			t.Errorf("%s: machines %q, want %q", r.rng, clients, want)
		}
		if len(page.Machines) == 0 || page.Machines[0].Client != "192.168.1.23" || !strings.Contains(page.Summary, "Busiest machine: 192.168.1.23") {
			t.Errorf("%s: the busiest machine is not the desktop: %q", r.rng, page.Summary)
		}

		// New this week: /api/new's list, which is what was seeded within
		// the week.
		var fresh history.NewEndpoints
		apiJSON(page.NewQuery, &fresh)
		var want []string
		for _, e := range fresh.Endpoints {
			want = append(want, e.Client+" "+e.Pattern)
		}
		if !slices.Equal(page.Fresh, want) || page.NewTotal != fresh.Total {
			t.Errorf("%s: new this week %q (%d), %s says %q (%d)", r.rng, page.Fresh, page.NewTotal, page.NewQuery, want, fresh.Total)
		}
		if seeded := []string{"192.168.1.40 edge.microsoft.com", "192.168.1.57 www.bing.com", "fd00::23 fe2cr.update.microsoft.com"}; !slices.Equal(page.Fresh, seeded) {
			t.Errorf("%s: new this week %q, want what was seeded within the week: %q", r.rng, page.Fresh, seeded)
		}
	}

	// The section at 7 days, for the README.
	shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`#history-wrap`)))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	png := filepath.Join(t.TempDir(), "history.png")
	if err := os.WriteFile(png, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", png)
	if p := os.Getenv("PHONEHOME_HISTORY_SCREENSHOT"); p != "" {
		if !filepath.IsAbs(p) {
			p = filepath.Join("..", "..", p)
		}
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Error(err)
		}
	}

	// With history: off, the section says so and draws nothing.
	off := filepath.Join(dir, "off.yaml")
	if err := os.WriteFile(off, []byte("access: {rate_limit: 0}\nquerylog: {output: \"off\"}\nhistory: off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ph2 := startServe(t, "-config", off, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+ph2.http+"/")); err != nil {
		t.Fatalf("loading the page without history: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`!document.querySelector("#h-off").hidden`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the page never said the history is off: %v", err)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[document.querySelector("#h-off").innerText, String(document.querySelector("#h-plots").hidden),
		String(document.querySelector("#h-range").hidden), String(document.querySelectorAll("#history-wrap svg").length)]`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(state[0], "The history is off (history: off in the config file)") || state[1] != "true" || state[2] != "true" || state[3] != "0" {
		t.Errorf("with history: off, the section: %q", state)
	}
}

package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// chromium finds Debian's Chromium: CI installs it (scripts/test.sh), so
// there its absence fails the test; elsewhere the test is skipped.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found; CI must install it (scripts/test.sh)")
	}
	t.Skip("chromium not installed")
	return ""
}

// browse starts the headless Chromium at browser, with its profile in
// dir and none of its own traffic (no updates, sync or QUIC), a window
// 1100 pixels wide and height high, and more options; it returns a tab's
// context, bounded by timeout, which the test's cleanup closes.
func browse(t *testing.T, browser, dir string, height int, timeout time.Duration, more ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(filepath.Join(dir, "chrome")),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1100, height))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, more...)...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancel()
		cancelTab()
		cancelAlloc()
	})
	return ctx
}

// TestWebPage drives the live page in a real headless Chromium: queries from
// two client addresses appear in the feed and the per-machine view, a name
// no Microsoft document lists appears with both machines in its own card,
// the category filter narrows the feed, the page runs under its
// Content-Security-Policy, and its pause and resume buttons get through the
// HTTP side's rules (JSON, same origin): /api/summary shows the pause, then
// none, and nothing the page sent was refused. Pages of other origins
// cannot pause, and a rebound name gets nothing.
func TestWebPage(t *testing.T) {
	browser := chromium(t)
	up := dnstest.Start(t)
	up.SetPTR("127.0.0.2", "kids-laptop.lan") // the machine's name, as a router knows it
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	os.WriteFile(cfg, []byte(`access: {rate_limit: 0}
querylog: {output: "off"}
policy:
  groups:
    - {name: kids-pc, clients: [127.0.0.2], edition: home, actions: {spotlight: sinkhole, telemetry: sinkhole}}
`), 0o644)
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	b, logs := ph.bound, ph.logs
	lookupA(t, b.dns[0], "v10.events.data.microsoft.com.")
	lookupA(t, b.dns[0], "arc.msn.com.")
	lookupFrom(t, "127.0.0.2", b.dns[0], "arc.msn.com.")
	lookupFrom(t, "127.0.0.2", b.dns[0], "watson.telemetry.microsoft.com.")
	lookupA(t, b.dns[0], "foo.windows.com.") // undocumented
	// An alias: its answer leads through a CNAME chain to a telemetry host.
	up.SetChain("alias.example.", "edge.example.net.", "w1.telemetry.microsoft.com.")
	lookupA(t, b.dns[0], "alias.example.")
	lookupFrom(t, "127.0.0.2", b.dns[0], "foo.windows.com.")

	ctx := browse(t, browser, dir, 900, 60*time.Second, chromedp.Flag("host-resolver-rules", "MAP rebound.example 127.0.0.1"))

	text := func(sel string) string {
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v\nlogs:\n%s", sel, err, logs.String())
		}
		return v
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate("http://"+b.http+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#feed`)),
	); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#feed").innerText.includes("watson.telemetry")`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the feed never showed the queries: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#endpoints").innerText.includes("watson.telemetry")`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("top endpoints never showed the queries: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#undocumented").innerText.includes("foo.windows.com")`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the undocumented hosts never showed foo.windows.com: %v\n%s", err, text(`#undocumented`))
	}
	// 127.0.0.2's name, looked up once its queries were seen, shows beside its address.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`["#clients", "#undocumented", "#feed"].every(s => document.querySelector(s).innerText.includes("kids-laptop.lan (127.0.0.2)"))`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the machine's name never showed: %v\n%s\n%s", err, text(`#clients`), text(`#undocumented`))
	}
	// The cells of foo.windows.com's row: host (with when it was last seen), domain, queries, machines.
	undoc, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...[...document.querySelectorAll("#undocumented tr")].find(r => r.cells[0].innerText.startsWith("foo.windows.com")).cells].map(c => c.innerText)`))
	if err != nil {
		t.Fatalf("reading the undocumented hosts: %v", err)
	}
	feed, clients, endpoints := text(`#feed`), text(`#clients`), text(`#endpoints`)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#f-category`), "spotlight"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#f-category").dispatchEvent(new Event("input"))`),
	); err != nil {
		t.Fatalf("filtering: %v", err)
	}
	filtered := text(`#feed`)
	// The inline style applied too: the header's dark background.
	headerBG, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("header")).backgroundColor`))
	if err != nil {
		t.Fatalf("reading the header's style: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#pause`))); err != nil {
		t.Fatalf("pressing pause: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#state").innerText.startsWith("paused until")`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the state did not change after pause: %v", err)
	}
	state := text(`#state`)
	_, pausedSummary := get(t, "http://"+b.http+"/api/summary")
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#resume`))); err != nil {
		t.Fatalf("pressing resume: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#state").innerText === "sinkholing active" && document.querySelector("#resume").hidden`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the state did not change after resume: %v\n%s", err, text(`#state`))
	}
	_, resumedSummary := get(t, "http://"+b.http+"/api/summary")
	_, metrics := get(t, "http://"+b.http+"/metrics")

	// What the page at another origin can do: another port of the same
	// address (same-site) and localhost (cross-site) send issue 11's
	// simple request, which the browser sends without asking; a name that
	// resolves to phonehome's address (DNS rebinding, here by Chromium's
	// own resolver rules, no DNS) loads nothing. (The fetch fails in the
	// page: Cross-Origin-Resource-Policy keeps even the refusal from it.)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<!doctype html><title>elsewhere</title>"))
	}))
	defer elsewhere.Close()
	_, elsewherePort, _ := net.SplitHostPort(elsewhere.Listener.Addr().String())
	for _, origin := range []string{elsewhere.URL, "http://localhost:" + elsewherePort} {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(origin+"/"),
			chromedp.Evaluate[chromedp.Void](`fetch("http://`+b.http+`/api/pause", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: '{"duration":"15m"}'}).catch(() => undefined)`, chromedp.EvalAwaitPromise),
		); err != nil {
			t.Fatalf("the simple request from %s: %v", origin, err)
		}
	}
	_, phPort, _ := net.SplitHostPort(b.http)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://rebound.example:"+phPort+"/")); err != nil {
		t.Fatalf("loading the page by a rebound name: %v", err)
	}
	rebound := text(`body`)
	_, afterElsewhere := get(t, "http://"+b.http+"/api/summary")
	_, metricsAfter := get(t, "http://"+b.http+"/metrics")
	for _, want := range []string{"v10.events.data.microsoft.com.", "127.0.0.1", "127.0.0.2", "sinkhole", "log",
		"alias.example.\n→ via CNAME w1.telemetry.microsoft.com. (*.telemetry.microsoft.com)"} {
		if !strings.Contains(feed, want) {
			t.Errorf("feed lacks %q:\n%s", want, feed)
		}
	}
	// arc.msn.com was logged for 127.0.0.1 and sinkholed for kids-pc: both show.
	_, arc, _ := strings.Cut(endpoints, "arc.msn.com")
	if arc, _, _ = strings.Cut(arc, "\n"); !strings.Contains(arc, "log 1") || !strings.Contains(arc, "sinkhole 1") {
		t.Errorf("top endpoints, arc.msn.com: %q\n%s", arc, endpoints)
	}
	if !strings.Contains(clients, "127.0.0.2") || !strings.Contains(clients, "kids-pc") || !strings.Contains(clients, "spotlight") {
		t.Errorf("machines:\n%s", clients)
	}
	if len(undoc) != 4 || !strings.HasPrefix(undoc[0], "foo.windows.com\nlast seen ") || undoc[1] != "windows.com" || undoc[2] != "2" || undoc[3] != "127.0.0.1, kids-laptop.lan (127.0.0.2)" {
		t.Errorf("undocumented hosts, foo.windows.com: %q", undoc)
	}
	if strings.Contains(filtered, "telemetry") || !strings.Contains(filtered, "arc.msn.com") {
		t.Errorf("feed filtered to spotlight:\n%s", filtered)
	}
	if !strings.HasPrefix(state, "paused until") {
		t.Errorf("state after pause: %q", state)
	}
	if !strings.Contains(pausedSummary, `"paused":{"until":"`) {
		t.Errorf("/api/summary after pressing pause: %s", pausedSummary)
	}
	if !strings.Contains(resumedSummary, `"paused":null`) {
		t.Errorf("/api/summary after pressing resume: %s", resumedSummary)
	}
	if headerBG != "rgb(29, 35, 43)" {
		t.Errorf("the page's style did not apply (CSP?): header background %q", headerBG)
	}
	for _, reason := range []string{"host", "method", "origin", "content_type", "size", "access", "token"} {
		if want := `phonehome_http_refused_total{reason="` + reason + `"} 0` + "\n"; !strings.Contains(metrics, want) {
			t.Errorf("the page's own requests were refused: /metrics lacks %s", want)
		}
	}
	if !strings.Contains(afterElsewhere, `"paused":null`) {
		t.Errorf("/api/summary after other origins posted a pause: %s", afterElsewhere)
	}
	if !strings.HasPrefix(rebound, "misdirected request") {
		t.Errorf("the page by a rebound name: %q", rebound)
	}
	// Two posts refused for their origin; the rebound name's page (and
	// favicon, each retried once on 421 by Chromium) for its Host.
	if want := `phonehome_http_refused_total{reason="origin"} 2` + "\n"; !strings.Contains(metricsAfter, want) {
		t.Errorf("/metrics after other origins' requests lacks %s", want)
	}
	if strings.Contains(metricsAfter, `phonehome_http_refused_total{reason="host"} 0`+"\n") {
		t.Error("/metrics counts no refusal for the rebound name")
	}
	png := filepath.Join(t.TempDir(), "page.png")
	if err := os.WriteFile(png, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := os.Getenv("PHONEHOME_SCREENSHOT"); p != "" {
		os.WriteFile(p, shot, 0o644)
	}
	t.Logf("screenshot: %s", png)
}

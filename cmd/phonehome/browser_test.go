package main

import (
	"context"
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

// TestWebPage drives the live page in a real headless Chromium: queries from
// two client addresses appear in the feed and the per-machine view, a name
// no Microsoft document lists appears with both machines in its own card,
// the category filter narrows the feed, and the pause button changes the
// state.
func TestWebPage(t *testing.T) {
	browser := chromium(t)
	up := dnstest.Start(t)
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
	lookupFrom(t, "127.0.0.2", b.dns[0], "foo.windows.com.")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(filepath.Join(dir, "chrome")),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1100, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

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
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#pause`))); err != nil {
		t.Fatalf("pressing pause: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#state").innerText.startsWith("paused until")`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the state did not change after pause: %v", err)
	}
	state := text(`#state`)
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	for _, want := range []string{"v10.events.data.microsoft.com.", "127.0.0.1", "127.0.0.2", "sinkhole", "log"} {
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
	if len(undoc) != 4 || !strings.HasPrefix(undoc[0], "foo.windows.com\nlast seen ") || undoc[1] != "windows.com" || undoc[2] != "2" || undoc[3] != "127.0.0.1, 127.0.0.2" {
		t.Errorf("undocumented hosts, foo.windows.com: %q", undoc)
	}
	if strings.Contains(filtered, "telemetry") || !strings.Contains(filtered, "arc.msn.com") {
		t.Errorf("feed filtered to spotlight:\n%s", filtered)
	}
	if !strings.HasPrefix(state, "paused until") {
		t.Errorf("state after pause: %q", state)
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

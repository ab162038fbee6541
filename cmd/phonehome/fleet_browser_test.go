package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/internal/pgtest"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// TestHistoryPageFleet: with a history that two instances share, the
// page offers a choice of resolver and lists each one's matches; picking
// one draws its part; and the header says who paused and why.
func TestHistoryPageFleet(t *testing.T) {
	browser := chromium(t)
	db := pgtest.Start(t, pgtest.Options{})
	t.Setenv(history.EnvDSN, "")
	up := dnstest.Start(t)
	dir := t.TempDir()
	const telemetry = "v10.events.data.microsoft.com."

	// dns2 is another instance: its store writes two matches.
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := history.Open(history.Config{DSN: db.DSN(), Instance: "dns2", Flush: time.Hour}, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := netip.MustParseAddr("192.168.1.40")
	for range 2 {
		other.Answered(resolver.Answer{Start: time.Now().Add(-time.Minute), Client: c, Question: dns.Question{Name: telemetry, Qtype: dns.TypeA, Qclass: dns.ClassINET},
			Decision: p.Decide(c, telemetry), Source: resolver.SourceSinkhole})
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}
	other.Close()

	cfg := filepath.Join(dir, "dns1.yaml")
	text := fmt.Sprintf("access: {rate_limit: 0}\nquerylog: {output: \"off\"}\nhistory: {dsn: %q, instance: dns1, flush: 100ms}\n", db.DSN())
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	base := "http://" + ph.http
	if got := lookupA(t, ph.dns[0], telemetry); got != "0.0.0.0" {
		t.Fatalf("telemetry: %s", got)
	}
	waitBody(t, base+"/api/instances", "both instances", func(b string) bool {
		return strings.Contains(b, `[{"instance":"dns1","total":1},{"instance":"dns2","total":2}]`)
	})
	waitBody(t, base+"/metrics", "connected", func(b string) bool { return strings.Contains(b, "\nphonehome_fleet_connected 1\n") })
	if code, body := post(t, "", base+"/api/pause", `{"duration":"15m","reason":"a Windows update"}`); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}

	ctx := browse(t, browser, dir, 1000, 90*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	poll := func(what, js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#state").innerText + " | " + document.querySelector("#history-wrap").innerText`))
			t.Fatalf("%s: %v\nthe page says: %s", what, err, state)
		}
	}
	poll("who paused and why", `document.querySelector("#state").innerText.endsWith("by dns1: a Windows update")`)
	poll("the resolvers", `!document.querySelector("#h-instance").hidden &&
		[...document.querySelectorAll("#h-instance option")].map(o => o.value).join() === ",dns1,dns2" &&
		[...document.querySelectorAll("#h-instances tr")].slice(1).map(r => r.innerText.replace(/\s+/g, " ")).join("|") === "dns1 1|dns2 2"`)
	poll("the fleet's chart", `document.querySelector("#h-chart svg").dataset.total === "3"`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`{const s = document.querySelector("#h-instance"); s.value = "dns2"; s.dispatchEvent(new Event("change"));}`)); err != nil {
		t.Fatal(err)
	}
	poll("dns2's chart", `document.querySelector("#h-chart svg").dataset.total === "2" && document.querySelector("#h-chart svg").dataset.query.includes("instance=dns2") &&
		document.querySelector("#h-summary").innerText.startsWith("2 matches answered by dns2") && document.querySelector("#h-instances tr.sel").dataset.instance === "dns2"`)
}

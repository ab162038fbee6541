package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// TestMachineNames runs serve with a stub upstream that knows one
// machine's PTR record and a config that names another: both names show
// beside the addresses in /api/clients, the query log, the history's API
// and phonehome history new; the PTR record is asked for once however
// often the machine asks and its name is wanted.
func TestMachineNames(t *testing.T) {
	up := dnstest.Start(t)
	up.SetTTL(3600)
	up.SetPTR("127.0.0.21", "study-pc.lan")
	dir := t.TempDir()
	cfg, qlog, hist := filepath.Join(dir, "phonehome.yaml"), filepath.Join(dir, "queries.jsonl"), filepath.Join(dir, "h.db")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`access: {rate_limit: 0}
querylog: {output: %q}
history: {path: %q, flush: 50ms}
policy:
  groups:
    - name: kids
      clients:
        - {client: 127.0.0.22, name: kids-pc}
`, qlog, hist)), 0o644)
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	lookupFrom(t, "127.0.0.21", ph.dns[0], "watson.telemetry.microsoft.com.")
	lookupFrom(t, "127.0.0.22", ph.dns[0], "watson.telemetry.microsoft.com.")
	clients := getWhen(t, "http://"+ph.http+"/api/clients", func(s string) bool {
		return strings.Contains(s, `"client":"127.0.0.21","client_name":"study-pc.lan"`) && strings.Contains(s, `"client":"127.0.0.22","client_name":"kids-pc"`)
	})
	if !strings.Contains(clients, `"client_name":"study-pc.lan"`) || !strings.Contains(clients, `"client_name":"kids-pc"`) {
		t.Fatalf("/api/clients lacks the names:\n%s", clients)
	}
	// Once the name is known, the query log writes it.
	for range 3 {
		lookupFrom(t, "127.0.0.21", ph.dns[0], "v10.events.data.microsoft.com.")
	}
	want := []string{`"client":"127.0.0.21","client_name":"study-pc.lan","group":"default","name":"v10.events.data.microsoft.com."`,
		`"client":"127.0.0.22","client_name":"kids-pc","group":"kids","name":"watson.telemetry.microsoft.com."`}
	var log string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(qlog)
		if log = string(b); strings.Contains(log, want[0]) && strings.Contains(log, want[1]) {
			break
		}
	}
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("the query log lacks %s:\n%s", w, log)
		}
	}
	// The history: a flush writes the names of the machines it counted.
	fresh := getWhen(t, "http://"+ph.http+"/api/new?since=-1h", func(s string) bool {
		return strings.Contains(s, `"client_name":"study-pc.lan"`) && strings.Contains(s, `"client_name":"kids-pc"`)
	})
	if !strings.Contains(fresh, `"client":"127.0.0.21","client_name":"study-pc.lan"`) || !strings.Contains(fresh, `"client":"127.0.0.22","client_name":"kids-pc"`) {
		t.Errorf("/api/new lacks the names:\n%s", fresh)
	}
	out, errs, code := phonehome(t, "history", "new", "-db", hist, "-since", "1h")
	if code != 0 || !strings.Contains(out, "study-pc.lan (127.0.0.21)") || !strings.Contains(out, "kids-pc (127.0.0.22)") {
		t.Errorf("history new: %d\n%s%s", code, out, errs)
	}
	out, _, _ = phonehome(t, "history", "top", "-db", hist, "-client", "127.0.0.22", "-since", "1h")
	if !strings.HasPrefix(out, "# kids-pc (127.0.0.22), ") {
		t.Errorf("history top of a named machine:\n%s", out)
	}
	if rev, _ := dns.ReverseAddr("127.0.0.21"); up.Seen(rev) != 1 {
		t.Errorf("the PTR record of 127.0.0.21 was asked for %d times, want once", up.Seen(rev))
	}
	if rev, _ := dns.ReverseAddr("127.0.0.22"); up.Seen(rev) != 0 {
		t.Errorf("the machine the config names was looked up")
	}
}

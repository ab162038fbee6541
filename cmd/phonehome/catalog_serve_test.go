package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// dig runs Debian's dig against addr, one try of two seconds. CI installs
// it (scripts/test.sh); elsewhere a missing dig skips the test.
func dig(t *testing.T, addr, name string) string {
	t.Helper()
	path, err := exec.LookPath("dig")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("dig not found; CI must install it (scripts/test.sh: bind9-dnsutils)")
		}
		t.Skip("dig not found: apt-get install bind9-dnsutils")
	}
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(path, "@"+host, "-p", port, "+time=2", "+tries=1", name, "A").CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", name, err, out)
	}
	return string(out)
}

// TestServeWindowsCatalog runs phonehome serve on its default policy and
// asks it, with dig, for names only the newer documents, the families and
// the first-party table know.
func TestServeWindowsCatalog(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	qlog := filepath.Join(dir, "queries.jsonl")
	cfg := filepath.Join(dir, "phonehome.yaml")
	if err := os.WriteFile(cfg, []byte("http: \"\"\nquerylog: {output: "+qlog+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr())
	addr := ph.dns[0]

	// self.events.data.microsoft.com: telemetry, documented for Windows 10
	// 1903 and later, sinkholed with the reason in the answer.
	out := dig(t, addr, "self.events.data.microsoft.com")
	if !strings.Contains(out, "0.0.0.0") || !strings.Contains(out, "EDE: 15 (Blocked): (phonehome: telemetry self.events.data.microsoft.com (Windows ") {
		t.Errorf("self.events.data.microsoft.com:\n%s", out)
	}
	// definitionupdates.microsoft.com: Defender, protected, answered.
	for _, name := range []string{"definitionupdates.microsoft.com", "foo.windows.com", "www.example.com"} {
		if out := dig(t, addr, name); !strings.Contains(out, dnstest.AnswerA) || strings.Contains(out, "EDE") {
			t.Errorf("%s: not forwarded:\n%s", name, out)
		}
	}

	// The query log: three records, www.example.com not among them.
	want := map[string]string{
		"self.events.data.microsoft.com.":  "sinkhole telemetry",
		"definitionupdates.microsoft.com.": "log defender",
		"foo.windows.com.":                 "log undocumented",
	}
	got := map[string]string{}
	for deadline := time.Now().Add(5 * time.Second); len(got) < len(want) && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(qlog)
		clear(got)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var r struct{ Name, Action, Category, Pattern string }
			if json.Unmarshal([]byte(line), &r) == nil && r.Name != "" {
				got[r.Name] = r.Action + " " + r.Category
			}
		}
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("query log: %s is %q, want %q", name, got[name], w)
		}
	}
	if _, ok := got["www.example.com."]; ok || len(got) != len(want) {
		t.Errorf("query log has more than the catalog matches: %v", got)
	}
}

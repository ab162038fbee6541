package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// The watch_config tests wait for the running config to change, seen in
// DNS answers and the log, with deadlines far past what a reload takes
// (the debounce is the default 500 ms), so that a loaded machine does not
// fail them.
const watchWait = 30 * time.Second

// answers waits until name's answer is want.
func answers(t *testing.T, addr, name, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(watchWait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = lookupA(t, addr, name); got == want {
			return
		}
	}
	t.Fatalf("%s: %s, want %s", name, got, want)
}

// logs waits until the log has s.
func logs(t *testing.T, ph *running, s string) {
	t.Helper()
	for deadline := time.Now().Add(watchWait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(ph.logs.String(), s) {
			return
		}
	}
	t.Fatalf("the log lacks %q:\n%s", s, ph.logs.String())
}

// writeFile writes path in place (truncate, then write), as echo > does.
func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noWatcherLeft checks, once serve has returned, that no goroutine of the
// watcher is left. Registered before startServe, it runs after serve's
// cleanup has stopped it.
func noWatcherLeft(t *testing.T) {
	t.Cleanup(func() {
		var left string
		for deadline := time.Now().Add(watchWait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			buf := make([]byte, 1<<20)
			left = ""
			for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
				if strings.Contains(g, "internal/watch.") || strings.Contains(g, "fsnotify") {
					left += g + "\n\n"
				}
			}
			if left == "" {
				return
			}
		}
		t.Errorf("goroutines of the watcher are left after shutdown:\n%s", left)
	})
}

// TestWatchConfig: with watch_config, an in-place write of a list, a
// config file renamed over the old one (as editors save) and a fixed
// file each reload by themselves; a broken file keeps the running config.
func TestWatchConfig(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	cfg, list := filepath.Join(dir, "phonehome.yaml"), filepath.Join(dir, "lists", "ads.txt")
	config := func(sinkholed string) string {
		return fmt.Sprintf(`watch_config: true
upstreams: [%q]
http: ""
history: off
querylog: {output: "off"}
access: {rate_limit: 0}
policy:
  default:
    actions: {ads: sinkhole}
    lists: [{category: ads, file: lists/ads.txt}]
    overrides: {sinkhole: [%s]}
`, up.Addr(), sinkholed)
	}
	writeFile(t, cfg, config("x.example"))
	writeFile(t, list, "a.example\n")
	noWatcherLeft(t)
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0")
	addr := ph.dns[0]
	answers(t, addr, "a.example.", "0.0.0.0")
	answers(t, addr, "b.example.", dnstest.AnswerA)
	logs(t, ph, "watch_config: watching")

	// A list written in place, in a directory of its own.
	writeFile(t, list, "a.example\nb.example\n")
	answers(t, addr, "b.example.", "0.0.0.0")
	logs(t, ph, "msg=\"watch_config: files changed; reloading\" files="+list)
	logs(t, ph, "msg=\"watch_config: reloaded\" files="+list)

	// The config file saved as editors do: a new file renamed over it.
	tmp := filepath.Join(dir, ".phonehome.yaml.swp")
	writeFile(t, tmp, config("c.example"))
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	answers(t, addr, "c.example.", "0.0.0.0")

	// A broken file: the reload fails, is logged as SIGHUP's is, and the
	// running config stays.
	writeFile(t, cfg, "policy: [\n")
	logs(t, ph, "watch_config: reload failed; the running config stays")
	logs(t, ph, `msg="reload failed; the running config stays" err=`)
	answers(t, addr, "c.example.", "0.0.0.0")
	answers(t, addr, "b.example.", "0.0.0.0")
	// Fixed, it is reloaded.
	writeFile(t, cfg, config("d.example"))
	answers(t, addr, "d.example.", "0.0.0.0")
	answers(t, addr, "c.example.", dnstest.AnswerA)
}

// TestWatchConfigMap: a config mounted from a Kubernetes ConfigMap, each
// file a symlink through ..data, updated as the kubelet does: a new
// directory, then ..data swapped to it in one rename.
func TestWatchConfigMap(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	version := func(name, sinkholed string) {
		t.Helper()
		writeFile(t, filepath.Join(dir, name, "phonehome.yaml"), fmt.Sprintf(`watch_config: true
upstreams: [%q]
http: ""
history: off
querylog: {output: "off"}
policy:
  default:
    actions: {ads: sinkhole}
    lists: [{category: ads, file: ads.txt}]
`, up.Addr()))
		writeFile(t, filepath.Join(dir, name, "ads.txt"), sinkholed+"\n")
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_00_00_00.1", "a.example")
	for _, f := range []string{"phonehome.yaml", "ads.txt"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	noWatcherLeft(t)
	ph := startServe(t, "-config", filepath.Join(dir, "phonehome.yaml"), "-listen", "127.0.0.1:0")
	addr := ph.dns[0]
	answers(t, addr, "a.example.", "0.0.0.0")

	version("..2026_01_01_00_01_00.2", "b.example")
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1"))
	answers(t, addr, "b.example.", "0.0.0.0")
	answers(t, addr, "a.example.", dnstest.AnswerA)
	logs(t, ph, "msg=\"watch_config: reloaded\" files="+filepath.Join(dir, "ads.txt"))

	// Twice: the watch follows ..data to the new directory.
	version("..2026_01_01_00_02_00.3", "c.example")
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_01_00.2"))
	answers(t, addr, "c.example.", "0.0.0.0")
}

// TestWatchConfigOff: without watch_config a change waits for SIGHUP, and
// turning it on by reload says a restart is needed.
func TestWatchConfigOff(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "phonehome.yaml")
	base := fmt.Sprintf("upstreams: [%q]\nhttp: \"127.0.0.1:0\"\nhistory: off\nquerylog: {output: \"off\"}\n", up.Addr())
	writeFile(t, cfg, base)
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0")
	if strings.Contains(ph.logs.String(), "watch_config") {
		t.Errorf("a watcher without watch_config:\n%s", ph.logs.String())
	}
	writeFile(t, cfg, base+"watch_config: true\n")
	code, body := post(t, "", "http://"+ph.http+"/api/reload", "")
	if code != 200 || !strings.Contains(body, `"restart_needed":["watch_config"]`) {
		t.Errorf("reload: %d %s", code, body)
	}
}

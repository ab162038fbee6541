package watch

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// wait is how long a test waits for a reload: far longer than it takes,
// so that a loaded machine does not fail a test. Nothing waits for a
// reload not to happen: a no-op is shown by the next reload's files.
const wait = 20 * time.Second

// debounce is short in tests; nothing depends on its length.
const debounce = 20 * time.Millisecond

// reload is what one Reload call saw.
type reload struct {
	changed []string
	content string // of the file the test looks at, when the reload read it
}

// harness runs a Watcher over files (a function, so a test can change the
// set) and records its reloads.
type harness struct {
	t       *testing.T
	w       *Watcher
	reloads chan reload
	look    string // the file whose contents each reload records

	mu    sync.Mutex
	files []string
	fail  func() error // what Reload returns, after recording the reload
}

// failWith sets what the next reloads do after recording themselves.
func (h *harness) failWith(f func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = f
}

func start(t *testing.T, look string, files ...string) *harness {
	t.Helper()
	return startWith(t, debounce, look, files...)
}

func startWith(t *testing.T, debounce time.Duration, look string, files ...string) *harness {
	t.Helper()
	h := &harness{t: t, reloads: make(chan reload, 100), look: look, files: files}
	w, err := Start(Options{
		Files: func() ([]string, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			return slices.Clone(h.files), nil
		},
		Reload: func(changed []string) error {
			b, _ := os.ReadFile(h.look)
			h.reloads <- reload{changed, string(b)}
			h.mu.Lock()
			fail := h.fail
			h.mu.Unlock()
			if fail != nil {
				return fail()
			}
			return nil
		},
		Log:      slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Debounce: debounce,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	t.Cleanup(func() { w.Close() })
	return h
}

// next waits for a reload.
func (h *harness) next() reload {
	h.t.Helper()
	select {
	case r := <-h.reloads:
		return r
	case <-time.After(wait):
		h.t.Fatal("no reload")
		return reload{}
	}
}

// until waits for a reload that read want, skipping those that read the
// file half-written (an in-place write is a truncate, then a write).
func (h *harness) until(want string) reload {
	h.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case r := <-h.reloads:
			if r.content == want {
				return r
			}
		case <-deadline:
			h.t.Fatalf("no reload read %q", want)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace writes path as editors do: a new file, renamed over the old.
func replace(t *testing.T, path, s string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	write(t, tmp, s)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestInPlaceWrite(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	write(t, cfg, "one\n")
	h := start(t, cfg, cfg)
	write(t, cfg, "two\n")
	if r := h.until("two\n"); !slices.Equal(r.changed, []string{cfg}) {
		t.Errorf("changed %v", r.changed)
	}
	// Appending is a change too (the watch is still in place).
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("three\n")
	f.Close()
	h.until("two\nthree\n")
}

func TestRename(t *testing.T) {
	dir := t.TempDir()
	cfg, list := filepath.Join(dir, "p.yaml"), filepath.Join(dir, "list.txt")
	write(t, cfg, "config\n")
	write(t, list, "a.example\n")
	h := start(t, list, cfg, list)
	replace(t, list, "b.example\n")
	if r := h.next(); r.content != "b.example\n" || !slices.Equal(r.changed, []string{list}) {
		t.Errorf("reload %+v", r)
	}
	// The new file is watched as the old one was.
	replace(t, list, "c.example\n")
	if r := h.next(); r.content != "c.example\n" {
		t.Errorf("reload %+v", r)
	}
}

// TestConfigMapSwap updates files as the kubelet updates a mounted
// ConfigMap: each file is a symlink through ..data, a symlink to a
// timestamped directory; the new directory is written whole, a new
// symlink is renamed over ..data, and the old directory is removed.
func TestConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name string, files map[string]string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		for f, s := range files {
			write(t, filepath.Join(dir, name, f), s)
		}
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, configMapData)); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_00_00_00.1", map[string]string{"p.yaml": "config\n", "list.txt": "a.example\n"})
	cfg, list := filepath.Join(dir, "p.yaml"), filepath.Join(dir, "list.txt")
	for _, f := range []string{cfg, list} {
		if err := os.Symlink(filepath.Join(configMapData, filepath.Base(f)), f); err != nil {
			t.Fatal(err)
		}
	}
	h := start(t, list, cfg, list)

	version("..2026_01_01_00_01_00.2", map[string]string{"p.yaml": "config\n", "list.txt": "b.example\n"})
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1"))
	// Only the list changed: the config file's contents are the same.
	if r := h.next(); r.content != "b.example\n" || !slices.Equal(r.changed, []string{list}) {
		t.Errorf("reload %+v", r)
	}
	// And again: the watch follows ..data to its new directory.
	version("..2026_01_01_00_02_00.3", map[string]string{"p.yaml": "config 3\n", "list.txt": "c.example\n"})
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_01_00.2"))
	if r := h.next(); r.content != "c.example\n" || !slices.Equal(r.changed, []string{list, cfg}) {
		t.Errorf("reload %+v", r)
	}
}

// TestSymlinkTarget: a file symlinked from elsewhere and edited where it
// lives is a change.
func TestSymlinkTarget(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	target, list := filepath.Join(elsewhere, "list.txt"), filepath.Join(dir, "list.txt")
	write(t, target, "a.example\n")
	if err := os.Symlink(target, list); err != nil {
		t.Fatal(err)
	}
	h := start(t, list, list)
	replace(t, target, "b.example\n")
	if r := h.next(); r.content != "b.example\n" || !slices.Equal(r.changed, []string{list}) {
		t.Errorf("reload %+v", r)
	}
}

// TestNoChangeNoReload: events that leave the contents as they were
// (a touch, a save without edits, another file in the directory) reload
// nothing: the first reload is the real change's.
func TestNoChangeNoReload(t *testing.T) {
	dir := t.TempDir()
	cfg, list := filepath.Join(dir, "p.yaml"), filepath.Join(dir, "list.txt")
	write(t, cfg, "config\n")
	write(t, list, "a.example\n")
	h := start(t, list, cfg, list)
	now := time.Now()
	os.Chtimes(cfg, now, now)
	replace(t, cfg, "config\n")
	write(t, filepath.Join(dir, "unrelated.txt"), "x\n")
	replace(t, list, "b.example\n")
	if r := h.next(); r.content != "b.example\n" || !slices.Equal(r.changed, []string{list}) {
		t.Errorf("the first reload: %+v", r)
	}
}

// TestFilesFollowConfig: after a change the set is taken again, so a list
// the config names now, in a directory not watched before, is watched,
// and one it no longer names is not.
func TestFilesFollowConfig(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	cfg, old, added := filepath.Join(dir, "p.yaml"), filepath.Join(dir, "old.txt"), filepath.Join(other, "new.txt")
	write(t, cfg, "lists: [old.txt]\n")
	write(t, old, "a.example\n")
	write(t, added, "b.example\n")
	h := start(t, cfg, cfg, old)
	h.mu.Lock()
	h.files = []string{cfg, added}
	h.mu.Unlock()
	replace(t, cfg, "lists: [new.txt]\n")
	h.until("lists: [new.txt]\n")

	write(t, old, "no longer named\n")
	replace(t, added, "c.example\n")
	if r := h.next(); !slices.Equal(r.changed, []string{added}) {
		t.Errorf("changed %v, want the new list only", r.changed)
	}
}

// TestBrokenFile: a reload that fails is logged and the watcher goes on;
// the broken contents are not retried, the fixed ones are reloaded.
func TestBrokenFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	write(t, cfg, "good\n")
	h := start(t, cfg, cfg)
	h.failWith(func() error { return errors.New("p.yaml:1:1: broken\np.yaml:2:1: broken too") })
	replace(t, cfg, "broken\n")
	if r := h.next(); r.content != "broken\n" {
		t.Errorf("reload %+v", r)
	}
	h.failWith(nil)
	replace(t, cfg, "fixed\n")
	if r := h.next(); r.content != "fixed\n" {
		t.Errorf("reload %+v", r)
	}
}

// TestClose: Close waits for the goroutine, a reload in progress
// included, and nothing of the watcher is left running.
func TestClose(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	write(t, cfg, "one\n")
	h := start(t, cfg, cfg)
	entered, release := make(chan struct{}), make(chan struct{})
	h.failWith(func() error {
		close(entered)
		<-release
		return nil
	})
	replace(t, cfg, "two\n")
	h.next()
	<-entered
	closed := make(chan struct{})
	go func() {
		h.w.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned during a reload")
	default:
	}
	close(release)
	<-closed
	if err := h.w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var nilWatcher *Watcher
	nilWatcher.Close()
	noGoroutines(t)
}

// noGoroutines fails the test when a goroutine of the watcher or of
// fsnotify is still running after a while (fsnotify's reader closes its
// channels after Close has returned).
func noGoroutines(t *testing.T) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		left = left[:0]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "internal/watch.(*Watcher)") || strings.Contains(g, "fsnotify") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, g := range left {
		t.Errorf("a goroutine is left:\n%s", g)
	}
}

// TestBusyFile: a file written without a pause still reloads, within ten
// debounces; the watcher does not wait for a quiet that never comes.
func TestBusyFile(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	write(t, list, "a.example\n")
	h := startWith(t, 200*time.Millisecond, list, list)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		f, err := os.OpenFile(list, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			default:
				f.WriteString("x.example\n")
				time.Sleep(time.Millisecond)
			}
		}
	}()
	h.next()
	close(stop)
	<-stopped
}

// Package watch reloads when files change: watch_config's watcher of the
// config file and the documents and lists it names.
//
// It watches the directories that hold the files, not the files, because
// the ways files are replaced all end with a new inode under the old name:
// an editor writes a new file and renames it over the old one, and
// Kubernetes updates a mounted ConfigMap by pointing its "..data" symlink
// at a new directory in one rename, so that every file (a symlink through
// "..data") changes at once. An event on a watched name, on the target a
// symlinked name leads to, or on "..data" starts a quiet period (the
// debounce); when it ends, the files' contents are hashed, and only a
// real change calls Reload. Events that change nothing (a touch, a save
// without edits, a swap to the same contents) reload nothing.
package watch

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long the files must stay quiet after an event
// before they are compared and reloaded: long enough for an editor's
// truncate-and-write or a copy of several files to finish.
const DefaultDebounce = 500 * time.Millisecond

// configMapData is the symlink Kubernetes swaps to update a mounted
// ConfigMap: every file of the volume is a symlink through it.
const configMapData = "..data"

// Options configure a Watcher.
type Options struct {
	// Files returns the files to watch. It is called at Start and again
	// after every change, so the set follows the config file (a list
	// added, a document dropped); when it fails, the set stays as it was.
	Files func() ([]string, error)
	// Reload applies the files. changed names those whose contents
	// differ from the last time they were seen. It is called from the
	// watcher's goroutine, one call at a time; its error is only logged,
	// and the watcher goes on watching.
	Reload func(changed []string) error
	// Log gets a line for each reload and its result (default: discard).
	Log *slog.Logger
	// Debounce is the quiet period after the last event (DefaultDebounce
	// when 0).
	Debounce time.Duration
}

// Watcher watches files and calls Reload when their contents change.
type Watcher struct {
	opts Options
	log  *slog.Logger
	fs   *fsnotify.Watcher

	// Owned by the goroutine once Start returns.
	files   map[string]string // absolute path → hash of its contents ("" when it cannot be read)
	targets map[string]bool   // the files symlinked names lead to
	dirs    map[string]bool   // the directories watched

	quit  chan struct{}
	done  chan struct{}
	close sync.Once
}

// Start watches the files opts.Files names and returns once the watches
// are in place: a change made after Start returns is seen. It fails when
// the files cannot be listed or a directory cannot be watched (an
// inotify limit, say).
func Start(opts Options) (*Watcher, error) {
	opts.Debounce = cmp.Or(opts.Debounce, DefaultDebounce)
	files, err := opts.Files()
	if err != nil {
		return nil, err
	}
	fs, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("starting the file watcher: %w", err)
	}
	w := &Watcher{opts: opts, log: opts.Log, fs: fs, files: map[string]string{}, dirs: map[string]bool{},
		quit: make(chan struct{}), done: make(chan struct{})}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if err := w.arm(files); err != nil {
		fs.Close()
		return nil, err
	}
	w.log.Info("watch_config: watching", "files", strings.Join(slices.Sorted(maps.Keys(w.files)), ","))
	go w.run()
	return w, nil
}

// Close stops watching and waits for the watcher's goroutine, a reload in
// progress included. It may be called more than once, and on nil.
func (w *Watcher) Close() error {
	if w == nil {
		return nil
	}
	var err error
	w.close.Do(func() {
		close(w.quit)
		<-w.done
		err = w.fs.Close()
	})
	return err
}

// run waits for events; after the debounce without one, it checks. A
// file written without a pause does not hold the check off for more than
// ten debounces.
func (w *Watcher) run() {
	defer close(w.done)
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	var first time.Time // of the events not checked yet; zero when none
	event := func() {
		if first.IsZero() {
			first = time.Now()
		}
		if time.Since(first) < 10*w.opts.Debounce {
			quiet.Reset(w.opts.Debounce)
		}
	}
	for {
		select {
		case <-w.quit:
			return
		case ev := <-w.fs.Events:
			if w.relevant(ev.Name) {
				event()
			}
		case err := <-w.fs.Errors:
			// Events were lost: check everything.
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				event()
				continue
			}
			w.log.Warn("watch_config: watching the config files", "err", err)
		case <-quiet.C:
			first = time.Time{}
			w.check()
		}
	}
}

// relevant reports whether an event on name may have changed a file.
func (w *Watcher) relevant(name string) bool {
	name = abs(name)
	_, ok := w.files[name]
	return ok || w.targets[name] || filepath.Base(name) == configMapData
}

// check hashes the files and reloads when one changed. Before that it
// takes the set of files again (the config file may name others now, a
// swapped ConfigMap leads its symlinks elsewhere) and hashes the new ones,
// so that whatever changes once Reload has begun is a change.
func (w *Watcher) check() {
	var changed []string
	for path, old := range w.files {
		if h := hashFile(path); h != old {
			changed = append(changed, path)
			// Seen, whatever the reload makes of it: a bad file is
			// not retried until it changes again.
			w.files[path] = h
		}
	}
	files, err := w.opts.Files()
	if err != nil {
		files = slices.Collect(maps.Keys(w.files))
	}
	if err := w.arm(files); err != nil {
		w.log.Warn("watch_config: "+err.Error()+"; changes there are not seen until the config file changes", "files", strings.Join(files, ","))
	}
	if len(changed) == 0 {
		return
	}
	slices.Sort(changed)
	names := strings.Join(changed, ",")
	w.log.Info("watch_config: files changed; reloading", "files", names)
	if err := w.opts.Reload(changed); err != nil {
		w.log.Error("watch_config: reload failed; the running config stays until the files change again", "files", names,
			"errors", strings.Count(err.Error(), "\n")+1)
		return
	}
	w.log.Info("watch_config: reloaded", "files", names)
}

// arm makes files the set watched: it hashes the new ones (the ones
// already known keep the hash last seen, so that a change made while a
// reload ran is still a change), and watches each file's directory and,
// for a symlink, its target's.
func (w *Watcher) arm(files []string) error {
	next := make(map[string]string, len(files))
	targets, dirs := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		p := abs(f)
		h, ok := w.files[p]
		if !ok {
			h = hashFile(p)
		}
		next[p] = h
		dirs[filepath.Dir(p)] = true
		if t, err := filepath.EvalSymlinks(p); err == nil {
			if t = abs(t); t != p {
				targets[t] = true
				dirs[filepath.Dir(t)] = true
			}
		}
	}
	w.files, w.targets = next, targets
	var errs []error
	// Added again even when watched already: a directory removed and
	// made again needs a new watch, and adding is idempotent.
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := w.fs.Add(d); err != nil {
			errs = append(errs, fmt.Errorf("watching %s: %w", d, err))
			delete(dirs, d)
		}
	}
	for d := range w.dirs {
		if !dirs[d] {
			// A directory deleted (a ConfigMap's old one) has lost
			// its watch already.
			w.fs.Remove(d)
		}
	}
	w.dirs = dirs
	return errors.Join(errs...)
}

// hashFile is the hash of the file's contents, "" when it cannot be read
// (missing for now, say).
func hashFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return string(h.Sum(nil))
}

func abs(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return filepath.Clean(path)
}

package configfile

import (
	"slices"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/history"
)

// TestHistoryConfig: the history section in the whole file: on by default
// in the state directory, off with one word, a relative path relative to
// the file, bad values at their place beside the other sections' errors.
func TestHistoryConfig(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/phonehome")
	c, err := Parse("/etc/phonehome/p.yaml", []byte("listen: [\"127.0.0.1:53\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := c.History; h.Off || h.Path != "/var/lib/phonehome/history.db" || h.Flush != 5*time.Second || h.Retention != history.DefaultRetention ||
		h.EventsRetention != history.DefaultEventsRetention || h.MaxSize != history.DefaultMaxSize {
		t.Errorf("defaults: %+v", h)
	}
	if d := Default(); d.History.Path != "/var/lib/phonehome/history.db" {
		t.Errorf("with no file: %+v", d.History)
	}
	c, err = Parse("/etc/phonehome/p.yaml", []byte("history: off\n"))
	if err != nil || !c.History.Off {
		t.Errorf("history: off: %+v, %v", c.History, err)
	}
	c, err = Parse("/etc/phonehome/p.yaml", []byte("history: {path: data/h.db, flush: 100ms}\n"))
	if err != nil || c.History.Path != "/etc/phonehome/data/h.db" || c.History.Flush != 100*time.Millisecond {
		t.Errorf("relative path: %+v, %v", c.History, err)
	}
	_, err = Parse("p.yaml", []byte("cache: {size: lots}\nhistory:\n  flush: 1ms\n  retention: 90\n"))
	want := "p.yaml:1:15: cache.size: cannot unmarshal !!str `lots` into int\n" +
		"p.yaml:3:10: history.flush is 1ms: want 10ms to 10m0s\n" +
		"p.yaml:4:14: history.retention: \"90\" is not a duration (like 90d, 2w or 36h)"
	if err == nil || err.Error() != want {
		t.Errorf("errors:\n got  %v\n want %s", err, want)
	}
}

// TestHistoryRestartNeeded: turning the history on or off and moving its
// file take a restart; the rest is applied on reload.
func TestHistoryRestartNeeded(t *testing.T) {
	parse := func(text string) *File {
		t.Helper()
		f, err := Parse("/etc/phonehome/p.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	on := parse("history: {path: /a/h.db}\n")
	for _, c := range []struct {
		next string
		want []string
	}{
		{"history: {path: /a/h.db, flush: 1s, retention: 30d, events_retention: 1d, max_size: 10MiB}\n", nil},
		{"history: {path: /b/h.db}\n", []string{"history.path"}},
		{"history: off\n", []string{"history"}},
	} {
		if got := RestartNeeded(on, parse(c.next)); !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, want %v", c.next, got, c.want)
		}
	}
	for _, k := range []string{"history", "history.path"} {
		if !slices.Contains(StartOnly, k) {
			t.Errorf("StartOnly lacks %s", k)
		}
	}
}

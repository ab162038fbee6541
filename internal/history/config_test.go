package history

import (
	"strings"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/config"
)

// file is a config file with the history section alone.
type file struct {
	History Config `yaml:"history"`
}

func parse(t *testing.T, text string) (Config, error) {
	t.Helper()
	var f file
	src, err := config.Decode("p.yaml", []byte(text), &f)
	r := config.NewReport(src)
	r.Add(err)
	f.History.Check(r)
	if err := r.Err(); err != nil {
		return f.History, err
	}
	f.History.SetDefaults()
	return f.History, nil
}

func TestConfigParse(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/phonehome")
	for _, c := range []struct {
		text string
		want Config
	}{
		{"", Config{Path: "/var/lib/phonehome/history.db", Flush: 5 * time.Second, Retention: DefaultRetention, EventsRetention: DefaultEventsRetention, MaxSize: 1 << 30}},
		{"history:\n", Config{Path: "/var/lib/phonehome/history.db", Flush: 5 * time.Second, Retention: DefaultRetention, EventsRetention: DefaultEventsRetention, MaxSize: 1 << 30}},
		{"history: off\n", Config{Off: true}},
		{"history: OFF\n", Config{Off: true}},
		{"history: false\n", Config{Off: true}},
		{"history: {path: /srv/h.db, flush: 100ms, retention: 2w, events_retention: 36h, max_size: 500MB}\n",
			Config{Path: "/srv/h.db", Flush: 100 * time.Millisecond, Retention: Duration(14 * 24 * time.Hour), EventsRetention: Duration(36 * time.Hour), MaxSize: 500e6}},
		{"history:\n  retention: 365d\n  max_size: 2GiB\n",
			Config{Path: "/var/lib/phonehome/history.db", Flush: 5 * time.Second, Retention: Duration(365 * 24 * time.Hour), EventsRetention: DefaultEventsRetention, MaxSize: 2 << 30}},
		{"history: {max_size: 1073741824}\n",
			Config{Path: "/var/lib/phonehome/history.db", Flush: 5 * time.Second, Retention: DefaultRetention, EventsRetention: DefaultEventsRetention, MaxSize: 1 << 30}},
	} {
		got, err := parse(t, c.text)
		if err != nil {
			t.Errorf("%q: %v", c.text, err)
			continue
		}
		if got != c.want {
			t.Errorf("%q:\n got  %+v\n want %+v", c.text, got, c.want)
		}
	}
}

// TestConfigErrors: every bad value, with the message a user sees and its
// place in the file.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"history: on\n", `p.yaml:1:10: history: "on": want off, or a mapping of path, flush, retention, events_retention, max_size, dsn, instance`},
		{"history: [a]\n", `p.yaml:1:10: history: want a mapping of keys to values`},
		{"history:\n  pth: x\n", `p.yaml:2:3: unknown key "pth" in history (valid: dsn, events_retention, flush, instance, max_size, path, retention)`},
		{"history: {flush: 5}\n", "p.yaml:1:18: history.flush: cannot unmarshal !!int `5` into time.Duration"},
		{"history: {flush: 1ms}\n", "p.yaml:1:18: history.flush is 1ms: want 10ms to 10m0s"},
		{"history: {flush: 1h}\n", "p.yaml:1:18: history.flush is 1h0m0s: want 10ms to 10m0s"},
		{"history: {retention: 90}\n", `p.yaml:1:22: history.retention: "90" is not a duration (like 90d, 2w or 36h)`},
		{"history: {retention: ninety days}\n", `p.yaml:1:22: history.retention: "ninety days" is not a duration (like 90d, 2w or 36h)`},
		{"history: {retention: -1d}\n", `p.yaml:1:22: history.retention: "-1d" is not a duration (like 90d, 2w or 36h)`},
		{"history: {retention: 30m}\n", "p.yaml:1:22: history.retention is 30m0s: want at least 1h0m0s"},
		{"history:\n  events_retention: 10m\n", "p.yaml:2:21: history.events_retention is 10m0s: want at least 1h0m0s"},
		{"history: {max_size: lots}\n", `p.yaml:1:21: history.max_size: "lots" is not a size (like 1GiB, 500MB or 1073741824)`},
		{"history: {max_size: 1KiB}\n", "p.yaml:1:21: history.max_size is 1KiB: want at least 1MiB"},
		{"history: {max_size: -5MB}\n", `p.yaml:1:21: history.max_size: "-5MB" is not a size (like 1GiB, 500MB or 1073741824)`},
		{"history: {flush: 1s, flush: 2s}\n", `p.yaml:1:22: history: key "flush" given twice`},
	} {
		_, err := parse(t, c.text)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got  %v\n want %s", c.text, err, c.want)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	for _, c := range []struct{ state, xdg, home, want string }{
		{"/var/lib/phonehome", "/x", "/root", "/var/lib/phonehome/history.db"},
		{"/var/lib/phonehome:/var/lib/other", "", "", "/var/lib/phonehome/history.db"},
		{"", "/home/ann/.state", "/home/ann", "/home/ann/.state/phonehome/history.db"},
		{"", "relative/ignored", "/home/ann", "/home/ann/.local/state/phonehome/history.db"},
		{"", "", "/home/ann", "/home/ann/.local/state/phonehome/history.db"},
		{"", "", "", ""},
	} {
		t.Setenv("STATE_DIRECTORY", c.state)
		t.Setenv("XDG_STATE_HOME", c.xdg)
		t.Setenv("HOME", c.home)
		if got := DefaultPath(); got != c.want {
			t.Errorf("STATE_DIRECTORY=%q XDG_STATE_HOME=%q HOME=%q: %q, want %q", c.state, c.xdg, c.home, got, c.want)
		}
	}
}

func TestSizesAndDurations(t *testing.T) {
	for in, want := range map[string]ByteSize{"1GiB": 1 << 30, "1G": 1 << 30, "1GB": 1e9, "512KiB": 512 << 10, "1.5MiB": 3 << 19, "100": 100, "100B": 100, " 2 TiB": 2 << 40} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for b, want := range map[ByteSize]string{1 << 30: "1GiB", 500e6: "500000000B", 3 << 19: "1536KiB"} {
		if got := b.String(); got != want {
			t.Errorf("%d: %s, want %s", b, got, want)
		}
	}
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "1.5d": 36 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || time.Duration(got) != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if s := Duration(90 * 24 * time.Hour).String(); s != "90d" {
		t.Errorf("90 days spelled %s", s)
	}
	if !strings.Contains(DefaultMaxSize.String(), "GiB") {
		t.Error(DefaultMaxSize.String())
	}
}

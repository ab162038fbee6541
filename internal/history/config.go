package history

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/phonehome/phonehome/internal/config"
)

// Config is the history: section of the config file: either the word off,
// or a mapping of the keys below (each optional).
type Config struct {
	// Off is "history: off".
	Off bool `yaml:"-"`
	// Path is the database file; by default history.db in the service's
	// state directory (see DefaultPath).
	Path string `yaml:"path"`
	// Flush is how often what was counted in memory is written: at most
	// this much is lost in a crash.
	Flush time.Duration `yaml:"flush"`
	// Retention is how long counts (and first and last seen) are kept.
	Retention Duration `yaml:"retention"`
	// EventsRetention is how long the match events themselves are kept.
	EventsRetention Duration `yaml:"events_retention"`
	// MaxSize bounds the file: past it the oldest events go first, then
	// the oldest counts.
	MaxSize ByteSize `yaml:"max_size"`
}

// The defaults of the history: keys.
const (
	DefaultFlush           = 5 * time.Second
	DefaultRetention       = Duration(90 * 24 * time.Hour)
	DefaultEventsRetention = Duration(7 * 24 * time.Hour)
	DefaultMaxSize         = ByteSize(1 << 30)
)

// Bounds of the history: keys, checked at load.
const (
	minFlush     = 10 * time.Millisecond
	maxFlush     = 10 * time.Minute
	minRetention = time.Hour
	minMaxSize   = ByteSize(1 << 20)
)

// plain is Config without its UnmarshalConfig: the decoder reads its
// fields by their yaml tags.
type plain Config

// UnmarshalConfig reads "off" (or false) or a mapping of the keys.
func (c *Config) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "off", "false":
			c.Off = true
		default:
			d.Errorf(n, "%s: %q: want off, or a mapping of path, flush, retention, events_retention, max_size", path, n.Value)
		}
		return
	}
	d.Decode(n, (*plain)(c), path)
}

// SetDefaults fills in what the file left out. The default path depends on
// the environment (DefaultPath); it is "" when there is no state directory
// to put it in.
func (c *Config) SetDefaults() {
	if c.Off {
		return
	}
	if c.Path == "" {
		c.Path = DefaultPath()
	}
	if c.Flush == 0 {
		c.Flush = DefaultFlush
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.EventsRetention == 0 {
		c.EventsRetention = DefaultEventsRetention
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultMaxSize
	}
}

// Check reports values out of their bounds, at their place in the file. It
// runs before SetDefaults: a zero is a key not written.
func (c *Config) Check(r *config.Report) {
	if c.Off {
		return
	}
	if c.Flush != 0 && (c.Flush < minFlush || c.Flush > maxFlush) {
		r.Value("history.flush", "history.flush is %v: want %v to %v", c.Flush, minFlush, maxFlush)
	}
	if c.Retention != 0 && time.Duration(c.Retention) < minRetention {
		r.Value("history.retention", "history.retention is %v: want at least %v", c.Retention, Duration(minRetention))
	}
	if c.EventsRetention != 0 && time.Duration(c.EventsRetention) < minRetention {
		r.Value("history.events_retention", "history.events_retention is %v: want at least %v", c.EventsRetention, Duration(minRetention))
	}
	if c.MaxSize != 0 && c.MaxSize < minMaxSize {
		r.Value("history.max_size", "history.max_size is %v: want at least %v", c.MaxSize, minMaxSize)
	}
	if strings.ContainsRune(c.Path, 0) {
		r.Value("history.path", "history.path has a NUL byte")
	}
}

// DefaultPath is history.db in the service's state directory:
// $STATE_DIRECTORY (systemd's StateDirectory=, which the container image
// sets too), else $XDG_STATE_HOME/phonehome, else
// ~/.local/state/phonehome. It is "" when none of them is known.
func DefaultPath() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		// systemd joins several StateDirectory= paths with ':'.
		d, _, _ = strings.Cut(d, ":")
		return filepath.Join(d, "history.db")
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "phonehome", "history.db")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".local", "state", "phonehome", "history.db")
	}
	return ""
}

// Duration is a time.Duration that may also be written in days ("90d")
// or weeks ("2w"); a bare number is an error, not nanoseconds.
type Duration time.Duration

// UnmarshalYAML reads "90d", "2w", "36h", "1h30m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDuration reads a Duration as written in the config file.
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if num, ok := strings.CutSuffix(t, suffix); ok {
			n, err := strconv.ParseFloat(num, 64)
			if err != nil || n <= 0 || n > 100*365 {
				break
			}
			return Duration(n * float64(unit)), nil
		}
	}
	v, err := time.ParseDuration(t)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a duration (like 90d, 2w or 36h)", s)
	}
	return Duration(v), nil
}

// String spells whole days as days: "90d", else as time.Duration does.
func (d Duration) String() string {
	if day := 24 * time.Hour; d > 0 && time.Duration(d)%day == 0 {
		return strconv.FormatInt(int64(time.Duration(d)/day), 10) + "d"
	}
	return time.Duration(d).String()
}

// ByteSize is a size in bytes, written as a number of bytes or with a unit:
// "1GiB", "500MB", "2G" (K, M, G, T are powers of 1024 with or without
// "iB"; KB, MB, GB, TB are powers of 1000).
type ByteSize int64

// UnmarshalYAML reads a size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

var byteUnits = []struct {
	suffix string
	n      float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// ParseByteSize reads a ByteSize as written in the config file.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.n
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n <= 0 || n*mult > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (like 1GiB, 500MB or 1073741824)", s)
	}
	return ByteSize(n * mult), nil
}

// String spells a size in the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		n ByteSize
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b >= u.n && b%u.n == 0 {
			return strconv.FormatInt(int64(b/u.n), 10) + u.s
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

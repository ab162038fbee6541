package history

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
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
	// DSN names the PostgreSQL database that several phonehome instances
	// share (see Shared): a URL (postgres://user@host:5432/db) or libpq's
	// key=value pairs, with what it leaves out (the password, say) taken
	// from the standard PG* environment variables and ~/.pgpass, as libpq
	// does; or the word env, which takes all of it from the PG*
	// variables. Left out (or empty), it is $PHONEHOME_HISTORY_DSN; with
	// neither, there is none. Read at start only.
	DSN string `yaml:"dsn"`
	// Instance is this phonehome's name in the shared database (who set a
	// pause, whose history a row is); default the host name. Read
	// at start only.
	Instance string `yaml:"instance"`
}

// EnvDSN is the environment variable that gives history.dsn when the
// config file leaves it out (the Kubernetes manifests pass it from a
// Secret). The PG* variables alone never turn PostgreSQL on: a shell
// that has PGHOST set for psql must not move phonehome's history.
const EnvDSN = "PHONEHOME_HISTORY_DSN"

// DSNFromEnv is the history.dsn that takes the whole connection from the
// standard PG* environment variables.
const DSNFromEnv = "env"

// maxInstance bounds instance names: a host name (HOST_NAME_MAX) or a
// Kubernetes pod name fits.
const maxInstance = 64

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
			d.Errorf(n, "%s: %q: want off, or a mapping of path, flush, retention, events_retention, max_size, dsn, instance", path, n.Value)
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

// Shared returns the connection string of the PostgreSQL database shared
// by several instances, as pgx reads it ("" for history.dsn: env: all of
// it from the PG* variables), and whether there is one: history.dsn, else
// $PHONEHOME_HISTORY_DSN; none with history: off. With one, the history
// and the fleet-wide pause are there instead of in the file.
func (c *Config) Shared() (connString string, ok bool) {
	dsn := c.DSN
	if dsn == "" {
		dsn = strings.TrimSpace(os.Getenv(EnvDSN))
	}
	if c.Off || dsn == "" {
		return "", false
	}
	if dsn == DSNFromEnv {
		return "", true
	}
	return dsn, true
}

// Where says where the history is, for logs: the file, or the shared
// database (postgres://user@host:port/db, never a password).
func (c *Config) Where() string {
	if conn, ok := c.Shared(); ok {
		return pgWhere(conn)
	}
	return c.Path
}

// InstanceName is history.instance, else the host name (a pod's name on
// Kubernetes), cut to maxInstance bytes.
func (c *Config) InstanceName() string {
	if c.Instance != "" {
		return c.Instance
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "phonehome"
	}
	if len(h) > maxInstance {
		h = h[:maxInstance]
	}
	return h
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
	switch dsn := os.Getenv(EnvDSN); {
	case c.DSN != "":
		if err := checkDSN(c.DSN); err != nil {
			r.Value("history.dsn", "history.dsn: %v", err)
		}
	case strings.TrimSpace(dsn) != "":
		if err := checkDSN(strings.TrimSpace(dsn)); err != nil {
			r.Key("history", "history.dsn: $%s: %v", EnvDSN, err)
		}
	}
	if c.Instance != "" {
		if err := checkInstance(c.Instance); err != nil {
			r.Value("history.instance", "history.instance: %v", err)
		}
	}
}

// checkDSN parses a connection string as pgx will when connecting (with
// the PG* variables and ~/.pgpass). Its error does not repeat the string,
// which may hold a password.
func checkDSN(dsn string) error {
	if dsn == DSNFromEnv {
		dsn = ""
	}
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		msg := err.Error()
		// pgx's message quotes the string, with passwords masked as far
		// as it can tell them: keep only what it says is wrong.
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			msg = msg[i+3:]
		}
		return fmt.Errorf("not a PostgreSQL connection string (postgres://user@host/db, key=value pairs, or env): %s", msg)
	}
	return nil
}

// checkInstance accepts a host name's letters: ASCII letters, digits, '.',
// '-' and '_', at most maxInstance of them.
func checkInstance(s string) error {
	if len(s) > maxInstance || strings.IndexFunc(s, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_')
	}) >= 0 {
		return fmt.Errorf("%q: want at most %d letters, digits, dots, hyphens and underscores, such as dns1 or a host name", s, maxInstance)
	}
	return nil
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

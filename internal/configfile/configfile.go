// Package configfile is phonehome's config file: the sections of the
// packages that own them, put together in one YAML document. Each package
// reads and checks its own section; this package decodes the file once,
// runs every package's check, and fills in the defaults.
package configfile

import (
	"fmt"
	"os"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/internal/web"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// File is the config file. Every key is optional: the zero file (or no
// file) makes a working home resolver. Relative paths in it are relative to
// the file. The README lists every key.
type File struct {
	// listen, upstreams, access, sinkhole, cache, and the policy's
	// catalog and policy.
	resolver.Config `yaml:",inline"`
	// http, http_token, http_hosts.
	Web      web.Config      `yaml:",inline"`
	QueryLog querylog.Config `yaml:"querylog"`
	// history: off, or path, flush, retention, events_retention, max_size,
	// dsn, instance.
	History history.Config `yaml:"history"`
	// client_names: where machines' names come from (ptr, config, off).
	Names clientnames.Config `yaml:",inline"`
	// WatchConfig reloads when the file, or a document or list it names,
	// changes, as SIGHUP does (cmd/phonehome, internal/watch). Read at
	// start only: it decides what the process runs, as listen does.
	WatchConfig bool `yaml:"watch_config"`
}

// Default is the configuration with no file.
func Default() *File {
	f := &File{}
	f.setDefaults()
	return f
}

// Load reads and checks a config file. It reports every error it finds,
// each with file, line and column, as config.Errors. It does not read the
// documents and lists the file names: the resolver does, when it builds
// the policy.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, b)
}

// Parse is Load for a file's contents.
func Parse(path string, data []byte) (*File, error) {
	f := &File{}
	src, err := config.Decode(path, data, f)
	r := config.NewReport(src)
	r.Add(err)
	f.Source = src
	f.Check(r)
	if err := r.Err(); err != nil {
		return nil, err
	}
	f.setDefaults()
	return f, nil
}

// Check runs every section's check.
func (f *File) Check(r *config.Report) {
	f.Config.Check(r)
	f.Web.Check(r)
	f.History.Check(r)
	f.Names.Check(r)
}

func (f *File) setDefaults() {
	f.Config.SetDefaults()
	f.Web.SetDefaults()
	f.QueryLog.SetDefaults()
	f.Names.SetDefaults()
	f.History.Path = f.Source.Resolve(f.History.Path)
	f.History.SetDefaults()
}

// Files are the config file and the documents, list files, upstream CA
// file and listeners' certificate and key it names, relative paths made relative to the file: what
// watch_config watches.
// A config built in code has none.
func (f *File) Files() []string {
	if f.Source.FileName() == "" {
		return nil
	}
	files := []string{f.Source.FileName()}
	add := func(p string) {
		if p != "" && !slices.Contains(files, f.Source.Resolve(p)) {
			files = append(files, f.Source.Resolve(p))
		}
	}
	for _, d := range f.Policy.Catalog.Docs {
		add(d)
	}
	add(f.UpstreamTLSCA)
	add(f.TLSCert)
	add(f.TLSKey)
	for _, g := range append([]policy.GroupConfig{f.Policy.Rules.Default}, f.Policy.Rules.Groups...) {
		for _, l := range g.Lists {
			add(l.File)
		}
	}
	return files
}

// StartOnly are the keys read at start only: a reload leaves them as they
// were, and says so. Every other key takes effect on reload.
var StartOnly = []string{"listen", "tls_listen", "https_listen", "http", "querylog.output", "history", "history.path", "history.dsn", "history.instance", "watch_config"}

// RestartNeeded names the start-only keys whose value in next differs
// from the running config's.
func RestartNeeded(running, next *File) []string {
	var keys []string
	if !slices.Equal(running.Listen, next.Listen) {
		keys = append(keys, "listen")
	}
	if !slices.Equal(running.TLSListen, next.TLSListen) {
		keys = append(keys, "tls_listen")
	}
	if !slices.Equal(running.HTTPSListen, next.HTTPSListen) {
		keys = append(keys, "https_listen")
	}
	if *running.Web.HTTP != *next.Web.HTTP {
		keys = append(keys, "http")
	}
	if running.QueryLog.Output != next.QueryLog.Output {
		keys = append(keys, "querylog.output")
	}
	// history is turned on or off at start; its path is opened at start.
	if running.History.Off != next.History.Off {
		keys = append(keys, "history")
	} else if running.History.Path != next.History.Path {
		keys = append(keys, "history.path")
	}
	// The shared database is connected to at start, as this instance.
	if !running.History.Off && !next.History.Off {
		dsn, on := running.History.Shared()
		nextDSN, nextOn := next.History.Shared()
		if dsn != nextDSN || on != nextOn {
			keys = append(keys, "history.dsn")
		}
		if running.History.InstanceName() != next.History.InstanceName() {
			keys = append(keys, "history.instance")
		}
	}
	// The connection bounds are the listeners', made at start.
	if running.Access.MaxConnections != next.Access.MaxConnections {
		keys = append(keys, "access.max_connections")
	}
	if running.Access.MaxConnectionsPerClient != next.Access.MaxConnectionsPerClient {
		keys = append(keys, "access.max_connections_per_client")
	}
	// The watcher is started (or not) at start.
	if running.WatchConfig != next.WatchConfig {
		keys = append(keys, "watch_config")
	}
	return keys
}

// NewRestartMetric registers phonehome_config_restart_needed{key}: 1 for
// each start-only key whose value in the last file loaded differs from
// the running one. The function it returns sets it after a reload.
func NewRestartMetric(reg prometheus.Registerer) func(keys []string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "phonehome_config_restart_needed",
		Help: "1 for each key read only at start (listen, tls_listen, https_listen, http, querylog.output, history on or off, history.path, history.dsn, history.instance, watch_config) whose value in the config file differs from the running one."}, []string{"key"})
	reg.MustRegister(g)
	set := func(keys []string) {
		for _, k := range StartOnly {
			v := 0.0
			if slices.Contains(keys, k) {
				v = 1
			}
			g.WithLabelValues(k).Set(v)
		}
	}
	set(nil)
	return set
}

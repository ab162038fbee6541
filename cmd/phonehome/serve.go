package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/internal/configfile"
	"github.com/phonehome/phonehome/internal/fleet"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/internal/watch"
	"github.com/phonehome/phonehome/internal/web"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// serveOptions are serve's flags, which override the config file.
type serveOptions struct {
	config            string
	listen, upstreams multiFlag
	http              string
	httpSet           bool
	resolvConf        string
}

// load reads the config file (the defaults without one) and applies the
// flags.
func (o *serveOptions) load() (*configfile.File, error) {
	f := configfile.Default()
	if o.config != "" {
		var err error
		if f, err = configfile.Load(o.config); err != nil {
			return nil, err
		}
	}
	if len(o.listen) > 0 {
		f.Listen = o.listen
	}
	if len(o.upstreams) > 0 {
		for _, u := range o.upstreams {
			if _, err := resolver.ParseUpstreamAddr(u); err != nil {
				return nil, fmt.Errorf("-upstream: %w", err)
			}
		}
		f.Upstreams = o.upstreams
	}
	if o.httpSet {
		f.Web.HTTP = &o.http
	}
	return f, nil
}

func runServe(args []string, stdout, stderr io.Writer) int {
	return serve(args, stderr, nil, nil)
}

// bound are the addresses serve listens on.
type bound struct {
	dns        []string
	tls, https []string // DNS over TLS and over HTTPS, when configured
	http       string   // "" when off
}

// serve runs the daemon until SIGINT or SIGTERM, or until stop is closed.
// ready, if not nil, gets the bound addresses once it listens. Tests use
// both: several may run in one process, where a signal reaches them all.
func serve(args []string, stderr io.Writer, ready chan<- bound, stop <-chan struct{}) int {
	fs := flag.NewFlagSet("phonehome serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o serveOptions
	fs.StringVar(&o.config, "config", "", "config file (default: the built-in defaults)")
	fs.Var(&o.listen, "listen", "address to listen on over UDP and TCP, repeatable (default 127.0.0.1:5300 and [::1]:5300)")
	fs.Var(&o.upstreams, "upstream", "upstream resolver: host:port, tcp://host:port, tls://host:port#name or https://host/path#address; repeatable (default: /etc/resolv.conf)")
	fs.Func("http", "address for metrics, the web page and the API; \"\" turns it off (default "+web.DefaultHTTP+")", func(s string) error {
		o.http, o.httpSet = s, true
		return nil
	})
	fs.StringVar(&o.resolvConf, "resolv-conf", "/etc/resolv.conf", "where to find upstreams when none is configured")
	if err := fs.Parse(args); err != nil {
		return helpCode(err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	fail := func(err error) int {
		log.Error("phonehome cannot start", "err", err)
		return 1
	}
	cfg, err := o.load()
	if err != nil {
		return fail(err)
	}

	// One registry for the process, passed down; nothing registers globally.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Machines' names: the config's, else PTR lookups through the
	// upstreams once the resolver runs (names.Start below), never on the
	// answer path. Closed last (deferred first): the query log and the
	// history ask for names until they close.
	names := clientnames.New(cfg.Names, clientnames.Options{Log: log, ConfigNames: cfg.Policy.ClientNames(), Anonymize: cfg.QueryLog.AnonymizeClients})
	defer names.Close()
	reg.MustRegister(names.Collector())
	ql, err := querylog.Open(cfg.QueryLog, names)
	if err != nil {
		return fail(err)
	}
	defer ql.Close()
	reg.MustRegister(ql.Collector())
	activity := web.NewActivity(1000, 1024, cfg.QueryLog.AnonymizeClients)
	observers := []resolver.Observer{activity}
	if ql != nil {
		observers = append(observers, ql)
	}
	// The history follows the query log's privacy rules. A file that cannot
	// be opened does not stop the resolver: the store says why, keeps
	// counting (bounded) and tries again at every flush.
	hist, err := history.Open(cfg.History, history.Options{Log: log, AllQueries: cfg.QueryLog.AllQueries, AnonymizeClients: cfg.QueryLog.AnonymizeClients, Names: names})
	if err != nil {
		log.Error("history: the file cannot be opened yet; answering goes on", "path", cfg.History.Path, "err", err)
	}
	if hist != nil {
		// Closed after the server (deferred later, so run earlier):
		// the last answers are counted, then written.
		defer hist.Close()
		reg.MustRegister(hist.Collector())
		observers = append(observers, hist)
	}
	// The API reads the history on connections of its own (read-only,
	// for the file), so that no read holds up the writer.
	var apiOpts []web.Option
	if hist != nil {
		if hr, err := hist.Reader(); err != nil {
			log.Error("history: the API cannot read it", "err", err)
		} else {
			defer hr.Close()
			apiOpts = append(apiOpts, web.WithHistory(hr))
		}
	}
	srv, err := resolver.New(&cfg.Config, resolver.Options{Log: log, ResolvConf: o.resolvConf, Registry: reg, Version: version, Observers: observers})
	if err != nil {
		return fail(err)
	}
	defer srv.Close(context.Background())
	names.Start(srv.Lookup)
	apiOpts = append(apiOpts, web.WithNames(names))
	// With a shared database (history.dsn), pause and resume reach every
	// instance. The fleet connects in the background and is never on the
	// answer path: without the database the pause stays local.
	if dsn, ok := cfg.History.Shared(); ok {
		fl, err := fleet.New(fleet.Options{ConnString: dsn, Instance: cfg.History.InstanceName(), Apply: srv.SetPause, Log: log})
		if err != nil {
			return fail(err)
		}
		defer fl.Close()
		reg.MustRegister(fl.Collector())
		apiOpts = append(apiOpts, web.WithPause(fl.SetPause))
	}

	var api *web.API
	restartNeeded := configfile.NewRestartMetric(reg)
	// reload is what SIGHUP and POST /api/reload do: read the file again
	// and apply it, or keep everything running as it is. It names the keys
	// that changed but are read at start only.
	var reloading sync.Mutex // SIGHUP, the API and watch_config reload one at a time
	reload := func() ([]string, error) {
		reloading.Lock()
		defer reloading.Unlock()
		next, err := o.load()
		if err != nil {
			srv.ReloadFailed(err)
			return nil, err
		}
		if err := srv.Reload(&next.Config); err != nil {
			return nil, err
		}
		ql.Apply(next.QueryLog)
		hist.Apply(next.History, next.QueryLog)
		activity.SetAnonymize(next.QueryLog.AnonymizeClients)
		names.Apply(next.Names, next.Policy.ClientNames(), next.QueryLog.AnonymizeClients)
		if api != nil {
			api.Apply(next.Web)
		}
		restart := configfile.RestartNeeded(cfg, next)
		restartNeeded(restart)
		if len(restart) > 0 {
			log.Warn("reloaded, but these settings take effect after a restart", "keys", strings.Join(restart, ","))
		}
		return restart, nil
	}
	b := bound{dns: srv.Addrs(), tls: srv.TLSAddrs(), https: srv.HTTPSAddrs()}
	if *cfg.Web.HTTP != "" {
		api = web.NewAPI(srv, activity, reg, cfg.Web, reload, apiOpts...)
		hs, addr, err := web.Serve(*cfg.Web.HTTP, api.Handler())
		if err != nil {
			return fail(err)
		}
		defer hs.Close()
		b.http = addr
	}
	// watch_config: a change to the file, or to a document or list it
	// names, is a reload, as SIGHUP is.
	var watcher *watch.Watcher
	if cfg.WatchConfig {
		watcher, err = watch.Start(watch.Options{Log: log, Reload: func([]string) error { _, err := reload(); return err },
			Files: func() ([]string, error) {
				f, err := configfile.Load(o.config)
				if err != nil {
					return nil, err
				}
				return f.Files(), nil
			}})
		if err != nil {
			return fail(fmt.Errorf("watch_config: %w", err))
		}
		defer watcher.Close()
	}
	// Signals are caught before ready is told, so that a SIGHUP sent as
	// soon as serve listens is a reload, not the end of the process.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	logStart(log, b, srv.State(), cfg)
	if ready != nil {
		ready <- b
	}
	return waitForSignals(log, srv, ql, watcher, reload, sigs, stop)
}

// waitForSignals reloads on SIGHUP, reopens the query log on SIGUSR1 and
// shuts down on SIGINT or SIGTERM, or when stop is closed: the config
// watcher (nil when off) first, so that no reload follows the server's
// Close.
func waitForSignals(log *slog.Logger, srv *resolver.Server, ql *querylog.Log, watcher *watch.Watcher, reload func() ([]string, error), sigs <-chan os.Signal, stop <-chan struct{}) int {
	for {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case <-stop:
			sig = syscall.SIGTERM
		}
		switch sig {
		case syscall.SIGHUP:
			reload()
		case syscall.SIGUSR1:
			// logrotate has moved the query log away: start a new file.
			if err := ql.Reopen(); err != nil {
				log.Error("reopening the query log", "err", err)
			}
		default:
			log.Info("shutting down", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			watcher.Close()
			srv.Close(ctx)
			return 0
		}
	}
}

func logStart(log *slog.Logger, b bound, st *resolver.State, cfg *configfile.File) {
	counts := st.Policy.Catalog.Count()
	var cat []string
	for _, ed := range endpoints.AllEditions.Each() {
		if counts[ed] > 0 {
			cat = append(cat, fmt.Sprintf("%s=%d", ed, counts[ed]))
		}
	}
	var ups, groups []string
	for _, u := range st.Forwarder.Upstreams {
		ups = append(ups, u.Name)
	}
	for _, g := range append([]*policy.Group{st.Policy.Default}, st.Policy.Groups...) {
		groups = append(groups, g.Name)
	}
	attrs := []any{"listen", strings.Join(b.dns, ",")}
	if len(b.tls) > 0 {
		attrs = append(attrs, "tls_listen", strings.Join(b.tls, ","))
	}
	if len(b.https) > 0 {
		attrs = append(attrs, "https_listen", strings.Join(b.https, ","))
	}
	attrs = append(attrs, "http", cmp.Or(b.http, "off"), "upstreams", strings.Join(ups, ","),
		"catalog", strings.Join(cat, ","), "groups", strings.Join(groups, ","), "config", cmp.Or(cfg.Source.FileName(), "built-in defaults"),
		"history", historyWhere(cfg))
	log.Info("phonehome serving", attrs...)
}

// historyWhere names the history file, or says it is off.
func historyWhere(cfg *configfile.File) string {
	if cfg.History.Off {
		return "off"
	}
	return cfg.History.Where()
}

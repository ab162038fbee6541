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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/phonehome/phonehome/endpoints"
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

// loadServeConfig reads the config and applies the flags.
func (o *serveOptions) load() (*policy.Config, error) {
	cfg := policy.DefaultConfig()
	if o.config != "" {
		var err error
		if cfg, err = policy.LoadConfig(o.config); err != nil {
			return nil, err
		}
	}
	if len(o.listen) > 0 {
		cfg.Listen = o.listen
	}
	if len(o.upstreams) > 0 {
		for _, u := range o.upstreams {
			if err := policy.CheckUpstream(u); err != nil {
				return nil, fmt.Errorf("-upstream: %w", err)
			}
		}
		cfg.Upstreams = o.upstreams
	}
	if o.httpSet {
		cfg.HTTP = &o.http
	}
	return cfg, nil
}

func runServe(args []string, stdout, stderr io.Writer) int {
	return serve(args, stderr, nil)
}

// bound are the addresses serve listens on.
type bound struct {
	dns  []string
	http string // "" when off
}

// serve runs the daemon until SIGINT or SIGTERM. ready, if not nil, gets
// the bound addresses once it listens (tests use it).
func serve(args []string, stderr io.Writer, ready chan<- bound) int {
	fs := flag.NewFlagSet("phonehome serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o serveOptions
	fs.StringVar(&o.config, "config", "", "config file (default: the built-in defaults)")
	fs.Var(&o.listen, "listen", "address to listen on over UDP and TCP, repeatable (default 127.0.0.1:5353 and [::1]:5353)")
	fs.Var(&o.upstreams, "upstream", "upstream resolver: host:port, tcp://host:port or tls://host:port#name; repeatable (default: /etc/resolv.conf)")
	fs.Func("http", "address for metrics, the web page and the API; \"\" turns it off", func(s string) error {
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
	st, warns, err := resolver.NewState(cfg, nil, o.resolvConf, log)
	for _, w := range warns {
		log.Warn(w)
	}
	if err != nil {
		return fail(err)
	}
	h := resolver.NewHandler(st, log)
	// One registry for the process, passed down; nothing registers globally.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ql, err := resolver.OpenQueryLog(cfg.QueryLog.Output, cfg.QueryLog.AllQueries, cfg.QueryLog.AnonymizeClients)
	if err != nil {
		return fail(err)
	}
	defer ql.Close()
	h.QueryLog = ql
	h.Activity = resolver.NewActivity(1000, 1024)
	h.Metrics = resolver.NewMetrics(reg, version, &h.Counters, func() int { return h.State().Cache.Len() }, func() *resolver.QueryLog { return h.QueryLog })
	h.Metrics.SetState(st)
	h.Metrics.Reloads.WithLabelValues("success").Inc()
	h.Metrics.LastReload.SetToCurrentTime()
	srv := &resolver.Server{Handler: h}
	if err := srv.Listen(cfg.Listen); err != nil {
		return fail(err)
	}
	// Reloads asked for over HTTP run on this goroutine, like SIGHUP.
	reloads := make(chan chan error)
	b := bound{dns: srv.Addrs()}
	if *cfg.HTTP != "" {
		a := &api{h: h, reg: reg, token: cfg.HTTPToken, reload: func() error {
			done := make(chan error, 1)
			reloads <- done
			return <-done
		}}
		hs, addr, err := startHTTP(*cfg.HTTP, a)
		if err != nil {
			srv.Shutdown(context.Background())
			return fail(err)
		}
		defer hs.Close()
		b.http = addr
	}
	logStart(log, b, st, cfg)
	if ready != nil {
		ready <- b
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	for {
		var sig os.Signal
		select {
		case done := <-reloads:
			done <- reload(log, h, &o, cfg)
			continue
		case sig = <-sigs:
		}
		if sig == syscall.SIGUSR1 {
			// logrotate has moved the query log away: start a new file.
			if err := ql.Reopen(); err != nil {
				log.Error("reopening the query log", "err", err)
			}
			continue
		}
		if sig == syscall.SIGHUP {
			reload(log, h, &o, cfg)
			continue
		}
		log.Info("shutting down", "signal", sig.String())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(ctx)
		cancel()
		h.State().Forwarder.Close()
		return 0
	}
}

// reload re-reads the config, documents and lists, builds a whole new state
// and swaps it in; a bad file keeps the running state and logs each error.
func reload(log *slog.Logger, h *resolver.Handler, o *serveOptions, running *policy.Config) error {
	cfg, err := o.load()
	var st *resolver.State
	var warns []string
	if err == nil {
		st, warns, err = resolver.NewState(cfg, h.State(), o.resolvConf, log)
	}
	for _, w := range warns {
		log.Warn(w)
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error("reload failed; the running config stays", "err", line)
		}
		h.Metrics.Reloads.WithLabelValues("failure").Inc()
		return err
	}
	h.Metrics.SetState(st)
	h.Metrics.Reloads.WithLabelValues("success").Inc()
	h.Metrics.LastReload.SetToCurrentTime()
	if !slices.Equal(cfg.Listen, running.Listen) {
		log.Warn("listen addresses changed; they take effect after a restart", "running", running.Listen, "config", cfg.Listen)
	}
	old := h.Swap(st)
	// Queries already forwarded by the old state finish on its sockets.
	time.AfterFunc(10*time.Second, old.Forwarder.Close)
	log.Info("reloaded", "groups", len(st.Policy.Groups)+1, "endpoints", len(st.Policy.Catalog.Entries))
	return nil
}

func logStart(log *slog.Logger, b bound, st *resolver.State, cfg *policy.Config) {
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
	log.Info("phonehome serving", "listen", strings.Join(b.dns, ","), "http", cmp.Or(b.http, "off"), "upstreams", strings.Join(ups, ","),
		"catalog", strings.Join(cat, ","), "groups", strings.Join(groups, ","), "config", cmp.Or(cfg.File, "built-in defaults"))
}

// Command profserve is phonehome's request path with a CPU profile around
// it, for bench/load.sh when PROFILE=1. phonehome itself has no profiling
// switch, so this wrapper assembles the same pieces "phonehome serve" does
// (policy.LoadConfig, resolver.NewState, resolver.NewHandler, resolver.Server)
// from a config file, profiles the CPU from SIGUSR1 to SIGUSR2 (so that a
// profile covers one load run, not the start-up or the warm-up) and writes a
// heap profile when SIGINT or SIGTERM stops it. It has none of serve's flags,
// no reload and no HTTP server; if serve's assembly changes, change this to
// match.
//
//	profserve -config FILE -cpuprofile FILE [-memprofile FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

func main() {
	config := flag.String("config", "", "phonehome config file (it must name its upstreams)")
	cpu := flag.String("cpuprofile", "", "write a CPU profile from SIGUSR1 to SIGUSR2 (or the end) here")
	mem := flag.String("memprofile", "", "write a heap profile here at the end")
	flag.Parse()
	if err := run(*config, *cpu, *mem); err != nil {
		fmt.Fprintln(os.Stderr, "profserve:", err)
		os.Exit(1)
	}
}

func run(config, cpu, mem string) error {
	if config == "" || cpu == "" {
		return fmt.Errorf("-config and -cpuprofile are required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := policy.LoadConfig(config)
	if err != nil {
		return err
	}
	if len(cfg.Upstreams) == 0 {
		return fmt.Errorf("%s names no upstreams; profserve never reads /etc/resolv.conf", config)
	}
	st, warns, err := resolver.NewState(cfg, nil, "/nonexistent", log)
	for _, w := range warns {
		log.Warn(w)
	}
	if err != nil {
		return err
	}
	f, err := os.Create(cpu)
	if err != nil {
		return err
	}
	defer f.Close()
	profiling, profiled := false, false // a file holds one profile
	defer func() {
		if profiling {
			pprof.StopCPUProfile()
		}
	}()

	h := resolver.NewHandler(st, log)
	srv := &resolver.Server{Handler: h}
	if err := srv.Listen(cfg.Listen); err != nil {
		return err
	}
	log.Info("profserve serving", "listen", srv.Addrs(), "cpuprofile", cpu)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGINT, syscall.SIGTERM)
	for sig := <-sigs; sig == syscall.SIGUSR1 || sig == syscall.SIGUSR2; sig = <-sigs {
		switch {
		case sig == syscall.SIGUSR1 && !profiled:
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			profiling, profiled = true, true
		case sig == syscall.SIGUSR2 && profiling:
			pprof.StopCPUProfile()
			profiling = false
		}
	}
	// The heap profile is taken before shutdown, while the cache is live.
	if mem != "" {
		if err := writeHeap(mem); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	h.State().Forwarder.Close()
	return nil
}

func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}

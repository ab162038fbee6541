// Package heapprofile lets bench/soak.sh (HEAP_PROFILE=1) see what stays on
// phonehome's heap over a soak, without a change to phonehome's code: the
// script builds cmd/phonehome with `go build -overlay`, adding one file to
// package main that imports this package for its side effect.
//
// Nothing happens unless PHONEHOME_HEAPDIR names a directory. Then every
// allocation of 16 KiB is sampled (Go's default is one per 512 KiB: too
// coarse to see a slow leak), and each SIGUSR2 runs a collection and writes
// a heap profile of what is still live to DIR/heap.1, heap.2 and so on;
// `go tool pprof -base heap.1 BINARY heap.2` then shows what grew. phonehome
// itself does not use SIGUSR2; bench/profile, whose heap writer this uses,
// does only when PHONEHOME_CPUPROFILE is set, which bench/soak.sh never sets.
package heapprofile

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/phonehome/phonehome/bench/profile"
)

// sampleRate is runtime.MemProfileRate while profiling.
const sampleRate = 16 << 10

func init() {
	if dir := os.Getenv("PHONEHOME_HEAPDIR"); dir != "" {
		runtime.MemProfileRate = sampleRate
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGUSR2)
		go serve(dir, sigs, nil)
	}
}

// serve writes heap profile n to dir on the n-th value from sigs, and
// reports its path to done, if not nil, until sigs is closed.
func serve(dir string, sigs <-chan os.Signal, done chan<- string) {
	n := 0
	for range sigs {
		n++
		path := filepath.Join(dir, fmt.Sprintf("heap.%d", n))
		if err := profile.WriteHeap(path); err != nil {
			fmt.Fprintln(os.Stderr, "bench/soak/heapprofile:", err)
		}
		if done != nil {
			done <- path
		}
	}
}

// Package profile lets bench/load.sh take a CPU profile of the real phonehome
// binary without a change to phonehome's code: with PROFILE=1 the script
// builds cmd/phonehome with `go build -overlay`, adding one file to package
// main that imports this package for its side effect.
//
// Nothing happens unless PHONEHOME_CPUPROFILE names a file. Then SIGUSR2
// starts the CPU profile, and a second SIGUSR2 stops it, writes it, and
// writes a heap profile to PHONEHOME_MEMPROFILE if that is set; so a profile
// covers one load run and not the start-up or the warm-up. phonehome itself
// does not use SIGUSR2 (SIGUSR1 reopens its query log).
package profile

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

func init() {
	cpu := os.Getenv("PHONEHOME_CPUPROFILE")
	if cpu == "" {
		return
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR2)
	go func() {
		<-sigs
		f, err := os.Create(cpu)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/profile:", err)
			return
		}
		<-sigs
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench/profile:", err)
		}
		if mem := os.Getenv("PHONEHOME_MEMPROFILE"); mem != "" {
			if err := WriteHeap(mem); err != nil {
				fmt.Fprintln(os.Stderr, "bench/profile:", err)
			}
		}
	}()
}

// WriteHeap writes a heap profile of what is live after a collection
// (bench/soak/heapprofile uses it too).
func WriteHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

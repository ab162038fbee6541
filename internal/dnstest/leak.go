package dnstest

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// LeftRunning waits up to wait for every goroutine whose stack mentions one
// of the markers (package paths such as "/resolver.") to end, and returns an
// error listing those still running. Tests call it from TestMain to show that
// nothing they started leaks.
func LeftRunning(wait time.Duration, markers ...string) error {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		// The first goroutine is this one.
		stacks := strings.Split(string(buf), "\n\n")[1:]
		var left []string
		for _, s := range stacks {
			for _, m := range markers {
				if strings.Contains(s, m) {
					left = append(left, s)
					break
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("goroutines left running after the tests:\n\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

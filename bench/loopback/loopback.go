// Package loopback gives the benchmark's load tools (bench/soak/flood,
// bench/loadtls) their client addresses: loopback only, so that nothing
// they send can leave the machine.
package loopback

import (
	"errors"
	"fmt"
	"net/netip"
)

// Sources returns n loopback addresses from first on, or says why not (as
// the tools' -from and -sources flags: first off loopback, or a range that
// runs off it).
func Sources(first string, n int) ([]netip.Addr, error) {
	a, err := netip.ParseAddr(first)
	if err != nil {
		return nil, fmt.Errorf("-from: %w", err)
	}
	if n < 1 {
		return nil, errors.New("-sources must be at least 1")
	}
	out := make([]netip.Addr, n)
	for i := range out {
		if !a.IsValid() || !a.IsLoopback() {
			return nil, fmt.Errorf("-from %s -sources %d: only loopback addresses are used", first, n)
		}
		out[i] = a
		a = a.Next()
	}
	return out, nil
}

//go:build !linux

package resolver

import "syscall"

// canReusePort: elsewhere each address gets one UDP socket, read by
// several loops.
const canReusePort = false

func reusePort(network, address string, c syscall.RawConn) error { return nil }

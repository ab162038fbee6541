//go:build !linux

package resolver

import "net"

// awaitReadable returns at once: the reader's own read waits.
func awaitReadable(net.Conn) error { return nil }

package resolver

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// canReusePort: Linux spreads the datagrams of one address over several
// sockets bound to it with SO_REUSEPORT, by a hash of the client's address
// and port.
const canReusePort = true

// reusePort sets SO_REUSEPORT on a socket before it is bound.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

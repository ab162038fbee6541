package resolver

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// awaitReadable waits until the connection's socket has something to
// read (or an error to report), and returns nil; or until the connection
// is closed or its read deadline passes, and returns that error. It waits
// through the poller with a few small frames on the stack, where a read
// through crypto/tls and bufio takes twice the stack: an idle
// connection's goroutine waits here, and a thousand of them keep 2 MB
// less. Bytes a TLS connection already holds in part are not looked at:
// the rest of their record is what is awaited, so it is called only
// after a read found no whole record.
func awaitReadable(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	for !ok {
		w, wraps := c.(interface{ NetConn() net.Conn }) // TLS, the gate
		if !wraps {
			return nil
		}
		c = w.NetConn()
		sc, ok = c.(syscall.Conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(err, unix.EAGAIN)
	})
}

package dnstest

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// trackListener records the connections it accepts on u, so that u can
// count them and close them from the server's side.
type trackListener struct {
	net.Listener
	u *Upstream
}

func (l *trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, u: l.u}
	l.u.mu.Lock()
	l.u.accepted++
	l.u.open[tc] = struct{}{}
	l.u.mu.Unlock()
	return tc, nil
}

// trackedConn is an accepted connection that leaves its Upstream's open
// set when it is closed, by either server.
type trackedConn struct {
	net.Conn
	u    *Upstream
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.u.mu.Lock()
		delete(c.u.open, c)
		c.u.mu.Unlock()
	})
	return c.Conn.Close()
}

// streamServer answers DNS over TCP, or over TLS when its listener is a TLS
// one, each query in a goroutine of its own, so that the answers to queries
// pipelined on one connection go back as each is ready, in any order (RFC
// 7766, section 6.2.1.1). miekg/dns's server answers a connection's queries
// one after another.
type streamServer struct {
	l  net.Listener
	h  dns.Handler
	wg sync.WaitGroup // the accept loop, each connection's reader, each query

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// serveStream serves l with h until the returned stop is called; stop
// returns once every goroutine the server started has returned.
func serveStream(l net.Listener, h dns.Handler) (stop func() error) {
	s := &streamServer{l: l, h: h, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s.stop
}

func (s *streamServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return // the listener is closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn reads queries from c until it is closed, by the client, the
// server or a handler.
func (s *streamServer) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	w := &streamWriter{c: c, conn: &dns.Conn{Conn: c}}
	for {
		var hdr dns.Header
		b, err := w.conn.ReadMsgHeader(&hdr)
		if err != nil {
			return
		}
		// What miekg/dns's server drops or refuses before the handler
		// (not a query, not exactly one question) is dropped here.
		m := new(dns.Msg)
		if dns.DefaultMsgAcceptFunc(hdr) != dns.MsgAccept || m.Unpack(b) != nil {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.h.ServeDNS(w, m)
		}()
	}
}

func (s *streamServer) stop() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close() // ends its reader; a handler's write fails
	}
	s.mu.Unlock()
	s.l.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("shutting down: handlers still running after %v", stopTimeout)
	}
}

// streamWriter is the dns.ResponseWriter of one connection of a
// streamServer, shared by the handlers of its queries.
type streamWriter struct {
	c    net.Conn
	mu   sync.Mutex // one answer at a time on the connection
	conn *dns.Conn
}

func (w *streamWriter) LocalAddr() net.Addr  { return w.c.LocalAddr() }
func (w *streamWriter) RemoteAddr() net.Addr { return w.c.RemoteAddr() }

func (w *streamWriter) WriteMsg(m *dns.Msg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn.WriteMsg(m)
}

// Write sends b as one message, with its two-byte length, as miekg/dns's
// TCP writer does.
func (w *streamWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn.Write(b)
}

func (w *streamWriter) Close() error        { return w.c.Close() }
func (w *streamWriter) TsigStatus() error   { return nil }
func (w *streamWriter) TsigTimersOnly(bool) {}
func (w *streamWriter) Hijack()             {}

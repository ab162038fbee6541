package resolver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// tcpServer answers DNS over one TCP listener (RFC 7766). Each connection
// has a reader that hands each query to the request path as the UDP loop
// does: what can be answered at once (refused, sinkholed, cached) is
// answered by the reader; a cache miss goes on in a goroutine of its own
// (HandOff), so the queries pipelined behind it are answered meanwhile,
// out of order as RFC 7766 allows. Answers on a connection are written one
// at a time.
//
// A client cannot hold what upstream queries need: the tcpGate bounds the
// connections open, in all and per client address, and refuses clients
// outside access.allow before reading anything; a connection is closed
// when it sits idle, or when a message is not all there soon after its
// first byte.
//
// DNS over TLS (RFC 7858, tls_listen) is this loop on a tls.Listener: the
// gate admits or closes a connection before its handshake, which must then
// be done within the idle timeout of plain TCP; from then on the
// connection waits for its next query for the longer idle timeout of
// encrypted connections, since a new one costs the client a handshake
// (RFC 7858, section 3.4).
type tcpServer struct {
	h    *Handler
	ln   net.Listener
	gate *tcpGate
	// transport is TransportTCP, or TransportDoT for a TLS listener.
	transport Transport

	stopping atomic.Bool
	mu       sync.Mutex
	conns    map[*tcpConn]struct{}
	wg       sync.WaitGroup // the accept loop and each connection's reader
}

// TCPLimits bound DNS over TCP. Zero fields get the defaults.
type TCPLimits struct {
	// Conns bounds the connections open at once, over every listen
	// address: 256, or fewer when the open-file limit is low (see
	// defaultTCPConns). PerClient bounds those from one client address
	// (16).
	Conns, PerClient int
	// Idle is how long a connection may wait for the first byte of its
	// next query (5 s), and a DNS-over-TLS one for its handshake to be
	// done (DNS over HTTPS: the message time, as net/http has it);
	// Message how long the rest of a message may take once its first
	// byte has come (3 s), however it is sliced.
	Idle, Message time.Duration
	// TLSIdle is Idle for a DNS-over-TLS or DNS-over-HTTPS connection
	// once its handshake is done (30 s, unbound's tcp-idle-timeout):
	// browsers and Android's Private DNS pause between queries, and each
	// new connection costs them a TLS handshake (RFC 7858, section 3.4).
	TLSIdle time.Duration
}

const (
	defaultTCPPerClient = 16
	defaultTCPIdle      = 5 * time.Second  // RFC 7766 section 6.2.3: a few seconds
	defaultTCPMessage   = 3 * time.Second  // room for a lost segment's retransmission
	defaultTLSIdle      = 30 * time.Second // unbound's tcp-idle-timeout
	// tcpWriteTimeout cuts a client that does not take its answers.
	tcpWriteTimeout = 5 * time.Second
	// tcpQuery is the longest message read; a longer one is no query and
	// ends the connection.
	tcpQuery = 4096
	// tcpInFlight bounds the cache misses one connection has waiting at
	// once; past it, its reader waits for one to be answered.
	tcpInFlight = 32
	// tcpReadBuffer holds several pipelined queries: one read, not one
	// per query.
	tcpReadBuffer = 2048
	// tlsReadBuffer is the reader's buffer over TLS, which decrypts a
	// record a read, from its own buffer of what the socket gave: room
	// for a query or a request's frames, and 1.5 KB less than
	// tcpReadBuffer for each of a thousand idle connections.
	tlsReadBuffer = 512
)

func (l TCPLimits) withDefaults() TCPLimits {
	if l.Conns <= 0 {
		l.Conns = defaultTCPConns()
	}
	if l.PerClient <= 0 {
		l.PerClient = defaultTCPPerClient
	}
	if l.Idle <= 0 {
		l.Idle = defaultTCPIdle
	}
	if l.Message <= 0 {
		l.Message = defaultTCPMessage
	}
	if l.TLSIdle <= 0 {
		l.TLSIdle = defaultTLSIdle
	}
	return l
}

// defaultTCPConns is 256, or half of what the open-file limit leaves once
// 128 descriptors are kept for everything else (listeners, upstream
// sockets, the HTTP side, files) when that is less, but at least 16: TCP
// clients can take no more than half of the descriptors upstream queries
// need. (Go raises the soft limit to the hard one at start, so this reads
// the limit the process really has.)
func defaultTCPConns() int {
	nofile, ok := openFileLimit()
	if !ok {
		return 256
	}
	return min(256, tcpConnsFor(nofile))
}

// openFileLimit is the process's open-file limit (the soft one).
func openFileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return rl.Cur, true
}

// tcpConnsFor is how many connections an open-file limit of nofile has
// room for: two descriptors each (a connection, and what answering it
// may open), past 128 kept for the listeners, the upstream sockets and the
// files; at least 16.
func tcpConnsFor(nofile uint64) int {
	return int(max(16, (min(nofile, 1<<30)-min(nofile, 128))/2))
}

// maxTCPConns bounds access.max_connections.
const maxTCPConns = 1 << 20

// Why phonehome closed a TCP connection: at accept, without reading
// (access, limit, per_client), or later (idle, slow, write).
type tcpClose uint8

const (
	tcpAccess tcpClose = iota
	tcpLimit
	tcpPerClient
	tcpIdle
	tcpSlow
	tcpWrite
	numTCPCloses
)

var tcpCloseNames = [numTCPCloses]string{"access", "limit", "per_client", "idle", "slow", "write"}

// tcpGate admits TCP connections for every listener together: it counts
// those open, in all and per client address, and why it closed others.
type tcpGate struct {
	limits TCPLimits

	mu        sync.Mutex
	open      int
	perClient map[netip.Addr]int

	closed [numTCPCloses]atomic.Uint64
}

func newTCPGate(l TCPLimits) *tcpGate {
	return &tcpGate{limits: l.withDefaults(), perClient: map[netip.Addr]int{}}
}

// enter admits a connection from client, or counts why not: a client
// outside access.allow, or one connection too many in all or from client.
// A proxy (a trusted one, in front of DNS over HTTPS) carries the
// connections of many clients: it is held to the bound in all only.
func (g *tcpGate) enter(client netip.Addr, st *State, proxy bool) bool {
	why := tcpAccess
	if st.Allowed(client) {
		g.mu.Lock()
		switch {
		case g.open >= g.limits.Conns:
			why = tcpLimit
		case !proxy && g.perClient[client] >= g.limits.PerClient:
			why = tcpPerClient
		default:
			g.open++
			g.perClient[client]++
			g.mu.Unlock()
			return true
		}
		g.mu.Unlock()
	}
	g.closed[why].Add(1)
	return false
}

// leave counts a connection from client closed.
func (g *tcpGate) leave(client netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open--
	if g.perClient[client]--; g.perClient[client] <= 0 {
		delete(g.perClient, client)
	}
}

// conns returns the number of connections open.
func (g *tcpGate) conns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func newTCPServer(h *Handler, ln net.Listener, gate *tcpGate, t Transport) *tcpServer {
	return &tcpServer{h: h, ln: ln, gate: gate, transport: t, conns: map[*tcpConn]struct{}{}}
}

func (s *tcpServer) start() {
	s.wg.Add(1)
	go s.serve()
}

// serve accepts connections until shutdown.
func (s *tcpServer) serve() {
	defer s.wg.Done()
	acceptLoop(s.ln, &s.stopping, s.admit)
}

// acceptLoop hands each connection ln accepts to admit until ln is closed
// or stopping is set. After another error (out of file descriptors, say)
// it pauses, longer each time up to a second, so that an error that
// persists does not spin a core.
func acceptLoop(ln net.Listener, stopping *atomic.Bool, admit func(net.Conn)) {
	var pause time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			time.Sleep(pause)
			continue
		}
		pause = 0
		admit(nc)
	}
}

// admit starts a reader for a new connection, or closes it at once,
// unread: a client outside access.allow, or one too many.
func (s *tcpServer) admit(nc net.Conn) {
	client := addrOf(nc.RemoteAddr())
	if !s.gate.enter(client, s.h.State(), false) {
		nc.Close()
		return
	}
	readers := &tcpReaders
	if _, ok := nc.(*tls.Conn); ok {
		readers = &tlsReaders
	}
	c := &tcpConn{s: s, conn: nc, client: client, readers: readers, r: readers.get(nc), waits: newHandOffs()}
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		nc.Close()
		s.gate.leave(client)
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go c.serve()
}

// shutdown stops accepting and reading, lets the queries in flight be
// answered until ctx ends, and closes every connection.
func (s *tcpServer) shutdown(ctx context.Context) error {
	s.stopping.Store(true)
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		// Wakes its reader, which closes the connection once the
		// queries it had read are answered.
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.conn.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// tcpConn is one client connection: its reader's state, and the
// dns.ResponseWriter its queries are answered through, which writes one
// answer at a time.
type tcpConn struct {
	s       *tcpServer
	conn    net.Conn
	client  netip.Addr
	r       *bufio.Reader // from readers; none while await waits
	readers *readerPool
	msg     []byte // the message being read
	waits   handOffs

	wire []byte // the reader's room for an answer of the wire path

	wmu  sync.Mutex
	pack []byte // the answer being written, packed
	out  []byte // and with its length in front
}

// serve reads messages and hands them to the request path until the
// client closes the connection, breaks a limit, or the server stops; then
// it closes the connection once the queries it read are answered.
func (c *tcpConn) serve() {
	idle := c.s.gate.limits.Idle
	if tc, ok := c.conn.(*tls.Conn); ok {
		// The handshake within the idle timeout of plain TCP: a client
		// that opened a connection and does nothing with it is cut as
		// soon as over TCP. Only then is the connection worth keeping.
		c.deadline(idle)
		if err := tc.Handshake(); err != nil {
			c.failed(err, tcpIdle)
			c.end()
			return
		}
		// The rest in a goroutine of its own: the handshake grew this
		// one's stack, which an idle connection need not keep (a
		// thousand of them held 10 MB more).
		go c.loop(c.s.gate.limits.TLSIdle)
		return
	}
	c.loop(idle)
}

// loop reads and answers queries until the connection ends. A loop that
// has answered queries and then waited idleProbe for the next hands the
// wait to a fresh goroutine (await): reading and answering grew its
// stack, twice what waiting takes, which a thousand idle DoT connections
// would keep (4 MB).
func (c *tcpConn) loop(idle time.Duration) {
	answered := false
	for {
		b, err := c.read(idle, answered)
		if errors.Is(err, errIdleProbe) {
			c.idle()
			c.deadline(idle - idleProbe)
			go c.await(idle)
			return
		}
		if err != nil {
			c.end()
			return
		}
		c.handle(b)
		answered = true
	}
}

// idle gives back what an idle connection can do without until the
// client writes again (see await): its read buffer, empty, to the pool,
// and the buffers of the last message read and the answers written.
func (c *tcpConn) idle() {
	c.readers.put(c.r)
	c.r, c.msg, c.wire = nil, nil, nil
	c.wmu.Lock()
	c.pack, c.out = nil, nil // a query handed off grows them again
	c.wmu.Unlock()
}

// await is the reader of a connection gone idle (see loop): it waits for
// the next query on a small stack (awaitReadable), until the read
// deadline the caller set, then reads on.
func (c *tcpConn) await(idle time.Duration) {
	if err := awaitReadable(c.conn); err != nil {
		c.failed(err, tcpIdle)
		c.end()
		return
	}
	c.r = c.readers.get(c.conn)
	c.loop(idle)
}

// readerPool lends read buffers of one size: a connection gone idle gives
// its own back, empty, and takes one again when the client writes (await).
type readerPool struct {
	size int
	pool sync.Pool
}

var (
	tcpReaders = readerPool{size: tcpReadBuffer}
	tlsReaders = readerPool{size: tlsReadBuffer}
)

func (p *readerPool) get(r io.Reader) *bufio.Reader {
	if b, ok := p.pool.Get().(*bufio.Reader); ok {
		b.Reset(r)
		return b
	}
	return bufio.NewReaderSize(r, p.size)
}

func (p *readerPool) put(b *bufio.Reader) {
	b.Reset(nil)
	p.pool.Put(b)
}

// errIdleProbe is read's when the connection has been idle for idleProbe.
var errIdleProbe = errors.New("idle")

// end closes the connection once the queries it read are answered.
func (c *tcpConn) end() {
	c.waits.wait()
	c.conn.Close()
	c.s.gate.leave(c.client)
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	c.s.wg.Done()
}

// errTooLong ends a connection whose message cannot be a query.
var errTooLong = errors.New("message too long for a query")

// read returns the next message. It waits up to idle for the message's
// first byte; from then the whole message must be there within the message
// timeout, however slowly it trickles in.
func (c *tcpConn) read(idle time.Duration, probe bool) ([]byte, error) {
	limits := &c.s.gate.limits
	if c.r.Buffered() == 0 {
		if probe = probe && idleProbe < idle; probe {
			c.deadline(idleProbe)
		} else {
			c.deadline(idle)
		}
		if _, err := c.r.Peek(1); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && probe && !c.s.stopping.Load() {
				return nil, errIdleProbe
			}
			return nil, c.failed(err, tcpIdle)
		}
	}
	c.deadline(limits.Message)
	var length [2]byte
	if _, err := io.ReadFull(c.r, length[:]); err != nil {
		return nil, c.failed(err, tcpSlow)
	}
	n := int(binary.BigEndian.Uint16(length[:]))
	if n > tcpQuery {
		c.s.h.counters.Malformed.Add(1)
		return nil, errTooLong
	}
	if cap(c.msg) < n {
		c.msg = make([]byte, max(n, 512))
	}
	b := c.msg[:n]
	if _, err := io.ReadFull(c.r, b); err != nil {
		return nil, c.failed(err, tcpSlow)
	}
	return b, nil
}

// deadline sets the read deadline d from now. Once the server is stopping
// every read fails at once: shutdown sets stopping, then each deadline in
// the past, so a deadline set here after that is undone here.
func (c *tcpConn) deadline(d time.Duration) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	if c.s.stopping.Load() {
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// failed counts a read that timed out, unless the server is stopping,
// under why, and returns err.
func (c *tcpConn) failed(err error, why tcpClose) error {
	if ne, ok := err.(net.Error); ok && ne.Timeout() && !c.s.stopping.Load() {
		c.s.gate.closed[why].Add(1)
	}
	return err
}

// handle unpacks one message and hands it to the request path. Too short
// for a header, it is dropped and counted; a response is dropped, as
// answering it could start a loop between servers; a body that does not
// parse is counted and gets a bare FORMERR, as miekg/dns's server answered.
func (c *tcpConn) handle(b []byte) {
	h := c.s.h
	if len(b) < 12 {
		h.counters.Malformed.Add(1)
		return
	}
	if b[2]&0x80 != 0 { // QR: a response
		return
	}
	if h.serveWire(c, b, time.Now()) != wireNotMine { // cache hits and sinkholed names, mostly (wire.go)
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		h.counters.Malformed.Add(1)
		m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: binary.BigEndian.Uint16(b), Response: true, Opcode: int(b[2]>>3) & 0xF, Rcode: dns.RcodeFormatError}}
		c.WriteMsg(m)
		return
	}
	h.ServeDNS(c, req)
}

// HandOff serves m, a query waiting for an upstream, in a goroutine of
// its own, so that the reader goes on to the queries pipelined behind it.
func (c *tcpConn) HandOff(m miss) { c.waits.run(func() { m.serve(c) }) }

// handOffs runs a connection's queries that wait for the upstreams, each
// in a goroutine of its own, at most tcpInFlight at once: past that, the
// connection's reader waits for one to end.
type handOffs struct {
	slots chan struct{}
	wg    *sync.WaitGroup
}

func newHandOffs() handOffs {
	return handOffs{slots: make(chan struct{}, tcpInFlight), wg: new(sync.WaitGroup)}
}

func (h handOffs) run(f func()) {
	h.slots <- struct{}{}
	h.wg.Add(1)
	go func() {
		defer func() {
			<-h.slots
			h.wg.Done()
		}()
		f()
	}()
}

// wait returns once every query handed off has ended.
func (h handOffs) wait() { h.wg.Wait() }

func (c *tcpConn) WriteMsg(m *dns.Msg) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := m.PackBuffer(c.pack[:cap(c.pack)])
	if err != nil {
		return err
	}
	c.pack = b[:0] // PackBuffer grew it if it had to: keep the larger one
	return c.send(b)
}

func (c *tcpConn) wireBuf() []byte { return c.wire }

func (c *tcpConn) wireSend(b []byte) {
	c.wire = b[:0]
	c.Write(b)
}

func (c *tcpConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.send(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// send writes b with its two-byte length, in one write. A client that
// does not take its answers within tcpWriteTimeout, or is gone, loses the
// connection, which also ends its reader. The caller holds wmu.
func (c *tcpConn) send(b []byte) error {
	if len(b) > dns.MaxMsgSize {
		return dns.ErrBuf
	}
	c.out = binary.BigEndian.AppendUint16(c.out[:0], uint16(len(b)))
	c.out = append(c.out, b...)
	c.conn.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
	if _, err := c.conn.Write(c.out); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.s.gate.closed[tcpWrite].Add(1)
		}
		c.conn.Close()
		return err
	}
	return nil
}

func (c *tcpConn) LocalAddr() net.Addr  { return c.conn.LocalAddr() }
func (c *tcpConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }
func (c *tcpConn) Close() error         { return c.conn.Close() }
func (c *tcpConn) TsigStatus() error    { return nil }
func (c *tcpConn) TsigTimersOnly(bool)  {}
func (c *tcpConn) Hijack()              {}

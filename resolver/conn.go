package resolver

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Persistent connections to tcp:// and tls:// upstreams, and to plain ones
// for answers that came back truncated over UDP (RFC 7766).
const (
	// poolConns is how many connections an upstream gets at most.
	poolConns = 4
	// pipelineDepth is how many queries may wait on each open connection
	// before another is opened: a quiet network keeps one connection, a
	// busy one spreads its queries over poolConns. Past that, queries wait
	// on the connection with the fewest.
	pipelineDepth = 8
	// connIdle is how long a connection with no query waiting stays open.
	// Servers close idle ones themselves (unbound after 30 s, miekg/dns
	// after 8 s); a query that meets such a close is sent again.
	connIdle = 10 * time.Second
)

// errConnLost is wrapped by the error of a query whose connection closed or
// failed before its answer came: the query is sent again on another.
var errConnLost = errors.New("connection lost")

// errStalled closes a connection on which a query timed out and nothing at
// all was read since it was sent: a server that has gone away without a
// word, or a middlebox that has forgotten the connection.
var errStalled = errors.New("nothing read from the connection while a query timed out")

// connPool keeps up to poolConns connections to one upstream over TCP or DNS
// over TLS. Queries are pipelined: each connection carries several at once,
// written as they come and answered in any order, matched by ID and
// question, read by one goroutine per connection. A connection is dropped
// when the server closes it or a read or write fails, and closed after
// connIdle without a query; the next query opens a new one.
type connPool struct {
	network string // "tcp" or "tcp-tls", as miekg/dns names them
	addr    string
	tls     *tls.Config
	idle    time.Duration // connIdle; tests shorten it

	mu      sync.Mutex
	conns   []*streamConn
	dialing *dialCall // the dial in progress, if any
	closed  bool
	readers sync.WaitGroup
}

// dialCall is one dial that queries finding no connection wait for.
type dialCall struct {
	done chan struct{}
	err  error
}

// streamConn is one connection of a connPool.
type streamConn struct {
	pool *connPool
	conn *dns.Conn
	wmu  sync.Mutex // one message written at a time
	// lastRead is when an answer was last read (UnixNano).
	lastRead atomic.Int64

	mu      sync.Mutex // after pool.mu when both are held
	waiting map[uint16]*waiter
	idle    *time.Timer // closes the connection; runs while nothing waits
	since   time.Time   // when the last query stopped waiting
	dead    bool
	err     error         // why it died
	done    chan struct{} // closed when it dies
}

func newConnPool(network, addr string, cfg *tls.Config) *connPool {
	return &connPool{network: network, addr: addr, tls: cfg, idle: connIdle}
}

// exchange asks q over a pooled connection, and once more on another when
// that connection dies before the answer comes and the deadline allows.
func (p *connPool) exchange(ctx context.Context, deadline time.Time, q *dns.Msg) (*dns.Msg, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	r, err := p.exchangeOn(ctx, deadline, t.C, q)
	if errors.Is(err, errConnLost) && ctx.Err() == nil && time.Now().Before(deadline) {
		r, err = p.exchangeOn(ctx, deadline, t.C, q)
	}
	return r, err
}

func (p *connPool) exchangeOn(ctx context.Context, deadline time.Time, expired <-chan time.Time, q *dns.Msg) (*dns.Msg, error) {
	w := &waiter{q: q, ch: make(chan result, 1)}
	c, err := p.get(ctx, deadline, expired, w)
	if err != nil {
		return nil, err
	}
	defer c.forget(w)
	sent := time.Now()
	if err := c.write(q, deadline); err != nil {
		c.fail(err)
		return nil, fmt.Errorf("%w: writing: %w", errConnLost, err)
	}
	select {
	case res := <-w.ch:
		return res.r, nil
	case <-c.done:
		// An answer read just before the connection died still counts.
		select {
		case res := <-w.ch:
			return res.r, nil
		default:
		}
		return nil, fmt.Errorf("%w: %w", errConnLost, c.err)
	case <-expired:
		if c.lastRead.Load() < sent.UnixNano() {
			c.fail(errStalled)
		}
		return nil, context.DeadlineExceeded
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// get returns a connection with w registered on it under a fresh ID. It
// takes the open connection with the fewest queries waiting, and opens
// another when each has pipelineDepth and the pool has room, or when there
// is none. Queries that find no connection while one is being dialled wait
// for that dial and share its outcome.
func (p *connPool) get(ctx context.Context, deadline time.Time, expired <-chan time.Time, w *waiter) (*streamConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, net.ErrClosed
		}
		c, n := p.leastBusy()
		if c != nil && (n < pipelineDepth || len(p.conns) >= poolConns || p.dialing != nil) {
			c.register(w)
			p.mu.Unlock()
			return c, nil
		}
		if d := p.dialing; d != nil {
			p.mu.Unlock()
			select {
			case <-d.done:
				if d.err != nil {
					return nil, d.err
				}
				continue
			case <-expired:
				return nil, context.DeadlineExceeded
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		d := &dialCall{done: make(chan struct{})}
		p.dialing = d
		p.mu.Unlock()

		conn, err := p.dial(ctx, deadline)

		p.mu.Lock()
		p.dialing = nil
		d.err = err
		close(d.done)
		if err == nil && p.closed {
			err = net.ErrClosed
			conn.Close()
		}
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		c = p.add(conn)
		c.register(w)
		p.mu.Unlock()
		return c, nil
	}
}

// leastBusy returns the open connection with the fewest queries waiting,
// and how many, or nil. The caller holds p.mu, which keeps that number from
// growing.
func (p *connPool) leastBusy() (*streamConn, int) {
	var best *streamConn
	n := 0
	for _, c := range p.conns {
		c.mu.Lock()
		k := len(c.waiting)
		c.mu.Unlock()
		if best == nil || k < n {
			best, n = c, k
		}
	}
	return best, n
}

// dial opens a connection, with the TLS handshake for DNS over TLS, by the
// query's deadline.
func (p *connPool) dial(ctx context.Context, deadline time.Time) (*dns.Conn, error) {
	c := &dns.Client{Net: p.network, TLSConfig: p.tls, Dialer: &net.Dialer{Deadline: deadline}}
	conn, err := c.DialContext(ctx, p.addr)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", certHint(err))
	}
	// Answers are read through a buffer: a length and its message, often
	// several answers, in one read.
	conn.Conn = &bufConn{Conn: conn.Conn, r: bufio.NewReader(conn.Conn)}
	return conn, nil
}

// add makes conn one of the pool's and starts its reader. The caller holds
// p.mu.
func (p *connPool) add(conn *dns.Conn) *streamConn {
	c := &streamConn{pool: p, conn: conn, waiting: map[uint16]*waiter{}, done: make(chan struct{})}
	c.idle = time.AfterFunc(p.idle, c.closeIdle)
	c.idle.Stop() // armed when the first query stops waiting
	c.lastRead.Store(time.Now().UnixNano())
	p.conns = append(p.conns, c)
	p.readers.Add(1)
	go c.read()
	return c
}

// register gives w's query an ID no other query waiting on c has. The
// caller holds c.pool.mu.
func (c *streamConn) register(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w.q.Id = freeID(c.waiting, randomID)
	c.waiting[w.q.Id] = w
	c.idle.Stop()
}

// forget removes w, if it still waits, and arms the idle timer when no query
// is left waiting.
func (c *streamConn) forget(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// read() removes a waiter it answers, and then the ID is free for
	// another query: remove only our own.
	if c.waiting[w.q.Id] == w {
		delete(c.waiting, w.q.Id)
	}
	if len(c.waiting) == 0 && !c.dead {
		c.since = time.Now()
		c.idle.Reset(c.pool.idle)
	}
}

// write sends q, giving up at the deadline.
func (c *streamConn) write(q *dns.Msg, deadline time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(deadline)
	return c.conn.WriteMsg(q)
}

// read delivers answers to the queries waiting for them until the
// connection fails or is closed.
func (c *streamConn) read() {
	defer c.pool.readers.Done()
	for {
		b, err := c.conn.ReadMsgHeader(nil)
		if err != nil {
			c.fail(err)
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		r := new(dns.Msg)
		if r.Unpack(b) != nil {
			continue
		}
		c.mu.Lock()
		w := c.waiting[r.Id]
		if w != nil && sameQuestion(w.q, r) {
			delete(c.waiting, r.Id)
			w.ch <- result{r: r} // buffered
		}
		c.mu.Unlock()
	}
}

// closeIdle closes the connection when it has had no query for the idle
// time. It runs from the idle timer, which may fire just as a query takes
// the connection: that query's registration (under pool.mu) wins.
func (c *streamConn) closeIdle() {
	p := c.pool
	p.mu.Lock()
	c.mu.Lock()
	idle := !c.dead && len(c.waiting) == 0 && time.Since(c.since) >= p.idle
	c.mu.Unlock()
	p.mu.Unlock()
	if idle {
		c.fail(errors.New("idle"))
	}
}

// fail takes the connection out of the pool and closes it, once; the
// queries waiting on it see err.
func (c *streamConn) fail(err error) {
	p := c.pool
	p.mu.Lock()
	for i, o := range p.conns {
		if o == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	c.mu.Lock()
	first := !c.dead
	if first {
		c.dead, c.err = true, err
		c.idle.Stop()
		close(c.done)
	}
	c.mu.Unlock()
	p.mu.Unlock()
	if first {
		c.conn.Close()
	}
}

// close closes every connection and returns once their readers have
// returned. Queries still waiting fail, and later ones get net.ErrClosed.
func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	conns := append([]*streamConn(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		c.fail(net.ErrClosed)
	}
	p.readers.Wait()
}

// bufConn is a net.Conn read through a buffer.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

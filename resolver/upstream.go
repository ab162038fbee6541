package resolver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Upstream is one resolver phonehome forwards to. Plain upstreams are asked
// over UDP from a pool of sockets and again over TCP when the answer is
// truncated; tcp:// and tls:// upstreams are asked over TCP or DNS over TLS,
// https:// ones over DNS over HTTPS. TCP and TLS connections are kept open
// and shared by queries (conn.go), and so are HTTPS ones (doh.go).
type Upstream struct {
	Name  string // as written in the config
	addr  string
	net   string // "udp", "tcp", "tcp-tls" or "https"
	tls   *tls.Config
	pool  *udpPool   // plain upstreams
	conns *connPool  // TCP or TLS: all of a tcp:// or tls:// upstream's queries, a plain one's truncated answers
	doh   *dohClient // https:// upstreams
	// ca is the digest of the upstream_tls_ca file the certificates of a
	// tls:// or https:// upstream are verified with (zero without one).
	ca [sha256.Size]byte

	metrics *Metrics // set by Metrics.SetState

	// downUntil is when a failed upstream may be tried again (UnixNano);
	// zero while it is healthy.
	downUntil atomic.Int64
	// timeouts counts the exchanges in a row that timed out: downAfter of
	// them back the upstream off.
	timeouts atomic.Int32
	// answeredAt is when it last answered (UnixNano).
	answeredAt atomic.Int64
	// srtt is the smoothed round-trip time of its answers (nanoseconds;
	// zero before the first), which its hedge delay is a multiple of.
	srtt atomic.Int64
	// refs counts the forwarders using the upstream.
	refs atomic.Int32
}

// The hedge delay: how long a query waits for an upstream before the next
// one is asked too. It is hedgeRTTs times the upstream's smoothed
// round-trip time, within [hedgeMin, hedgeMax], and hedgeFirst before its
// first answer. hedgeMin keeps a healthy upstream's ordinary jitter (a
// garbage collection, a busy core) from doubling queries.
const (
	hedgeRTTs  = 3
	hedgeMin   = 20 * time.Millisecond
	hedgeMax   = time.Second
	hedgeFirst = 100 * time.Millisecond
)

// hedgeDelay is how long a query waits for u before asking the next
// upstream as well.
func (u *Upstream) hedgeDelay() time.Duration {
	s := time.Duration(u.srtt.Load())
	if s == 0 {
		return hedgeFirst
	}
	return min(max(hedgeRTTs*s, hedgeMin), hedgeMax)
}

// sampleRTT adds one answer's round-trip time to the smoothed one (weight
// 1/8, as TCP's).
func (u *Upstream) sampleRTT(took time.Duration) {
	for {
		old := u.srtt.Load()
		v := int64(took)
		if old != 0 {
			v = old + (v-old)/8
		}
		if v == 0 {
			v = 1
		}
		if u.srtt.CompareAndSwap(old, v) {
			return
		}
	}
}

// ParseUpstream makes an upstream of one written as ParseUpstreamAddr
// reads them: "host:port", "tcp://host:port", "tls://host:port#servername"
// or "https://host/path#address", verifying certificates against the
// system's roots.
func ParseUpstream(s string) (*Upstream, error) { return parseUpstream(s, nil) }

// parseUpstream is ParseUpstream with the roots that tls:// and https://
// upstreams verify certificates with (nil: the system's).
func parseUpstream(s string, roots *x509.CertPool) (*Upstream, error) {
	a, err := ParseUpstreamAddr(s)
	if err != nil {
		return nil, err
	}
	u := &Upstream{Name: s, net: "udp", addr: a.Addr}
	switch a.Scheme {
	case "tcp":
		u.net = "tcp"
	case "tls":
		u.net = "tcp-tls"
		// A session cache: a connection reopened after an idle close
		// resumes the TLS session instead of a full handshake.
		u.tls = &tls.Config{ServerName: a.ServerName, RootCAs: roots, MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(poolConns)}
	case "https":
		u.net = "https"
		u.doh = newDoHClient(a, roots)
		return u, nil
	}
	if u.net == "udp" {
		u.pool = newUDPPool(u.addr)
		u.conns = newConnPool("tcp", u.addr, nil)
	} else {
		u.conns = newConnPool(u.net, u.addr, u.tls)
	}
	return u, nil
}

// verifies reports whether the upstream checks a certificate, so that a
// changed upstream_tls_ca makes it anew.
func (u *Upstream) verifies() bool { return u.tls != nil || u.doh != nil }

// healthy reports whether the upstream may be asked now.
func (u *Upstream) healthy(now time.Time) bool {
	d := u.downUntil.Load()
	return d == 0 || now.UnixNano() >= d
}

// exchange asks a tcp://, tls:// or https:// upstream once, by the
// deadline or until ctx ends. (A plain upstream's queries are written and
// read by the forwarder's race itself: race.start.)
func (u *Upstream) exchange(ctx context.Context, deadline time.Time, q *dns.Msg) (*dns.Msg, error) {
	if u.doh != nil {
		return u.doh.exchange(ctx, deadline, q)
	}
	return u.conns.exchange(ctx, deadline, q)
}

// release drops one forwarder's hold on u, and closes its sockets and
// connections when no forwarder holds it: a reload hands an unchanged
// upstream, with its health and open connections, to the new forwarder.
func (u *Upstream) release() {
	if u.refs.Add(-1) == 0 {
		u.close()
	}
}

// close closes the upstream's sockets and connections; the readers of its
// TCP and TLS connections have returned when it returns.
func (u *Upstream) close() {
	if u.pool != nil {
		u.pool.close()
	}
	if u.conns != nil {
		u.conns.close()
	}
	if u.doh != nil {
		u.doh.close()
	}
}

// sameQuestion reports whether r answers q: same ID and the same question,
// name compared exactly as sent.
func sameQuestion(q, r *dns.Msg) bool {
	if r == nil || r.Id != q.Id || len(r.Question) != len(q.Question) {
		return false
	}
	for i := range q.Question {
		if r.Question[i] != q.Question[i] {
			return false
		}
	}
	return true
}

// udpPool keeps a few connected UDP sockets to one upstream, each from a
// random source port the kernel chose. A socket is retired after
// maxUses queries, so the ports keep changing and an off-path attacker
// cannot learn them; answers are matched to queries by ID and question, and
// a connected socket only receives from the upstream's address.
type udpPool struct {
	addr   string
	ids    func() uint16 // randomID; a test narrows it to make IDs collide
	mu     sync.Mutex
	socks  []*udpSock
	next   int
	closed bool
}

const (
	udpSockets = 4
	maxUses    = 500
)

type udpSock struct {
	conn    *net.UDPConn
	sq      *sendQueue // queries go out together (see sendQueue)
	ids     func() uint16
	mu      sync.Mutex
	waiting map[uint16]*waiter
	uses    int
	retired bool
}

// A waiter is one query waiting on a socket or connection for its answer,
// which the reader delivers to ch (buffered) with a.
type waiter struct {
	q  *dns.Msg
	a  *attempt
	ch chan result
	// question is q's question as packed and sent, which a plain answer
	// (plainAnswer) repeats byte for byte.
	question []byte
}

func newUDPPool(addr string) *udpPool { return &udpPool{addr: addr, ids: randomID} }

// sock returns a socket for one more query, dialling or renewing as needed,
// with w registered on it under a fresh ID. Registering here, under the
// pool's lock, matters: a socket handed out with no waiter yet could be
// retired and closed by another query before this one's answer arrives.
func (p *udpPool) sock(w *waiter) (*udpSock, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if len(p.socks) < udpSockets {
		s, err := p.dial()
		if err != nil {
			return nil, err
		}
		p.socks = append(p.socks, s)
		s.register(w)
		return s, nil
	}
	p.next = (p.next + 1) % len(p.socks)
	s := p.socks[p.next]
	s.mu.Lock()
	s.uses++
	worn := s.uses >= maxUses
	s.mu.Unlock()
	if worn {
		fresh, err := p.dial()
		if err != nil {
			return nil, err
		}
		p.socks[p.next] = fresh
		s.retire()
		s = fresh
	}
	s.register(w)
	return s, nil
}

// randomID is a random query ID: math/rand/v2's global source is
// cryptographically random.
func randomID() uint16 { return uint16(rand.Uint32()) }

// freeID returns a query ID from ids that no query in waiting has.
func freeID(waiting map[uint16]*waiter, ids func() uint16) uint16 {
	for {
		if id := ids(); waiting[id] == nil {
			return id
		}
	}
}

// register gives w's query an ID no other query waiting on s has.
func (s *udpSock) register(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.q.Id = freeID(s.waiting, s.ids)
	s.waiting[w.q.Id] = w
}

func (p *udpPool) dial() (*udpSock, error) {
	raddr, err := net.ResolveUDPAddr("udp", p.addr)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, err
	}
	s := &udpSock{conn: c, sq: newSendQueue(c), ids: p.ids, waiting: map[uint16]*waiter{}}
	go s.read()
	return s, nil
}

// retire closes the socket once its last query is answered or gives up.
func (s *udpSock) retire() {
	s.mu.Lock()
	s.retired = true
	idle := len(s.waiting) == 0
	s.mu.Unlock()
	if idle {
		s.conn.Close()
	}
}

// read delivers answers to the queries waiting for them.
func (s *udpSock) read() {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := s.conn.Read(buf)
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
			// An ICMP error for a query sent on this socket: nothing
			// listens at the upstream's address now, or it cannot be
			// reached. No query waiting here will be answered, so they
			// fail at once rather than time out, and the socket reads on.
			s.fail(err)
			continue
		}
		if err != nil {
			return // closed
		}
		if s.deliverPlain(buf[:n]) {
			continue
		}
		r := new(dns.Msg)
		if r.Unpack(buf[:n]) != nil {
			continue
		}
		s.mu.Lock()
		w := s.waiting[r.Id]
		if w != nil && sameQuestion(w.q, r) {
			delete(s.waiting, r.Id)
			w.ch <- result{a: w.a, r: r, wire: bytes.Clone(buf[:n])} // buffered
		}
		s.mu.Unlock()
	}
}

// deliverPlain hands b to the query waiting for it when b is a plain
// answer to it, as received, without unpacking it; it reports whether it
// did.
func (s *udpSock) deliverPlain(b []byte) bool {
	if len(b) < 12 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := binary.BigEndian.Uint16(b)
	w := s.waiting[id]
	if w == nil || !plainAnswer(b, w.question) {
		return false
	}
	wire := withoutOPT(b) // the reader's copy, as the cache keeps it
	if wire == nil {
		return false
	}
	delete(s.waiting, id)
	w.ch <- result{a: w.a, wire: wire} // buffered
	return true
}

// plainAnswer reports whether b is the commonest answer of all to the
// query whose packed question is question: NOERROR, not truncated, that
// question byte for byte, one or more A or AAAA records of its type whose
// names point to its name or repeat it, nothing in the authority section,
// and at most an
// OPT record without options in the additional one. The forwarder takes
// such an answer as received, without unpacking it (upstreamAnswer), and
// the checks are those that make miekg/dns unpack it without error when
// it has to after all.
func plainAnswer(b, question []byte) bool {
	if len(question) < 5 || len(b) < 12+len(question) || b[2]&0xfa != 0x80 || b[3]&0x0f != 0 ||
		binary.BigEndian.Uint16(b[4:]) != 1 || binary.BigEndian.Uint16(b[6:]) == 0 ||
		binary.BigEndian.Uint16(b[8:]) != 0 || binary.BigEndian.Uint16(b[10:]) > 1 ||
		!bytes.Equal(b[12:12+len(question)], question) {
		return false
	}
	qtype, size := binary.BigEndian.Uint16(question[len(question)-4:]), 0
	switch qtype {
	case dns.TypeA:
		size = net.IPv4len
	case dns.TypeAAAA:
		size = net.IPv6len
	default:
		return false
	}
	if binary.BigEndian.Uint16(question[len(question)-2:]) != dns.ClassINET {
		return false
	}
	name := question[:len(question)-4]
	off := 12 + len(question)
	for range binary.BigEndian.Uint16(b[6:]) {
		// The question's name, as a pointer to it (0xc00c) or written
		// out the same; type, class, TTL, the data's length and the
		// address.
		switch {
		case off+2 <= len(b) && b[off] == 0xc0 && b[off+1] == 12:
			off += 2
		case bytes.HasPrefix(b[off:], name):
			off += len(name)
		default:
			return false
		}
		if off+10+size > len(b) || binary.BigEndian.Uint16(b[off:]) != qtype ||
			binary.BigEndian.Uint16(b[off+2:]) != dns.ClassINET || int(binary.BigEndian.Uint16(b[off+8:])) != size {
			return false
		}
		off += 10 + size
	}
	if binary.BigEndian.Uint16(b[10:]) == 1 {
		// The OPT record: the root, its type, a size, no extended rcode,
		// a version and flags, and no options.
		if off+11 != len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT || b[off+5] != 0 ||
			binary.BigEndian.Uint16(b[off+9:]) != 0 {
			return false
		}
		off += 11
	}
	return off == len(b)
}

// questionOf is the question of a packed query.
func questionOf(b []byte) []byte {
	end, ok := skipName(b, 12)
	if !ok || end+4 > len(b) {
		return nil
	}
	return b[12 : end+4]
}

// fail ends the wait of every query waiting on s with err.
func (s *udpSock) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.waiting {
		delete(s.waiting, id)
		w.ch <- result{a: w.a, err: err} // buffered
	}
}

// send registers w on a socket and writes its query; the socket's reader
// delivers the answer to w.ch. The caller forgets w on the socket returned
// when it stops waiting, answered or not.
func (p *udpPool) send(w *waiter) (*udpSock, error) {
	// Packed before it is registered, which gives it its ID: the socket's
	// reader may read w's question as soon as w waits there.
	b, err := w.q.Pack()
	if err != nil {
		return nil, err
	}
	w.question = questionOf(b)
	s, err := p.sock(w)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(b, w.q.Id)
	if err := s.sq.send(b, nil, nil); err != nil {
		s.forget(w)
		return nil, err
	}
	return s, nil
}

// forget removes w, if it still waits, and closes a retired socket that no
// query waits on any more.
func (s *udpSock) forget(w *waiter) {
	s.mu.Lock()
	// read() removes a waiter it answers, and then the ID is free for
	// another query: remove only our own.
	if s.waiting[w.q.Id] == w {
		delete(s.waiting, w.q.Id)
	}
	closeNow := s.retired && len(s.waiting) == 0
	s.mu.Unlock()
	if closeNow {
		s.conn.Close()
	}
}

func (p *udpPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, s := range p.socks {
		s.conn.Close()
	}
	p.socks = nil
}

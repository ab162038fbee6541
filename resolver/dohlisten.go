package resolver

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// dohServer answers DNS over HTTPS (RFC 8484) on one https_listen address:
// GET and POST on /dns-query, over HTTP/2 or HTTP/1.1 as the client's ALPN
// says. It accepts the connections and makes their TLS handshakes itself;
// HTTP/2 connections it serves itself (doh2.go, for the cost of a query),
// HTTP/1.1 ones it hands to net/http. Each request is read (dohQuery, or
// doh2Conn), checked and unpacked (serveQuery), and handed to the same
// Handler.ServeDNS as UDP and TCP, with a dohWriter whose RemoteAddr is
// the client: the connection's peer, or what a trusted proxy's
// X-Forwarded-For names (dohClientAddr). The answer is the body, with
// Cache-Control private, max-age from its smallest TTL.
//
// The TCP bounds hold here too, with the same counts: the gate admits a
// connection in all and per client address (a trusted proxy, which
// carries many clients, in all only), and closes one from outside
// access.allow before its handshake; the handshake and a request not all
// there are bounded by the message timeout, and a connection idle for the
// idle timeout of encrypted connections (HTTP/1.1 between requests,
// HTTP/2 without a request being read) is closed.
//
// A request's body is read no further than a query, and nothing more is
// kept once the query goes to the upstreams: a client cannot have the
// server hold what it keeps sending meanwhile. HTTP/2's flow control
// windows for what clients send are HTTP/2's initial 64 KiB for a
// connection, given back as it is read, and a few queries' worth for a
// stream, never given back: what a connection's streams may send ahead of
// the request path is bounded by tens of kilobytes.
type dohServer struct {
	h        *Handler
	ln       net.Listener // the TCP listener, through the gate
	tc       *tls.Config
	gate     *tcpGate
	srv      *http.Server  // HTTP/1.1
	h1       *connListener // what srv accepts: HTTP/1.1 connections, handshake done
	stopping atomic.Bool
	mu       sync.Mutex
	conns    map[*doh2Conn]struct{} // HTTP/2 connections being served
	wg       sync.WaitGroup         // handshakes and HTTP/2 connections
	accepted chan struct{}          // closed when accept returned
	done     chan struct{}          // closed when both accept loops returned
}

const (
	// dohMaxHeader bounds a request's header: room for a GET of the
	// longest query (tcpQuery bytes, base64url) and ordinary headers.
	dohMaxHeader = 16 << 10
	// dohQueryPath is the one path answered.
	dohQueryPath = dohPath
	// dohConnWindow and dohStreamWindow are the HTTP/2 flow control
	// windows for what clients send: a connection's HTTP/2's initial 64
	// KiB, and a stream's four times the longest query (tcpQuery).
	// net/http's own are 1 MiB each, all of which a client may send
	// whether or not a handler reads it.
	dohConnWindow   = 64 << 10
	dohStreamWindow = 16 << 10
)

// newDoHServer serves DNS over HTTPS on ln, once started. answerWithin is
// how long a query may wait for the upstreams: the write timeout adds it to
// the time an answer may take to be sent.
func newDoHServer(h *Handler, ln net.Listener, gate *tcpGate, answerWithin time.Duration, log *slog.Logger) *dohServer {
	d := &dohServer{h: h, gate: gate, conns: map[*doh2Conn]struct{}{}, accepted: make(chan struct{}), done: make(chan struct{})}
	limits := gate.limits
	p := new(http.Protocols)
	p.SetHTTP1(true)
	d.tc = h.tlsConfig("h2", "http/1.1")
	d.srv = &http.Server{
		Handler:   d,
		Protocols: p,
		// A request not all there within the message time is cut; a
		// connection that has served queries is kept for the next ones
		// as long as DNS over TLS's.
		ReadHeaderTimeout: limits.Message,
		ReadTimeout:       limits.Message,
		WriteTimeout:      answerWithin + tcpWriteTimeout,
		IdleTimeout:       limits.TLSIdle,
		MaxHeaderBytes:    dohMaxHeader,
		// Broken requests are the client's business: logged at debug
		// level only.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	d.ln = &gateListener{Listener: ln, gate: gate, h: h}
	d.h1 = &connListener{ch: make(chan net.Conn), closed: make(chan struct{}), addr: ln.Addr()}
	return d
}

func (d *dohServer) start() {
	var loops sync.WaitGroup
	loops.Add(2)
	go func() {
		defer loops.Done()
		d.srv.Serve(d.h1)
	}()
	go func() {
		defer loops.Done()
		defer close(d.accepted)
		d.accept()
	}()
	go func() {
		loops.Wait()
		close(d.done)
	}()
}

// accept takes connections until shutdown, each to its handshake.
func (d *dohServer) accept() {
	acceptLoop(d.ln, &d.stopping, func(nc net.Conn) {
		d.wg.Add(1)
		go d.handshake(nc)
	})
}

// handshake makes a connection's TLS handshake, within the message time,
// and serves it over the protocol its ALPN chose.
func (d *dohServer) handshake(nc net.Conn) {
	defer d.wg.Done()
	tc := tls.Server(nc, d.tc)
	tc.SetDeadline(time.Now().Add(d.gate.limits.Message))
	if err := tc.Handshake(); err != nil || d.stopping.Load() {
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		// In a goroutine of its own: the handshake grew this one's
		// stack, which an idle connection need not keep.
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.serveH2(tc)
		}()
		return
	}
	d.h1.put(tc)
}

// track counts an HTTP/2 connection in, unless the server is stopping.
func (d *dohServer) track(c *doh2Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping.Load() {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *dohServer) untrack(c *doh2Conn) {
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
}

// shutdown stops accepting, lets the requests in flight be answered until
// ctx ends, and closes every connection.
func (d *dohServer) shutdown(ctx context.Context) error {
	d.stopping.Store(true)
	d.ln.Close()
	d.h1.Close()
	<-d.accepted // no handshake starts after this
	d.mu.Lock()
	for c := range d.conns {
		// Wakes its reader, which says GOAWAY and closes the connection
		// once the queries it had read are answered.
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
	d.mu.Unlock()
	err := d.srv.Shutdown(ctx)
	if err != nil {
		d.srv.Close()
	}
	h2 := make(chan struct{})
	go func() { d.wg.Wait(); close(h2) }()
	select {
	case <-h2:
	case <-ctx.Done():
		d.mu.Lock()
		for c := range d.conns {
			// The socket, not the TLS connection, whose Close would
			// write and wait for a client that may not read.
			c.conn.NetConn().Close()
		}
		d.mu.Unlock()
		<-h2
		err = ctx.Err()
	}
	<-d.done
	return err
}

// addr is the address the listener is bound to.
func (d *dohServer) addr() net.Addr { return d.ln.Addr() }

// connListener is the listener net/http serves HTTP/1.1 from: the
// connections handshake hands it.
type connListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func (l *connListener) put(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// ServeHTTP answers one DNS-over-HTTPS request over HTTP/1.1.
func (d *dohServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != dohQueryPath {
		http.NotFound(w, r)
		return
	}
	b, status, why := dohQuery(w, r)
	// Nothing more is read: whatever else the client sends on the stream
	// (a GET may carry a body too) is dropped, not kept while the query
	// waits for the upstreams.
	r.Body.Close()
	rep := httpReply{w}
	if status != 0 {
		rep.fail(status, why)
		return
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		peer = netip.AddrPort{} // net/http always gives ip:port
	}
	var local net.Addr
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local = la
	}
	d.serveQuery(rep, b, peer, r.Header.Values("X-Forwarded-For"), local)
}

// A dohReply sends a request's response, over HTTP/1.1 or HTTP/2.
type dohReply interface {
	// answer sends a DNS answer: 200, application/dns-message, with
	// Cache-Control private, max-age.
	answer(b []byte, maxAge uint32) error
	// fail sends an HTTP error, text, as http.Error does.
	fail(status int, why string)
}

// serveQuery answers the DNS query b of a request from peer, whose
// X-Forwarded-For headers are xff, that came to local.
func (d *dohServer) serveQuery(rep dohReply, b []byte, peer netip.AddrPort, xff []string, local net.Addr) {
	if len(b) < 12 {
		rep.fail(http.StatusBadRequest, "the message is shorter than a DNS header")
		return
	}
	// As over TCP: a response is no query, and a message that does not
	// parse is counted.
	if b[2]&0x80 != 0 {
		rep.fail(http.StatusBadRequest, "the message is a DNS response, not a query")
		return
	}
	client, ok := dohClientAddr(peer, xff, d.h.State().TrustedProxies)
	if !ok {
		rep.fail(http.StatusBadRequest, "X-Forwarded-For from a trusted proxy does not end in an address")
		return
	}
	dw := &dohWriter{rep: rep, remote: net.TCPAddrFromAddrPort(client), local: local}
	// Cache hits and sinkholed names, mostly, from the bytes (wire.go);
	// the rest through ServeDNS.
	if d.h.serveWire(dw, b, time.Now()) == wireNotMine {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			d.h.counters.Malformed.Add(1)
			rep.fail(http.StatusBadRequest, "the message is not a DNS query: "+err.Error())
			return
		}
		d.h.ServeDNS(dw, req)
	}
	if !dw.handed {
		dw.finish()
	}
}

// httpReply is a dohReply through net/http.
type httpReply struct{ w http.ResponseWriter }

func (r httpReply) answer(b []byte, maxAge uint32) error {
	h := r.w.Header()
	h.Set("Content-Type", dohMediaType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	// private: the answer is this client's. The decision depends on the
	// client's group and on pauses, so a shared cache (a proxy in front
	// of https_listen) must not give it to another client; the client's
	// own cache may keep it for the TTL (RFC 9111, section 5.2.2.7).
	h.Set("Cache-Control", "private, max-age="+strconv.FormatUint(uint64(maxAge), 10))
	_, err := r.w.Write(b)
	return err
}

func (r httpReply) fail(status int, why string) {
	if status == http.StatusMethodNotAllowed {
		r.w.Header().Set("Allow", "GET, POST")
	}
	http.Error(r.w, why, status)
}

// dohQuery reads the DNS message of an HTTP/1.1 request (RFC 8484, section
// 4.1): the dns parameter of a GET, or the body of a POST of
// application/dns-message, read no further than the longest query: a body
// that says or turns out to be longer gets 413 at once. Anything else gets
// a 4xx status and why.
func dohQuery(w http.ResponseWriter, r *http.Request) (b []byte, status int, why string) {
	switch r.Method {
	case http.MethodGet:
		return dohGetQuery(r.URL.Query())
	case http.MethodPost:
		if status, why := dohPostHeaders(r.Header.Get("Content-Type"), r.ContentLength); status != 0 {
			return nil, status, why
		}
		var err error
		if b, err = io.ReadAll(http.MaxBytesReader(w, r.Body, tcpQuery)); err != nil {
			var tooLong *http.MaxBytesError
			if errors.As(err, &tooLong) {
				return nil, http.StatusRequestEntityTooLarge, "the body is longer than a query"
			}
			return nil, http.StatusBadRequest, "reading the body: " + err.Error()
		}
		return b, 0, ""
	}
	return nil, http.StatusMethodNotAllowed, "GET or POST"
}

// dohGetQuery reads the dns parameter of a GET: the query, base64url
// without padding (padding is forgiven).
func dohGetQuery(v url.Values) (b []byte, status int, why string) {
	dnsParam := v["dns"]
	if len(dnsParam) != 1 || dnsParam[0] == "" {
		return nil, http.StatusBadRequest, "a GET needs one dns parameter: the query, base64url"
	}
	return decodeDNSParam(dnsParam[0])
}

// decodeDNSParam decodes a GET's dns parameter: base64url without padding
// (padding is forgiven), no longer than a query.
func decodeDNSParam(p string) (b []byte, status int, why string) {
	s := strings.TrimRight(p, "=")
	if base64.RawURLEncoding.DecodedLen(len(s)) > tcpQuery {
		return nil, http.StatusRequestURITooLong, "the dns parameter is longer than a query"
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, http.StatusBadRequest, "the dns parameter is not base64url"
	}
	return b, 0, ""
}

// dohPostHeaders checks a POST's Content-Type and Content-Length (-1 for
// none) before its body is read.
func dohPostHeaders(contentType string, contentLength int64) (status int, why string) {
	if !isDNSMessage(contentType) {
		return http.StatusUnsupportedMediaType, "a POST carries " + dohMediaType
	}
	if contentLength > tcpQuery {
		return http.StatusRequestEntityTooLarge, "the body is longer than a query"
	}
	return 0, ""
}

// dohClientAddr is the client of a request: the connection's peer or, when
// the peer is a trusted proxy (trusted_proxies), the address its
// X-Forwarded-For headers (xff) name. Each proxy appends the address it
// got the request from, so the header is read from the right, past
// trusted proxies, to the first address that is not one; an address a
// client wrote itself, further left, is never reached. ok is false when
// the entry that names the client is not an address.
func dohClientAddr(peer netip.AddrPort, xff []string, proxies []netip.Prefix) (client netip.AddrPort, ok bool) {
	if !peer.IsValid() {
		return netip.AddrPort{}, false
	}
	client = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if !inPrefixes(client.Addr(), proxies) {
		return client, true
	}
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			s := strings.TrimSpace(parts[j])
			if s == "" {
				continue
			}
			ip, err := forwardedAddr(s)
			if err != nil {
				return netip.AddrPort{}, false
			}
			client = netip.AddrPortFrom(ip, 0)
			if !inPrefixes(ip, proxies) {
				return client, true
			}
		}
	}
	return client, true // proxies all the way: the first of them
}

// forwardedAddr reads an X-Forwarded-For entry: an address, with a port or
// without.
func forwardedAddr(s string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return ip.WithZone("").Unmap(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}, errors.New("not an address")
	}
	return ap.Addr().WithZone("").Unmap(), nil
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// dohWriter is the dns.ResponseWriter of one DNS-over-HTTPS request: the
// answer is the response's body.
type dohWriter struct {
	rep    dohReply
	remote *net.TCPAddr // the client
	local  net.Addr     // where the request came to
	wrote  bool
	failed bool // the answer did not pack
	handed bool // HandOff ran the rest of the request path elsewhere
}

// WriteMsg sends the answer, 200 whatever its rcode (RFC 8484, section
// 4.2.1), with Cache-Control private, max-age from its smallest TTL.
func (d *dohWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		d.failed = true
		return err
	}
	return d.send(b, maxAge(m))
}

func (d *dohWriter) Write(b []byte) (int, error) {
	m := new(dns.Msg)
	age := uint32(0)
	if m.Unpack(b) == nil {
		age = maxAge(m)
	}
	if err := d.send(b, age); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (d *dohWriter) wireBuf() []byte { return nil }

func (d *dohWriter) wireSend(b []byte) { d.send(b, wireMaxAge(b)) }

func (d *dohWriter) send(b []byte, maxAge uint32) error {
	if d.wrote {
		return errors.New("a DNS-over-HTTPS request has one answer")
	}
	d.wrote = true
	return d.rep.answer(b, maxAge)
}

// finish answers a request the request path sent no answer to.
func (d *dohWriter) finish() {
	switch {
	case d.failed:
		// An answer that does not pack: over UDP or TCP none is sent.
		d.rep.fail(http.StatusInternalServerError, "the answer could not be sent")
	case !d.wrote:
		// Over the rate limit: a UDP or TCP query is dropped, and an
		// HTTP request has to be answered something.
		d.rep.fail(http.StatusTooManyRequests, "rate limit")
	}
}

// HandOff lets a query that waits for the upstreams do so in a goroutine
// of its own over HTTP/2, whose connection's reader goes on meanwhile;
// over HTTP/1.1 the request's own goroutine waits.
func (d *dohWriter) HandOff(m miss) {
	ho, ok := d.rep.(interface{ HandOff(func()) })
	if !ok {
		m.serve(d)
		return
	}
	d.handed = true
	ho.HandOff(func() {
		m.serve(d)
		d.finish()
	})
}

// maxAge is how long an HTTP cache may keep an answer (RFC 8484, section
// 5.1): the smallest TTL of its records, a SOA's being the lesser of its TTL
// and its MINIMUM, which is the answer's negative TTL (RFC 2308); 0 for an
// answer without records (REFUSED, SERVFAIL).
func maxAge(m *dns.Msg) uint32 {
	age, seen := uint32(0), false
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			ttl := h.Ttl
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = min(ttl, soa.Minttl)
			}
			if !seen || ttl < age {
				age, seen = ttl, true
			}
		}
	}
	return age
}

func (d *dohWriter) LocalAddr() net.Addr  { return d.local }
func (d *dohWriter) RemoteAddr() net.Addr { return d.remote }
func (d *dohWriter) Close() error         { return nil }
func (d *dohWriter) TsigStatus() error    { return nil }
func (d *dohWriter) TsigTimersOnly(bool)  {}
func (d *dohWriter) Hijack()              {}

// gateListener admits the connections of a DNS-over-HTTPS listener through
// the gate of every TCP listener: a client outside access.allow, or one
// connection too many, is closed at once, before its handshake.
type gateListener struct {
	net.Listener
	gate *tcpGate
	h    *Handler
}

func (l *gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := addrOf(c.RemoteAddr())
		st := l.h.State()
		if l.gate.enter(client, st, inPrefixes(client, st.TrustedProxies)) {
			return &gatedConn{Conn: c, gate: l.gate, client: client}, nil
		}
		c.Close()
	}
}

// gatedConn leaves the gate when it is closed, however many times.
type gatedConn struct {
	net.Conn
	gate   *tcpGate
	client netip.Addr
	once   sync.Once
}

func (c *gatedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.gate.leave(c.client) })
	return err
}

// NetConn is the connection gated, as tls.Conn's is (awaitReadable).
func (c *gatedConn) NetConn() net.Conn { return c.Conn }

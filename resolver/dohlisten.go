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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// dohServer answers DNS over HTTPS (RFC 8484) on one https_listen address:
// GET and POST on /dns-query, over HTTP/2 or HTTP/1.1 as the client's ALPN
// says, through net/http (its bundled HTTP/2: nothing of HTTP is written
// here). Each request is read (dohQuery), unpacked and handed to the same
// Handler.ServeDNS as UDP and TCP, with a dohWriter whose RemoteAddr is the
// client: the connection's peer, or what a trusted proxy's
// X-Forwarded-For names (dohClientAddr). The answer is the body, with
// Cache-Control private, max-age from its smallest TTL.
//
// The TCP bounds hold here too, with the same counts: the gate admits a
// connection in all and per client address (a trusted proxy, which
// carries many clients, in all only), and closes one from outside
// access.allow before its handshake; net/http bounds the handshake and a
// request not all there by the message timeout, and closes a connection
// idle for the idle timeout of encrypted connections (HTTP/1.1 between
// requests, HTTP/2 without a stream).
//
// A request's body is read no further than a query, and closed before the
// query waits for the upstreams: a client cannot have the server hold what
// it keeps sending meanwhile. HTTP/2's flow control windows are the
// smallest net/http takes for a connection, and a few queries' worth for a
// stream, so what a connection's streams may send ahead of the handler is
// bounded by tens of kilobytes, not net/http's megabyte a stream.
type dohServer struct {
	h    *Handler
	ln   net.Listener // the TCP listener
	srv  *http.Server
	done chan struct{} // closed when Serve returned
}

const (
	// dohMaxHeader bounds a request's header: room for a GET of the
	// longest query (tcpQuery bytes, base64url) and ordinary headers.
	dohMaxHeader = 16 << 10
	// dohQueryPath is the one path answered.
	dohQueryPath = dohPath
	// dohConnWindow and dohStreamWindow are the HTTP/2 flow control
	// windows for what clients send: a connection's at HTTP/2's initial
	// 64 KiB, the least net/http takes, and a stream's four times the
	// longest query (tcpQuery). net/http's own are 1 MiB each, all of
	// which a client may send whether or not a handler reads it.
	dohConnWindow   = 64 << 10
	dohStreamWindow = 16 << 10
)

// newDoHServer serves DNS over HTTPS on ln, once started. answerWithin is
// how long a query may wait for the upstreams: the write timeout adds it to
// the time an answer may take to be sent.
func newDoHServer(h *Handler, ln net.Listener, gate *tcpGate, answerWithin time.Duration, log *slog.Logger) *dohServer {
	d := &dohServer{h: h, done: make(chan struct{})}
	limits := gate.limits
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	tc := h.tlsConfig("h2", "http/1.1")
	d.srv = &http.Server{
		Handler: d,
		// net/http reads the ALPN protocols from here to turn HTTP/2 on;
		// the handshakes use tc, on the listener.
		TLSConfig: tc.Clone(),
		Protocols: p,
		// As many streams at once on a connection as TCP lets a
		// connection have queries waiting; a client that does not read
		// its answers loses the connection.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: tcpInFlight, WriteByteTimeout: tcpWriteTimeout,
			MaxReceiveBufferPerConnection: dohConnWindow, MaxReceiveBufferPerStream: dohStreamWindow},
		// The handshake is bounded by the message time (net/http takes
		// the least of these timeouts), so a client that never completes
		// it is cut as soon as over TCP; a connection that has served
		// queries is kept for the next ones as long as DNS over TLS's.
		ReadHeaderTimeout: limits.Message,
		ReadTimeout:       limits.Message,
		WriteTimeout:      answerWithin + tcpWriteTimeout,
		IdleTimeout:       limits.TLSIdle,
		MaxHeaderBytes:    dohMaxHeader,
		// Failed handshakes and broken requests are the client's
		// business: logged at debug level only.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	d.ln = tls.NewListener(&gateListener{Listener: ln, gate: gate, h: h}, tc)
	return d
}

func (d *dohServer) start() {
	go func() {
		defer close(d.done)
		d.srv.Serve(d.ln)
	}()
}

// shutdown stops accepting, lets the requests in flight be answered until
// ctx ends, and closes every connection.
func (d *dohServer) shutdown(ctx context.Context) error {
	err := d.srv.Shutdown(ctx)
	if err != nil {
		d.srv.Close()
	}
	<-d.done
	return err
}

// addr is the address the listener is bound to.
func (d *dohServer) addr() net.Addr { return d.ln.Addr() }

// ServeHTTP answers one DNS-over-HTTPS request.
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
	if status != 0 {
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, POST")
		}
		http.Error(w, why, status)
		return
	}
	// As over TCP: a response is no query, and a message that does not
	// parse is counted.
	req := new(dns.Msg)
	if b[2]&0x80 != 0 {
		http.Error(w, "the message is a DNS response, not a query", http.StatusBadRequest)
		return
	}
	if err := req.Unpack(b); err != nil {
		d.h.counters.Malformed.Add(1)
		http.Error(w, "the message is not a DNS query: "+err.Error(), http.StatusBadRequest)
		return
	}
	client, ok := dohClientAddr(r, d.h.State().TrustedProxies)
	if !ok {
		http.Error(w, "X-Forwarded-For from a trusted proxy does not end in an address", http.StatusBadRequest)
		return
	}
	dw := &dohWriter{w: w, remote: net.TCPAddrFromAddrPort(client)}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		dw.local = la
	}
	d.h.ServeDNS(dw, req)
	switch {
	case dw.failed:
		// An answer that does not pack: over UDP or TCP none is sent.
		http.Error(w, "the answer could not be sent", http.StatusInternalServerError)
	case !dw.wrote:
		// Over the rate limit: a UDP or TCP query is dropped, and an
		// HTTP request has to be answered something.
		http.Error(w, "rate limit", http.StatusTooManyRequests)
	}
}

// dohQuery reads the DNS message of a request (RFC 8484, section 4.1): the
// dns parameter of a GET, base64url without padding (padding is
// forgiven), or the body of a POST of application/dns-message, read no
// further than the longest query: a body that says or turns out to be
// longer gets 413 at once. Anything else gets a 4xx status and why.
func dohQuery(w http.ResponseWriter, r *http.Request) (b []byte, status int, why string) {
	switch r.Method {
	case http.MethodGet:
		v := r.URL.Query()["dns"]
		if len(v) != 1 || v[0] == "" {
			return nil, http.StatusBadRequest, "a GET needs one dns parameter: the query, base64url"
		}
		s := strings.TrimRight(v[0], "=")
		if base64.RawURLEncoding.DecodedLen(len(s)) > tcpQuery {
			return nil, http.StatusRequestURITooLong, "the dns parameter is longer than a query"
		}
		var err error
		if b, err = base64.RawURLEncoding.DecodeString(s); err != nil {
			return nil, http.StatusBadRequest, "the dns parameter is not base64url"
		}
	case http.MethodPost:
		if !isDNSMessage(r.Header.Get("Content-Type")) {
			return nil, http.StatusUnsupportedMediaType, "a POST carries " + dohMediaType
		}
		if r.ContentLength > tcpQuery {
			return nil, http.StatusRequestEntityTooLarge, "the body is longer than a query"
		}
		var err error
		if b, err = io.ReadAll(http.MaxBytesReader(w, r.Body, tcpQuery)); err != nil {
			var tooLong *http.MaxBytesError
			if errors.As(err, &tooLong) {
				return nil, http.StatusRequestEntityTooLarge, "the body is longer than a query"
			}
			return nil, http.StatusBadRequest, "reading the body: " + err.Error()
		}
	default:
		return nil, http.StatusMethodNotAllowed, "GET or POST"
	}
	if len(b) < 12 {
		return nil, http.StatusBadRequest, "the message is shorter than a DNS header"
	}
	return b, 0, ""
}

// dohClientAddr is the client of a request: the connection's peer or, when
// the peer is a trusted proxy (trusted_proxies), the address its
// X-Forwarded-For names. Each proxy appends the address it got the request
// from, so the header is read from the right, past trusted proxies, to the
// first address that is not one; an address a client wrote itself, further
// left, is never reached. ok is false when the entry that names the client
// is not an address.
func dohClientAddr(r *http.Request, proxies []netip.Prefix) (client netip.AddrPort, ok bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.AddrPort{}, false // net/http always gives ip:port
	}
	client = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if !inPrefixes(client.Addr(), proxies) {
		return client, true
	}
	xff := r.Header.Values("X-Forwarded-For")
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
	w      http.ResponseWriter
	remote *net.TCPAddr // the client
	local  net.Addr     // where the request came to
	wrote  bool
	failed bool // the answer did not pack
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

func (d *dohWriter) send(b []byte, maxAge uint32) error {
	if d.wrote {
		return errors.New("a DNS-over-HTTPS request has one answer")
	}
	d.wrote = true
	h := d.w.Header()
	h.Set("Content-Type", dohMediaType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	// private: the answer is this client's. The decision depends on the
	// client's group and on pauses, so a shared cache (a proxy in front
	// of https_listen) must not give it to another client; the client's
	// own cache may keep it for the TTL (RFC 9111, section 5.2.2.7).
	h.Set("Cache-Control", "private, max-age="+strconv.FormatUint(uint64(maxAge), 10))
	_, err := d.w.Write(b)
	return err
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

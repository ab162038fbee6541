package resolver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DNS over HTTPS upstreams (RFC 8484): each query is one POST of the DNS
// message, answered by one DNS message, over HTTP/2 when the server offers
// it (ALPN h2) and HTTP/1.1 when not. net/http does the HTTP: one Transport
// per upstream keeps its connections open and reuses them, HTTP/2
// multiplexing every query on one. Its bundled HTTP/2 (golang.org/x/net/http2)
// is configured through http.Protocols and http.HTTP2Config, so nothing of
// HTTP is written here.
const (
	// dohConns bounds the connections of one DoH upstream: over HTTP/1.1,
	// the queries in flight at once (each holds a connection); over
	// HTTP/2, where one connection carries them all, the connections being
	// opened at once, so a burst of misses at start costs a few handshakes.
	dohConns = 8
	// dohIdle is how long a connection with no query stays open.
	dohIdle = 60 * time.Second
	// dohPing: an HTTP/2 connection on which nothing was read for this
	// long is pinged, and closed when no answer comes in dohPingWait, so a
	// connection a server or middlebox forgot is not kept.
	dohPing, dohPingWait = 15 * time.Second, 5 * time.Second
	// dohDial bounds opening a connection and its TLS handshake, besides
	// the query's own deadline.
	dohDial = 5 * time.Second
	// dohMediaType is the content type of a DNS message over HTTPS.
	dohMediaType = "application/dns-message"
)

// protocolError is an upstream's reply that is not a DNS answer to the
// query: an HTTP error, another content type, a body that is not a DNS
// message, another ID or question. The exchange failed, and the upstream
// is backed off as for a timeout; the metrics count it as "protocol".
type protocolError string

func (e protocolError) Error() string { return string(e) }

// dohClient asks one DNS-over-HTTPS upstream.
type dohClient struct {
	url    string // as sent: the upstream without #address
	host   string // the URL's host, looked up when no address was given
	port   string // the URL's port, 443 when none was written
	client *http.Client
	tr     *http.Transport
	dialer net.Dialer

	// addr is where connections go: the #address, the URL's host when it
	// is an IP address, or what looking the host up found (nil until
	// then, and again after a connection to it failed).
	addr   atomic.Pointer[string]
	lookup bool // addr comes from looking the host up
	// via is what the host is looked up through: set by every forwarder
	// the upstream joins, the latest winning (NewForwarder).
	via atomic.Pointer[lookupVia]

	mu      sync.Mutex
	looking *dialCall // the lookup in progress, if any
	closed  atomic.Bool

	// While no connection is ready, requests go one at a time until one
	// has a connection (first): over HTTP/2 the others then share it. On
	// its own net/http opens a connection for every request that finds
	// none, up to MaxConnsPerHost, and keeps one: a burst of misses at
	// start would cost dohConns handshakes for one connection.
	first chan struct{} // holds the request opening a connection
	ready atomic.Bool   // some request got a connection, and one is open

	connMu sync.Mutex
	conns  map[*countedConn]struct{} // open, for close to close
}

// lookupVia is a forwarder and its upstreams that need no lookup
// themselves, through which a DoH upstream's host name is looked up.
type lookupVia struct {
	f   *Forwarder
	ups []*Upstream
}

// newDoHClient makes the client of an https:// upstream as
// ParseUpstreamAddr read it, verifying certificates with roots (nil: the
// system's).
func newDoHClient(a UpstreamAddr, roots *x509.CertPool) *dohClient {
	d := &dohClient{url: a.URL, host: a.ServerName, lookup: a.LookedUp(), dialer: net.Dialer{Timeout: dohDial}, first: make(chan struct{}, 1), conns: map[*countedConn]struct{}{}}
	if u, err := url.Parse(a.URL); err == nil {
		d.port = u.Port()
	}
	if d.port == "" {
		d.port = "443"
	}
	if a.Addr != "" {
		addr := a.Addr
		d.addr.Store(&addr)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	d.tr = &http.Transport{
		// Never a proxy from the environment: the upstream is reached
		// where the config says.
		Proxy:       nil,
		DialContext: d.dial,
		// ServerName is the URL's host, which net/http fills in; the
		// session cache makes a reconnection a resumption.
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(dohConns)},
		TLSHandshakeTimeout: dohDial,
		Protocols:           p,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: dohPing, PingTimeout: dohPingWait},
		MaxConnsPerHost:     dohConns,
		MaxIdleConnsPerHost: dohConns,
		IdleConnTimeout:     dohIdle,
		DisableCompression:  true,
		// A DNS answer needs no more; a server sending more is broken.
		MaxResponseHeaderBytes: 16 << 10,
	}
	d.client = &http.Client{
		Transport: d.tr,
		// A redirect is an answer that is not DNS: never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d
}

// exchange asks q by the deadline or until ctx ends. The message goes with
// ID 0, as RFC 8484 (section 4.1) asks, so that HTTP caches can share
// answers; the answer gets q's ID back.
func (d *dohClient) exchange(ctx context.Context, deadline time.Time, q *dns.Msg) (*dns.Msg, error) {
	if d.closed.Load() {
		return nil, net.ErrClosed
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := d.address(ctx); err != nil {
		return nil, err
	}
	id := q.Id
	q.Id = 0
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header = http.Header{"Content-Type": {dohMediaType}, "Accept": {dohMediaType}}
	if !d.ready.Load() {
		release, err := d.waitFirst(ctx)
		if err != nil {
			return nil, err
		}
		if release != nil {
			defer release()
			req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
				d.ready.Store(true)
				release()
			}}))
		}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, dohError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Read a little, so an HTTP/1.1 connection can carry the next query.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, protocolError("answered HTTP " + resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !isDNSMessage(ct) {
		return nil, protocolError(fmt.Sprintf("answered Content-Type %q, not %s", ct, dohMediaType))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, dns.MaxMsgSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", dohError(err))
	}
	if len(body) > dns.MaxMsgSize {
		return nil, protocolError("answered more than a DNS message can hold")
	}
	r := new(dns.Msg)
	if err := r.Unpack(body); err != nil {
		return nil, protocolError(fmt.Sprintf("answered a body that is not a DNS message (%d bytes): %v", len(body), err))
	}
	if !r.Response || !sameQuestion(q, r) {
		return nil, protocolError("answered a DNS message that does not answer the query (another ID or question)")
	}
	r.Id = id
	return r, nil
}

// waitFirst waits for the request opening a connection, if any, to have
// one. It returns nil when one is ready now, or else the release of the
// caller's own turn at opening one: called when its request has a
// connection, or has failed.
func (d *dohClient) waitFirst(ctx context.Context) (release func(), err error) {
	select {
	case d.first <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if d.ready.Load() {
		<-d.first
		return nil, nil
	}
	var once sync.Once
	return func() { once.Do(func() { <-d.first }) }, nil
}

// isDNSMessage reports whether a Content-Type is application/dns-message,
// parameters allowed.
func isDNSMessage(ct string) bool {
	if ct == dohMediaType {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == dohMediaType
}

// dohError takes off net/http's "Post URL:" (the log names the upstream
// already) and says where a private resolver's CA goes when the
// certificate's is unknown.
func dohError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return certHint(err)
}

// certHint says where a private resolver's CA certificate goes when a
// tls:// or https:// upstream's certificate chains to an unknown CA.
func certHint(err error) error {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return fmt.Errorf("%w (a private resolver's CA certificate goes in upstream_tls_ca)", err)
	}
	return err
}

// address makes sure d knows where to connect, looking the host up when it
// must: one lookup at a time, which the queries arriving meanwhile wait
// for and share.
func (d *dohClient) address(ctx context.Context) error {
	for {
		if d.addr.Load() != nil {
			return nil
		}
		d.mu.Lock()
		if d.addr.Load() != nil {
			d.mu.Unlock()
			return nil
		}
		if c := d.looking; c != nil {
			d.mu.Unlock()
			select {
			case <-c.done:
				if c.err != nil {
					return c.err
				}
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		c := &dialCall{done: make(chan struct{})}
		d.looking = c
		d.mu.Unlock()

		addr, err := d.lookupHost(ctx)

		d.mu.Lock()
		d.looking = nil
		if err == nil {
			d.addr.Store(&addr)
		}
		c.err = err
		close(c.done)
		d.mu.Unlock()
		return err
	}
}

// lookupHost asks the forwarder's other upstreams for the host's address:
// IPv4 first, IPv6 when it has none.
func (d *dohClient) lookupHost(ctx context.Context) (string, error) {
	via := d.via.Load()
	if via == nil || len(via.ups) == 0 {
		return "", fmt.Errorf("looking up %s: no other upstream to ask (write its address after '#')", d.host)
	}
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(d.host), qt)
		q.SetEdns0(maxUDP, false)
		r, _, err := via.f.try(ctx, q, via.ups)
		if err != nil {
			return "", fmt.Errorf("looking up %s through the other upstreams: %w", d.host, err)
		}
		for _, rr := range r.Answer {
			switch a := rr.(type) {
			case *dns.A:
				return net.JoinHostPort(a.A.String(), d.port), nil
			case *dns.AAAA:
				return net.JoinHostPort(a.AAAA.String(), d.port), nil
			}
		}
	}
	return "", fmt.Errorf("looking up %s through the other upstreams: no address", d.host)
}

// dial connects to the upstream's address, whatever host net/http asks
// for (the URL's, which names the server for TLS and HTTP). When the
// address was looked up and cannot be reached, it is forgotten, so the
// next query looks the host up again: the server may have moved.
func (d *dohClient) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	if d.closed.Load() {
		return nil, net.ErrClosed
	}
	a := d.addr.Load()
	if a == nil {
		return nil, fmt.Errorf("no address for %s", d.host)
	}
	c, err := d.dialer.DialContext(ctx, network, *a)
	if err != nil {
		if d.lookup {
			d.addr.CompareAndSwap(a, nil)
		}
		return nil, err
	}
	cc := &countedConn{Conn: c, d: d}
	d.connMu.Lock()
	defer d.connMu.Unlock()
	if d.closed.Load() {
		c.Close()
		return nil, net.ErrClosed
	}
	d.conns[cc] = struct{}{}
	return cc, nil
}

// countedConn is a connection of a dohClient, kept in its set while open.
type countedConn struct {
	net.Conn
	d    *dohClient
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		d := c.d
		d.connMu.Lock()
		delete(d.conns, c)
		if len(d.conns) == 0 {
			d.ready.Store(false)
		}
		d.connMu.Unlock()
	})
	return c.Conn.Close()
}

// close refuses further queries and closes every connection: the
// forwarder has given up the queries still on them.
func (d *dohClient) close() {
	d.closed.Store(true)
	d.tr.CloseIdleConnections()
	d.connMu.Lock()
	conns := make([]*countedConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.connMu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// lookups hands each DoH upstream of f whose host must be looked up the
// upstreams it may be looked up through: those of f that need no lookup
// themselves, so that two such DoH upstreams never wait on each other.
// An upstream kept by a reload is looked up through the new forwarder.
func (f *Forwarder) lookups() {
	var via *lookupVia
	for _, u := range f.Upstreams {
		if u.doh == nil || !u.doh.lookup {
			continue
		}
		if via == nil {
			via = &lookupVia{f: f}
			for _, o := range f.Upstreams {
				if o.doh == nil || !o.doh.lookup {
					via.ups = append(via.ups, o)
				}
			}
		}
		u.doh.via.Store(via)
	}
}

// Package dnstest provides a stub upstream DNS server for tests: one per test,
// on loopback, whose behaviour (answer, delay, drop, SERVFAIL, truncate,
// garbage, REFUSED) the test sets and whose received queries it can inspect.
// Options make it speak DNS over TLS and answer pipelined queries out of
// order; it counts the connections it accepts and can close them.
package dnstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Mode selects how an Upstream replies.
type Mode int

const (
	// Answer replies with the default answers (or the handler set with
	// SetHandler). Over UDP, a reply larger than the client's advertised size
	// (512 without EDNS) is sent truncated: TC set, no records.
	Answer Mode = iota
	// Delay replies as Answer does, after the duration set with SetDelay.
	// Other queries are not held up, and stopping the server cuts it short.
	Delay
	// Drop never replies.
	Drop
	// ServFail replies SERVFAIL.
	ServFail
	// Truncate replies over UDP with TC set and no records, so the client
	// must retry over TCP; over TCP it replies as Answer does.
	Truncate
	// Garbage replies over UDP with a few random bytes that are not a DNS
	// message; over TCP it closes the connection without replying.
	Garbage
	// Refused replies REFUSED.
	Refused
)

var modeNames = [...]string{
	Answer:   "Answer",
	Delay:    "Delay",
	Drop:     "Drop",
	ServFail: "ServFail",
	Truncate: "Truncate",
	Garbage:  "Garbage",
	Refused:  "Refused",
}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Default answers. Names are matched case-insensitively; owner names in
// answers keep the case of the question.
const (
	// DefaultTTL is the TTL of answers until SetTTL changes it.
	DefaultTTL = 300
	// NegativeTTL is the SOA minimum in NXDOMAIN and NODATA answers; the SOA
	// record's own TTL is the smaller of this and the answer TTL, so the
	// negative-caching TTL (RFC 2308) is that smaller value.
	NegativeTTL = 30

	// NXDomainZone: every name at or under it is NXDOMAIN.
	NXDomainZone = "nx.test."
	// NoDataZone: every name at or under it is NOERROR with no answers.
	NoDataZone = "nodata.test."
	// BigName answers TXT queries with BigRecords records of about 4.5 KB in
	// all: more than any UDP size up to 4096, so over UDP it comes back
	// truncated and over TCP in full.
	BigName    = "big.test."
	BigRecords = 20
)

// Addresses of the default answers, from the documentation ranges (RFC 5737,
// RFC 3849).
const (
	AnswerA    = "192.0.2.1"
	AnswerAAAA = "2001:db8::1"
)

var (
	answerA    = net.ParseIP(AnswerA).To4()
	answerAAAA = net.ParseIP(AnswerAAAA)
)

const (
	answerTXT      = "stub"
	answerMXPref   = 10
	answerMXHost   = "mail.example."
	bigTXTLen      = 200 // bytes per TXT string for BigName
	garbageLen     = 8   // shorter than a DNS header, so never a message
	stopTimeout    = 5 * time.Second
	startTimeout   = 5 * time.Second
	listenAttempts = 10
)

// TLSServerName is the name in the certificate of an Upstream started
// WithTLS, besides 127.0.0.1.
const TLSServerName = "dnstest.test"

// Option changes how Start serves the TCP port.
type Option func(*options)

type options struct {
	tls, pipeline bool
}

// WithTLS makes the TCP port speak DNS over TLS instead of plain TCP (UDP
// stays as it is), with a certificate for TLSServerName and 127.0.0.1 made
// at start; RootCAs returns a pool that trusts it.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithPipelining answers each query on a TCP or TLS connection in a
// goroutine of its own, so that queries pipelined on one connection (RFC
// 7766) are answered as each is ready, out of order when one is slower.
// Without it, miekg/dns's server answers a connection's queries one after
// another and closes it after 128.
func WithPipelining() Option { return func(o *options) { o.pipeline = true } }

// Upstream is a DNS server on 127.0.0.1, UDP and TCP on the same port, whose
// behaviour a test sets. All methods are safe for concurrent use, also while
// queries are being served; a change applies to queries that arrive after it.
type Upstream struct {
	addr string
	udp  *dns.Server
	cert *Cert // WithTLS
	// done is closed when the test ends, so delayed replies give up at once
	// instead of holding Shutdown for the rest of their delay.
	done chan struct{}

	mu         sync.Mutex
	mode       Mode
	delay      time.Duration
	ttl        uint32
	handler    dns.HandlerFunc
	queries    int
	queriesTCP int
	last       *dns.Msg
	seen       map[string]int
	chains     map[string][]string       // by canonical question name
	ptrs       map[string]string         // PTR answers, by canonical reverse name
	accepted   int                       // TCP or TLS connections
	open       map[*trackedConn]struct{} // of those, not yet closed
}

// Start starts an Upstream on 127.0.0.1 with a free port, UDP and TCP on the
// same number, and stops it when the test ends (t.Cleanup): both servers are
// shut down and every goroutine they started has returned by then.
func Start(t testing.TB, opts ...Option) *Upstream {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	pc, l, err := listenPair()
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	u := &Upstream{
		addr: pc.LocalAddr().String(),
		done: make(chan struct{}),
		ttl:  DefaultTTL,
		seen: make(map[string]int),
		open: make(map[*trackedConn]struct{}),
	}
	h := dns.HandlerFunc(u.serveDNS)
	u.udp = &dns.Server{PacketConn: pc, Handler: h}
	var sl net.Listener = &trackListener{Listener: l, u: u}
	if o.tls {
		if u.cert, err = NewCert(TLSServerName); err != nil {
			pc.Close()
			l.Close()
			t.Fatalf("dnstest: %v", err)
		}
		sl = tls.NewListener(sl, &tls.Config{Certificates: []tls.Certificate{u.cert.TLS}, MinVersion: tls.VersionTLS12})
	}

	var stops []func() error
	t.Cleanup(func() {
		close(u.done)
		for _, stop := range stops {
			if err := stop(); err != nil {
				t.Errorf("dnstest: stopping upstream %s: %v", u.addr, err)
			}
		}
	})
	servers := []*dns.Server{u.udp}
	if o.pipeline {
		stops = append(stops, serveStream(sl, h))
	} else {
		servers = append(servers, &dns.Server{Listener: sl, Handler: h})
	}
	for _, srv := range servers {
		stop, err := serve(srv)
		if err != nil {
			// Closing twice is harmless; the server that did start, if
			// any, is stopped by the cleanup.
			pc.Close()
			l.Close()
			t.Fatalf("dnstest: starting upstream %s: %v", u.addr, err)
		}
		stops = append(stops, stop)
	}
	return u
}

// listenPair binds UDP on 127.0.0.1:0 and then TCP on the port UDP got,
// trying again with another port if that one is taken for TCP.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range listenAttempts {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listening on udp: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("listening on tcp on the udp port, %d attempts: %w", listenAttempts, lastErr)
}

// serve runs srv until the returned stop is called; stop returns once the
// server and all its handlers have returned.
func serve(srv *dns.Server) (stop func() error, err error) {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	exited := make(chan error, 1)
	go func() { exited <- srv.ActivateAndServe() }()

	select {
	case <-started:
	case err := <-exited:
		return nil, fmt.Errorf("serving: %w", err)
	case <-time.After(startTimeout):
		// ActivateAndServe is stuck before it could be shut down; nothing
		// more can be done about its goroutine.
		return nil, fmt.Errorf("serving: not started after %v", startTimeout)
	}

	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := srv.ShutdownContext(ctx); err != nil {
			return fmt.Errorf("shutting down: %w", err)
		}
		// ShutdownContext returns once the handlers are done; wait for the
		// serving goroutine itself too, so none outlives the test.
		select {
		case <-exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("shutting down: serve did not return: %w", ctx.Err())
		}
	}, nil
}

// Addr returns the address of both servers, "127.0.0.1:port".
func (u *Upstream) Addr() string { return u.addr }

// RootCAs returns a pool that trusts the certificate of an Upstream started
// WithTLS, for a client's tls.Config; nil without TLS.
func (u *Upstream) RootCAs() *x509.CertPool {
	if u.cert == nil {
		return nil
	}
	return u.cert.Pool
}

// Conns returns how many TCP (or TLS) connections the Upstream has accepted.
func (u *Upstream) Conns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.accepted
}

// OpenConns returns how many of those are still open: a connection the
// client closes counts until the server has read to its end.
func (u *Upstream) OpenConns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.open)
}

// CloseConns closes every open TCP (or TLS) connection from the server's
// side, as a server does at its idle timeout or when it restarts; the
// listener stays open.
func (u *Upstream) CloseConns() {
	u.mu.Lock()
	conns := make([]*trackedConn, 0, len(u.open))
	for c := range u.open {
		conns = append(conns, c)
	}
	u.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// SetMode sets how the Upstream replies; the default is Answer.
func (u *Upstream) SetMode(m Mode) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.mode = m
}

// SetDelay sets how long mode Delay waits before replying; zero (the
// default) replies at once.
func (u *Upstream) SetDelay(d time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.delay = d
}

// SetHandler makes h produce the replies in modes Answer and Delay, and over
// TCP in mode Truncate, instead of the default answers; nil restores them.
// Queries are counted before h runs, and h writes its own reply, so the UDP
// truncation of mode Answer is h's business. Modes Drop, ServFail, Garbage,
// Refused, and Truncate over UDP never call h.
func (u *Upstream) SetHandler(h dns.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handler = h
}

// SetTTL sets the TTL of the default answers; the default is DefaultTTL.
func (u *Upstream) SetTTL(ttl uint32) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ttl = ttl
}

// Queries returns how many queries arrived over UDP and TCP together,
// whatever the mode (dropped ones included). Messages that miekg/dns rejects
// before the handler (not a query, not exactly one question) are not counted.
func (u *Upstream) Queries() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries
}

// QueriesTCP returns how many of Queries arrived over TCP.
func (u *Upstream) QueriesTCP() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queriesTCP
}

// Last returns a copy of the last query that arrived, or nil if none has.
func (u *Upstream) Last() *dns.Msg {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last == nil {
		return nil
	}
	return u.last.Copy()
}

// Seen returns how many queries arrived for name, of any type, comparing
// case-insensitively and with or without the trailing dot.
func (u *Upstream) Seen(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[canonical(name)]
}

func canonical(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}

// behaviour is what Upstream was set to when a query arrived.
type behaviour struct {
	mode    Mode
	delay   time.Duration
	ttl     uint32
	handler dns.HandlerFunc
	chain   []string // CNAMEs the default answer goes through
	ptr     string   // the PTR answer's name (SetPTR)
}

// record counts r and returns the behaviour to reply with.
func (u *Upstream) record(r *dns.Msg, tcp bool) behaviour {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.queries++
	if tcp {
		u.queriesTCP++
	}
	u.last = r.Copy()
	if len(r.Question) > 0 {
		u.seen[canonical(r.Question[0].Name)]++
	}
	b := behaviour{mode: u.mode, delay: u.delay, ttl: u.ttl, handler: u.handler}
	if len(r.Question) > 0 {
		b.chain = u.chains[canonical(r.Question[0].Name)]
		if r.Question[0].Qtype == dns.TypePTR {
			b.ptr = u.ptrs[canonical(r.Question[0].Name)]
		}
	}
	return b
}

// SetPTR makes the default answer to a PTR query for addr's reverse name
// (1.0.0.127.in-addr.arpa. for 127.0.0.1) a PTR record to name, with the
// answer TTL; "" takes it back (NOERROR with no answer, as for any PTR
// query not set). It names a machine as a home router does its DHCP
// clients.
func (u *Upstream) SetPTR(addr, name string) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		panic("dnstest: SetPTR: " + err.Error())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ptrs == nil {
		u.ptrs = map[string]string{}
	}
	u.ptrs[canonical(rev)] = name
}

// SetChain makes the default answer for name an alias chain: a CNAME from
// name to the first of chain, from each to the next, and the default
// answer for the last, as a real answer through a traffic manager and a
// CDN looks. No chain: the plain default answer again.
func (u *Upstream) SetChain(name string, chain ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.chains == nil {
		u.chains = map[string][]string{}
	}
	u.chains[canonical(name)] = chain
}

func (u *Upstream) serveDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	b := u.record(r, tcp)

	switch b.mode {
	case Drop:
		return
	case Garbage:
		if tcp {
			w.Close()
			return
		}
		junk := make([]byte, garbageLen)
		for i := range junk {
			junk[i] = byte(rand.Uint32())
		}
		w.Write(junk)
		return
	case Delay:
		timer := time.NewTimer(b.delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-u.done:
			return
		}
	}

	m := new(dns.Msg).SetReply(r)
	m.RecursionAvailable = true
	switch {
	case b.mode == ServFail:
		m.Rcode = dns.RcodeServerFailure
	case b.mode == Refused:
		m.Rcode = dns.RcodeRefused
	case b.mode == Truncate && !tcp:
		m.Truncated = true
	case b.handler != nil:
		b.handler(w, r)
		return
	default:
		answer(m, b.ttl)
		aliases(m, b.chain, b.ttl)
		if b.ptr != "" {
			m.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: b.ttl}, Ptr: dns.Fqdn(b.ptr)}}
		}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	if !tcp {
		// What a real server does when the reply does not fit the client's
		// buffer. Msg.Truncate would keep the records that fit; clearing them
		// makes the reply unusable, so a client has to retry over TCP.
		m.Truncate(udpSize(r))
		if m.Truncated {
			m.Answer, m.Ns, m.Extra = nil, nil, onlyOPT(m.Extra)
		}
	}
	w.WriteMsg(m)
}

// udpSize is the largest UDP reply the client of r can take.
func udpSize(r *dns.Msg) int {
	if opt := r.IsEdns0(); opt != nil {
		return max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	return dns.MinMsgSize
}

func onlyOPT(extra []dns.RR) []dns.RR {
	var kept []dns.RR
	for _, rr := range extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			kept = append(kept, rr)
		}
	}
	return kept
}

// answer fills m, a reply to a single question, with the default answer.
func answer(m *dns.Msg, ttl uint32) {
	if len(m.Question) == 0 {
		return
	}
	q := m.Question[0]
	name := strings.ToLower(q.Name)
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: ttl}

	switch {
	case dns.IsSubDomain(NXDomainZone, name):
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(NXDomainZone, ttl)}
		return
	case dns.IsSubDomain(NoDataZone, name):
		m.Ns = []dns.RR{soa(NoDataZone, ttl)}
		return
	case name == BigName && q.Qtype == dns.TypeTXT:
		for i := range BigRecords {
			txt := fmt.Sprintf("big-%02d-", i)
			txt += strings.Repeat("x", bigTXTLen-len(txt))
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{txt}})
		}
		return
	}

	switch q.Qtype {
	case dns.TypeA:
		m.Answer = []dns.RR{&dns.A{Hdr: hdr, A: answerA}}
	case dns.TypeAAAA:
		m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: answerAAAA}}
	case dns.TypeTXT:
		m.Answer = []dns.RR{&dns.TXT{Hdr: hdr, Txt: []string{answerTXT}}}
	case dns.TypeMX:
		m.Answer = []dns.RR{&dns.MX{Hdr: hdr, Preference: answerMXPref, Mx: answerMXHost}}
	}
}

// aliases turns m's default answer into one through chain: the CNAMEs
// from the question name along chain, then the answer's records owned by
// the chain's last name.
func aliases(m *dns.Msg, chain []string, ttl uint32) {
	if len(chain) == 0 || len(m.Question) == 0 {
		return
	}
	var rrs []dns.RR
	owner := m.Question[0].Name
	for _, next := range chain {
		next = dns.Fqdn(next)
		rrs = append(rrs, &dns.CNAME{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: next})
		owner = next
	}
	for _, rr := range m.Answer {
		rr.Header().Name = owner
	}
	m.Answer = append(rrs, m.Answer...)
}

// soa is the SOA record of zone for the authority section of negative
// answers.
func soa(zone string, ttl uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: min(ttl, NegativeTTL)},
		Ns:      "ns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  NegativeTTL,
	}
}

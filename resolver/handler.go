package resolver

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
	"golang.org/x/time/rate"

	"github.com/phonehome/phonehome/policy"
)

// State is everything a reload replaces, built whole before it is swapped
// in with one atomic store, so a query sees the old state or the new one,
// never half of each.
type State struct {
	Policy    *policy.Policy
	Allow     []netip.Prefix
	Sinkhole  Sinkhole
	Forwarder *Forwarder
	Cache     *Cache
	RateLimit int // queries per second per client address; 0 for none
	// InspectCNAME decides the names of an answer's alias chain
	// (cname.inspect); MaxChain bounds the chain (cname.max_chain), which
	// is read and cached with every answer, so that turning inspection on
	// by a reload finds the chains of answers already cached.
	InspectCNAME bool
	MaxChain     int
	Canary       bool // answer use-application-dns.net with NXDOMAIN
	// Cert is the encrypted listeners' certificate (tls_cert, tls_key),
	// nil without one; TrustedProxies are the peers whose X-Forwarded-For
	// names a DNS-over-HTTPS client (trusted_proxies).
	Cert           *tls.Certificate
	TrustedProxies []netip.Prefix
}

// Counters count what the request path turns away.
type Counters struct {
	Malformed, Refused, RateLimited, Overload atomic.Uint64
}

// Handler is the request path. ServeDNS reads from top to bottom: access →
// rate limit → protocol checks → policy decision → sinkhole, or cache →
// upstream → answer; then every observer is told.
type Handler struct {
	state    atomic.Pointer[State]
	limiters *lru.Cache[netip.Addr, *rate.Limiter]
	counters Counters
	log      *slog.Logger
	// metrics counts cache lookups and is the first observer; nil
	// without a registry.
	metrics   *Metrics
	observers []Observer

	pause atomic.Pointer[Pause]
	// warned holds what warnThroughProtection has said.
	warned sync.Map
	// ddr answers _dns.resolver.arpa with the encrypted listeners; nil
	// without any. Set before the listeners start, never changed after.
	ddr *designated
}

// Pause turns sinkholing into logging until a time, for some categories or
// (with none named) for all.
type Pause struct {
	Until      time.Time
	Categories []string // none: every category
	// Reason is what the person who paused said, if anything; By is the
	// instance that set a fleet-wide pause ("" for one set here alone).
	// Neither changes a decision.
	Reason, By string
}

// State returns the state in use.
func (h *Handler) State() *State { return h.state.Load() }

// Paused returns the pause in force, or nil.
func (h *Handler) Paused() *Pause {
	p := h.pause.Load()
	if p == nil || time.Now().After(p.Until) {
		return nil
	}
	return p
}

// paused reports whether a sinkhole of category is paused now.
func (h *Handler) paused(category string) bool {
	p := h.Paused()
	return p != nil && (len(p.Categories) == 0 || slices.Contains(p.Categories, category))
}

// newHandler makes the request path for an initial state.
func newHandler(st *State, log *slog.Logger) *Handler {
	h := &Handler{log: log}
	// Bounded memory however many addresses a flood comes from.
	h.limiters, _ = lru.New[netip.Addr, *rate.Limiter](65536)
	h.state.Store(st)
	return h
}

// swap installs a new state and returns the old one. Clients' rate
// buckets start afresh when the rate changed.
func (h *Handler) swap(st *State) *State {
	old := h.state.Swap(st)
	if old.RateLimit != st.RateLimit {
		h.limiters.Purge()
	}
	return old
}

// maxUDP is the largest UDP answer phonehome sends or asks for (DNS Flag
// Day 2020).
const maxUDP = 1232

// ServeDNS answers one query.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	st := h.state.Load()
	// The client is the writer's peer: the UDP sender, the TCP or TLS
	// connection's, or for DNS over HTTPS the connection's or, from a
	// trusted proxy, the one its X-Forwarded-For names (dohlisten.go).
	client := addrOf(w.RemoteAddr())
	a := Answer{Start: time.Now(), Client: client, Transport: transportOf(w), Source: SourceLocal}

	// 1. Access first: clients outside access.allow get REFUSED and
	// nothing is forwarded or remembered for them.
	if !st.Allowed(client) {
		h.counters.Refused.Add(1)
		h.reply(w, req, rcodeMsg(req, dns.RcodeRefused), 0, "")
		a.Rcode = dns.RcodeRefused
		h.done(w, a)
		return
	}
	// 2. Rate limit per client address, after access, so that strangers
	// cannot fill the limiter table. Over the limit, queries are dropped.
	if st.RateLimit > 0 && !h.withinRateLimit(client, st.RateLimit, a.Start) {
		h.counters.RateLimited.Add(1)
		return
	}
	// 3. Protocol: one question, QUERY only, no CHAOS, ANY gets the
	// minimal RFC 8482 answer; and the names that tell clients to stay
	// (Firefox's canary, DDR: the encrypted listeners, ddr.go).
	if m := protocol(req, st.Canary); m != nil {
		if h.ddr != nil && isDDR(req) {
			h.ddr.answer(m, w, st)
		}
		h.reply(w, req, m, 0, "")
		a.Rcode = m.Rcode
		h.done(w, a)
		return
	}
	// 4. The policy decides before the cache: one cache serves every
	// group, and a reload never serves a stale decision.
	q := req.Question[0]
	a.Question, a.Decision = q, st.Policy.Decide(client, q.Name)
	h.pauseIfAsked(&a.Decision)
	h.serveDecided(w, req, st, a, false)
}

// serveDecided answers a query the policy has decided (a.Decision): the
// rest of ServeDNS, which the wire path (wire.go) also ends in when it
// cannot answer a query itself; missed when the wire path has asked the
// cache already and it had nothing fresh.
func (h *Handler) serveDecided(w dns.ResponseWriter, req *dns.Msg, st *State, a Answer, missed bool) {
	// 5. Sinkholed names are answered here and never reach an upstream.
	if a.Decision.Action == policy.Sinkhole {
		h.sinkhole(w, req, st, a)
		return
	}
	// 6. The cache answers most queries at once.
	if !missed {
		if m, chain := st.Cache.Get(req); m != nil {
			h.metrics.cacheLookup(cacheHit)
			a.Source = SourceCache
			h.answer(w, req, st, a, m, chain, 0)
			return
		}
	}
	h.metrics.cacheLookup(cacheMiss)
	// 7. A miss waits for an upstream. The UDP server answers a batch of
	// queries between two system calls and must not wait, so its writer
	// runs the rest in a goroutine of its own (see udp.go).
	m := miss{h: h, st: st, req: req, a: a}
	if ho, ok := w.(handOff); ok {
		ho.HandOff(m)
		return
	}
	m.serve(w)
}

// A miss is a query the cache had nothing fresh for, with what answering
// it from the upstreams takes. A writer that must not wait (handOff) gets
// it by value and answers it elsewhere, keeping it in an allocation of
// its own (the UDP loop's holds the writer too: one allocation a miss).
type miss struct {
	h   *Handler
	st  *State
	req *dns.Msg
	a   Answer
}

// serve answers the miss from the upstreams, through w. The UDP loop's
// commonest miss, a plain answer (plainAnswer) to a client over UDP, is
// cached and answered from the bytes received (answerPlain); the others
// as a dns.Msg.
func (m *miss) serve(w dns.ResponseWriter) {
	h, st, req := m.h, m.st, m.req
	// The UDP and TCP loops carry no request context, so the exchange is
	// bounded by the forwarder's: its own deadlines, and cancelled when a
	// reload retires the forwarder or the server shuts down.
	ans, err := st.Forwarder.forward(st.Forwarder.ctx, upstreamQuery(req))
	if uw, ok := w.(*udpWriter); ok && err == nil && ans.r == nil && h.answerPlain(uw, req, st, m.a, ans.wire) {
		return
	}
	r, chain, ede, source := h.resolved(st, req, ans, err)
	m.a.Source = source
	h.answer(w, req, st, m.a, r, chain, ede)
}

// answerPlain sends a plain upstream answer (plainAnswer), wire (see
// upstreamAnswer), to req through w as reply would, but from its bytes,
// patched as the wire path patches a cached answer (ID, flags, our OPT
// record), and caches it; no dns.Msg is unpacked or packed. It does
// nothing and returns false when the answer does not fit the client's
// size, or spells the name otherwise (a query that joined another's
// flight): reply truncates or respells it.
func (h *Handler) answerPlain(w *udpWriter, req *dns.Msg, st *State, a Answer, wire []byte) bool {
	e := entryOf(wire)
	if e == nil {
		return false
	}
	var buf [maxQuestion]byte
	q := wireQuery{id: req.Id, rd: req.RecursionDesired, cd: req.CheckingDisabled, question: packQuestion(req, &buf), size: dns.MinMsgSize}
	if q.question == nil {
		return false
	}
	if o := req.IsEdns0(); o != nil {
		q.edns, q.do, q.size = true, o.Do(), max(dns.MinMsgSize, min(int(o.UDPSize()), maxUDP))
	}
	out, ok := q.cached(make([]byte, 0, int(e.wlen)+q.optLen(false, 0)), e, 0)
	if !ok {
		return false
	}
	// After the copy: the cache clamps its TTLs, the client gets the
	// upstream's.
	st.Cache.keepPlain(q.question, keyFlags(q.do, q.cd), e)
	w.Write(out)
	a.Rcode, a.Source = dns.RcodeSuccess, SourceUpstream
	h.done(w, a)
	return true
}

// answer sends an answer from the cache or an upstream, unless a name its
// CNAME chain leads to decides otherwise for the client's group
// (cname.inspect): then the sinkhole answer, or the answer logged under
// that name's pattern (policy.DecideChain).
func (h *Handler) answer(w dns.ResponseWriter, req *dns.Msg, st *State, a Answer, m *dns.Msg, chain *Chain, ede uint16) {
	if chain != nil && st.InspectCNAME {
		a.Decision = chain.decide(st.Policy, a.Client, a.Decision, st.MaxChain)
		h.pauseIfAsked(&a.Decision)
		if a.Decision.Action == policy.Sinkhole {
			if a.Decision.Shield != nil {
				h.warnThroughProtection(a.Decision)
			}
			h.sinkhole(w, req, st, a)
			return
		}
	}
	h.reply(w, req, m, ede, "")
	a.Rcode = m.Rcode
	h.done(w, a)
}

// warnThroughProtection logs, once per pattern and protected endpoint,
// that a pattern the user wrote sinkholed an answer whose CNAME chain
// passes through a protected endpoint: what a block list did to
// ctldl.windowsupdate.com (mtxadmin/ublock#73), and no config check can
// foresee, since the CDN names are not in the catalog.
func (h *Handler) warnThroughProtection(d policy.Decision) {
	type pair struct {
		pattern string
		shield  *policy.Rule
	}
	p := pair{d.Match.Pattern(), d.Shield}
	if d.Override.Rule != nil {
		p.pattern = d.Override.Pattern()
	}
	if _, seen := h.warned.LoadOrStore(p, true); !seen && h.log != nil {
		h.log.Warn("a pattern of your own sinkholes a protected endpoint's answer through its CNAME chain",
			"pattern", p.pattern, "cname", d.CNAME, "protected", d.Shield.Entry.Pattern, "breaks", d.Shield.Entry.Reason, "group", d.Group.Name)
	}
}

// sinkhole sends the sinkhole answer, with the Extended DNS Error that says
// what matched.
func (h *Handler) sinkhole(w dns.ResponseWriter, req *dns.Msg, st *State, a Answer) {
	m := st.Sinkhole.answer(req)
	h.reply(w, req, m, dns.ExtendedErrorCodeBlocked, a.Decision.BlockedText())
	a.Rcode, a.Source = m.Rcode, SourceSinkhole
	h.done(w, a)
}

// pauseIfAsked turns a sinkhole into logging while a pause from the web
// page or the API is in force for its category.
func (h *Handler) pauseIfAsked(d *policy.Decision) {
	if d.Action == policy.Sinkhole && h.pause.Load() != nil && h.paused(string(d.Category())) {
		d.Action = policy.Log
	}
}

// A handOff is a dns.ResponseWriter that must not be kept waiting: HandOff
// serves the miss in another goroutine, with a writer of its own, and
// returns at once.
type handOff interface {
	HandOff(m miss)
}

// done tells every observer of an answered query, or leaves that to a
// writer that sends its answers later (see answerBatch).
func (h *Handler) done(w dns.ResponseWriter, a Answer) {
	if b, ok := w.(answerBatch); ok {
		b.keep(a)
		return
	}
	h.tell(a, time.Now())
}

// tell tells every observer of one answered query, sent at sent.
func (h *Handler) tell(a Answer, sent time.Time) {
	a.Duration = sent.Sub(a.Start)
	for _, o := range h.observers {
		o.Answered(a)
	}
}

// An answerBatch is a writer that sends its answers later, and keeps each
// one's Answer until it goes out: the UDP loop's, whose batch doneBatch
// tells the observers of, and a UDP miss's worker's (udpMiss.run). The
// observers are told just before the answers leave, so that a client that
// has its answer finds it counted and logged.
type answerBatch interface {
	keep(a Answer)
}

// doneBatch tells every observer of a batch of answers about to be sent
// at sent.
func (h *Handler) doneBatch(as []Answer, sent time.Time) {
	for i := range as {
		as[i].Duration = sent.Sub(as[i].Start)
	}
	for _, o := range h.observers {
		if b, ok := o.(BatchObserver); ok {
			b.AnsweredBatch(as)
			continue
		}
		for i := range as {
			o.Answered(as[i])
		}
	}
}

// resolved is the answer to a query the cache missed, given what the
// upstreams answered; when every upstream failed it serves an expired
// answer (RFC 8767) or SERVFAIL with the reason.
func (h *Handler) resolved(st *State, req *dns.Msg, ans upstreamAnswer, err error) (*dns.Msg, *Chain, uint16, AnswerSource) {
	var r *dns.Msg
	if err == nil {
		r, err = ans.msg()
	}
	if err == nil {
		// The alias chain is read once, here, and cached with the answer.
		chain := aliasChain(r, st.MaxChain)
		st.Cache.putReceived(req, r, ans.wire, chain)
		return r, chain, 0, SourceUpstream
	}
	if errors.Is(err, ErrOverload) {
		h.counters.Overload.Add(1)
		return rcodeMsg(req, dns.RcodeServerFailure), nil, dns.ExtendedErrorCodeOther, SourceLocal
	}
	if stale, chain := st.Cache.Stale(req); stale != nil {
		h.metrics.cacheLookup(cacheStale)
		return stale, chain, dns.ExtendedErrorCodeStaleAnswer, SourceStale
	}
	var nu *errNoUpstream
	if errors.As(err, &nu) && nu.timeout {
		return rcodeMsg(req, dns.RcodeServerFailure), nil, dns.ExtendedErrorCodeNoReachableAuthority, SourceLocal
	}
	return rcodeMsg(req, dns.RcodeServerFailure), nil, dns.ExtendedErrorCodeNetworkError, SourceLocal
}

// upstreamQuery is the query phonehome sends on: the client's question, RD,
// CD and the DO bit, an EDNS0 size of 1232, and none of the client's EDNS0
// options (no Client Subnet leaves the network).
func upstreamQuery(req *dns.Msg) *dns.Msg {
	var opt dns.OPT
	opt.Hdr = dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}
	opt.SetUDPSize(maxUDP)
	if o := req.IsEdns0(); o != nil && o.Do() {
		opt.SetDo()
	}
	hdr := dns.MsgHdr{RecursionDesired: true, CheckingDisabled: req.CheckingDisabled, AuthenticatedData: req.AuthenticatedData}
	return newQuery(hdr, req.Question[0], &opt.Hdr)
}

// newQuery is a query of one question and, when opt is not nil, an OPT
// record of that header, made in one allocation (unpacking one makes
// six): the upstream query of every miss, and a query the wire path read
// (wireQuery.msg).
func newQuery(hdr dns.MsgHdr, question dns.Question, opt *dns.RR_Header) *dns.Msg {
	v := new(struct {
		m   dns.Msg
		q   [1]dns.Question
		x   [1]dns.RR
		opt dns.OPT
	})
	v.m.MsgHdr = hdr
	v.q[0] = question
	v.m.Question = v.q[:]
	if opt != nil {
		v.opt.Hdr = *opt
		v.x[0] = &v.opt
		v.m.Extra = v.x[:]
	}
	return &v.m
}

// The names a resolver answers itself to keep its clients: Firefox's
// canary, which turns off Firefox's own DNS over HTTPS when it does not
// resolve, and the name DDR (RFC 9462) asks for a resolver's encrypted
// endpoints, of which phonehome has none yet.
const (
	canaryName = "use-application-dns.net."
	ddrName    = "_dns.resolver.arpa."
)

// protocol answers what phonehome does not forward, or returns nil.
// canary says whether Firefox's canary gets NXDOMAIN.
func protocol(req *dns.Msg, canary bool) *dns.Msg {
	if len(req.Question) != 1 {
		return rcodeMsg(req, dns.RcodeFormatError)
	}
	if req.Opcode != dns.OpcodeQuery {
		return rcodeMsg(req, dns.RcodeNotImplemented)
	}
	q := req.Question[0]
	if q.Qclass == dns.ClassCHAOS {
		return rcodeMsg(req, dns.RcodeRefused) // version.bind and friends
	}
	switch {
	case canary && strings.EqualFold(q.Name, canaryName):
		return rcodeMsg(req, dns.RcodeNameError)
	case strings.EqualFold(q.Name, ddrName):
		return rcodeMsg(req, dns.RcodeSuccess) // NODATA: no designated resolver
	}
	if q.Qtype == dns.TypeANY {
		m := rcodeMsg(req, dns.RcodeSuccess)
		m.Answer = []dns.RR{&dns.HINFO{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeHINFO, Class: q.Qclass, Ttl: 3600}, Cpu: "RFC8482"}}
		return m
	}
	return nil
}

// rcodeMsg makes an empty answer to req with the given rcode.
func rcodeMsg(req *dns.Msg, code int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, code)
	m.RecursionAvailable = true
	return m
}

// reply finishes an answer for this client and sends it: the client's ID,
// exact question, RD and CD bits, RA set and AA clear (phonehome is
// authoritative for nothing it forwards or caches), EDNS0 only if the
// client used it (with an Extended DNS Error when there is one), names
// compressed, and over UDP, when it does not fit the client's size, TC set
// and no records.
func (h *Handler) reply(w dns.ResponseWriter, req, m *dns.Msg, ede uint16, text string) {
	m.Id = req.Id
	m.Response = true
	m.Authoritative = false
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	m.RecursionAvailable = true
	m.Question = req.Question
	// Drop any OPT from upstream; add ours if the client spoke EDNS0.
	extra := m.Extra[:0:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	// Names are compressed, as unbound and every resolver compress them,
	// except in an answer of one record, the commonest of all (one A or
	// AAAA): there compression saves the owner name less two bytes and
	// costs the packer a map, two allocations per query on the hot path.
	// A chain, an RRset, a negative answer and its proofs all gain more.
	lone := len(m.Answer) == 1 && len(m.Ns) == 0 && len(m.Extra) == 0
	size, pad := dns.MinMsgSize, false
	if o := req.IsEdns0(); o != nil {
		size = max(dns.MinMsgSize, min(int(o.UDPSize()), maxUDP))
		m.SetEdns0(maxUDP, o.Do())
		if ede != 0 {
			opt := m.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: ede, ExtraText: text})
		}
		// Padding (RFC 7830) only for a client that padded its query,
		// and only over TLS and HTTPS, where it hides the answer's size
		// (RFC 8467).
		pad = len(o.Option) > 0 && padded(o) && encrypted(w)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		// Truncate compresses if the answer does not fit otherwise and
		// clears Compress if it does, so lone is applied after.
		m.Truncate(size)
		if m.Truncated {
			// A client throws a truncated answer away and asks again over
			// TCP (RFC 2181 section 9), so it gets the header, question and
			// OPT alone, as unbound sends them, not size bytes of records.
			m.Answer, m.Ns = nil, nil
			m.Extra = slices.DeleteFunc(m.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeOPT })
		}
	}
	m.Compress = m.Compress || !lone
	if pad {
		padAnswer(m) // last: the padding makes up the length of the rest
	}
	if err := w.WriteMsg(m); err != nil && h.log != nil {
		h.log.Debug("writing answer", "err", err)
	}
}

// withinRateLimit takes one token from client's bucket (perSecond a
// second, bursts of perSecond), and reports whether there was one.
func (h *Handler) withinRateLimit(client netip.Addr, perSecond int, now time.Time) bool {
	l, ok := h.limiters.Get(client)
	if !ok {
		l = rate.NewLimiter(rate.Limit(perSecond), perSecond)
		h.limiters.Add(client, l)
	}
	return l.AllowN(now, 1)
}

// Allowed reports whether a (IPv4-mapped or not) is inside access.allow:
// the one access check, for DNS and for the HTTP API's POST calls.
func (st *State) Allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range st.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func addrOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap()
}

// transportOf is what the query answered through w came over.
func transportOf(w dns.ResponseWriter) Transport {
	switch w := w.(type) {
	case *batchWriter, *udpWriter:
		return TransportUDP
	case *tcpConn:
		return w.s.transport
	case *dohWriter:
		return TransportDoH
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		return TransportUDP
	}
	return TransportTCP
}

// encrypted reports whether answers through w go over TLS or HTTPS.
func encrypted(w dns.ResponseWriter) bool {
	t := transportOf(w)
	return t == TransportDoT || t == TransportDoH
}

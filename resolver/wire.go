package resolver

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/policy"
)

// The UDP loop's wire path. Most queries a home resolver gets are for
// names it has cached or sinkholes, and answering them through dns.Msg
// (unpacking the query and the cached answer, packing the reply) cost
// more than the rest of the request path together. serveWire answers
// those two kinds from the bytes: the question is read straight from the
// packet, a cached answer is copied as stored and patched (ID, flags,
// TTLs counted down, our OPT record),
// and a sinkhole address is written out. It makes the same checks and the
// same decision as ServeDNS, tells the same observers, and sends the same
// answer; anything else (a miss, another sinkhole mode, an answer that
// would not fit, a query with anything unusual in it) it hands to
// ServeDNS's own steps, so that path stays the reference: wire_test.go
// compares the two answer for answer.

// wireQuery is a query read from the wire by parseWire.
type wireQuery struct {
	id            uint16
	rd, cd        bool
	question      []byte // the question as sent: name, type and class
	name          string // the name, as sent, in presentation form
	qtype, qclass uint16
	edns, do      bool
	padded        bool // it carries the padding option (RFC 7830)
	size          int  // the largest answer the client takes over UDP
	// What else msg needs: the AD bit, the OPT record's class and TTL as
	// sent, and whether the query is plain enough for msg (no EDNS
	// option, no rcode, none of the bits a query has no use for).
	ad       bool
	optClass uint16
	optTTL   uint32
	plain    bool
}

// A wireWriter is a dns.ResponseWriter the wire path answers through: the
// UDP loop's batchWriter, a DNS-over-TCP or -TLS connection, a
// DNS-over-HTTPS request.
type wireWriter interface {
	dns.ResponseWriter
	// wireBuf is room to write an answer in, and wireSend sends an
	// answer written there.
	wireBuf() []byte
	wireSend(b []byte)
}

// parseWire reads a query of the plainest shape: a QUERY of one question
// of class IN whose name is letters, digits, hyphens and underscores, at
// most an OPT record (version 0, no option but a cookie or padding), and
// nothing else. For any other it returns false, and ServeDNS reads it.
func parseWire(b []byte, q *wireQuery) bool {
	if len(b) < 12+2+4 || b[2]&0xfa != 0 || // QR, opcode and TC clear
		binary.BigEndian.Uint16(b[4:]) != 1 || binary.BigEndian.Uint16(b[6:]) != 0 ||
		binary.BigEndian.Uint16(b[8:]) != 0 || binary.BigEndian.Uint16(b[10:]) > 1 {
		return false
	}
	q.id = binary.BigEndian.Uint16(b)
	q.rd, q.cd, q.ad = b[2]&0x01 != 0, b[3]&0x10 != 0, b[3]&0x20 != 0
	q.plain = b[2]&0x04 == 0 && b[3]&0xcf == 0 // no AA, RA or Z bit, no rcode
	var name [255]byte
	n, off := 0, 12
	for {
		if off >= len(b) {
			return false
		}
		l := int(b[off])
		off++
		if l == 0 {
			break
		}
		// A name is at most 255 octets on the wire (RFC 1035 section
		// 2.3.4): its text form, a dot after each label, one fewer.
		if l > 63 || off+l > len(b) || n+l+1 >= len(name) {
			return false
		}
		for _, c := range b[off : off+l] {
			if !ldh(c) {
				return false
			}
		}
		n += copy(name[n:], b[off:off+l])
		name[n] = '.'
		n++
		off += l
	}
	if n == 0 || off+4 > len(b) {
		return false // the root: ServeDNS answers it
	}
	q.qtype, q.qclass = binary.BigEndian.Uint16(b[off:]), binary.BigEndian.Uint16(b[off+2:])
	if q.qclass != dns.ClassINET || q.qtype == 0 || q.qtype == dns.TypeOPT || q.qtype >= dns.TypeIXFR && q.qtype <= dns.TypeANY {
		return false
	}
	off += 4
	q.question = b[12:off]
	q.edns, q.do, q.padded, q.size = false, false, false, dns.MinMsgSize
	if binary.BigEndian.Uint16(b[10:]) == 1 {
		// The OPT record: root name, type, the client's UDP size, the
		// extended rcode, version and flags, and its options.
		if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT || b[off+6] != 0 {
			return false
		}
		q.edns, q.do = true, b[off+7]&0x80 != 0
		q.optClass, q.optTTL = binary.BigEndian.Uint16(b[off+3:]), binary.BigEndian.Uint32(b[off+5:])
		q.size = max(dns.MinMsgSize, min(int(q.optClass), maxUDP))
		rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
		q.plain = q.plain && rdlen == 0 && b[off+5] == 0 // no option, no extended rcode
		off += 11
		if off+rdlen != len(b) {
			return false
		}
		for o := off; o < off+rdlen; {
			if o+4 > off+rdlen {
				return false
			}
			code, l := binary.BigEndian.Uint16(b[o:]), int(binary.BigEndian.Uint16(b[o+2:]))
			if code != dns.EDNS0COOKIE && code != dns.EDNS0PADDING {
				return false
			}
			q.padded = q.padded || code == dns.EDNS0PADDING
			o += 4 + l
			if o > off+rdlen {
				return false
			}
		}
		off += rdlen
	}
	if off != len(b) {
		return false
	}
	q.name = string(name[:n])
	return true
}

// ldh reports whether c may be in a name parseWire takes: a letter, a
// digit, a hyphen or an underscore, which need no escaping in
// presentation form.
func ldh(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// What serveWire did with a query.
type wireResult uint8

const (
	wireNotMine  wireResult = iota // nothing: ServeDNS is to read it whole
	wireAnswered                   // answered it from the wire (or the rate limit dropped it)
	wirePassed                     // decided it and passed it on to ServeDNS's later steps
)

// serveWire answers a query from its wire form when it can. It leaves
// alone (wireNotMine) a query of another shape, from outside
// access.allow, for the names ServeDNS answers itself, or that asks for a
// padded answer over an encrypted transport; and once it has counted the
// query against the rate limit and decided it, it passes what it cannot
// answer to ServeDNS's steps after the decision. now is when the query was
// read: the UDP loop reads the clock once for a batch of them.
func (h *Handler) serveWire(w wireWriter, b []byte, now time.Time) wireResult {
	var q wireQuery
	if !parseWire(b, &q) || strings.EqualFold(q.name, canaryName) || strings.EqualFold(q.name, ddrName) {
		return wireNotMine
	}
	transport := transportOf(w)
	if transport != TransportUDP {
		if q.padded && encrypted(w) {
			return wireNotMine // reply pads the answer
		}
		q.size = dns.MaxMsgSize // nothing is truncated but over UDP
	}
	st := h.state.Load()
	client := addrOf(w.RemoteAddr())
	if !st.Allowed(client) {
		return wireNotMine
	}
	// From here on, as ServeDNS: 2. the rate limit, 4. the decision.
	a := Answer{Start: now, Client: client, Transport: transport, Source: SourceLocal}
	if st.RateLimit > 0 && !h.withinRateLimit(client, st.RateLimit, now) {
		h.counters.RateLimited.Add(1)
		return wireAnswered
	}
	a.Question = dns.Question{Name: q.name, Qtype: q.qtype, Qclass: q.qclass}
	a.Decision = st.Policy.Decide(client, q.name)
	h.pauseIfAsked(&a.Decision)

	missed := false // the cache has nothing fresh
	if a.Decision.Action == policy.Sinkhole {
		// 5. The sinkhole's address.
		if out, ok := q.sinkhole(w.wireBuf(), st.Sinkhole, a.Decision.BlockedText()); ok {
			w.wireSend(out)
			a.Rcode, a.Source = dns.RcodeSuccess, SourceSinkhole
			h.done(w, a)
			return wireAnswered
		}
	} else if e, age := st.Cache.fresh(q.question, keyFlags(q.do, q.cd), now); e == nil {
		missed = true
	} else {
		// 6. The cached answer, unless its alias chain decides
		// otherwise (then ServeDNS's steps sinkhole it).
		d := a.Decision
		if e.chain != nil && st.InspectCNAME {
			d = e.chain.decide(st.Policy, client, d, st.MaxChain)
			h.pauseIfAsked(&d)
		}
		if d.Action != policy.Sinkhole {
			if out, ok := q.cached(w.wireBuf(), e, age); ok {
				w.wireSend(out)
				h.metrics.cacheLookup(cacheHit)
				a.Decision, a.Rcode, a.Source = d, int(out[3]&0x0f), SourceCache
				h.done(w, a)
				return wireAnswered
			}
		}
	}
	// Anything else: ServeDNS's steps after the decision, on the query
	// as a dns.Msg: made from what parseWire read, or read whole.
	req := q.msg()
	if req == nil {
		req = new(dns.Msg)
		if req.Unpack(b) != nil {
			h.counters.Malformed.Add(1)
			return wirePassed
		}
	}
	h.serveDecided(w, req, st, a, missed)
	return wirePassed
}

// msg is the query as miekg/dns unpacks it, made from what parseWire read
// rather than read again: the header's ID and bits, the question, and the
// OPT record (newQuery). It returns nil for a query that is not plain
// (EDNS options, an rcode, the AA, RA or Z bit): that one is unpacked.
func (q *wireQuery) msg() *dns.Msg {
	if !q.plain {
		return nil
	}
	hdr := dns.MsgHdr{Id: q.id, RecursionDesired: q.rd, AuthenticatedData: q.ad, CheckingDisabled: q.cd}
	var opt *dns.RR_Header
	if q.edns {
		opt = &dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: q.optClass, Ttl: q.optTTL}
	}
	return newQuery(hdr, dns.Question{Name: q.name, Qtype: q.qtype, Qclass: q.qclass}, opt)
}

// cached writes the cached answer e, age seconds old, as the answer to q
// into buf. It returns false when the answer would not fit the client's
// size (ServeDNS truncates it), and when q spells the name otherwise than
// the stored question: ServeDNS answers with the client's spelling while
// the records keep the stored one, which a patched copy of the stored
// question cannot do when the records' names point to it.
func (q *wireQuery) cached(buf []byte, e *cached, age uint32) ([]byte, bool) {
	wire := e.wire()
	if !bytes.Equal(wire[12:e.qend], q.question) || len(wire)+q.optLen(false, 0) > q.size {
		return nil, false
	}
	buf = append(buf[:0], wire...)
	q.header(buf, buf[3]&0x2f) // the stored AD bit and rcode
	for i := len(wire); i < len(e.data); i += 2 {
		off := binary.BigEndian.Uint16(e.data[i:])
		ttl := binary.BigEndian.Uint32(buf[off:])
		binary.BigEndian.PutUint32(buf[off:], ttl-min(ttl, age))
	}
	return q.opt(buf, 0, ""), true
}

// sinkhole writes the sinkhole answer to q into buf, with the Extended DNS
// Error that says what matched, when it is an address: an A or AAAA query
// in mode null_ip or ip. Otherwise it returns false (ServeDNS answers).
func (q *wireQuery) sinkhole(buf []byte, s Sinkhole, text string) ([]byte, bool) {
	var addr netip.Addr
	switch s.Mode {
	case SinkholeNullIP:
		addr = netip.IPv4Unspecified()
		if q.qtype == dns.TypeAAAA {
			addr = netip.IPv6Unspecified()
		}
	case SinkholeIP:
		addr = s.IPv4
		if q.qtype == dns.TypeAAAA {
			addr = s.IPv6
		}
	}
	if q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA || !addr.IsValid() || addr.Is4() != (q.qtype == dns.TypeA) {
		return nil, false
	}
	rdata := addr.AsSlice()
	if 12+len(q.question)+12+len(rdata)+q.optLen(true, len(text)) > q.size {
		return nil, false
	}
	if cap(buf) < 12 {
		buf = make([]byte, 12, 12+len(q.question)+12+len(rdata)+q.optLen(true, len(text)))
	}
	buf = append(buf[:12], q.question...)
	q.header(buf, 0)
	binary.BigEndian.PutUint16(buf[6:], 1) // one answer
	binary.BigEndian.PutUint16(buf[8:], 0)
	binary.BigEndian.PutUint16(buf[10:], 0)
	// The record: its name a pointer to the question's, then type,
	// class, TTL and the address.
	buf = append(buf, 0xc0, 12)
	buf = binary.BigEndian.AppendUint16(buf, q.qtype)
	buf = binary.BigEndian.AppendUint16(buf, dns.ClassINET)
	buf = binary.BigEndian.AppendUint32(buf, uint32(s.TTL/time.Second))
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(rdata)))
	buf = append(buf, rdata...)
	return q.opt(buf, dns.ExtendedErrorCodeBlocked, text), true
}

// header writes the answer's header into buf[:12] as reply does: q's ID,
// QR, RD and CD as q had them, RA, AA clear, one question; low is the AD
// bit and rcode. The section counts after the question's are left alone.
func (q *wireQuery) header(buf []byte, low byte) {
	binary.BigEndian.PutUint16(buf, q.id)
	buf[2] = 0x80
	if q.rd {
		buf[2] |= 0x01
	}
	buf[3] = 0x80 | low&0x2f
	if q.cd {
		buf[3] |= 0x10
	}
	binary.BigEndian.PutUint16(buf[4:], 1)
}

// optLen is how many bytes q's OPT record takes, with an Extended DNS
// Error of a text of n bytes or without one.
func (q *wireQuery) optLen(ede bool, n int) int {
	switch {
	case !q.edns:
		return 0
	case ede:
		return 11 + 6 + n
	}
	return 11
}

// opt appends, for a client that sent EDNS0, phonehome's OPT record (UDP
// size 1232, the client's DO bit) with an Extended DNS Error when ede is
// not 0, and counts it in the additional section.
func (q *wireQuery) opt(buf []byte, ede uint16, text string) []byte {
	if !q.edns {
		return buf
	}
	binary.BigEndian.PutUint16(buf[10:], binary.BigEndian.Uint16(buf[10:])+1)
	buf = append(buf, 0, 0, byte(dns.TypeOPT))
	buf = binary.BigEndian.AppendUint16(buf, maxUDP)
	var flags byte
	if q.do {
		flags = 0x80
	}
	buf = append(buf, 0, 0, flags, 0)
	if ede == 0 {
		return append(buf, 0, 0)
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(6+len(text)))
	buf = binary.BigEndian.AppendUint16(buf, dns.EDNS0EDE)
	buf = binary.BigEndian.AppendUint16(buf, uint16(2+len(text)))
	buf = binary.BigEndian.AppendUint16(buf, ede)
	return append(buf, text...)
}

// eachRecord walks the records of a packed message of one question: f gets
// each record's start, the offset of its type (after its owner name) and
// its end, in order, and stops the walk by returning false. It returns
// where the question ends, and ok false for a message of another shape
// (or with bytes after its last record), or when f stopped it.
func eachRecord(msg []byte, f func(start, typ, end int) bool) (qend int, ok bool) {
	if len(msg) < 12 || binary.BigEndian.Uint16(msg[4:]) != 1 {
		return 0, false
	}
	off, ok := skipName(msg, 12)
	if !ok || off+4 > len(msg) {
		return 0, false
	}
	qend = off + 4
	off = qend
	n := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:])) + int(binary.BigEndian.Uint16(msg[10:]))
	for range n {
		start := off
		if off, ok = skipName(msg, off); !ok || off+10 > len(msg) {
			return 0, false
		}
		end := off + 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
		if end > len(msg) || !f(start, off, end) {
			return 0, false
		}
		off = end
	}
	return qend, off == len(msg)
}

// wireRecords reads a packed message of one question without an OPT
// record, for cached answers that serveWire patches: it returns the offset
// where its question ends, and msg with the offset of each record's TTL
// appended (2 bytes each, in msg's spare room when it has some). ok is
// false for any other message.
func wireRecords(msg []byte) (withTTLs []byte, qend int, ok bool) {
	out := msg
	qend, ok = eachRecord(msg, func(_, typ, _ int) bool {
		if binary.BigEndian.Uint16(msg[typ:]) == dns.TypeOPT {
			return false // the cache stores none
		}
		out = binary.BigEndian.AppendUint16(out, uint16(typ+4))
		return true
	})
	if !ok {
		return nil, 0, false
	}
	return out, qend, true
}

// withoutOPT returns a copy of the packed message msg without its OPT
// record, when that is its last record (where every server puts it), or
// msg copied when it has none, with room after it for wireRecords' TTL
// offsets; nil for nil, or for a message it cannot read that way (the
// cache then packs the unpacked answer).
func withoutOPT(msg []byte) []byte {
	n, opt := 0, -1 // records, and where the OPT record starts
	_, ok := eachRecord(msg, func(start, typ, _ int) bool {
		if opt >= 0 {
			return false // a record after the OPT one
		}
		if binary.BigEndian.Uint16(msg[typ:]) == dns.TypeOPT {
			opt = start
		}
		n++
		return true
	})
	switch {
	case !ok:
		return nil
	case opt < 0:
		return append(make([]byte, 0, len(msg)+2*n), msg...)
	}
	out := append(make([]byte, 0, opt+2*(n-1)), msg[:opt]...)
	binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])-1)
	return out
}

// wireMaxAge is maxAge of a packed answer that serveWire wrote: the
// smallest TTL of its records, a SOA's being the lesser of its TTL and
// its MINIMUM; 0 without records, or for one it cannot read.
func wireMaxAge(msg []byte) uint32 {
	age, seen := uint32(0), false
	_, ok := eachRecord(msg, func(_, typ, end int) bool {
		ttl := binary.BigEndian.Uint32(msg[typ+4:])
		switch binary.BigEndian.Uint16(msg[typ:]) {
		case dns.TypeOPT:
			return true
		case dns.TypeSOA:
			if end-typ-10 >= 20 {
				ttl = min(ttl, binary.BigEndian.Uint32(msg[end-4:]))
			}
		}
		if !seen || ttl < age {
			age, seen = ttl, true
		}
		return true
	})
	if !ok {
		return 0
	}
	return age
}

// skipName returns the offset after the packed name at off.
func skipName(msg []byte, off int) (int, bool) {
	for off < len(msg) {
		switch l := int(msg[off]); {
		case l == 0:
			return off + 1, true
		case l&0xc0 == 0xc0:
			return off + 2, off+2 <= len(msg)
		case l&0xc0 != 0:
			return 0, false
		default:
			off += 1 + l
		}
	}
	return 0, false
}

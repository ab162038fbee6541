package resolver

import (
	"encoding/binary"
	"slices"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
)

// Cache holds upstream answers for everyone: the policy decides before the
// cache is asked, so one cache serves every group and a reload never serves
// a stale decision.
type Cache struct {
	lru            *lru.Cache[string, *cached]
	size           int
	minTTL, maxTTL time.Duration
	now            func() time.Time
}

// cached is an answer in wire format: a byte slice holds no pointers, so the
// garbage collector need not trace through thousands of messages' records on
// every cycle, which held up answers by milliseconds when it ran.
type cached struct {
	wire    []byte // compressed, without an OPT record
	stored  time.Time
	expires time.Time
	chain   *Chain // nil without a CNAME
	// For the UDP loop's wire path (wire.go): where the question ends
	// and where each record's TTL is in wire.
	qend uint16
	ttls []uint16
}

const (
	servfailTTL = 5 * time.Second
	staleFor    = 24 * time.Hour
	staleTTL    = 30
)

// NewCache makes a cache of at most size answers; size 0 turns it off. now
// is its clock (nil for time.Now).
func NewCache(size int, minTTL, maxTTL time.Duration, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	c := &Cache{size: size, minTTL: minTTL, maxTTL: maxTTL, now: now}
	if size > 0 {
		c.lru, _ = lru.New[string, *cached](size)
	}
	return c
}

// Key is the cache key of a query: the lower-cased name, type, class and
// the DO and CD bits.
func Key(q *dns.Msg) string {
	qq := q.Question[0]
	o := q.IsEdns0()
	return keyOf(qq.Name, qq.Qtype, qq.Qclass, o != nil && o.Do(), q.CheckingDisabled)
}

// keyOf is Key of a query's parts.
func keyOf(name string, qtype, qclass uint16, do, cd bool) string {
	var b strings.Builder
	b.Grow(len(name) + 5)
	for i := range len(name) {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	b.WriteByte(byte(qtype >> 8))
	b.WriteByte(byte(qtype))
	b.WriteByte(byte(qclass >> 8))
	b.WriteByte(byte(qclass))
	var flags byte
	if do {
		flags |= 1
	}
	if cd {
		flags |= 2
	}
	b.WriteByte(flags)
	return b.String()
}

// Len is the number of answers held.
func (c *Cache) Len() int {
	if c.lru == nil {
		return 0
	}
	return c.lru.Len()
}

// Get returns a fresh answer with its TTLs counted down, and its alias
// chain, or nil.
func (c *Cache) Get(key string) (*dns.Msg, *Chain) { return c.lookup(key, false) }

// Stale returns an expired answer still within a day, with TTL 30, and its
// alias chain, or nil: for when every upstream is down (RFC 8767).
func (c *Cache) Stale(key string) (*dns.Msg, *Chain) { return c.lookup(key, true) }

// lookup unpacks the entry for key only when it is what was asked for: an
// expired entry on the request path is a miss, and costs nothing more.
func (c *Cache) lookup(key string, stale bool) (*dns.Msg, *Chain) {
	if c.lru == nil {
		return nil, nil
	}
	e, ok := c.lru.Get(key)
	if !ok {
		return nil, nil
	}
	now := c.now()
	if fresh := now.Before(e.expires); fresh == stale || now.Sub(e.expires) >= staleFor {
		return nil, nil
	}
	m := new(dns.Msg)
	if m.Unpack(e.wire) != nil {
		return nil, nil
	}
	if stale {
		headers(m, func(h *dns.RR_Header) { h.Ttl = staleTTL })
		return m, e.chain
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	headers(m, func(h *dns.RR_Header) { h.Ttl -= min(h.Ttl, age) })
	return m, e.chain
}

// fresh returns the entry for key while it is fresh, and its age in
// seconds, for the wire path; or nil.
func (c *Cache) fresh(key string) (*cached, uint32) {
	if c.lru == nil {
		return nil, 0
	}
	e, ok := c.lru.Get(key)
	if !ok {
		return nil, 0
	}
	now := c.now()
	if !now.Before(e.expires) {
		return nil, 0
	}
	return e, uint32(now.Sub(e.stored) / time.Second)
}

// forgetDecisions drops what every cached alias chain remembers of a
// policy's decisions. A reload brings a new policy, and a chain that kept
// the old one's decisions would keep that whole policy alive (its
// matcher, a megabyte) until its entry left the cache: a soak with a
// reload every 2 s held 6 of them after half an hour.
func (c *Cache) forgetDecisions() {
	if c.lru == nil {
		return
	}
	for _, e := range c.lru.Values() {
		if e.chain != nil {
			e.chain.memo.Store(nil)
		}
	}
}

// Put stores an upstream answer, with its alias chain (nil for none), for
// as long as RFC 2308 and the config allow: positive answers for their
// lowest TTL, NXDOMAIN and NODATA for the SOA minimum, SERVFAIL for at most
// 5 s. Other answers are not stored.
func (c *Cache) Put(key string, m *dns.Msg, chain *Chain) { c.putReceived(key, m, nil, chain) }

// putReceived is Put of an answer that may come with its bytes as the upstream
// sent them (nil when it did not come over UDP): those are stored, copied
// without their OPT record, rather than m packed again.
func (c *Cache) putReceived(key string, m *dns.Msg, received []byte, chain *Chain) {
	if c.lru == nil || m.Truncated {
		return
	}
	var ttl time.Duration
	switch {
	case m.Rcode == dns.RcodeServerFailure:
		ttl = servfailTTL
	case m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0:
		soa := negativeTTL(m)
		if soa < 0 {
			return // no SOA: not cacheable (RFC 2308 section 5)
		}
		ttl = c.clamp(soa)
	case m.Rcode == dns.RcodeSuccess:
		min := -1
		for _, rr := range m.Answer {
			if t := int(rr.Header().Ttl); min < 0 || t < min {
				min = t
			}
		}
		ttl = c.clamp(time.Duration(min) * time.Second)
	default:
		return
	}
	if ttl <= 0 {
		return
	}
	// Stored without the upstream's OPT record, which no answer passes
	// on (reply adds phonehome's own), and compressed, as sent; packed
	// from a shallow copy (m is the caller's, and packing changes no
	// record), with the TTLs clamped in the packed bytes.
	wire := withoutOPT(received)
	if wire == nil {
		p := *m
		if slices.ContainsFunc(p.Extra, isOPT) {
			p.Extra = slices.DeleteFunc(slices.Clone(p.Extra), isOPT)
		}
		p.Compress = true
		var err error
		if wire, err = p.Pack(); err != nil {
			return
		}
	}
	qend, ttls, ok := wireRecords(wire)
	if !ok {
		return
	}
	maxTTL, minTTL := uint32(ttl/time.Second), uint32(c.minTTL/time.Second)
	for _, off := range ttls {
		switch t := binary.BigEndian.Uint32(wire[off:]); {
		case t > maxTTL:
			binary.BigEndian.PutUint32(wire[off:], maxTTL)
		case t < minTTL:
			binary.BigEndian.PutUint32(wire[off:], minTTL)
		}
	}
	now := c.now()
	e := &cached{wire: wire, stored: now, expires: now.Add(ttl), chain: chain, qend: uint16(qend), ttls: ttls}
	c.lru.Add(key, e)
}

func isOPT(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT }

func (c *Cache) clamp(d time.Duration) time.Duration {
	if d < c.minTTL {
		d = c.minTTL
	}
	if c.maxTTL > 0 && d > c.maxTTL {
		d = c.maxTTL
	}
	return d
}

// negativeTTL is min(SOA TTL, SOA minimum) of the authority section, or -1.
func negativeTTL(m *dns.Msg) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return -1
}

// headers calls f with the header of every record whose TTL counts down:
// all of them but the OPT pseudo-record. (A callback, not a slice: this runs
// for every cache hit.)
func headers(m *dns.Msg, f func(*dns.RR_Header)) {
	for _, sec := range [...][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				f(h)
			}
		}
	}
}

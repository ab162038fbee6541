package resolver

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
)

// Cache holds upstream answers for everyone: the policy decides before the
// cache is asked, so one cache serves every group and a reload never serves
// a stale decision.
//
// Its LRU is keyed by a hash of the question (cacheKey), which the UDP
// loop's wire path computes from the packet without allocating; the entry's
// own copy of the question tells a hash that two questions share from a hit.
type Cache struct {
	lru            *lru.Cache[uint64, *cached]
	seed           maphash.Seed
	size           int
	minTTL, maxTTL time.Duration
	now            func() time.Time
	ownClock       bool      // now is not time.Now (tests): clock reads it
	epoch          time.Time // entries' times are counted from it
}

// cached is an answer in wire format: byte slices hold no pointers, so the
// garbage collector need not trace through thousands of messages' records on
// every cycle, which held up answers by milliseconds when it ran. Twenty
// thousand of them are most of phonehome's heap, so an entry is one
// allocation besides itself and its times are counters, not time.Times.
type cached struct {
	// data is the answer, compressed, without an OPT record, then the
	// offset of each record's TTL in it (2 bytes each): for the UDP
	// loop's wire path (wire.go), which patches them.
	data  []byte
	wlen  uint16 // the answer is data[:wlen]
	qend  uint16 // where its question ends
	flags uint8  // the DO and CD bits of the query it answers
	// stored and expires are nanoseconds after the cache's epoch.
	stored, expires int64
	chain           *Chain // nil without a CNAME
}

// wire is the stored answer.
func (e *cached) wire() []byte { return e.data[:e.wlen] }

const (
	servfailTTL = 5 * time.Second
	staleFor    = 24 * time.Hour
	staleTTL    = 30
)

// NewCache makes a cache of at most size answers; size 0 turns it off. now
// is its clock (nil for time.Now).
func NewCache(size int, minTTL, maxTTL time.Duration, now func() time.Time) *Cache {
	own := now != nil
	if !own {
		now = time.Now
	}
	c := &Cache{size: size, minTTL: minTTL, maxTTL: maxTTL, now: now, ownClock: own, seed: maphash.MakeSeed(), epoch: now()}
	if size > 0 {
		c.lru, _ = lru.New[uint64, *cached](size)
	}
	return c
}

// msgFlags are keyFlags of a query.
func msgFlags(q *dns.Msg) uint8 {
	o := q.IsEdns0()
	return keyFlags(o != nil && o.Do(), q.CheckingDisabled)
}

func keyFlags(do, cd bool) uint8 {
	var flags uint8
	if do {
		flags |= 1
	}
	if cd {
		flags |= 2
	}
	return flags
}

// A cacheKey is what the cache knows a question by: the question in wire
// form (name, type and class, the name in any case) and the query's DO and
// CD bits, and the hash of the two with the name lower-cased.
type cacheKey struct {
	question []byte
	flags    uint8
	hash     uint64
	ok       bool // false: a question the cache does not hold
}

// maxQuestion is the longest question in wire form.
const maxQuestion = 255 + 4

// key is the cache key of a question in wire form and a query's DO and CD
// bits (keyFlags). It allocates nothing: the wire path calls it with the
// question as the packet has it.
func (c *Cache) key(question []byte, flags uint8) cacheKey {
	if len(question) < 5 || len(question) > maxQuestion {
		return cacheKey{}
	}
	var b [maxQuestion + 1]byte
	n := copy(b[:], question)
	lowerName(b[:n-4])
	b[n] = flags
	return cacheKey{question: question, flags: flags, hash: maphash.Bytes(c.seed, b[:n+1]), ok: true}
}

// keyOfMsg is the cache key of a query's question, written in wire form
// into buf (the caller's, on its stack).
func (c *Cache) keyOfMsg(q *dns.Msg, buf *[maxQuestion]byte) cacheKey {
	question := packQuestion(q, buf)
	if question == nil {
		return cacheKey{}
	}
	return c.key(question, msgFlags(q))
}

// packQuestion writes a query's one question in wire form into buf (the
// caller's, on its stack), and returns it; nil when it cannot.
func packQuestion(q *dns.Msg, buf *[maxQuestion]byte) []byte {
	if len(q.Question) != 1 {
		return nil
	}
	qq := q.Question[0]
	n, err := dns.PackDomainName(qq.Name, buf[:maxQuestion-4], 0, nil, false)
	if err != nil {
		return nil
	}
	binary.BigEndian.PutUint16(buf[n:], qq.Qtype)
	binary.BigEndian.PutUint16(buf[n+2:], qq.Qclass)
	return buf[:n+4]
}

// lowerName lower-cases the ASCII letters of a name in wire form. Its
// length bytes are at most 63, below 'A', so they stay as they are.
func lowerName(b []byte) {
	for i, ch := range b {
		if 'A' <= ch && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
}

// is reports whether e answers the question k is the key of: the same
// name, in any case, type, class and bits.
func (e *cached) is(k cacheKey) bool {
	q := e.data[12:e.qend]
	if e.flags != k.flags || len(q) != len(k.question) {
		return false
	}
	n := len(q) - 4
	for i := range n {
		a, b := q[i], k.question[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return string(q[n:]) == string(k.question[n:])
}

// entry is the entry for k, whatever its age, or nil.
func (c *Cache) entry(k cacheKey) *cached {
	if c.lru == nil || !k.ok {
		return nil
	}
	e, ok := c.lru.Get(k.hash)
	if !ok || !e.is(k) {
		return nil
	}
	return e
}

// clock is the time now as the cache reads it: the caller's reading of
// time.Now, or for a cache made with a clock of its own (tests), that
// clock's.
func (c *Cache) clock(now time.Time) time.Time {
	if c.ownClock {
		return c.now()
	}
	return now
}

// since is now as the cache counts time.
func (c *Cache) since(now time.Time) int64 { return int64(now.Sub(c.epoch)) }

// Len is the number of answers held.
func (c *Cache) Len() int {
	if c.lru == nil {
		return 0
	}
	return c.lru.Len()
}

// Get returns a fresh answer to q with its TTLs counted down, and its
// alias chain, or nil.
func (c *Cache) Get(q *dns.Msg) (*dns.Msg, *Chain) {
	var buf [maxQuestion]byte
	return c.lookup(c.keyOfMsg(q, &buf), false)
}

// Stale returns an expired answer to q still within a day, with TTL 30, and
// its alias chain, or nil: for when every upstream is down (RFC 8767).
func (c *Cache) Stale(q *dns.Msg) (*dns.Msg, *Chain) {
	var buf [maxQuestion]byte
	return c.lookup(c.keyOfMsg(q, &buf), true)
}

// lookup unpacks the entry for k only when it is what was asked for: an
// expired entry on the request path is a miss, and costs nothing more.
func (c *Cache) lookup(k cacheKey, stale bool) (*dns.Msg, *Chain) {
	e := c.entry(k)
	if e == nil {
		return nil, nil
	}
	now := c.since(c.now())
	if fresh := now < e.expires; fresh == stale || now-e.expires >= int64(staleFor) {
		return nil, nil
	}
	m := new(dns.Msg)
	if m.Unpack(e.wire()) != nil {
		return nil, nil
	}
	if stale {
		headers(m, func(h *dns.RR_Header) { h.Ttl = staleTTL })
		return m, e.chain
	}
	age := uint32((now - e.stored) / int64(time.Second))
	headers(m, func(h *dns.RR_Header) { h.Ttl -= min(h.Ttl, age) })
	return m, e.chain
}

// fresh returns the entry for the question in wire form while it is
// fresh, and its age in seconds, for the wire path; or nil.
func (c *Cache) fresh(question []byte, flags uint8, now time.Time) (*cached, uint32) {
	if c.lru == nil {
		return nil, 0
	}
	e := c.entry(c.key(question, flags))
	if e == nil {
		return nil, 0
	}
	t := c.since(c.clock(now))
	if t >= e.expires {
		return nil, 0
	}
	return e, uint32((t - e.stored) / int64(time.Second))
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

// Put stores an upstream answer to q, with its alias chain (nil for none),
// for as long as RFC 2308 and the config allow: positive answers for their
// lowest TTL, NXDOMAIN and NODATA for the SOA minimum, SERVFAIL for at most
// 5 s. Other answers are not stored.
func (c *Cache) Put(q, m *dns.Msg, chain *Chain) { c.putReceived(q, m, nil, chain) }

// putReceived is Put of an answer that may come with its bytes as the upstream
// sent them (nil when it did not come over UDP): those are stored, copied
// without their OPT record, rather than m packed again.
func (c *Cache) putReceived(q, m *dns.Msg, received []byte, chain *Chain) {
	if c.lru == nil || m.Truncated {
		return
	}
	var buf [maxQuestion]byte
	k := c.keyOfMsg(q, &buf)
	if !k.ok {
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
	if e := entryOf(wire); e != nil {
		c.keep(k, e, ttl, chain)
	}
}

// entryOf makes an entry of an answer packed without an OPT record, with
// the TTLs it has (keep clamps them); nil for one it cannot read.
func entryOf(wire []byte) *cached {
	// The TTLs' offsets go after the answer, in the same allocation.
	data, qend, ok := wireRecords(wire)
	if !ok || len(data) > 0xffff {
		return nil
	}
	return &cached{data: data, wlen: uint16(len(wire)), qend: uint16(qend)}
}

// keep stores e, the answer to the question of k, for ttl, its TTLs
// clamped to [min_ttl, ttl] in its bytes.
func (c *Cache) keep(k cacheKey, e *cached, ttl time.Duration, chain *Chain) {
	maxTTL, minTTL := uint32(ttl/time.Second), uint32(c.minTTL/time.Second)
	for i := int(e.wlen); i < len(e.data); i += 2 {
		off := binary.BigEndian.Uint16(e.data[i:])
		switch t := binary.BigEndian.Uint32(e.data[off:]); {
		case t > maxTTL:
			binary.BigEndian.PutUint32(e.data[off:], maxTTL)
		case t < minTTL:
			binary.BigEndian.PutUint32(e.data[off:], minTTL)
		}
	}
	now := c.since(c.now())
	e.flags, e.stored, e.expires, e.chain = k.flags, now, now+int64(ttl), chain
	if !e.is(k) {
		return // an answer to another question
	}
	c.lru.Add(k.hash, e)
}

// keepPlain stores the entry of a plain answer (plainAnswer) to the
// question, packed, of a query with the key flags (keyFlags), as
// putReceived would store it: for its records' smallest TTL, clamped.
func (c *Cache) keepPlain(question []byte, flags uint8, e *cached) {
	if c.lru == nil {
		return
	}
	k := c.key(question, flags)
	if !k.ok {
		return
	}
	least := uint32(math.MaxUint32)
	for i := int(e.wlen); i < len(e.data); i += 2 {
		least = min(least, binary.BigEndian.Uint32(e.data[binary.BigEndian.Uint16(e.data[i:]):]))
	}
	if ttl := c.clamp(time.Duration(least) * time.Second); ttl > 0 {
		c.keep(k, e, ttl, nil)
	}
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

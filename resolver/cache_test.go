package resolver

import (
	"hash/maphash"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func answer(name string, ttls ...uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Response = true
	for _, ttl := range ttls {
		rr, _ := dns.NewRR(name + " 0 IN A 192.0.2.1")
		rr.Header().Ttl = ttl
		m.Answer = append(m.Answer, rr)
	}
	return m
}

// testClock is a clock a test moves by hand.
type testClock struct{ skew atomic.Int64 }

func (c *testClock) now() time.Time { return time.Now().Add(time.Duration(c.skew.Load())) }

func (c *testClock) set(d time.Duration) { c.skew.Store(int64(d)) }

func TestCacheTTLs(t *testing.T) {
	clock := &testClock{}
	c := NewCache(10, 0, time.Hour, clock.now)
	key := answer("a.example.")
	c.put(answer("a.example.", 300, 100))
	clock.set(40 * time.Second)
	fresh := c.get(key)
	if fresh == nil || fresh.Answer[0].Header().Ttl != 60 || fresh.Answer[1].Header().Ttl != 60 { // both held to the entry's lifetime, the lowest TTL
		t.Fatalf("TTLs after 40 s: %v", fresh)
	}
	// The entry lives as long as its lowest TTL, then turns stale.
	clock.set(101 * time.Second)
	if fresh, stale := c.get(key), c.stale(key); fresh != nil || stale == nil || stale.Answer[0].Header().Ttl != staleTTL {
		t.Errorf("after 101 s: fresh %v stale %v", fresh, stale)
	}
	clock.set(25 * time.Hour)
	if fresh, stale := c.get(key), c.stale(key); fresh != nil || stale != nil {
		t.Error("a day after expiry nothing is served")
	}

	// Clamping.
	clock = &testClock{}
	c = NewCache(10, time.Minute, 10*time.Minute, clock.now)
	c.put(answer("low.example.", 5))
	c.put(answer("high.example.", 86400))
	if m := c.get(answer("low.example.")); m == nil || m.Answer[0].Header().Ttl != 60 {
		t.Errorf("min_ttl: %v", m)
	}
	if m := c.get(answer("high.example.")); m == nil || m.Answer[0].Header().Ttl != 600 {
		t.Errorf("max_ttl: %v", m)
	}

	// Negative answers: cached for min(SOA TTL, minimum); none without a SOA.
	nx := answer("nx.example.")
	nx.Rcode = dns.RcodeNameError
	clock = &testClock{}
	c = NewCache(10, 0, time.Hour, clock.now)
	c.put(nx)
	if m := c.get(nx); m != nil {
		t.Error("NXDOMAIN without SOA was cached")
	}
	soa, _ := dns.NewRR("example. 3600 IN SOA ns. host. 1 2 3 4 45")
	nx.Ns = []dns.RR{soa}
	c.put(nx)
	clock.set(44 * time.Second)
	if m := c.get(nx); m == nil || m.Rcode != dns.RcodeNameError {
		t.Error("NXDOMAIN not cached for the SOA minimum")
	}
	clock.set(46 * time.Second)
	if m := c.get(nx); m != nil {
		t.Error("NXDOMAIN outlived the SOA minimum")
	}
	// SERVFAIL: at most 5 s.
	sf := answer("sf.example.")
	sf.Rcode = dns.RcodeServerFailure
	clock.set(0)
	c.put(sf)
	clock.set(6 * time.Second)
	if m := c.get(sf); m != nil {
		t.Error("SERVFAIL cached beyond 5 s")
	}
	// Size 0 turns the cache off; the key tells DO and CD apart.
	off := NewCache(0, 0, 0, nil)
	off.put(answer("a.example.", 300))
	if m := off.get(answer("a.example.")); m != nil || off.Len() != 0 {
		t.Error("cache size 0 still caches")
	}
}

// TestFlightKey: the forwarder's queries in flight are one for a name in
// any case, and apart for the DO and CD bits, type and class.
func TestFlightKey(t *testing.T) {
	seed := maphash.MakeSeed()
	q := answer("A.Example.")
	p := answer("a.example.")
	if flightOf(q).key(seed) != flightOf(p).key(seed) || !flightOf(q).same(flightOf(p)) {
		t.Error("the same question in another case is another flight")
	}
	for what, change := range map[string]func(m *dns.Msg){
		"CD":    func(m *dns.Msg) { m.CheckingDisabled = true },
		"DO":    func(m *dns.Msg) { m.SetEdns0(1232, true) },
		"type":  func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA },
		"class": func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS },
		"name":  func(m *dns.Msg) { m.Question[0].Name = "b.example." },
	} {
		o := answer("a.example.")
		change(o)
		if flightOf(o).key(seed) == flightOf(p).key(seed) || flightOf(o).same(flightOf(p)) {
			t.Errorf("%s: still the same flight", what)
		}
	}
	if n := testing.AllocsPerRun(100, func() { flightOf(q).key(seed) }); n != 0 {
		t.Errorf("a flight's key allocates %v times", n)
	}
	if flightOf(new(dns.Msg)).same(flightOf(new(dns.Msg))) {
		t.Error("queries without a question are one flight")
	}
}

// TestCacheKey: the cache answers a question in any case of its name, tells
// the DO and CD bits apart, and never answers another question whose hash
// is the same.
func TestCacheKey(t *testing.T) {
	c := NewCache(10, 0, time.Hour, nil)
	c.put(answer("a.Example.", 300))
	for _, name := range []string{"a.example.", "A.EXAMPLE.", `\065.example.`} {
		if m := c.get(answer(name)); m == nil || len(m.Answer) != 1 {
			t.Errorf("%s: %v", name, m)
		}
	}
	q := answer("a.example.")
	q.CheckingDisabled = true
	if c.get(q) != nil {
		t.Error("a CD query got the answer to one without")
	}
	q.CheckingDisabled = false
	q.SetEdns0(1232, true)
	if c.get(q) != nil {
		t.Error("a DO query got the answer to one without")
	}
	q.Question[0].Qtype = dns.TypeAAAA
	if c.get(answer("b.example.")) != nil || c.get(q) != nil {
		t.Error("another name or type got the answer")
	}
	// The wire path's key is the same as ServeDNS's.
	var b1, b2 [maxQuestion]byte
	k := c.keyOfMsg(answer("A.example."), &b1)
	if e, _ := c.fresh(k.question, 0, time.Now()); e == nil {
		t.Error("the wire path's key misses")
	}
	// The wire path's reading of the clock is the cache's (once for a
	// UDP batch), unless the cache has a clock of its own.
	if e, age := c.fresh(k.question, 0, time.Now().Add(100*time.Second)); e == nil || age != 100 {
		t.Errorf("100 s on: %v, %d s old", e, age)
	}
	if e, _ := c.fresh(k.question, 0, time.Now().Add(301*time.Second)); e != nil {
		t.Error("an answer given as fresh 301 s on")
	}
	own := NewCache(10, 0, time.Hour, time.Now)
	own.put(answer("a.example.", 300))
	if e, age := own.fresh(k.question, 0, time.Now().Add(time.Hour)); e == nil || age != 0 {
		t.Errorf("a cache with its own clock read the caller's: %v, %d s old", e, age)
	}
	// Another question of the same hash is a miss, not the other's answer.
	other := c.keyOfMsg(answer("b.example."), &b2)
	other.hash = k.hash
	if c.entry(other) != nil || c.entry(k) == nil {
		t.Error("a hash's other question got its answer")
	}
	// An answer to another question than the query's is not stored.
	wrong := answer("c.example.", 300)
	c.Put(answer("d.example."), wrong, nil)
	if c.get(answer("d.example.")) != nil || c.Len() != 1 {
		t.Error("an answer to another question was stored")
	}
}

// get, stale and put are Get, Stale and Put for answers without a chain.
func (c *Cache) get(q *dns.Msg) *dns.Msg   { m, _ := c.Get(q); return m }
func (c *Cache) stale(q *dns.Msg) *dns.Msg { m, _ := c.Stale(q); return m }

// put stores m as the answer to its own question.
func (c *Cache) put(m *dns.Msg) { c.Put(m, m, nil) }

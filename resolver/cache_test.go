package resolver

import (
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
	key := Key(answer("a.example.", 0))
	c.put(key, answer("a.example.", 300, 100))
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
	c.put("low", answer("low.example.", 5))
	c.put("high", answer("high.example.", 86400))
	if m := c.get("low"); m == nil || m.Answer[0].Header().Ttl != 60 {
		t.Errorf("min_ttl: %v", m)
	}
	if m := c.get("high"); m == nil || m.Answer[0].Header().Ttl != 600 {
		t.Errorf("max_ttl: %v", m)
	}

	// Negative answers: cached for min(SOA TTL, minimum); none without a SOA.
	nx := answer("nx.example.")
	nx.Rcode = dns.RcodeNameError
	clock = &testClock{}
	c = NewCache(10, 0, time.Hour, clock.now)
	c.put("nosoa", nx)
	if m := c.get("nosoa"); m != nil {
		t.Error("NXDOMAIN without SOA was cached")
	}
	soa, _ := dns.NewRR("example. 3600 IN SOA ns. host. 1 2 3 4 45")
	nx.Ns = []dns.RR{soa}
	c.put("nx", nx)
	clock.set(44 * time.Second)
	if m := c.get("nx"); m == nil || m.Rcode != dns.RcodeNameError {
		t.Error("NXDOMAIN not cached for the SOA minimum")
	}
	clock.set(46 * time.Second)
	if m := c.get("nx"); m != nil {
		t.Error("NXDOMAIN outlived the SOA minimum")
	}
	// SERVFAIL: at most 5 s.
	sf := answer("sf.example.")
	sf.Rcode = dns.RcodeServerFailure
	clock.set(0)
	c.put("sf", sf)
	clock.set(6 * time.Second)
	if m := c.get("sf"); m != nil {
		t.Error("SERVFAIL cached beyond 5 s")
	}
	// Size 0 turns the cache off; the key tells DO and CD apart.
	off := NewCache(0, 0, 0, nil)
	off.put("k", answer("a.example.", 300))
	if m := off.get("k"); m != nil || off.Len() != 0 {
		t.Error("cache size 0 still caches")
	}
	q := answer("A.Example.")
	k1 := Key(q)
	q.CheckingDisabled = true
	k2 := Key(q)
	q.SetEdns0(1232, true)
	k3 := Key(q)
	if k1 == k2 || k2 == k3 || k1 != Key(answer("a.example.")) {
		t.Error("cache keys")
	}
}

// get, stale and put are Get, Stale and Put for answers without a chain.
func (c *Cache) get(key string) *dns.Msg    { m, _ := c.Get(key); return m }
func (c *Cache) stale(key string) *dns.Msg  { m, _ := c.Stale(key); return m }
func (c *Cache) put(key string, m *dns.Msg) { c.Put(key, m, nil) }

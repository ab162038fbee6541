package clientnames

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/resolver"
)

// clock is a time that tests move.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newNames makes Names whose lookups report to the channel it returns
// once stored; Close runs when the test ends.
func newNames(t *testing.T, cfg Config, opts Options) (*Names, <-chan netip.Addr) {
	t.Helper()
	n := New(cfg, opts)
	settled := make(chan netip.Addr, queueSize)
	n.settled = func(a netip.Addr) { settled <- a }
	t.Cleanup(n.Close)
	return n, settled
}

// wait waits for the lookup of a to be stored.
func wait(t *testing.T, settled <-chan netip.Addr, a netip.Addr) {
	t.Helper()
	select {
	case got := <-settled:
		if got != a {
			t.Fatalf("looked up %s, want %s", got, a)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no lookup of %s", a)
	}
}

// queued reports whether a lookup of a is queued or in flight.
func (n *Names) queued(a netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.pending[a]
	return ok
}

// startResolver runs a resolver on loopback that forwards to up.
func startResolver(t *testing.T, up *dnstest.Upstream) *resolver.Server {
	t.Helper()
	cfg := &resolver.Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{up.Addr()}}
	s, err := resolver.New(cfg, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// TestPTRThroughUpstream: a name is looked up once through the resolver's
// upstreams and cached for the answer's TTL (within MinTTL and MaxTTL);
// an address without a name is asked again after NegativeTTL; nothing is
// asked while a lookup is cached, however often the name is wanted.
func TestPTRThroughUpstream(t *testing.T) {
	up := dnstest.Start(t)
	up.SetTTL(3600)
	up.SetPTR("127.0.0.9", "Kids-PC.lan.")
	srv := startResolver(t, up)
	clk := newClock()
	n, settled := newNames(t, Config{}, Options{Now: clk.now})
	n.Start(srv.Lookup)
	kids, other := netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("127.0.0.10")
	rev, _ := dns.ReverseAddr("127.0.0.9")
	revOther, _ := dns.ReverseAddr("127.0.0.10")

	if got := n.Name(kids); got != "" {
		t.Errorf("before the lookup: %q", got)
	}
	wait(t, settled, kids)
	for range 10 {
		if got := n.Name(kids); got != "Kids-PC.lan" {
			t.Fatalf("name %q, want Kids-PC.lan", got)
		}
	}
	if n.queued(kids) || up.Seen(rev) != 1 {
		t.Errorf("within the TTL: queued %v, upstream asked %d times, want once", n.queued(kids), up.Seen(rev))
	}
	if q := up.Last(); q.Question[0].Qtype != dns.TypePTR || !q.RecursionDesired {
		t.Errorf("query sent: %v", q)
	}
	// No name: asked once, again after NegativeTTL.
	n.Name(other)
	wait(t, settled, other)
	if got := n.Name(other); got != "" || n.queued(other) {
		t.Errorf("no PTR: %q, queued %v", got, n.queued(other))
	}
	clk.add(NegativeTTL - time.Second)
	if n.Name(other); n.queued(other) {
		t.Error("asked again within NegativeTTL")
	}
	clk.add(2 * time.Second)
	n.Name(other)
	wait(t, settled, other)
	if up.Seen(revOther) != 2 {
		t.Errorf("after NegativeTTL the upstream was asked %d times, want 2", up.Seen(revOther))
	}
	// The TTL is the answer's: an hour. Past it the name is still given
	// while it is looked up again; the new name replaces it.
	clk.add(45 * time.Minute) // 55 minutes since the lookup
	if n.Name(kids); n.queued(kids) {
		t.Error("asked again within the answer's TTL")
	}
	up.SetPTR("127.0.0.9", "study-pc.lan")
	clk.add(6 * time.Minute)
	if got := n.Name(kids); got != "Kids-PC.lan" || !n.queued(kids) {
		t.Errorf("past the TTL: %q (queued %v), want the old name while it is asked again", got, n.queued(kids))
	}
	wait(t, settled, kids)
	if got := n.Name(kids); got != "study-pc.lan" || up.Seen(rev) != 2 {
		t.Errorf("after the second lookup: %q, asked %d times", got, up.Seen(rev))
	}
}

// fake is a LookupFunc whose answers a test sets, and which counts.
type fake struct {
	mu     sync.Mutex
	names  map[string]string // reverse name → PTR target
	ttl    uint32
	err    error
	asked  map[string]int
	block  chan struct{} // when set, each lookup waits for it (or its context)
	active int
}

func (f *fake) lookup(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	f.mu.Lock()
	name := q.Question[0].Name
	if f.asked == nil {
		f.asked = map[string]int{}
	}
	f.asked[name]++
	block, err, target, ttl := f.block, f.err, f.names[name], f.ttl
	f.active++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	r := new(dns.Msg).SetReply(q)
	if target != "" {
		r.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: target}}
	}
	return r, nil
}

func (f *fake) count(a string) int {
	rev, _ := dns.ReverseAddr(a)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[rev]
}

func (f *fake) set(a, name string) {
	rev, _ := dns.ReverseAddr(a)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.names == nil {
		f.names = map[string]string{}
	}
	f.names[rev] = name
}

// TestWhoIsLookedUp: the config's names win and are never looked up; with
// client_names: config or off, or anonymize_clients, nothing is looked
// up, and with anonymize_clients or off no name is given; public addresses
// and addresses with a zero host part are never looked up.
func TestWhoIsLookedUp(t *testing.T) {
	named := netip.MustParseAddr("192.168.1.20")
	configNames := map[netip.Addr]string{named: "kids-pc"}
	for _, c := range []struct {
		mode      Mode
		anonymize bool
		addr      string
		want      string
		lookup    bool
	}{
		{PTR, false, "192.168.1.20", "kids-pc", false},
		{PTR, false, "::ffff:192.168.1.20", "kids-pc", false},
		{PTR, false, "192.168.1.21", "", true},
		{PTR, false, "10.1.2.3", "", true},
		{PTR, false, "172.16.0.9", "", true},
		{PTR, false, "fd00::21", "", true},
		{PTR, false, "fe80::1", "", true},
		{PTR, false, "169.254.3.4", "", true},
		{PTR, false, "::1", "", true},
		{PTR, false, "8.8.8.8", "", false},
		{PTR, false, "2001:db8::1", "", false},
		{PTR, false, "100.64.0.1", "", false},
		{PTR, false, "192.168.1.0", "", false}, // the shape of an anonymized address
		{PTR, false, "fd00:1:2::", "", false},
		{PTR, true, "192.168.1.20", "", false},
		{PTR, true, "192.168.1.21", "", false},
		{ConfigOnly, false, "192.168.1.20", "kids-pc", false},
		{ConfigOnly, false, "192.168.1.21", "", false},
		{Off, false, "192.168.1.20", "", false},
		{Off, false, "192.168.1.21", "", false},
	} {
		// The lookups wait until Close (or their timeout), so a lookup
		// queued stays pending while the test looks.
		f := &fake{block: make(chan struct{})}
		n, _ := newNames(t, Config{ClientNames: c.mode}, Options{ConfigNames: configNames, Anonymize: c.anonymize})
		n.Start(f.lookup)
		a := netip.MustParseAddr(c.addr)
		if got := n.Name(a); got != c.want {
			t.Errorf("%s, anonymize %v, %s: name %q, want %q", c.mode, c.anonymize, c.addr, got, c.want)
		}
		if q := n.queued(a.Unmap()); q != c.lookup {
			t.Errorf("%s, anonymize %v, %s: looked up %v, want %v", c.mode, c.anonymize, c.addr, q, c.lookup)
		}
		n.Close()
	}
}

// TestApply: a reload that anonymizes clients or turns lookups off
// forgets the names found, and one that turns them back on looks up again.
func TestApply(t *testing.T) {
	f := &fake{ttl: 3600}
	f.set("192.168.1.30", "laptop.lan")
	n, settled := newNames(t, Config{}, Options{})
	n.Start(f.lookup)
	a := netip.MustParseAddr("192.168.1.30")
	n.Name(a)
	wait(t, settled, a)
	if got, _, ok := n.Known(); !ok || got[a] != "laptop.lan" {
		t.Fatalf("known: %v %v", got, ok)
	}
	v := n.Version()
	configNames := map[netip.Addr]string{netip.MustParseAddr("192.168.1.31"): "nas"}
	n.Apply(Config{ClientNames: PTR}, configNames, true)
	if got, _, ok := n.Known(); ok || got != nil || n.Name(a) != "" || n.queued(a) || n.Version() == v {
		t.Errorf("anonymized: known %v %v, name %q, queued %v", got, ok, n.Name(a), n.queued(a))
	}
	n.Apply(Config{ClientNames: ConfigOnly}, configNames, false)
	if got, _, ok := n.Known(); !ok || len(got) != 1 || got[netip.MustParseAddr("192.168.1.31")] != "nas" || n.Name(a) != "" || n.queued(a) {
		t.Errorf("config: known %v %v, queued %v", got, ok, n.queued(a))
	}
	n.Apply(Config{}, configNames, false)
	n.Name(a)
	wait(t, settled, a)
	if got := n.Name(a); got != "laptop.lan" || f.count("192.168.1.30") != 2 {
		t.Errorf("ptr again: %q, asked %d times", got, f.count("192.168.1.30"))
	}
}

// TestLookupBounds: one lookup at a time, one per address however often
// its name is wanted meanwhile; a bounded queue; a failed lookup keeps a
// name found before; Close cancels the lookup in flight.
func TestLookupBounds(t *testing.T) {
	f := &fake{ttl: 60, block: make(chan struct{})}
	f.set("10.0.0.1", "one.lan")
	clk := newClock()
	n, settled := newNames(t, Config{}, Options{Now: clk.now, Rate: 1000})
	n.Start(f.lookup)
	first := netip.MustParseAddr("10.0.0.1")
	for range 100 {
		n.Name(first)
	}
	// More addresses than the queue holds: the rest are dropped, and
	// counted, until their names are wanted again.
	for i := range queueSize + 20 {
		n.Name(netip.AddrFrom4([4]byte{10, 0, 1 + byte(i/250), 1 + byte(i%250)}))
	}
	if d := n.m.dropped.Load(); d < 20 {
		t.Errorf("%d dropped, want at least 20", d)
	}
	close(f.block)
	wait(t, settled, first)
	if c := f.count("10.0.0.1"); c != 1 {
		t.Errorf("asked %d times for one address, want once", c)
	}
	if got := n.Name(first); got != "one.lan" {
		t.Errorf("name %q", got)
	}
	// TTL 60 s is kept MinTTL.
	clk.add(MinTTL - time.Second)
	if n.Name(first); n.queued(first) {
		t.Error("asked again within MinTTL")
	}
	for range queueSize + 20 - int(n.m.dropped.Load()) {
		select {
		case <-settled:
		case <-time.After(10 * time.Second):
			t.Fatal("the queued lookups did not all finish")
		}
	}
	f.mu.Lock()
	f.err, f.block = errors.New("upstream down"), make(chan struct{})
	f.mu.Unlock()
	clk.add(2 * time.Second)
	if got := n.Name(first); got != "one.lan" || !n.queued(first) {
		t.Errorf("past the TTL: %q, queued %v", got, n.queued(first))
	}
	f.mu.Lock()
	close(f.block)
	f.mu.Unlock()
	wait(t, settled, first)
	if got := n.Name(first); got != "one.lan" {
		t.Errorf("after a failed lookup: %q, want the name found before", got)
	}
	// Close with a lookup in flight: it is cancelled, Close returns.
	f.mu.Lock()
	f.block = make(chan struct{})
	f.mu.Unlock()
	clk.add(NegativeTTL + time.Second)
	n.Name(first)
	n.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.active != 0 {
		t.Errorf("%d lookups still running after Close", f.active)
	}
}

// TestPTRName: what a PTR answer gives, and for how long.
func TestPTRName(t *testing.T) {
	ptr := func(name string, ttl uint32) *dns.Msg {
		r := new(dns.Msg)
		r.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: "9.0.0.127.in-addr.arpa.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: name}}
		return r
	}
	nx := new(dns.Msg)
	nx.Rcode = dns.RcodeNameError
	for _, c := range []struct {
		r    *dns.Msg
		name string
		ttl  time.Duration
	}{
		{ptr("kids-pc.lan.", 3600), "kids-pc.lan", time.Hour},
		{ptr("kids-pc.lan.", 10), "kids-pc.lan", MinTTL},
		{ptr("kids-pc.lan.", 7*86400), "kids-pc.lan", MaxTTL},
		{ptr("<script>.lan.", 3600), "", NegativeTTL},
		{ptr("a b.", 3600), "", NegativeTTL},
		{nx, "", NegativeTTL},
		{new(dns.Msg), "", NegativeTTL},
	} {
		if name, ttl := ptrName(c.r); name != c.name || ttl != c.ttl {
			t.Errorf("%v: %q %v, want %q %v", c.r.Answer, name, ttl, c.name, c.ttl)
		}
	}
}

// TestAnonymizedAgreesWithQueryLog: Anonymized is true of what
// querylog.Anonymize makes, checked here by its definition.
func TestAnonymized(t *testing.T) {
	for a, want := range map[string]bool{"192.168.1.0": true, "192.168.1.1": false, "fd00:1:2::": true, "fd00:1:2::1": false, "fd00:1:2:3::": false, "::ffff:10.0.0.0": true} {
		if got := Anonymized(netip.MustParseAddr(a)); got != want {
			t.Errorf("%s: %v", a, got)
		}
	}
}

// Package clientnames names the machines that ask phonehome: from the
// config (an entry of a group's clients may carry a name) or, where none is
// written, from a PTR lookup of the address through the upstreams (a home
// router knows the names of its DHCP clients). The query log, the history
// and the web side show the name beside the address.
//
// Names never stand on the answer path. Name reads a map and a cache and
// at most queues a lookup; one goroutine sends the lookups, one at a time,
// rate-limited and each bounded in time, and caches what they find (the
// PTR answer's TTL within 5 minutes and a day) and what they do not find
// (10 minutes), in an LRU of bounded size.
//
// Only private, loopback and link-local addresses are looked up (RFC 1918,
// ULA, 127/8 and ::1, 169.254/16 and fe80::/10): the names of the LAN, which
// the router knows, without telling anyone outside which public addresses
// use phonehome. With anonymize_clients no name is given at all, from the
// config or a lookup, and nothing is looked up; an address whose host part
// is zero (what anonymize_clients makes of every address) is never named,
// so that a record written while clients were anonymized stays nameless
// after anonymize_clients is turned off.
package clientnames

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/phonehome/phonehome/internal/config"
)

// Mode is where machines' names come from: the client_names key.
type Mode string

// The modes.
const (
	// PTR gives the config's names and, for other private addresses, what
	// a PTR lookup through the upstreams finds. The default.
	PTR Mode = "ptr"
	// ConfigOnly gives the config's names only: nothing is looked up.
	ConfigOnly Mode = "config"
	// Off gives no names.
	Off Mode = "off"
)

// UnmarshalText reads ptr, config or off.
func (m *Mode) UnmarshalText(b []byte) error {
	switch v := Mode(strings.ToLower(string(b))); v {
	case PTR, ConfigOnly, Off:
		*m = v
		return nil
	}
	return fmt.Errorf("unknown value %q (valid: ptr, config, off)", b)
}

// Config is the package's part of the config file.
type Config struct {
	// ClientNames says where machines' names come from: ptr (the config's
	// names, else a PTR lookup through the upstreams; the default), config
	// (the config's names only) or off. Read again at every reload.
	ClientNames Mode `yaml:"client_names"`
}

// SetDefaults fills in what the file left out.
func (c *Config) SetDefaults() {
	if c.ClientNames == "" {
		c.ClientNames = PTR
	}
}

// Check has nothing to check beyond the word, which is checked as it is
// read; it is here so that the section is checked as every other is.
func (c *Config) Check(*config.Report) {}

// LookupFunc sends a query to the upstreams, past the policy, the cache
// and the observers: resolver.Server.Lookup.
type LookupFunc func(ctx context.Context, q *dns.Msg) (*dns.Msg, error)

// Options are what Names needs besides its config.
type Options struct {
	Log *slog.Logger
	// Now is the cache's clock (time.Now by default); tests move it.
	Now func() time.Time
	// ConfigNames are the names the config gives (policy.Config.ClientNames).
	ConfigNames map[netip.Addr]string
	// Anonymize is querylog.anonymize_clients: no names at all.
	Anonymize bool
	// CacheSize bounds the addresses whose lookup is remembered
	// (default 4096).
	CacheSize int
	// Rate bounds the lookups sent per second (default 10, in bursts of
	// as many).
	Rate int
}

// Bounds of the cache and the lookups.
const (
	DefaultCacheSize = 4096
	DefaultRate      = 10
	// MinTTL and MaxTTL bound how long a name found is kept before it is
	// looked up again, whatever the PTR answer's TTL says; NegativeTTL is
	// how long an address without a name (or whose lookup failed) waits.
	MinTTL      = 5 * time.Minute
	MaxTTL      = 24 * time.Hour
	NegativeTTL = 10 * time.Minute
	// LookupTimeout bounds one lookup.
	LookupTimeout = 5 * time.Second
	// queueSize bounds the addresses waiting for a lookup; past it an
	// address is asked for again the next time its name is wanted.
	queueSize = 256
)

// Names gives machines' names. Its methods are safe for concurrent use;
// a nil *Names gives no names.
type Names struct {
	log     *slog.Logger
	now     func() time.Time
	set     atomic.Pointer[settings]
	version atomic.Uint64
	limit   *rate.Limiter

	mu      sync.Mutex
	cache   *simplelru.LRU[netip.Addr, entry]
	pending map[netip.Addr]struct{} // queued or being looked up
	lookup  LookupFunc              // set by Start
	closed  bool

	queue  chan netip.Addr
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	m metrics
	// settled, when set (by tests), is called after each lookup, its
	// result stored.
	settled func(netip.Addr)
}

// settings are what a reload changes.
type settings struct {
	mode      Mode
	config    map[netip.Addr]string
	anonymize bool
}

// entry is what a lookup found: a name, or "" for none.
type entry struct {
	name    string
	expires time.Time
}

// New makes Names for cfg. It looks nothing up until Start.
func New(cfg Config, opts Options) *Names {
	cfg.SetDefaults()
	n := &Names{log: opts.Log, now: opts.Now, m: metrics{lookups: newLookupsMetric()}, pending: map[netip.Addr]struct{}{}, queue: make(chan netip.Addr, queueSize), done: make(chan struct{})}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	size := opts.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	r := opts.Rate
	if r <= 0 {
		r = DefaultRate
	}
	n.limit = rate.NewLimiter(rate.Limit(r), r)
	n.cache, _ = simplelru.NewLRU[netip.Addr, entry](size, nil)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.Apply(cfg, opts.ConfigNames, opts.Anonymize)
	return n
}

// Start sends lookups through lookup from now on, from a goroutine of its
// own that Close stops. Names are made before the resolver, whose
// observers use them, and started once it runs.
func (n *Names) Start(lookup LookupFunc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lookup != nil || n.closed {
		return
	}
	n.lookup = lookup
	go n.run(lookup)
}

// Close stops the lookups: the one in flight is cancelled. Name goes on
// giving what is known.
func (n *Names) Close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	started := n.lookup != nil && !n.closed
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	if started {
		<-n.done
	}
}

// Apply takes a reloaded config: the mode, the config's names and
// anonymize_clients. Turning names off or anonymizing clients forgets what
// lookups found.
func (n *Names) Apply(cfg Config, configNames map[netip.Addr]string, anonymize bool) {
	if n == nil {
		return
	}
	cfg.SetDefaults()
	s := &settings{mode: cfg.ClientNames, config: map[netip.Addr]string{}, anonymize: anonymize}
	for a, name := range configNames {
		s.config[a.Unmap().WithZone("")] = name
	}
	n.mu.Lock()
	n.set.Store(s)
	if s.mode != PTR || s.anonymize {
		n.cache.Purge()
	}
	n.mu.Unlock()
	n.version.Add(1)
}

// Name returns the name of the machine at a, or "" when it has none, or
// none yet: an address not looked up yet (or whose name's TTL has passed)
// is queued for a lookup, and Name returns at once, with what is known.
func (n *Names) Name(a netip.Addr) string {
	if n == nil {
		return ""
	}
	a = a.Unmap().WithZone("")
	s := n.set.Load()
	if s.mode == Off || s.anonymize || !a.IsValid() || Anonymized(a) {
		return ""
	}
	if name, ok := s.config[a]; ok {
		return name
	}
	if s.mode != PTR || !Eligible(a) {
		return ""
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.cache.Get(a)
	if !ok || !now.Before(e.expires) {
		n.enqueue(a)
	}
	return e.name
}

// enqueue queues a lookup of a, unless one is queued or in flight; n.mu is
// held.
func (n *Names) enqueue(a netip.Addr) {
	if n.closed || n.lookup == nil {
		return
	}
	if _, ok := n.pending[a]; ok {
		return
	}
	select {
	case n.queue <- a:
		n.pending[a] = struct{}{}
	default:
		n.m.dropped.Add(1)
	}
}

// Known returns every name known now, the config's and those lookups
// found (past their TTL too, until a lookup says otherwise; never one of
// an address of the anonymized shape), and the
// version they are at (Version); ok is false when names are off or
// clients anonymized: then none may be shown or kept.
func (n *Names) Known() (names map[netip.Addr]string, version uint64, ok bool) {
	if n == nil {
		return nil, 0, false
	}
	version = n.version.Load()
	s := n.set.Load()
	if s.mode == Off || s.anonymize {
		return nil, version, false
	}
	names = map[netip.Addr]string{}
	if s.mode == PTR {
		n.mu.Lock()
		for _, a := range n.cache.Keys() {
			if e, _ := n.cache.Peek(a); e.name != "" {
				names[a] = e.name
			}
		}
		n.mu.Unlock()
	}
	for a, name := range s.config {
		if !Anonymized(a) {
			names[a] = name
		}
	}
	return names, version, true
}

// On reports whether names are given at all: not with client_names: off
// or anonymize_clients.
func (n *Names) On() bool {
	if n == nil {
		return false
	}
	s := n.set.Load()
	return s.mode != Off && !s.anonymize
}

// Version changes whenever a name is found, changes or is forgotten, or
// the config is applied: a caller that keeps names (the history) reads
// Known again only when it has changed.
func (n *Names) Version() uint64 {
	if n == nil {
		return 0
	}
	return n.version.Load()
}

// Eligible reports whether a is looked up: a private (RFC 1918, ULA),
// loopback or link-local address.
func Eligible(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast()
}

// Anonymized reports whether a has the shape querylog.Anonymize gives
// addresses: the last octet of IPv4, or the last 80 bits of IPv6, zero.
// Such an address is never named.
func Anonymized(a netip.Addr) bool {
	a = a.Unmap()
	if a.Is4() {
		return a.As4()[3] == 0
	}
	b := a.As16()
	for _, x := range b[6:] {
		if x != 0 {
			return false
		}
	}
	return true
}

// run sends the lookups queued, one at a time, within the rate.
func (n *Names) run(lookup LookupFunc) {
	defer close(n.done)
	for {
		select {
		case <-n.ctx.Done():
			return
		case a := <-n.queue:
			if n.limit.Wait(n.ctx) != nil {
				return
			}
			n.resolve(lookup, a)
			if n.settled != nil {
				n.settled(a)
			}
		}
	}
}

// resolve looks a up and stores what it finds.
func (n *Names) resolve(lookup LookupFunc, a netip.Addr) {
	defer func() {
		n.mu.Lock()
		delete(n.pending, a)
		n.mu.Unlock()
	}()
	if s := n.set.Load(); s.mode != PTR || s.anonymize {
		return // changed while it waited
	}
	rev, err := dns.ReverseAddr(a.String())
	if err != nil {
		return
	}
	q := new(dns.Msg)
	q.SetQuestion(rev, dns.TypePTR)
	ctx, cancel := context.WithTimeout(n.ctx, LookupTimeout)
	r, err := lookup(ctx, q)
	cancel()
	now := n.now()
	found, ttl := "", NegativeTTL
	switch {
	case err != nil:
		n.m.lookups.WithLabelValues("error").Inc()
		n.log.Debug("client name: the PTR lookup failed", "client", a, "err", err)
	default:
		found, ttl = ptrName(r)
		if found == "" {
			n.m.lookups.WithLabelValues("none").Inc()
		} else {
			n.m.lookups.WithLabelValues("name").Inc()
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.set.Load(); s.mode != PTR || s.anonymize || n.closed {
		return // the answer came after names were turned off
	}
	old, _ := n.cache.Peek(a)
	if err != nil && old.name != "" {
		// An upstream that fails for a while does not take a name away.
		found = old.name
	}
	n.cache.Add(a, entry{name: found, expires: now.Add(ttl)})
	if found != old.name {
		n.version.Add(1)
	}
}

// ptrName reads a PTR answer: the first PTR record's name (without its
// trailing dot) and how long to keep it, or "" and NegativeTTL for an
// answer without one, or with one that is not a host name.
func ptrName(r *dns.Msg) (string, time.Duration) {
	if r == nil || r.Rcode != dns.RcodeSuccess {
		return "", NegativeTTL
	}
	for _, rr := range r.Answer {
		p, ok := rr.(*dns.PTR)
		if !ok {
			continue
		}
		if config.CheckHostName(p.Ptr) != nil {
			return "", NegativeTTL
		}
		ttl := min(max(time.Duration(p.Hdr.Ttl)*time.Second, MinTTL), MaxTTL)
		return strings.TrimSuffix(p.Ptr, "."), ttl
	}
	return "", NegativeTTL
}

// metrics are the lookups by result, and those not queued.
type metrics struct {
	lookups *prometheus.CounterVec
	dropped atomic.Uint64
}

// Collector reports phonehome_client_name_lookups_total{result} (name,
// none, error) and phonehome_client_name_lookups_dropped_total.
func (n *Names) Collector() prometheus.Collector { return collector{n} }

type collector struct{ n *Names }

var descDropped = prometheus.NewDesc("phonehome_client_name_lookups_dropped_total",
	"Machine name (PTR) lookups not sent because too many were waiting; each is tried again when the name is next wanted.", nil, nil)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.n.m.lookups.Describe(ch)
	ch <- descDropped
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.n.m.lookups.Collect(ch)
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(c.n.m.dropped.Load()))
}

func newLookupsMetric() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_client_name_lookups_total",
		Help: "Machine name (PTR) lookups sent through the upstreams, by result: name, none (no name, or not a host name) or error."}, []string{"result"})
	for _, r := range []string{"name", "none", "error"} {
		v.WithLabelValues(r)
	}
	return v
}

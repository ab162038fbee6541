package resolver

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/policy"
)

// Label names, and the sources an answer comes from.
const (
	labelGroup, labelEdition, labelCategory, labelAction = "group", "edition", "category", "action"
	labelEndpoint, labelRcode, labelSource, labelReason  = "endpoint", "rcode", "source", "reason"
	labelUpstream, labelResult, labelTransport           = "upstream", "result", "transport"
)

// Metrics are the resolver's Prometheus metrics. They are registered on the
// registry main creates and passes down (no global registry). The query
// path adds to atomic counters, to histogram children looked up at start,
// and to counter children it looks up once per group, category and action
// (or endpoint and action) and keeps, so counting costs next to nothing;
// only the rare demotion of a protected endpoint looks its counter up each
// time. Never the query name or the
// client address as a label: every label has a bounded set of values.
type Metrics struct {
	queries   *prometheus.CounterVec
	endpoint  *prometheus.CounterVec
	protected *prometheus.CounterVec
	alias     *prometheus.CounterVec
	duration  [numSources]prometheus.Observer

	upstreamReqs    *prometheus.CounterVec
	upstreamErrs    *prometheus.CounterVec
	upstreamDur     *prometheus.HistogramVec
	upstreamHealthy *prometheus.GaugeVec
	upstreamHedges  *prometheus.CounterVec

	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge
	catalog    *prometheus.GaugeVec

	// responses[rcode][source][transport]; rcodes past 15 count as 15.
	responses [16][numSources][numTransports]atomic.Uint64
	cache     [3]atomic.Uint64 // by cacheHit, cacheMiss, cacheStale

	children sync.Map // queryKey → prometheus.Counter, endpointKey → prometheus.Counter
}

type queryKey struct {
	group  *policy.Group
	cat    endpoints.Category
	action policy.Action
}

// newMetrics registers the metrics of h, and of the TCP connections tcp
// admits, on reg.
func newMetrics(reg prometheus.Registerer, version string, h *Handler, tcp *tcpGate) *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_queries_total",
			Help: "Queries decided, by client group, its edition, the endpoint category (unlisted outside the catalog) and the action."},
			[]string{labelGroup, labelEdition, labelCategory, labelAction}),
		endpoint: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_endpoint_queries_total",
			Help: "Queries for each documented endpoint pattern; user list entries count only under their category."},
			[]string{labelEndpoint, labelCategory, labelAction}),
		alias: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_alias_queries_total",
			Help: "Queries decided by a documented endpoint pattern that a name of the answer's CNAME chain matched (the question name is an alias of it); also counted in phonehome_endpoint_queries_total."},
			[]string{labelEndpoint, labelCategory, labelAction}),
		protected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_protected_overrides_total",
			Help: "Queries whose category said sinkhole but whose endpoint is protected, so they were logged instead."},
			[]string{labelEndpoint}),
		upstreamReqs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_upstream_requests_total",
			Help: "Answers received from each upstream, by rcode."}, []string{labelUpstream, labelRcode}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_upstream_errors_total",
			Help: "Upstream exchanges that failed, by reason (timeout, protocol: an answer that is not a DNS answer to the query, such as an HTTP error, network)."}, []string{labelUpstream, labelReason}),
		upstreamDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "phonehome_upstream_duration_seconds",
			Help: "Time for an upstream to answer.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{labelUpstream}),
		upstreamHedges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_upstream_hedges_total",
			Help: "Queries sent to an upstream while one asked before had not yet answered (slower than its hedge delay; with a single upstream, the query sent to it again): the upstream queries spent on answering despite a slow, silent or lossy upstream."}, []string{labelUpstream}),
		upstreamHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "phonehome_upstream_healthy",
			Help: "1 while an upstream is answering, 0 while it is backed off."}, []string{labelUpstream}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_config_reloads_total",
			Help: "Config reloads, by result (success, failure)."}, []string{labelResult}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonehome_config_last_reload_success_timestamp_seconds",
			Help: "When the config was last loaded successfully, in Unix seconds."}),
		catalog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "phonehome_catalog_endpoints",
			Help: "Catalog patterns documented for each edition, by category."}, []string{labelEdition, labelCategory}),
	}
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "phonehome_request_duration_seconds",
		Help: "Time to answer a query, by where the answer came from.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16)},
		[]string{labelSource})
	for s := range numSources {
		m.duration[s] = dur.WithLabelValues(sourceNames[s])
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "phonehome_build_info",
		Help: "Always 1; the labels say which phonehome this is."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	reg.MustRegister(m.queries, m.endpoint, m.alias, m.protected, dur, m.upstreamReqs, m.upstreamErrs, m.upstreamDur,
		m.upstreamHealthy, m.upstreamHedges, m.reloads, m.lastReload, m.catalog, build, &funcCollector{m: m, h: h, tcp: tcp})
	return m
}

// Answered counts a decision (for queries the policy decided) and an
// answer: the metrics are the request path's first observer.
func (m *Metrics) Answered(a Answer) {
	if a.Decided() {
		m.decided(a.Decision, 1)
	}
	m.responses[min(a.Rcode, 15)][a.Source][a.Transport].Add(1)
	m.duration[a.Source].Observe(a.Duration.Seconds())
}

// AnsweredBatch counts a batch of answers (the UDP loop's): the answers of
// one kind of decision together, so that its counters are looked up and
// added to once a batch. A batch holds a few kinds at most.
func (m *Metrics) AnsweredBatch(as []Answer) {
	type kind struct {
		k     decisionKey
		first int // the index of its first answer
		n     uint64
	}
	var kinds [8]kind
	nk := 0
	for i := range as {
		a := &as[i]
		m.responses[min(a.Rcode, 15)][a.Source][a.Transport].Add(1)
		m.duration[a.Source].Observe(a.Duration.Seconds())
		if !a.Decided() {
			continue
		}
		k := keyOfDecision(&a.Decision)
		j := 0
		for j < nk && kinds[j].k != k {
			j++
		}
		switch {
		case j < nk:
			kinds[j].n++
		case nk < len(kinds):
			kinds[nk] = kind{k: k, first: i, n: 1}
			nk++
		default:
			m.decided(a.Decision, 1)
		}
	}
	for _, kd := range kinds[:nk] {
		m.decided(as[kd.first].Decision, kd.n)
	}
}

// decisionKey is what makes two decisions count alike.
type decisionKey struct {
	group            *policy.Group
	rule             *policy.Rule
	action           policy.Action
	alias, protected bool
}

func keyOfDecision(d *policy.Decision) decisionKey {
	return decisionKey{d.Group, d.Match.Rule, d.Action, d.CNAME != "", d.Protected}
}

// reloaded counts a reload (or the first load) and its result.
func (m *Metrics) reloaded(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReload.SetToCurrentTime()
}

// setState publishes what a newly loaded state holds. The counter
// children looked up so far are forgotten: their keys point into the old
// policy (its groups and entries), which they would keep alive, one whole
// policy per reload for as long as the process runs. The counters
// themselves stay in their vectors, and the next query finds them again.
func (m *Metrics) setState(st *State) {
	if m == nil {
		return
	}
	m.children.Clear()
	m.catalog.Reset()
	for _, e := range st.Policy.Catalog.Entries {
		for _, ed := range e.Editions.Each() {
			m.catalog.WithLabelValues(ed.String(), string(e.Category)).Inc()
		}
	}
	m.upstreamHealthy.Reset()
	now := time.Now()
	for _, u := range st.Forwarder.Upstreams {
		m.upstreamHealth(u, u.healthy(now))
		if u.metrics != m { // an upstream kept by a reload is in use
			u.metrics = m
		}
	}
}

// decided counts n policy decisions alike: d's.
func (m *Metrics) decided(d policy.Decision, n uint64) {
	v := float64(n)
	k := queryKey{d.Group, d.Category(), d.Action}
	c, ok := m.children.Load(k)
	if !ok {
		c, _ = m.children.LoadOrStore(k, m.queries.WithLabelValues(d.Group.Name, d.Group.Edition.String(), string(k.cat), d.Action.String()))
	}
	c.(prometheus.Counter).Add(v)
	if r := d.Match.Rule; r != nil && r.Entry != nil {
		// Documented patterns only: a bounded set.
		ek := endpointKey{r.Entry, d.Action, false}
		c, ok := m.children.Load(ek)
		if !ok {
			c, _ = m.children.LoadOrStore(ek, m.endpoint.WithLabelValues(r.Entry.Pattern, string(r.Entry.Category), d.Action.String()))
		}
		c.(prometheus.Counter).Add(v)
		if d.CNAME != "" {
			ak := endpointKey{r.Entry, d.Action, true}
			c, ok := m.children.Load(ak)
			if !ok {
				c, _ = m.children.LoadOrStore(ak, m.alias.WithLabelValues(r.Entry.Pattern, string(r.Entry.Category), d.Action.String()))
			}
			c.(prometheus.Counter).Add(v)
		}
		if d.Protected {
			m.protected.WithLabelValues(r.Entry.Pattern).Add(v)
		}
	}
}

type endpointKey struct {
	e     *endpoints.Entry
	a     policy.Action
	alias bool // reached through the answer's CNAME chain
}

// cacheResult is what a cache lookup found.
type cacheResult uint8

const (
	cacheHit cacheResult = iota
	cacheMiss
	cacheStale
)

func (m *Metrics) cacheLookup(result cacheResult) {
	if m != nil {
		m.cache[result].Add(1)
	}
}

func (m *Metrics) upstreamAnswered(u *Upstream, rcode int, took time.Duration) {
	if m == nil {
		return
	}
	m.upstreamReqs.WithLabelValues(u.Name, dns.RcodeToString[rcode]).Inc()
	m.upstreamDur.WithLabelValues(u.Name).Observe(took.Seconds())
}

// upstreamFailed counts a failed exchange by reason: timeout, protocol or
// network (errNoUpstream.reason).
func (m *Metrics) upstreamFailed(u *Upstream, reason string) {
	if m == nil {
		return
	}
	m.upstreamErrs.WithLabelValues(u.Name, reason).Inc()
}

// upstreamHedged counts a query sent to u while an upstream asked before it
// is still awaited.
func (m *Metrics) upstreamHedged(u *Upstream) {
	if m == nil {
		return
	}
	m.upstreamHedges.WithLabelValues(u.Name).Inc()
}

func (m *Metrics) upstreamHealth(u *Upstream, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.upstreamHealthy.WithLabelValues(u.Name).Set(v)
}

// funcCollector reports the counters the query path keeps as plain atomics.
type funcCollector struct {
	m   *Metrics
	h   *Handler
	tcp *tcpGate
}

var (
	descResponses = prometheus.NewDesc("phonehome_responses_total", "Answers sent, by rcode, by where they came from (cache, upstream, sinkhole, stale, local) and by what the query came over (udp, tcp, dot: DNS over TLS, doh: DNS over HTTPS).", []string{labelRcode, labelSource, labelTransport}, nil)
	descRefused   = prometheus.NewDesc("phonehome_refused_total", "Queries turned away, by reason: access (answered REFUSED), rate_limit (dropped), malformed (not parsed), overload (answered SERVFAIL at once, too many queries waiting for upstreams).", []string{labelReason}, nil)
	descCacheReqs = prometheus.NewDesc("phonehome_cache_requests_total", "Cache lookups, by result (hit, miss, stale).", []string{labelResult}, nil)
	descCacheLen  = prometheus.NewDesc("phonehome_cache_entries", "Answers held in the cache.", nil, nil)
	descTCPConns  = prometheus.NewDesc("phonehome_tcp_connections", "TCP connections open: DNS over TCP, TLS and HTTPS.", nil, nil)
	descTCPLimit  = prometheus.NewDesc("phonehome_tcp_connections_limit", "The most TCP connections open at once: 256, or fewer under a low open-file limit.", nil, nil)
	descTCPClosed = prometheus.NewDesc("phonehome_tcp_closed_total", "TCP connections (DNS over TCP, TLS and HTTPS) phonehome closed, by reason: at once, unread, access (client outside access.allow), limit (the most open in all), per_client (the most open from that address); later, idle (no query for 5 s), slow (a message not all there 3 s after its first byte), write (an answer not taken within 5 s).", []string{labelReason}, nil)
)

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descResponses
	ch <- descRefused
	ch <- descCacheReqs
	ch <- descCacheLen
	ch <- descTCPConns
	ch <- descTCPLimit
	ch <- descTCPClosed
}

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	for rc := range c.m.responses {
		for s := range c.m.responses[rc] {
			for t := range c.m.responses[rc][s] {
				if n := c.m.responses[rc][s][t].Load(); n > 0 {
					ch <- prometheus.MustNewConstMetric(descResponses, prometheus.CounterValue, float64(n), dns.RcodeToString[rc], sourceNames[s], transportNames[t])
				}
			}
		}
	}
	cs := &c.h.counters
	for reason, v := range map[string]*atomic.Uint64{"access": &cs.Refused, "rate_limit": &cs.RateLimited,
		"malformed": &cs.Malformed, "overload": &cs.Overload} {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(v.Load()), reason)
	}
	for i, result := range []string{"hit", "miss", "stale"} {
		ch <- prometheus.MustNewConstMetric(descCacheReqs, prometheus.CounterValue, float64(c.m.cache[i].Load()), result)
	}
	ch <- prometheus.MustNewConstMetric(descCacheLen, prometheus.GaugeValue, float64(c.h.state.Load().Cache.Len()))
	ch <- prometheus.MustNewConstMetric(descTCPConns, prometheus.GaugeValue, float64(c.tcp.conns()))
	ch <- prometheus.MustNewConstMetric(descTCPLimit, prometheus.GaugeValue, float64(c.tcp.limits.Conns))
	for why, name := range tcpCloseNames {
		ch <- prometheus.MustNewConstMetric(descTCPClosed, prometheus.CounterValue, float64(c.tcp.closed[why].Load()), name)
	}
}

package resolver

import (
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/testlog"
	"github.com/phonehome/phonehome/policy"
)

// recorder is an Observer that keeps every Answer.
type recorder struct {
	mu      sync.Mutex
	answers []Answer
	read    int // answers next has returned
}

func (r *recorder) Answered(a Answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers = append(r.answers, a)
}

// next returns the answer after the last one next returned, waiting for
// it: over TCP, TLS and HTTPS observers run just after the answer is sent
// (over UDP just before), so a test calls next after each query, before
// the next one, to keep them in order.
func (r *recorder) next(t *testing.T) Answer {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		r.mu.Lock()
		if r.read < len(r.answers) {
			a := r.answers[r.read]
			r.read++
			r.mu.Unlock()
			return a
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no answer observed after %d", r.read)
		}
	}
}

// startRecorded is start with a recorder among the observers.
func startRecorded(t *testing.T, config string, ups ...*dnstest.Upstream) (*testServer, *recorder) {
	t.Helper()
	rec := &recorder{}
	return startWith(t, Options{Observers: []Observer{rec}}, config, ups...), rec
}

// forwarded reports whether m is the stub's answer through chain: its
// CNAMEs in order, then the stub's A record.
func forwarded(m *dns.Msg, chain ...string) bool {
	want := append(append([]string{}, chain...), dnstest.AnswerA)
	for i := range chain {
		want[i] = dns.Fqdn(chain[i])
	}
	return m.Rcode == dns.RcodeSuccess && answerText(m) == strings.Join(want, "; ")
}

// sinkholed reports whether m is the default sinkhole answer to an A query
// with an EDE 15 whose text ends in the CNAME that decided.
func sinkholed(m *dns.Msg, cname string) bool {
	code, text := ede(m)
	return answerText(m) == "0.0.0.0" && code == dns.ExtendedErrorCodeBlocked && strings.HasSuffix(text, "(through CNAME "+cname+")")
}

// decided checks what observers were told of one answer.
func decided(t *testing.T, what string, a Answer, group string, action policy.Action, pattern, cname string, source AnswerSource) {
	t.Helper()
	d := a.Decision
	pat := ""
	if d.Match.Rule != nil {
		pat = d.Match.Pattern()
	}
	if d.Group == nil || d.Group.Name != group || d.Action != action || pat != pattern || d.CNAME != cname || a.Source != source {
		g := "<nil>"
		if d.Group != nil {
			g = d.Group.Name
		}
		t.Errorf("%s: observed group %s, %s, pattern %q, cname %q, source %s; want %s, %s, %q, %q, %s",
			what, g, d.Action, pat, d.CNAME, a.Source, group, action, pattern, cname, source)
	}
}

const twoGroups = `
access: {rate_limit: 0}
policy:
  default: {actions: {telemetry: sinkhole}}
  groups:
    - name: watch
      clients: [127.0.0.2]
      actions: {telemetry: log}
`

// TestChainPerGroup: an unlisted name whose answer goes through a
// sinkholed telemetry endpoint is sinkholed for a group that sinkholes
// telemetry, with an EDE text naming the CNAME, and forwarded (and logged
// under the endpoint) for one that logs telemetry; both from one cached
// answer, over UDP and TCP.
func TestChainPerGroup(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("alias.example", "v10.events.data.microsoft.com", "cdn.example.net")
	s, rec := startRecorded(t, twoGroups, up)
	const v10 = "v10.events.data.microsoft.com"
	for _, network := range []string{"udp", "tcp"} {
		r := s.ask(t, network, "127.0.0.1", query("alias.example.", dns.TypeA, true))
		if !sinkholed(r, v10) {
			t.Errorf("%s default group: %v", network, r)
		}
		a := rec.next(t)
		decided(t, network+" default group", a, "default", policy.Sinkhole, v10, v10+".", SourceSinkhole)
		_, text := ede(r)
		if text != "phonehome: telemetry v10.events.data.microsoft.com (Windows 10-1809..11) (through CNAME v10.events.data.microsoft.com)" {
			t.Errorf("%s EDE text: %q", network, text)
		}

		r = s.ask(t, network, "127.0.0.2", query("alias.example.", dns.TypeA, true))
		if !forwarded(r, v10, "cdn.example.net") {
			t.Errorf("%s watch group: %v", network, r)
		}
		if code, _ := ede(r); code != 0 {
			t.Errorf("%s watch group: EDE %d on a forwarded answer", network, code)
		}
		a = rec.next(t)
		decided(t, network+" watch group", a, "watch", policy.Log, v10, v10+".", SourceCache)
		if !a.Match() {
			t.Errorf("%s watch group: the query log would not record it", network)
		}
	}
	if n := up.Seen("alias.example"); n != 1 {
		t.Errorf("alias.example asked upstream %d times, want once", n)
	}
}

const protectedChain = `
access: {rate_limit: 0}
policy:
  default: {actions: {telemetry: sinkhole, certificates: sinkhole}}
  groups:
    - name: strict
      clients: [127.0.0.3]
      overrides: {sinkhole: [ctldl.windowsupdate.com]}
`

// TestChainProtected: an answer whose chain passes through a protected
// endpoint is never sinkholed by a category (its own, or a later name's):
// it is forwarded and logged, saying which endpoint protected it. An
// override that names the protected endpoint does sinkhole it, for its
// group only, and the config says what that breaks, for that group.
func TestChainProtected(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("certs.example", "ctldl.windowsupdate.com", "v10.events.data.microsoft.com", "cdn.example.net")
	rec, logs := &recorder{}, &testlog.Buffer{}
	s := startWith(t, Options{Observers: []Observer{rec}, Log: slog.New(slog.NewTextHandler(logs, nil))}, protectedChain, up)
	const ctldl = "ctldl.windowsupdate.com"
	for _, network := range []string{"udp", "tcp"} {
		r := s.ask(t, network, "127.0.0.1", query("certs.example.", dns.TypeA, true))
		if !forwarded(r, ctldl, "v10.events.data.microsoft.com", "cdn.example.net") {
			t.Errorf("%s through a protected endpoint: %v", network, r)
		}
		a := rec.next(t)
		d := a.Decision
		if d.Action != policy.Log || !d.Protected || d.Shield == nil || d.Shield.Entry.Pattern != ctldl || d.CNAME == "" ||
			!strings.Contains(d.Reason(), "but ctldl.windowsupdate.com is protected") {
			t.Errorf("%s protected: %s, protected %v, cname %q: %s", network, d.Action, d.Protected, d.CNAME, d.Reason())
		}

		r = s.ask(t, network, "127.0.0.3", query("certs.example.", dns.TypeA, true))
		if !sinkholed(r, ctldl) {
			t.Errorf("%s override through a protected endpoint: %v", network, r)
		}
		a = rec.next(t)
		d = a.Decision
		if d.Action != policy.Sinkhole || d.Override.Rule == nil || d.CNAME != ctldl+"." || a.Source != SourceSinkhole {
			t.Errorf("%s override: %s, cname %q, source %s: %s", network, d.Action, d.CNAME, a.Source, d.Reason())
		}
	}

	// Sinkholed through protection by the user's own pattern: said once,
	// with what it breaks.
	if n := strings.Count(logs.String(), "sinkholes a protected endpoint's answer through its CNAME chain"); n != 1 ||
		!strings.Contains(logs.String(), "certificate trust list") {
		t.Errorf("%d warnings of a sinkhole through protection:\n%s", n, logs.String())
	}

	cfg := parseConfig(t, protectedChain)
	cfg.Upstreams = []string{up.Addr()}
	_, warns, err := Validate(cfg, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, w := range warns {
		if strings.Contains(w, "sinkholes protected endpoint") {
			found = append(found, w)
		}
	}
	if len(found) != 1 || !strings.HasPrefix(found[0], "test.yaml:8:") ||
		!strings.Contains(found[0], "group strict: override sinkhole ctldl.windowsupdate.com sinkholes protected endpoint ctldl.windowsupdate.com") {
		t.Errorf("warnings for an override of a protected endpoint: %q", found)
	}
}

// TestChainAlias: an unlisted name whose chain passes through a catalog
// entry that is only logged is forwarded, and observers see it as that
// entry, reached through the CNAME; from the cache too.
func TestChainAlias(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("www.alias.example", "edge.example.net", "arc.msn.com", "cdn.example.net")
	s, rec := startRecorded(t, "access: {rate_limit: 0}\n", up)
	for i, network := range []string{"udp", "tcp"} {
		r := s.ask(t, network, "", query("www.alias.example.", dns.TypeA, false))
		if !forwarded(r, "edge.example.net", "arc.msn.com", "cdn.example.net") {
			t.Errorf("%s: %v", network, r)
		}
		source := SourceCache
		if i == 0 {
			source = SourceUpstream
		}
		a := rec.next(t)
		decided(t, network, a, "default", policy.Log, "arc.msn.com", "arc.msn.com.", source)
		if a.Decision.Category() != "spotlight" || !a.Match() {
			t.Errorf("%s: category %s, match %v", network, a.Decision.Category(), a.Match())
		}
	}
	// A name whose chain is all unlisted is allowed as it was.
	up.SetChain("plain.example", "edge.example.net", "cdn.example.net")
	s.ask(t, "udp", "", query("plain.example.", dns.TypeA, false))
	decided(t, "unlisted chain", rec.next(t), "default", policy.Allow, "", "", SourceUpstream)
}

// TestChainRedecided: a cached alias is decided again after a reload that
// changes its category's action, and after a pause and its end, each from
// the cache: the upstream is asked once. A stale alias is decided too.
func TestChainRedecided(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("alias.example", "v10.events.data.microsoft.com", "cdn.example.net")
	s := start(t, "access: {rate_limit: 0}\n", up)
	reload := func(text string) {
		t.Helper()
		cfg := parseConfig(t, text)
		cfg.Listen = []string{s.addr}
		cfg.Upstreams = []string{up.Addr()}
		if err := s.srv.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	const v10 = "v10.events.data.microsoft.com"
	check := func(what string, sink bool) {
		t.Helper()
		for _, network := range []string{"udp", "tcp"} {
			r := s.ask(t, network, "", query("alias.example.", dns.TypeA, true))
			if sink && !sinkholed(r, v10) || !sink && !forwarded(r, v10, "cdn.example.net") {
				t.Errorf("%s, %s: %v", what, network, r)
			}
		}
	}
	check("at start", true)
	// The cached chain remembers the running policy's decision; a reload
	// makes it forget, so the old policy is not kept alive by the cache.
	_, chain := s.srv.State().Cache.Get(query("alias.example.", dns.TypeA, true))
	if chain == nil || chain.memo.Load() == nil || chain.memo.Load().policy != s.srv.State().Policy {
		t.Fatalf("the cached chain has no decision of the running policy: %+v", chain)
	}
	reload("access: {rate_limit: 0}\npolicy:\n  default: {actions: {telemetry: log}}\n")
	if m := chain.memo.Load(); m != nil {
		t.Error("after a reload the cached chain still holds the old policy's decisions")
	}
	check("after a reload to telemetry: log", false)
	reload("access: {rate_limit: 0}\npolicy:\n  default: {actions: {telemetry: sinkhole}}\n")
	check("after a reload back to telemetry: sinkhole", true)
	s.srv.SetPause(&Pause{Until: time.Now().Add(time.Minute)})
	check("paused", false)
	s.srv.SetPause(&Pause{Until: time.Now().Add(time.Minute), Categories: []string{"spotlight"}})
	check("paused for another category", true)
	s.srv.SetPause(nil)
	check("resumed", true)
	if n := up.Seen("alias.example"); n != 1 {
		t.Errorf("alias.example asked upstream %d times, want once", n)
	}

	// Expired, and served stale while the upstream fails: decided all the same.
	up.SetMode(dnstest.ServFail)
	s.clock.set(time.Hour)
	if r := s.ask(t, "udp", "", query("alias.example.", dns.TypeA, true)); !sinkholed(r, v10) {
		t.Errorf("stale: %v", r)
	}
	s.srv.SetPause(&Pause{Until: time.Now().Add(time.Minute)})
	r := s.ask(t, "udp", "", query("alias.example.", dns.TypeA, true))
	if code, _ := ede(r); !forwarded(r, v10, "cdn.example.net") || code != dns.ExtendedErrorCodeStaleAnswer {
		t.Errorf("stale, paused: %v", r)
	}
}

// TestChainMemo: a chain is decided once per group under one policy and
// kept; a hit after that is served from the memo, allocating nothing, and
// a new policy decides again.
func TestChainMemo(t *testing.T) {
	compile := func(text string) *policy.Policy {
		cfg := parseConfig(t, text)
		cfg.SetDefaults()
		p, _, err := policy.Compile(&cfg.Policy, cfg.Source)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p, logs := compile(twoGroups), compile("policy:\n  default: {actions: {telemetry: log}}\n")
	def, watch := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	c := aliasChain(build("alias.example\nalias.example v10.events.data.microsoft.com\nv10.events.data.microsoft.com cdn.example.net"), DefaultMaxChain)
	if c == nil || len(c.Names) != 2 {
		t.Fatalf("chain: %v", c)
	}
	decide := func(p *policy.Policy, client netip.Addr) policy.Decision {
		return c.decide(p, client, p.Decide(client, "alias.example."), DefaultMaxChain)
	}
	for _, step := range []struct {
		what   string
		p      *policy.Policy
		client netip.Addr
		action policy.Action
		groups int // decisions kept
	}{
		{"default group", p, def, policy.Sinkhole, 1},
		{"watch group", p, watch, policy.Log, 2},
		{"default group again", p, def, policy.Sinkhole, 2},
		{"a new policy", logs, def, policy.Log, 1},
		{"the first policy again", p, def, policy.Sinkhole, 1},
	} {
		if d := decide(step.p, step.client); d.Action != step.action || d.CNAME != "v10.events.data.microsoft.com." {
			t.Errorf("%s: %s, cname %q", step.what, d.Action, d.CNAME)
		}
		g := step.p.Decide(step.client, "alias.example.").Group
		m := c.memo.Load()
		if m == nil || m.policy != step.p || m.decisions[g].Group != g || len(m.decisions) != step.groups {
			t.Fatalf("%s: the decision was not kept, or not beside the others (want %d)", step.what, step.groups)
		}
		if n := testing.AllocsPerRun(100, func() { decide(step.p, step.client) }); n != 0 {
			t.Errorf("%s: a decided chain allocates %v times a hit", step.what, n)
		}
	}
	// A hit is the kept decision, not a new one.
	g := p.Decide(def, "alias.example.").Group
	kept := policy.Decision{Group: g, Action: policy.Allow, CNAME: "kept.example."}
	c.memo.Store(&chainMemo{policy: p, decisions: map[*policy.Group]policy.Decision{g: kept}})
	if d := decide(p, def); d != kept {
		t.Errorf("a hit decided again: %s, cname %q", d.Action, d.CNAME)
	}
}

// TestCanaryAndDDR: Firefox's canary gets NXDOMAIN unless canary: false,
// and DDR's name NODATA; neither goes upstream while answered here.
func TestCanaryAndDDR(t *testing.T) {
	up := dnstest.Start(t)
	on := start(t, "", up)
	off := start(t, "canary: false\n", up)
	for _, network := range []string{"udp", "tcp"} {
		if r := on.ask(t, network, "", query("use-application-dns.net.", dns.TypeA, false)); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Errorf("%s canary: %v", network, r)
		}
		if r := on.ask(t, network, "", query("Use-Application-DNS.net.", dns.TypeAAAA, false)); r.Rcode != dns.RcodeNameError {
			t.Errorf("%s canary, other case: %v", network, r)
		}
		for _, s := range []*testServer{on, off} {
			if r := s.ask(t, network, "", query("_dns.resolver.arpa.", dns.TypeSVCB, true)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
				t.Errorf("%s DDR: %v", network, r)
			}
		}
	}
	if n := up.Seen("use-application-dns.net") + up.Seen("_dns.resolver.arpa"); n != 0 {
		t.Errorf("canary or DDR went upstream %d times", n)
	}
	if r := off.ask(t, "udp", "", query("use-application-dns.net.", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess || answerText(r) != dnstest.AnswerA {
		t.Errorf("canary: false: %v", r)
	}
	if n := up.Seen("use-application-dns.net"); n != 1 {
		t.Errorf("canary: false: asked upstream %d times", n)
	}
}

// TestChainConfig: cname.inspect: false leaves aliases alone, and
// cname.max_chain bounds how far a chain is followed.
func TestChainConfig(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("alias.example", "v10.events.data.microsoft.com", "cdn.example.net")
	up.SetChain("deep.example", "hop.example.net", "v10.events.data.microsoft.com")
	for _, c := range []struct {
		config      string
		alias, deep bool // sinkholed
	}{
		{"", true, true},
		{"cname: {inspect: false}\n", false, false},
		{"cname: {inspect: true, max_chain: 1}\n", true, false},
		{"cname: {max_chain: 2}\n", true, true},
	} {
		s := start(t, c.config, up)
		for _, network := range []string{"udp", "tcp"} {
			r := s.ask(t, network, "", query("alias.example.", dns.TypeA, true))
			if c.alias != sinkholed(r, "v10.events.data.microsoft.com") || !c.alias && !forwarded(r, "v10.events.data.microsoft.com", "cdn.example.net") {
				t.Errorf("%q %s alias.example: %v", c.config, network, r)
			}
			r = s.ask(t, network, "", query("deep.example.", dns.TypeA, true))
			if c.deep != sinkholed(r, "v10.events.data.microsoft.com") || !c.deep && !forwarded(r, "hop.example.net", "v10.events.data.microsoft.com") {
				t.Errorf("%q %s deep.example: %v", c.config, network, r)
			}
		}
	}
	cfg := parseConfig(t, "cname: {max_chain: 65}\n")
	cfg.Upstreams = []string{up.Addr()}
	if _, _, err := Validate(cfg, "/nonexistent"); err == nil || !strings.Contains(err.Error(), "max_chain") {
		t.Errorf("max_chain 65: %v", err)
	}
}

// FuzzAliasChain reads alias chains from arbitrary answers: wire messages,
// and answers built from a list of records ("owner target" for a CNAME,
// "owner DNAME target" for a DNAME), with loops, chains longer than the
// bound, and CNAMEs for names off the chain. Nothing may panic; the chain
// holds at most max names, none twice nor the question, each the target of
// the first CNAME of the question or of the name before; and it stops
// only at the bound, a name without a CNAME, or a loop.
//
//	go test -run '^$' -fuzz FuzzAliasChain -fuzztime 30s ./resolver
func FuzzAliasChain(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("alias.example.", dns.TypeA)
	for _, s := range []string{"alias.example. 60 IN CNAME v10.events.data.microsoft.com.", "v10.events.data.microsoft.com. 60 IN CNAME cdn.example.net.", "cdn.example.net. 60 IN A 192.0.2.1"} {
		rr, _ := dns.NewRR(s)
		m.Answer = append(m.Answer, rr)
	}
	wire, _ := m.Pack()
	f.Add(wire, "", uint8(16))
	for _, records := range []string{
		"a.example\na.example b.example\nb.example a.example",                                 // a loop back to the question
		"a.example\na.example b.example\nb.example c.example\nc.example b.example",            // a loop along the chain
		"a.example\na.example b.example\nb.example c.example\nc.example d.example\nd.example", // longer than a bound of 2
		"A.Example\nx.example y.example\na.example B.EXAMPLE.\nb.example y.example",           // off the chain, mixed case
		"a.sub.example\nsub.example DNAME other.example\na.sub.example a.other.example",       // a DNAME beside its CNAME
		"a.example\na.example b.example\na.example c.example",                                 // two CNAMEs for one name
	} {
		// Each as records and, packed, as a wire message.
		wire, _ := build(records).Pack()
		f.Add([]byte{}, records, uint8(16))
		f.Add(wire, "", uint8(4))
	}
	f.Add([]byte{}, "a.example\na.example b.example\nb.example c.example", uint8(0))

	f.Fuzz(func(t *testing.T, wire []byte, records string, max uint8) {
		bound := int(max%70) - 2 // including 0 and below: nothing
		m := new(dns.Msg)
		if m.Unpack(wire) == nil {
			checkChain(t, m, bound)
		}
		checkChain(t, build(records), bound)
	})
}

// build makes an answer from lines: the question name, then records.
func build(records string) *dns.Msg {
	m := new(dns.Msg)
	lines := strings.Split(records, "\n")
	m.SetQuestion(dns.Fqdn(lines[0]), dns.TypeA)
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		hdr := func(owner string, t uint16) dns.RR_Header {
			return dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: t, Class: dns.ClassINET, Ttl: 60}
		}
		switch {
		case len(f) == 2:
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(f[0], dns.TypeCNAME), Target: f[1]})
		case len(f) == 3 && strings.EqualFold(f[1], "DNAME"):
			m.Answer = append(m.Answer, &dns.DNAME{Hdr: hdr(f[0], dns.TypeDNAME), Target: f[2]})
		case len(f) == 1:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(f[0], dns.TypeA), A: []byte{192, 0, 2, 1}})
		}
	}
	return m
}

// checkChain checks aliasChain's properties for one answer.
func checkChain(t *testing.T, m *dns.Msg, max int) {
	t.Helper()
	c := aliasChain(m, max)
	if c == nil {
		if len(m.Question) == 1 && max > 0 {
			if next, ok := firstCNAME(m, m.Question[0].Name); ok && !strings.EqualFold(next, m.Question[0].Name) {
				t.Fatalf("no chain, but the question has a CNAME to %q", next)
			}
		}
		return
	}
	if len(m.Question) != 1 {
		t.Fatalf("a chain for %d questions", len(m.Question))
	}
	if len(c.Names) == 0 || len(c.Names) > max {
		t.Fatalf("%d names, bound %d", len(c.Names), max)
	}
	q := m.Question[0].Name
	prev := q
	for i, n := range c.Names {
		if strings.EqualFold(n, q) {
			t.Fatalf("name %d is the question %q", i, q)
		}
		for _, o := range c.Names[:i] {
			if strings.EqualFold(o, n) {
				t.Fatalf("name %d, %q, repeated", i, n)
			}
		}
		if want, ok := firstCNAME(m, prev); !ok || want != n {
			t.Fatalf("name %d is %q, but the first CNAME of %q leads to %q (%v)", i, n, prev, want, ok)
		}
		prev = n
	}
	// The chain ends at the bound, at a name without a CNAME, or where a
	// CNAME leads back into the chain.
	if len(c.Names) < max {
		if next, ok := firstCNAME(m, prev); ok && !strings.EqualFold(next, q) && !containsFold(c.Names, next) {
			t.Fatalf("the chain stops at %q, whose CNAME leads on to %q", prev, next)
		}
	}
}

// firstCNAME is the target of the first CNAME owned by name, as a chain
// spells it.
func firstCNAME(m *dns.Msg, name string) (string, bool) {
	for _, rr := range m.Answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
			return strings.ToLower(dns.Fqdn(c.Target)), true
		}
	}
	return "", false
}

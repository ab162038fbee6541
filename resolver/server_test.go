package resolver

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/dnstest"
)

// testServer is a real phonehome resolver on 127.0.0.1:0 with its state.
type testServer struct {
	addr  string
	srv   *Server
	h     *Handler
	st    *State
	clock *testClock // the cache's
}

// parseConfig reads a config text holding the resolver's sections.
func parseConfig(t testing.TB, text string) *Config {
	t.Helper()
	cfg := &Config{}
	src, err := config.Decode("test.yaml", []byte(text), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Source = src
	return cfg
}

// start runs a server from a config text whose upstreams are the stubs.
func start(t testing.TB, config string, ups ...*dnstest.Upstream) *testServer {
	t.Helper()
	return startOn(t, "127.0.0.1:0", config, ups...)
}

// startOn is start on another listen address.
func startOn(t testing.TB, listen, config string, ups ...*dnstest.Upstream) *testServer {
	t.Helper()
	cfg := parseConfig(t, config)
	cfg.Listen = []string{listen}
	cfg.Upstreams = nil
	for _, u := range ups {
		cfg.Upstreams = append(cfg.Upstreams, u.Addr())
	}
	clock := &testClock{}
	srv, err := New(cfg, Options{ResolvConf: "/nonexistent", TryTimeout: 300 * time.Millisecond, Timeout: time.Second, Clock: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	st := srv.State()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return &testServer{addr: srv.Addrs()[0], srv: srv, h: srv.handler, st: st, clock: clock}
}

// backOff asks fresh names until u, an upstream that answers nothing, has
// timed out downAfter times in a row and is backed off. Its timeouts come
// after the queries' answers (the next upstream answers them), so it
// waits for them, for at most 10 s.
func (s *testServer) backOff(t *testing.T, u *Upstream) {
	t.Helper()
	for i := range downAfter {
		s.ask(t, "udp", "", query(fmt.Sprintf("backoff%d.example.", i), dns.TypeA, false))
	}
	for give := time.Now().Add(10 * time.Second); u.downUntil.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(give) {
			t.Fatalf("%s is not backed off after %d timeouts", u.Name, downAfter)
		}
	}
}

// recovered waits until u, probed by a query, is up again: the probe's
// answer may come after the query's, from another upstream. It waits 10 s
// at most.
func recovered(t *testing.T, u *Upstream) {
	t.Helper()
	for give := time.Now().Add(10 * time.Second); u.downUntil.Load() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(give) {
			t.Fatalf("%s was probed and is still backed off", u.Name)
		}
	}
}

// hedges is how many queries s sent the upstream named name (a stub's
// Addr, a DoH URL as written) while another was still awaited, or again
// as its only upstream: on a loaded machine an upstream can be slower than
// its hedge delay (100 ms before its first answer, 20 ms or more after),
// and the next one is asked too. s needs a Registry.
func (s *testServer) hedges(name string) int {
	return int(testutil.ToFloat64(s.h.metrics.upstreamHedges.WithLabelValues(name)))
}

// askHedged asks s for name's A record over UDP, and returns how many
// times the query was sent to the upstream named upstream as a hedge.
func (s *testServer) askHedged(t *testing.T, name, upstream string) int {
	t.Helper()
	before := s.hedges(upstream)
	s.ask(t, "udp", "", query(name, dns.TypeA, false))
	return s.hedges(upstream) - before
}

// flushName is the name of the queries flush sends.
const flushName = "flush.test."

// flush waits, 10 s at most, until the stub u has counted the queries sent
// to it so far: until cond (which what describes) says it has counted
// those the test knows of, then until it has counted a query flush sends
// it over UDP after them, which makes a later count of any others
// unlikely (not impossible: miekg/dns runs each datagram's handler in a
// goroutine of its own). A stub counts a query only once its handler runs,
// which on a loaded machine can be after the client's exchange has
// returned, when u answers nothing or another upstream answered first (a
// hedge, a probe). flush's queries count in u.Queries; queries leaves them
// out.
func flush(t *testing.T, u *dnstest.Upstream, what string, cond func() bool) {
	t.Helper()
	give := time.Now().Add(10 * time.Second)
	for ; !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(give) {
			t.Fatalf("waited 10 s for the stub to count %s (%d queries counted)", what, queries(u))
		}
	}
	n := u.Seen(flushName)
	sendUDP(t, u.Addr(), query(flushName, dns.TypeA, false)).Close()
	for ; u.Seen(flushName) == n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(give) {
			t.Fatal("waited 10 s for the stub to count a query of the test's own")
		}
	}
}

// queries is u.Queries without flush's.
func queries(u *dnstest.Upstream) int { return u.Queries() - u.Seen(flushName) }

// seen is u.Seen(name) once u has counted at least least queries for
// name, and every query sent to it before (flush).
func seen(t *testing.T, u *dnstest.Upstream, name string, least int) int {
	t.Helper()
	flush(t, u, fmt.Sprintf("%d queries for %s", least, name), func() bool { return u.Seen(name) >= least })
	return u.Seen(name)
}

// ask sends one query over net ("udp" or "tcp") from the client address
// from ("" for 127.0.0.1).
func (s *testServer) ask(t *testing.T, network, from string, m *dns.Msg) *dns.Msg {
	t.Helper()
	r, err := s.exchange(network, from, m)
	if err != nil {
		t.Fatalf("%s %s: %v", network, m.Question[0].Name, err)
	}
	return r
}

// exchange is ask for goroutines other than the test's: it returns the
// error instead of failing the test. It waits clientTimeout for the answer.
func (s *testServer) exchange(network, from string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: clientTimeout}
	if from != "" {
		ip := net.ParseIP(from)
		if network == "tcp" {
			c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: clientTimeout}
		} else {
			c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: ip}, Timeout: clientTimeout}
		}
	}
	r, _, err := c.Exchange(m, s.addr)
	return r, err
}

// clientTimeout is how long the test's client waits for an answer: far
// longer than the server takes to answer or give up (a second in start),
// even on a loaded machine, where 3 s was once too short for 30 queries at
// once under the race detector.
const clientTimeout = 10 * time.Second

func query(name string, qtype uint16, edns bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	return m
}

func ede(m *dns.Msg) (uint16, string) {
	if o := m.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e.InfoCode, e.ExtraText
			}
		}
	}
	return 0, ""
}

func answerText(m *dns.Msg) string {
	var s []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		s = append(s, strings.Join(f[4:], " "))
	}
	return strings.Join(s, "; ")
}

const groupsConfig = `
policy:
  groups:
    - name: kids
      clients: [127.0.0.2]
      edition: home
      actions: {spotlight: sinkhole, telemetry: sinkhole}
`

func TestForwardSinkholeAndGroups(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, groupsConfig, up)
	for _, network := range []string{"udp", "tcp"} {
		// Forwarded, with the client's ID and the exact case of its question.
		q := query("WwW.Example.COM.", dns.TypeA, false)
		r := s.ask(t, network, "", q)
		if r.Id != q.Id || r.Question[0].Name != "WwW.Example.COM." || r.Rcode != dns.RcodeSuccess || answerText(r) != dnstest.AnswerA || !r.RecursionAvailable {
			t.Errorf("%s forwarded: %v", network, r)
		}
		// Sinkholed for everyone: telemetry. A gets 0.0.0.0 with EDE 15.
		r = s.ask(t, network, "", query("v10.events.data.microsoft.com.", dns.TypeA, true))
		code, text := ede(r)
		if answerText(r) != "0.0.0.0" || code != dns.ExtendedErrorCodeBlocked || text != "phonehome: telemetry v10.events.data.microsoft.com (Windows 10-1809..11)" {
			t.Errorf("%s sinkholed A: %v", network, r)
		}
		r = s.ask(t, network, "", query("v10.events.data.microsoft.com.", dns.TypeAAAA, false))
		if answerText(r) != "::" || r.IsEdns0() != nil {
			t.Errorf("%s sinkholed AAAA without EDNS: %v", network, r)
		}
		r = s.ask(t, network, "", query("v10.events.data.microsoft.com.", dns.TypeHTTPS, true))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Errorf("%s sinkholed HTTPS is NODATA with a SOA: %v", network, r)
		}
		// Spotlight: logged (forwarded) for the default group, sinkholed for kids on 127.0.0.2.
		if r := s.ask(t, network, "", query("arc.msn.com.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
			t.Errorf("%s default group arc.msn.com: %v", network, r)
		}
		if r := s.ask(t, network, "127.0.0.2", query("arc.msn.com.", dns.TypeA, false)); answerText(r) != "0.0.0.0" {
			t.Errorf("%s kids arc.msn.com: %v", network, r)
		}
	}
	if n := up.Seen("v10.events.data.microsoft.com"); n != 0 {
		t.Errorf("sinkholed name reached the upstream %d times", n)
	}
}

func TestSinkholeModes(t *testing.T) {
	up := dnstest.Start(t)
	for _, c := range []struct {
		mode      string
		qtype     uint16
		rcode     int
		answer    string
		authority int
	}{
		{"{mode: nxdomain, ttl: 90s}", dns.TypeA, dns.RcodeNameError, "", 1},
		{"{mode: nodata}", dns.TypeA, dns.RcodeSuccess, "", 1},
		{"{mode: refused}", dns.TypeA, dns.RcodeRefused, "", 0},
		{"{mode: ip, ipv4: 192.0.2.99, ipv6: \"2001:db8::99\"}", dns.TypeA, dns.RcodeSuccess, "192.0.2.99", 0},
		{"{mode: ip, ipv4: 192.0.2.99, ipv6: \"2001:db8::99\"}", dns.TypeAAAA, dns.RcodeSuccess, "2001:db8::99", 0},
		{"{mode: ip, ipv4: 192.0.2.99}", dns.TypeAAAA, dns.RcodeSuccess, "", 1},
	} {
		s := start(t, "sinkhole: "+c.mode+"\n", up)
		r := s.ask(t, "udp", "", query("watson.telemetry.microsoft.com.", c.qtype, true))
		if r.Rcode != c.rcode || answerText(r) != c.answer || len(r.Ns) != c.authority {
			t.Errorf("%s %s: %v", c.mode, dns.TypeToString[c.qtype], r)
		}
		if c.mode == "{mode: nxdomain, ttl: 90s}" && r.Ns[0].(*dns.SOA).Minttl != 90 {
			t.Errorf("SOA minimum: %v", r.Ns[0])
		}
	}
}

func TestAccess(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "access: {allow: [127.0.0.1/32]}\n", up)
	r := s.ask(t, "udp", "127.0.0.3", query("www.example.com.", dns.TypeA, false))
	if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("udp stranger: %v", r)
	}
	// Over TCP the connection is closed unread (TestTCPAccess).
	if r, err := s.exchange("tcp", "127.0.0.3", query("www.example.com.", dns.TypeA, false)); err == nil {
		t.Errorf("tcp stranger answered: %v", r)
	}
	if up.Queries() != 0 {
		t.Errorf("a refused client's query was forwarded")
	}
	if r := s.ask(t, "udp", "", query("www.example.com.", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("allowed client: %v", r)
	}
}

func TestRateLimit(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "access: {rate_limit: 5}\n", up)
	// Twenty queries at once from one address: the burst of five is
	// answered, the rest dropped, but for what the bucket refilled (five a
	// second) while they were handled. Every query is answered or counted
	// dropped; the bound on refills follows the time the test really took,
	// so a slow machine cannot make it fail.
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	for i := range 20 {
		q := query("www.example.com.", dns.TypeA, false)
		q.Id = uint16(i)
		b, _ := q.Pack()
		c.Write(b)
	}
	answered := 0
	buf := make([]byte, 512)
	for deadline := time.Now().Add(10 * time.Second); answered+int(s.h.counters.RateLimited.Load()) < 20 && time.Now().Before(deadline); {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			answered++
		}
	}
	refills := 1 + int(5*time.Since(start).Seconds())
	if dropped := int(s.h.counters.RateLimited.Load()); answered < 5 || answered > 5+refills || answered+dropped != 20 {
		t.Errorf("%d of 20 answered, %d dropped, in %v", answered, dropped, time.Since(start))
	}
}

func TestCacheAndSingleflight(t *testing.T) {
	up := dnstest.Start(t)
	s := startWith(t, Options{Registry: prometheus.NewRegistry()}, "", up)
	s.ask(t, "udp", "", query("cached.example.", dns.TypeA, false))
	r := s.ask(t, "tcp", "", query("CACHED.example.", dns.TypeA, false))
	if up.Seen("cached.example") != 1 || r.Question[0].Name != "CACHED.example." || answerText(r) != dnstest.AnswerA {
		t.Errorf("cache: upstream saw %d, answer %v", up.Seen("cached.example"), r)
	}
	// Negative answers are cached from the SOA minimum.
	s.ask(t, "udp", "", query("a.nx.test.", dns.TypeA, false))
	if r := s.ask(t, "udp", "", query("a.nx.test.", dns.TypeA, false)); r.Rcode != dns.RcodeNameError || up.Seen("a.nx.test") != 1 {
		t.Errorf("negative cache: %v, upstream saw %d", r, up.Seen("a.nx.test"))
	}
	// Identical queries in flight go upstream once.
	up.SetMode(dnstest.Delay)
	up.SetDelay(200 * time.Millisecond)
	resends := s.hedges(up.Addr())
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.exchange("udp", "", query("same.example.", dns.TypeA, false))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("same.example: %v", err)
		}
	}
	// An answer 200 ms late on a loaded machine can come after the query
	// was sent again to its only upstream (after 250 ms): one more query,
	// counted as a hedge.
	resends = s.hedges(up.Addr()) - resends
	if n := seen(t, up, "same.example", 1+resends) - resends; n != 1 {
		t.Errorf("10 identical queries went upstream %d times (and %d times again)", n, resends)
	}
}

func TestFailoverAndServeStale(t *testing.T) {
	bad, good := dnstest.Start(t), dnstest.Start(t)
	bad.SetMode(dnstest.Drop)
	s := startWith(t, Options{Registry: prometheus.NewRegistry()}, "", bad, good)
	if r := s.ask(t, "udp", "", query("one.example.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
		t.Fatalf("failover: %v", r)
	}
	// Once it has timed out a few times in a row, the dropping upstream
	// backs off: the next query goes straight to the good one, and to the
	// backed-off one only as a hedge, when the good one is slower than its
	// hedge delay (a loaded machine).
	s.backOff(t, s.st.Forwarder.Upstreams[0])
	if hedges := s.askHedged(t, "two.example.", bad.Addr()); seen(t, bad, "two.example", hedges) != hedges {
		t.Errorf("an upstream in backoff was asked (%d times as a hedge)", hedges)
	}
	// Recovery: once its backoff is over, the next query probes it, and
	// once it has answered it is the first asked again. Every query it
	// was sent has timed out first: a late timeout would back it off
	// again before the probe.
	timeouts := s.h.metrics.upstreamErrs.WithLabelValues(bad.Addr(), "timeout")
	waitFor(t, "every query sent to the dropping upstream to time out", func() bool { return testutil.ToFloat64(timeouts) >= float64(queries(bad)) })
	bad.SetMode(dnstest.Answer)
	s.st.Forwarder.Upstreams[0].downUntil.Store(time.Now().UnixNano())
	s.ask(t, "udp", "", query("three.example.", dns.TypeA, false))
	recovered(t, s.st.Forwarder.Upstreams[0])
	hedges := s.askHedged(t, "back.example.", good.Addr())
	if bad.Seen("three.example") != 1 || seen(t, bad, "back.example", 1) != 1 || seen(t, good, "back.example", hedges) != hedges {
		t.Errorf("a recovered upstream was not asked again (the other asked %d times as a hedge)", hedges)
	}

	// Every upstream down: SERVFAIL with EDE 22, or the stale answer with EDE 3.
	bad.SetMode(dnstest.Drop)
	good.SetMode(dnstest.Drop)
	r := s.ask(t, "udp", "", query("never.example.", dns.TypeA, true))
	if code, _ := ede(r); r.Rcode != dns.RcodeServerFailure || code != dns.ExtendedErrorCodeNoReachableAuthority {
		t.Errorf("all down: %v", r)
	}
	s.clock.set(time.Hour) // one.example has expired
	r = s.ask(t, "udp", "", query("one.example.", dns.TypeA, true))
	if code, _ := ede(r); answerText(r) != dnstest.AnswerA || code != dns.ExtendedErrorCodeStaleAnswer || r.Answer[0].Header().Ttl != 30 {
		t.Errorf("stale: %v", r)
	}
	// An upstream that answers SERVFAIL is asked no longer than it takes to try the next.
	bad.SetMode(dnstest.ServFail)
	good.SetMode(dnstest.Answer)
	for _, u := range s.st.Forwarder.Upstreams {
		u.downUntil.Store(0)
	}
	if r := s.ask(t, "udp", "", query("four.example.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
		t.Errorf("SERVFAIL then good: %v", r)
	}
}

func TestTruncation(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "", up)
	r := s.ask(t, "udp", "", query(dnstest.BigName, dns.TypeTXT, false))
	if !r.Truncated || len(r.Answer) == 0 && r.Rcode != dns.RcodeSuccess {
		t.Errorf("UDP big answer: TC %v, %d records", r.Truncated, len(r.Answer))
	}
	r = s.ask(t, "tcp", "", query(dnstest.BigName, dns.TypeTXT, false))
	if r.Truncated || len(r.Answer) != dnstest.BigRecords {
		t.Errorf("TCP big answer: TC %v, %d records", r.Truncated, len(r.Answer))
	}
	if up.QueriesTCP() == 0 {
		t.Error("the truncated upstream answer was not retried over TCP")
	}
}

func TestProtocol(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "", up)
	two := query("a.example.", dns.TypeA, false)
	two.Question = append(two.Question, dns.Question{Name: "b.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	if r := s.ask(t, "udp", "", two); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v", r)
	}
	notify := query("a.example.", dns.TypeSOA, false)
	notify.Opcode = dns.OpcodeNotify
	if r := s.ask(t, "udp", "", notify); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %v", r)
	}
	chaos := query("version.bind.", dns.TypeTXT, false)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	if r := s.ask(t, "udp", "", chaos); r.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS: %v", r)
	}
	if r := s.ask(t, "tcp", "", query("example.com.", dns.TypeANY, false)); len(r.Answer) != 1 || r.Answer[0].(*dns.HINFO).Cpu != "RFC8482" {
		t.Errorf("ANY: %v", r)
	}
	if up.Queries() != 0 {
		t.Error("protocol answers went upstream")
	}

	// EDNS0 hygiene: the DO bit goes on, the client's subnet does not.
	q := query("ecs.example.", dns.TypeA, true)
	q.IsEdns0().SetDo()
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("198.51.100.0").To4()})
	s.ask(t, "udp", "", q)
	sent := up.Last().IsEdns0()
	if sent == nil || !sent.Do() || len(sent.Option) != 0 || sent.UDPSize() != 1232 {
		t.Errorf("forwarded OPT: %v", sent)
	}

	// A packet too short for a header, or one whose body does not parse,
	// gets no reply and is counted; a response gets no reply either.
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp := query("example.com.", dns.TypeA, false)
	resp.Response = true
	wire, _ := resp.Pack()
	for _, p := range [][]byte{
		{0x12, 0x34, 0x01},
		{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 'x'},
		wire,
	} {
		c.Write(p)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(make([]byte, 512)); err == nil {
			t.Errorf("packet %x got a %d-byte reply", p, n)
		}
	}
	if s.h.counters.Malformed.Load() != 2 {
		t.Errorf("malformed counted %d, want 2", s.h.counters.Malformed.Load())
	}
	// And the server still answers.
	if r := s.ask(t, "udp", "", query("www.example.com.", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("after garbage: %v", r)
	}
}

func TestRefuseToStart(t *testing.T) {
	cfg := &Config{Listen: []string{"127.0.0.1:5353"}, Upstreams: []string{"127.0.0.1:5353"}}
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("loop: %v", err)
	}
	cfg.Listen = []string{":5353"}
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("loop through the wildcard address: %v", err)
	}
	// A port that is taken.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg = &Config{Listen: []string{pc.LocalAddr().String()}, Upstreams: []string{"127.0.0.1:9"}}
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), pc.LocalAddr().String()+"/udp") ||
		!strings.Contains(err.Error(), "a phonehome already running") || !strings.Contains(err.Error(), "choose another address with -listen or listen:") {
		t.Errorf("taken port: %v", err)
	}
	for port, holder := range map[string]string{"53": "systemd-resolved", "5353": "avahi-daemon"} {
		if h := BindHint(port, syscall.EADDRINUSE, "-listen"); !strings.Contains(h, holder) {
			t.Errorf("port %s taken: %q does not name %s", port, h, holder)
		}
	}
	if h := BindHint("53", syscall.EACCES, "-listen"); !strings.Contains(h, "CAP_NET_BIND_SERVICE") {
		t.Errorf("port 53 without the right: %q", h)
	}
}

// TestMain fails the run when a test leaves a goroutine of the resolver or
// of miekg/dns running: nothing a client sends may leak one.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := dnstest.LeftRunning(5*time.Second, "/resolver.", "github.com/miekg/dns."); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestUDPWildcard: on a wildcard address each answer leaves from the address
// its query came to, or the client (whose socket is connected, as dig's and
// miekg/dns's are) never sees it. Sinkholed answers go out with their batch,
// forwarded ones from their own goroutine; both must.
func TestUDPWildcard(t *testing.T) {
	up := dnstest.Start(t)
	for _, listen := range []string{"0.0.0.0:0", "[::]:0"} {
		s := startOn(t, listen, "", up)
		_, port, _ := net.SplitHostPort(s.addr)
		dsts := []string{"127.0.0.1", "127.0.0.2"}
		if c, err := net.ListenPacket("udp", "[::1]:0"); err == nil && listen == "[::]:0" {
			c.Close()
			dsts = append(dsts, "::1")
		}
		for _, dst := range dsts {
			c := &dns.Client{Timeout: 2 * time.Second}
			for _, name := range []string{"v10.events.data.microsoft.com.", dst + ".wildcard.example."} {
				r, _, err := c.Exchange(query(name, dns.TypeA, false), net.JoinHostPort(dst, port))
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					t.Errorf("listening on %s, asking %s for %s: %v %v", listen, dst, name, r, err)
				}
			}
		}
	}
}

// TestUDPBurst: bursts of queries, read and answered in batches, get every
// answer once with its own ID: sinkholed, cached and forwarded ones mixed.
// (A burst stays well under the 256 datagrams a default socket buffer holds.)
func TestUDPBurst(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "access: {rate_limit: 0}", up)
	s.ask(t, "udp", "", query("cached.example.", dns.TypeA, false))
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	names := []string{"v10.events.data.microsoft.com.", "cached.example.", "miss%d.example."}
	const bursts, size = 6, 60
	buf := make([]byte, 1500)
	for b := range bursts {
		for i := b * size; i < (b+1)*size; i++ {
			name := names[i%3]
			if i%3 == 2 {
				name = fmt.Sprintf(name, i)
			}
			m := query(name, dns.TypeA, false)
			m.Id = uint16(i)
			p, _ := m.Pack()
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[uint16]bool{}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for len(seen) < size {
			k, err := c.Read(buf)
			if err != nil {
				t.Fatalf("burst %d: %d of %d answers: %v", b, len(seen), size, err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(buf[:k]); err != nil {
				t.Fatal(err)
			}
			i := int(m.Id)
			if seen[m.Id] || i < b*size || i >= (b+1)*size || i%3 != 2 && m.Question[0].Name != names[i%3] {
				t.Fatalf("answer %d twice, or to the wrong question: %v", i, m)
			}
			seen[m.Id] = true
		}
	}
}

// TestSinkholeOutsideCatalog: a name no catalog entry matches, sinkholed
// by the unlisted action or by an override, is answered with its reason,
// not with a crash.
func TestSinkholeOutsideCatalog(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "policy:\n  default: {unlisted: sinkhole, overrides: {sinkhole: [ads.example.com, \"*tracker.example.net\"]}}\n", up)
	for name, want := range map[string]string{
		"www.example.com.":       "phonehome: unlisted ",
		"ads.example.com.":       "phonehome: override ads.example.com",
		"x.tracker.example.net.": "phonehome: override *tracker.example.net",
	} {
		r := s.ask(t, "udp", "", query(name, dns.TypeA, true))
		if code, text := ede(r); answerText(r) != "0.0.0.0" || code != dns.ExtendedErrorCodeBlocked || text != want {
			t.Errorf("%s: %v (EDE %d %q)", name, r, code, text)
		}
	}
}

// TestHeaderBits: an answer echoes the client's ID, RD and CD, sets RA, and
// clears AA, which an authoritative upstream sets but phonehome is not
// authoritative for what it forwards or caches.
func TestHeaderBits(t *testing.T) {
	up := dnstest.Start(t)
	up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Authoritative = true
		rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A 192.0.2.7")
		m.Answer = []dns.RR{rr}
		w.WriteMsg(m)
	})
	s := start(t, "", up)
	for _, c := range []struct{ rd, cd bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
		for _, source := range []string{"upstream", "cache"} {
			q := query("bits.example.", dns.TypeA, true)
			q.Id, q.RecursionDesired, q.CheckingDisabled = 4242, c.rd, c.cd
			r := s.ask(t, "udp", "", q)
			if r.Id != 4242 || r.RecursionDesired != c.rd || r.CheckingDisabled != c.cd || !r.RecursionAvailable || r.Authoritative {
				t.Errorf("RD=%v CD=%v from the %s: ID %d RD %v CD %v RA %v AA %v", c.rd, c.cd, source, r.Id, r.RecursionDesired, r.CheckingDisabled, r.RecursionAvailable, r.Authoritative)
			}
		}
	}
}

// TestUDPSocketPerCore: with four UDP sockets on one address
// (SO_REUSEPORT, as on a machine of four cores), queries from 64 client
// ports are all answered, every socket reads some of them, and the
// address is listed once.
func TestUDPSocketPerCore(t *testing.T) {
	if !canReusePort {
		t.Skip("one socket per core needs SO_REUSEPORT (Linux)")
	}
	up := dnstest.Start(t)
	cfg := parseConfig(t, "access: {rate_limit: 0}")
	cfg.Listen, cfg.Upstreams = []string{"127.0.0.1:0"}, []string{up.Addr()}
	srv, err := New(cfg, Options{ResolvConf: "/nonexistent", UDPSockets: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	if len(srv.udp) != 4 || len(srv.Addrs()) != 1 {
		t.Fatalf("%d sockets, addresses %v; want 4 sockets on one address", len(srv.udp), srv.Addrs())
	}
	c := &dns.Client{Timeout: 2 * time.Second}
	for i := range 64 {
		r, _, err := c.Exchange(query(fmt.Sprintf("client%d.example.", i), dns.TypeA, false), srv.Addrs()[0]) // a new client port each
		if err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d: %v %v", i, r, err)
		}
	}
	for i, u := range srv.udp {
		if u.conn.LocalAddr().String() != srv.Addrs()[0] {
			t.Errorf("socket %d is on %s", i, u.conn.LocalAddr())
		}
		if u.read.Load() == 0 {
			t.Errorf("socket %d read none of 64 queries from 64 client ports", i)
		}
	}
	// A second server cannot take the address: TCP does not share it.
	cfg2 := parseConfig(t, "")
	cfg2.Listen, cfg2.Upstreams = srv.Addrs(), []string{up.Addr()}
	if other, err := New(cfg2, Options{ResolvConf: "/nonexistent", UDPSockets: 4}); err == nil {
		other.Close(context.Background())
		t.Error("a second server started on the same address")
	}
}

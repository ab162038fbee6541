package resolver

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"weak"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/policy"
)

// TestReload calls Reload directly, with a good and a bad config, while a
// bounded load runs: every query is answered, a good config takes effect
// at once (the rate limit of a client already seen, policy, sinkhole
// mode, upstreams), a bad one changes nothing and says why, and the cache
// survives a reload that keeps its size.
func TestReload(t *testing.T) {
	up, other := dnstest.Start(t), dnstest.Start(t)
	s := start(t, "access: {rate_limit: 1}\n", up)
	reload := func(text string, ups ...*dnstest.Upstream) error {
		cfg := parseConfig(t, text)
		cfg.Listen = []string{s.addr} // as running: no restart warning
		for _, u := range ups {
			cfg.Upstreams = append(cfg.Upstreams, u.Addr())
		}
		return s.srv.Reload(cfg)
	}

	// A client seen before the reload goes over its limit of one a
	// second: one of ten quick queries is dropped (unless each took more
	// than a second), and the rest are not sent.
	s.ask(t, "udp", "127.0.0.9", query("cached.example.", dns.TypeA, false))
	for i := 0; ; i++ {
		if _, err := s.exchange("udp", "127.0.0.9", query("cached.example.", dns.TypeA, false)); err != nil {
			break
		}
		if i == 10 {
			t.Fatal("ten quick queries within a limit of one a second")
		}
	}
	if err := reload("access: {rate_limit: 1000}\n", up); err != nil {
		t.Fatal(err)
	}
	// It has the new rate now: fifty quick queries pass.
	for i := range 50 {
		if _, err := s.exchange("udp", "127.0.0.9", query("cached.example.", dns.TypeA, false)); err != nil {
			t.Fatalf("query %d of a client seen before raising its limit: %v", i, err)
		}
	}

	// A bounded load runs through the next reloads.
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 3000 {
			select {
			case <-stop:
				return
			default:
			}
			sent.Add(1)
			if r, err := s.exchange("udp", "127.0.0.1", query("www.example.com.", dns.TypeA, false)); err != nil || r.Rcode != dns.RcodeSuccess {
				failed.Add(1)
			}
		}
	})

	good := "access: {rate_limit: 1000}\nsinkhole: {mode: nxdomain}\npolicy:\n  default: {actions: {spotlight: sinkhole}}\n"
	if err := reload(good, other); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if r := s.ask(t, "udp", "", query("arc.msn.com.", dns.TypeA, false)); r.Rcode != dns.RcodeNameError {
		t.Errorf("spotlight after the reload: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	// The cache was kept: cached.example is not asked again, of either.
	if up.Seen("cached.example") != 1 || other.Seen("cached.example") != 0 {
		t.Errorf("cached.example asked again after the reload: %d, %d", up.Seen("cached.example"), other.Seen("cached.example"))
	}
	// New names go to the new upstream.
	s.ask(t, "udp", "", query("new.example.", dns.TypeA, false))
	if up.Seen("new.example") != 0 || other.Seen("new.example") != 1 {
		t.Errorf("new.example went to the old upstream (%d) or not to the new (%d)", up.Seen("new.example"), other.Seen("new.example"))
	}

	err := reload("policy:\n  default: {actions: {spotlite: sinkhole}}\n", other)
	if err == nil || !strings.Contains(err.Error(), `test.yaml:2:23: unknown category "spotlite"`) {
		t.Errorf("bad config: %v", err)
	}
	if r := s.ask(t, "udp", "", query("arc.msn.com.", dns.TypeA, false)); r.Rcode != dns.RcodeNameError {
		t.Errorf("after a bad reload the running config stays: %s", dns.RcodeToString[r.Rcode])
	}
	close(stop)
	wg.Wait()
	if sent.Load() == 0 || failed.Load() != 0 {
		t.Errorf("%d of %d queries failed during reloads", failed.Load(), sent.Load())
	}
}

// TestReloadKeepsUpstreams: an upstream named again by a reload keeps what
// was learnt of it. One that is down stays backed off, so the queries after
// a reload do not each wait for it again; its sockets stay open.
func TestReloadKeepsUpstreams(t *testing.T) {
	bad, good := dnstest.Start(t), dnstest.Start(t)
	bad.SetMode(dnstest.Drop)
	s := startWith(t, Options{Registry: prometheus.NewRegistry()}, "", bad, good)
	s.ask(t, "udp", "", query("one.example.", dns.TypeA, false))
	if b, g := seen(t, bad, "one.example", 1), seen(t, good, "one.example", 1); b != 1 || g != 1 {
		t.Fatalf("first query: bad saw %d, good %d", b, g)
	}
	s.backOff(t, s.srv.State().Forwarder.Upstreams[0])
	before := s.srv.State().Forwarder.Upstreams
	cfg := parseConfig(t, "sinkhole: {mode: nxdomain}\n")
	cfg.Listen, cfg.Upstreams = []string{s.addr}, []string{bad.Addr(), good.Addr()}
	if err := s.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	after := s.srv.State().Forwarder.Upstreams
	if after[0] != before[0] || after[1] != before[1] {
		t.Error("the reload made new upstreams for the same addresses")
	}
	// The good upstream slower than its hedge delay (a loaded machine)
	// has the backed-off one asked too, after it.
	hedges := s.askHedged(t, "two.example.", bad.Addr())
	if b := seen(t, bad, "two.example", hedges); b != hedges || good.Seen("two.example") != 1 {
		t.Errorf("after the reload the backed-off upstream was asked again: bad %d (%d as a hedge), good %d", b, hedges, good.Seen("two.example"))
	}
}

// TestReloadLetsThePolicyGo: after reloads, with queries of every kind
// answered by each policy (sinkholed, logged, cached, through an alias
// chain, refused, over UDP and TCP), nothing keeps an old policy alive:
// a soak that reloaded every few seconds grew by a policy a reload while
// the metrics' counter lookups kept each policy's groups as keys.
func TestReloadLetsThePolicyGo(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("alias.example", "v10.events.data.microsoft.com", "cdn.example.net")
	cfg := parseConfig(t, "access: {rate_limit: 0}\n")
	cfg.Listen, cfg.Upstreams = []string{"127.0.0.1:0"}, []string{up.Addr()}
	srv, err := New(cfg, Options{ResolvConf: "/nonexistent", Registry: prometheus.NewRegistry()}) // metrics on, as in serve
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	s := &testServer{addr: srv.Addrs()[0], srv: srv, h: srv.handler}
	load := func() {
		t.Helper()
		for _, network := range []string{"udp", "tcp"} {
			for _, name := range []string{"v10.events.data.microsoft.com.", "arc.msn.com.", "cached.example.", "alias.example."} {
				s.ask(t, network, "", query(name, dns.TypeA, true))
			}
		}
	}
	// The policy, and its default group, which alone holds the group's
	// matcher and rules: something may hold the one without the other.
	var old []weak.Pointer[policy.Policy]
	var groups []weak.Pointer[policy.Group]
	for i := range 4 {
		load()
		old = append(old, weak.Make(s.srv.State().Policy))
		groups = append(groups, weak.Make(s.srv.State().Policy.Default))
		cfg := parseConfig(t, fmt.Sprintf("access: {rate_limit: 0}\nsinkhole: {ttl: %ds}\npolicy:\n  default: {actions: {telemetry: sinkhole, spotlight: log}}\n", 60+i))
		cfg.Listen, cfg.Upstreams = []string{s.addr}, []string{up.Addr()}
		if err := s.srv.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	load()
	runtime.GC()
	runtime.GC()
	for i := range old {
		if old[i].Value() != nil || groups[i].Value() != nil {
			t.Errorf("the policy before reload %d is still alive (policy %v, its default group %v)", i+1, old[i].Value() != nil, groups[i].Value() != nil)
		}
	}
}

package resolver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/dnstest"
)

func TestUpstreamTransports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := new(dns.Msg)
	q.SetQuestion("dot.example.", dns.TypeA)

	stub := dnstest.Start(t, dnstest.WithTLS())
	u, err := ParseUpstream("tls://" + stub.Addr() + "#" + dnstest.TLSServerName)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	u.tls.RootCAs = stub.RootCAs()
	if r, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err != nil || len(r.Answer) != 1 {
		t.Errorf("DNS over TLS: %v %v", r, err)
	}
	// The certificate is verified against the servername.
	u, _ = ParseUpstream("tls://" + stub.Addr() + "#other.test")
	defer u.close()
	u.tls.RootCAs = stub.RootCAs()
	if _, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err == nil {
		t.Error("a certificate for another name was accepted")
	}

	plain := dnstest.Start(t)
	u, _ = ParseUpstream("tcp://" + plain.Addr())
	defer u.close()
	if r, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err != nil || len(r.Answer) != 1 || plain.QueriesTCP() != 1 {
		t.Errorf("tcp://: %v %v", r, err)
	}
	for _, bad := range []string{"http://1.1.1.1/dns-query", "1.1.1.1"} {
		if _, err := ParseUpstream(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestForwarderCloseCancels: closing a forwarder ends the exchanges still
// waiting at once, through the context the request path passes, without
// blaming the upstream.
func TestForwarderCloseCancels(t *testing.T) {
	stub := dnstest.Start(t)
	stub.SetMode(dnstest.Drop)
	u, _ := ParseUpstream(stub.Addr())
	f := NewForwarder([]*Upstream{u}, 8, nil)
	f.TryTimeout, f.Timeout = time.Hour, time.Hour
	q := new(dns.Msg)
	q.SetQuestion("never.example.", dns.TypeA)
	done := make(chan error, 1)
	go func() {
		_, err := f.Forward(f.ctx, q)
		done <- err
	}()
	waitFor(t, "the query to arrive", func() bool { return stub.Queries() == 1 })
	f.Close()
	select {
	case err := <-done:
		var nu *errNoUpstream
		if !errors.As(err, &nu) || !errors.Is(nu.last, context.Canceled) || nu.timeout {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Forward still waits 30 s after Close")
	}
	if !u.healthy(time.Now()) {
		t.Error("the upstream was marked down for a query the forwarder gave up")
	}
}

// TestUDPSocketsRenew: the pool replaces each socket after maxUses queries,
// so source ports keep changing, and answers still arrive.
func TestUDPSocketsRenew(t *testing.T) {
	stub := dnstest.Start(t)
	u, _ := ParseUpstream(stub.Addr())
	f := NewForwarder([]*Upstream{u}, 16, nil)
	defer f.Close()
	ctx := context.Background()
	ports := map[string]bool{}
	for i := range 2 * maxUses * udpSockets {
		q := new(dns.Msg)
		q.SetQuestion("renew.example.", dns.TypeA)
		r, _, err := f.try(ctx, q, f.Upstreams)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("query %d: %v %v", i, r, err)
		}
		u.pool.mu.Lock()
		for _, s := range u.pool.socks {
			ports[s.conn.LocalAddr().String()] = true
		}
		u.pool.mu.Unlock()
	}
	if len(ports) <= udpSockets {
		t.Errorf("%d source ports over %d queries: sockets are not renewed", len(ports), 2*maxUses*udpSockets)
	}
}

// TestForwarderOverload: past the bound on queries waiting for upstreams,
// a new miss fails at once instead of piling up goroutines.
func TestForwarderOverload(t *testing.T) {
	stub := dnstest.Start(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	stub.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		select {
		case arrived <- struct{}{}:
		default: // the test reads only the first
		}
		<-release // the first query waits until the test lets it go
		w.WriteMsg(new(dns.Msg).SetReply(r))
	})
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the stub stops, should the test end early
	u, _ := ParseUpstream(stub.Addr())
	f := NewForwarder([]*Upstream{u}, 1, nil)
	defer f.Close()
	// The first query is not given up while the test runs: a second that
	// waited for it, rather than fail at once, would wait until the test
	// lets the first go, which it does only after the second's error, or
	// 10 s.
	f.TryTimeout, f.Timeout = time.Minute, time.Minute
	q := func(name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		return m
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.Forward(context.Background(), q("slow.example."))
		done <- err
	}()
	select {
	case <-arrived:
	case err := <-done:
		t.Fatalf("first query, before it reached the upstream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the first query did not reach the upstream")
	}
	second := make(chan error, 1)
	go func() {
		_, err := f.Forward(context.Background(), q("other.example."))
		second <- err
	}()
	select {
	case err := <-second:
		if err != ErrOverload {
			t.Errorf("second query while one waits: %v, want %v", err, ErrOverload)
		}
	case <-time.After(10 * time.Second):
		t.Error("the second query was not refused within 10 s")
	}
	letGo()
	if err := <-done; err != nil {
		t.Errorf("first query: %v", err)
	}
}

// TestUDPReusedIDs: an ID is free again as soon as its answer is read, so
// another query on the socket may take it while the first is still winding
// up. Each query must get its own answer all the same. With IDs narrowed to
// 16, this timed out whenever the first query's cleanup removed the second
// one's registration.
func TestUDPReusedIDs(t *testing.T) {
	stub, silent := dnstest.Start(t), dnstest.Start(t)
	silent.SetMode(dnstest.Drop)
	u, _ := ParseUpstream(stub.Addr())
	// A second upstream, which answers nothing, so that u is not sent a
	// query again when its answer is slow (a loaded machine), as a single
	// upstream is (resendIfDue): an answer lost to a mixed-up ID fails its
	// query when u's try times out.
	other, _ := ParseUpstream(silent.Addr())
	f := NewForwarder([]*Upstream{u, other}, 4096, nil)
	defer f.Close()
	f.TryTimeout, f.Timeout = 5*time.Second, 10*time.Second
	u.pool.ids = func() uint16 { return uint16(mrand.IntN(16)) }
	var wg sync.WaitGroup
	var failed atomic.Int32
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				q := new(dns.Msg)
				q.SetQuestion(fmt.Sprintf("id%d-%d.example.", g, i), dns.TypeA)
				r, _, err := f.try(context.Background(), q, f.Upstreams)
				if err != nil || len(r.Answer) != 1 || r.Question[0].Name != q.Question[0].Name {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 2400 queries got no answer of their own", n)
	}
	if n := stub.Queries(); n != 2400 {
		t.Errorf("the upstream was asked %d times for 2400 queries", n)
	}
}

// TestParseUpstreamAgreesWithConfig: the resolver reads upstreams with the
// config check's own syntax, so validate and serve cannot disagree.
func TestParseUpstreamAgreesWithConfig(t *testing.T) {
	for _, s := range []string{"127.0.0.1:53", "udp://127.0.0.1:53", "tcp://[::1]:53", "tls://127.0.0.1:853#dns.example", "tls://127.0.0.1:853",
		"tcp://127.0.0.1:53#name", "dns.example:53", "quic://127.0.0.1:853", "127.0.0.1", "tls://127.0.0.1:99999",
		"https://dns.example/dns-query#192.0.2.1", "https://192.0.2.1", "http://dns.example/dns-query", "https://dns.example/#name"} {
		_, perr := ParseUpstream(s)
		r := config.NewReport(nil)
		(&Config{Upstreams: []string{s}}).Check(r)
		cerr := r.Err()
		if (perr == nil) != (cerr == nil) {
			t.Errorf("%s: ParseUpstream says %v, the config check %v", s, perr, cerr)
		}
	}
	u, err := ParseUpstream("tls://127.0.0.1:853")
	if err != nil || u.tls.ServerName != "127.0.0.1" || u.addr != "127.0.0.1:853" {
		t.Errorf("tls without a name: %v %+v", err, u)
	}
}

// TestHedge: a query whose upstream is slower than its hedge delay asks the
// next upstream as well, and the first answer wins; the slower attempt is
// still awaited after the answer, so that its timeout or late answer
// counts for its upstream's health and round-trip time.
func TestHedge(t *testing.T) {
	t.Run("silent", func(t *testing.T) {
		// A per-try timeout of a minute: without the hedge, each query
		// would wait that long on the first upstream, and the client's
		// exchange (clientTimeout) would fail.
		bad, good := dnstest.Start(t), dnstest.Start(t)
		bad.SetMode(dnstest.Drop)
		s := startWith(t, Options{TryTimeout: time.Minute, Timeout: time.Minute, Registry: prometheus.NewRegistry()}, "", bad, good)
		const n = 30
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := s.exchange("udp", "", query(fmt.Sprintf("h%d.example.", i), dns.TypeA, false))
				if err == nil && answerText(r) != dnstest.AnswerA {
					err = fmt.Errorf("answer %v", r)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// Good answered each query; bad, which answers none, may count
		// its last ones later.
		flush(t, bad, fmt.Sprintf("%d queries", n), func() bool { return queries(bad) >= n })
		if queries(bad) != n || good.Queries() != n {
			t.Errorf("bad asked %d times, good %d; want %d each", queries(bad), good.Queries(), n)
		}
		if h := testutil.ToFloat64(s.h.metrics.upstreamHedges.WithLabelValues(good.Addr())); h != n {
			t.Errorf("%v hedges counted, want %d", h, n)
		}
	})
	t.Run("healthy", func(t *testing.T) {
		// Both answer: the second upstream is asked only when the first
		// is late beyond its hedge delay (at least hedgeMin), which on
		// loopback is rare even on a busy machine.
		first, second := dnstest.Start(t), dnstest.Start(t)
		s := startWith(t, Options{Registry: prometheus.NewRegistry()}, "", first, second)
		const n = 200
		for i := range n {
			s.ask(t, "udp", "", query(fmt.Sprintf("q%d.example.", i), dns.TypeA, false))
		}
		// A stub may count a query the other answered first after the
		// client has the answer. On a loaded machine the first's try can
		// even time out (300 ms), and then the second is asked as the
		// next upstream, not as a hedge.
		h := s.hedges(second.Addr())
		flush(t, first, fmt.Sprintf("%d queries", n), func() bool { return queries(first) >= n })
		flush(t, second, fmt.Sprintf("%d hedges", h), func() bool { return queries(second) >= h })
		extra := queries(second)
		if queries(first) != n || extra > n/10 {
			t.Errorf("first asked %d times, second %d: want %d and at most %d", queries(first), extra, n, n/10)
		}
		timeouts := int(testutil.ToFloat64(s.h.metrics.upstreamErrs.WithLabelValues(first.Addr(), "timeout")))
		if extra < h || extra > h+timeouts {
			t.Errorf("%d hedges counted, the second upstream was asked %d times (the first timed out %d times)", h, extra, timeouts)
		}
		if d := s.st.Forwarder.Upstreams[0].hedgeDelay(); d != hedgeMin {
			t.Errorf("hedge delay %v of a loopback upstream, want %v", d, hedgeMin)
		}
	})
	t.Run("slow", func(t *testing.T) {
		// An upstream slower than hedgeFirst loses the first race, but its
		// late answer teaches its round-trip time: later queries wait
		// three times that for it.
		slow, fast := dnstest.Start(t), dnstest.Start(t)
		slow.SetDelay(150 * time.Millisecond)
		slow.SetMode(dnstest.Delay)
		s := start(t, "", slow, fast)
		s.ask(t, "udp", "", query("one.example.", dns.TypeA, false))
		u := s.st.Forwarder.Upstreams[0]
		for give := time.Now().Add(10 * time.Second); u.srtt.Load() == 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(give) {
				t.Fatal("the slow upstream's late answer was not counted")
			}
		}
		if d := u.hedgeDelay(); d < 3*150*time.Millisecond {
			t.Errorf("hedge delay %v after a 150-ms answer", d)
		}
		if u.downUntil.Load() != 0 || u.timeouts.Load() != 0 {
			t.Error("a slow upstream that answers was counted as failing")
		}
	})
	t.Run("last-resort", func(t *testing.T) {
		// The second upstream is backing off (from an earlier fault) when
		// the first goes silent: it is asked after the first's hedge
		// delay all the same, answers, and is up again.
		first, second := dnstest.Start(t), dnstest.Start(t)
		s := startWith(t, Options{TryTimeout: time.Minute, Timeout: time.Minute}, "", first, second)
		u := s.st.Forwarder.Upstreams[1]
		u.downUntil.Store(time.Now().Add(time.Hour).UnixNano())
		first.SetMode(dnstest.Drop)
		if r := s.ask(t, "udp", "", query("one.example.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
			t.Fatalf("answer %v", r)
		}
		if u.downUntil.Load() != 0 {
			t.Error("the backed-off upstream answered and is still backed off")
		}
	})
	t.Run("fault-ends", func(t *testing.T) {
		// Queries sent to a silent upstream that time out after it has
		// answered again do not back it off: when a fault ends, the
		// upstream does not flap.
		bad, good := dnstest.Start(t), dnstest.Start(t)
		s, _ := startUpstreams(t, "", bad.Addr(), good.Addr())
		u := s.st.Forwarder.Upstreams[0]
		bad.SetMode(dnstest.Drop)
		for i := range downAfter {
			mustAsk(t, s, fmt.Sprintf("lost%d.example.", i)) // answered by good; bad's tries wait 2 s
		}
		bad.SetMode(dnstest.Answer)
		mustAsk(t, s, "back.example.")
		// Asked first, but maybe answered by good first (a hedge).
		if seen(t, bad, "back.example", 1) != 1 {
			t.Fatal("the first upstream was not asked")
		}
		timeouts := s.h.metrics.upstreamErrs.WithLabelValues(u.Name, "timeout")
		for give := time.Now().Add(10 * time.Second); testutil.ToFloat64(timeouts) < downAfter; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(give) {
				t.Fatalf("%v timeouts counted, want %d", testutil.ToFloat64(timeouts), downAfter)
			}
		}
		if u.downUntil.Load() != 0 {
			t.Error("timeouts of queries sent before the upstream answered again backed it off")
		}
	})
	t.Run("probe-second", func(t *testing.T) {
		// A second upstream whose backoff is over is probed beside the
		// first, though the first answers at once.
		first, second := dnstest.Start(t), dnstest.Start(t)
		s := start(t, "", first, second)
		u := s.st.Forwarder.Upstreams[1]
		u.downUntil.Store(time.Now().UnixNano())
		s.ask(t, "udp", "", query("one.example.", dns.TypeA, false))
		recovered(t, u)
		if second.Seen("one.example") != 1 {
			t.Error("the second upstream was not probed")
		}
	})
	t.Run("resend", func(t *testing.T) {
		// The only upstream loses the first datagram of each name: the
		// query is sent to it once more after resendMin, not left to
		// the per-try timeout (a minute here, past the client's 3 s).
		up := dnstest.Start(t)
		var mu sync.Mutex
		seen := map[string]bool{}
		up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
			mu.Lock()
			again := seen[r.Question[0].Name]
			seen[r.Question[0].Name] = true
			mu.Unlock()
			if !again {
				return // lost on the way
			}
			m := new(dns.Msg).SetReply(r)
			rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.9")
			m.Answer = []dns.RR{rr}
			w.WriteMsg(m)
		})
		s := startWith(t, Options{TryTimeout: time.Minute, Timeout: time.Minute, Registry: prometheus.NewRegistry()}, "", up)
		for i := range 3 {
			if r := s.ask(t, "udp", "", query(fmt.Sprintf("lost%d.example.", i), dns.TypeA, false)); answerText(r) != "192.0.2.9" {
				t.Fatalf("answer %v", r)
			}
		}
		if h := testutil.ToFloat64(s.h.metrics.upstreamHedges.WithLabelValues(up.Addr())); h != 3 {
			t.Errorf("%v resends counted as hedges, want 3", h)
		}
	})
	t.Run("probe", func(t *testing.T) {
		// Once its backoff is over, one query probes a backed-off upstream;
		// the others skip it while the probe waits (a minute here, so
		// that the probe's own timeout cannot let a second one in).
		bad, good := dnstest.Start(t), dnstest.Start(t)
		bad.SetMode(dnstest.Drop)
		s := startWith(t, Options{TryTimeout: time.Minute, Timeout: time.Minute, Registry: prometheus.NewRegistry()}, "", bad, good)
		s.st.Forwarder.Upstreams[0].downUntil.Store(time.Now().UnixNano()) // backed off, and the backoff is over
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.exchange("udp", "", query(fmt.Sprintf("p%d.example.", i), dns.TypeA, false)); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		// Every query to bad left before its exchange returned, but the
		// stub counts a datagram only once its handler has run. A query
		// whose answer from good came later than the hedge delay (a
		// loaded machine) was also sent to bad as a hedge, which is
		// counted apart: only the rest are probes.
		hedges := s.hedges(bad.Addr())
		flush(t, bad, fmt.Sprintf("1 probe and %d hedges", hedges), func() bool { return queries(bad) >= 1+hedges })
		if probes := queries(bad) - hedges; probes != 1 {
			t.Errorf("the backed-off upstream was probed %d times by 20 queries (asked %d times as a hedge), want 1", probes, hedges)
		}
	})
}

// TestUDPRefused: a plain upstream where nothing listens (the kernel
// answers its queries with ICMP port unreachable) fails each query at once
// and is backed off, rather than timing out; and once something listens
// there again, answers on the same sockets are read.
func TestUDPRefused(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	good := dnstest.Start(t)
	s, log := startUpstreams(t, "", dead, good.Addr())
	u := s.st.Forwarder.Upstreams[0]
	if r := mustAsk(t, s, "one.example."); answerText(r) != dnstest.AnswerA {
		t.Fatalf("answer %v", r)
	}
	refused := s.h.metrics.upstreamErrs.WithLabelValues(dead, "network")
	for give := time.Now().Add(10 * time.Second); testutil.ToFloat64(refused) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(give) {
			t.Fatalf("no network error counted for a refused upstream; log:\n%s", log)
		}
	}
	if u.downUntil.Load() == 0 {
		t.Error("a refused upstream is not backed off")
	}

	// Something listens there again; every pooled socket gets a query.
	pc, err = net.ListenPacket("udp", dead)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	back := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)})
		w.WriteMsg(m)
	})}
	go back.ActivateAndServe()
	t.Cleanup(func() { back.Shutdown() })
	u.downUntil.Store(0)
	// Only the upstream back can answer now: the other one, asked too
	// when back is slower than its hedge delay (a loaded machine), would
	// otherwise answer first now and then.
	good.SetMode(dnstest.Drop)
	for i := range 2 * udpSockets {
		name := fmt.Sprintf("back%d.example.", i)
		if r := mustAsk(t, s, name); answerText(r) != "192.0.2.7" {
			t.Fatalf("%s: %v: an answer on a socket that had a refusal was not read", name, r)
		}
	}
}

// FuzzPlainAnswer: what plainAnswer takes as received, miekg/dns unpacks
// without error, as a NOERROR answer, not truncated, to the question sent
// (exactly as spelt), of A or AAAA records of the question's type and
// name only, with at most an OPT record besides.
func FuzzPlainAnswer(f *testing.F) {
	for _, c := range []struct {
		name     string
		qtype    uint16
		records  int
		compress bool
		edns     bool
	}{
		{"www.Example.com.", dns.TypeA, 1, true, true},
		{"www.example.com.", dns.TypeAAAA, 3, false, false},
		{"a.b.", dns.TypeA, 2, false, true},
	} {
		q := new(dns.Msg).SetQuestion(c.name, c.qtype)
		r := new(dns.Msg).SetReply(q)
		for i := range c.records {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN %s %s", c.name, dns.TypeToString[c.qtype], map[uint16]string{dns.TypeA: "192.0.2.", dns.TypeAAAA: "2001:db8::"}[c.qtype]+fmt.Sprint(i+1)))
			r.Answer = append(r.Answer, rr)
		}
		if c.edns {
			r.SetEdns0(1232, false)
		}
		r.Compress = c.compress
		qb, _ := q.Pack()
		rb, _ := r.Pack()
		f.Add(questionOf(qb), rb)
	}
	f.Fuzz(func(t *testing.T, question, b []byte) {
		if !plainAnswer(b, question) {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatalf("plainAnswer took what miekg/dns does not: %v", err)
		}
		var buf [maxQuestion]byte
		if m.Rcode != dns.RcodeSuccess || m.Truncated || !m.Response || len(m.Question) != 1 || !bytes.Equal(packQuestion(m, &buf), question) ||
			len(m.Answer) == 0 || len(m.Ns) != 0 || len(m.Extra) > 1 {
			t.Fatalf("plainAnswer took %v", m)
		}
		for _, rr := range m.Answer {
			if h := rr.Header(); h.Name != m.Question[0].Name || h.Rrtype != m.Question[0].Qtype || h.Class != dns.ClassINET ||
				h.Rrtype != dns.TypeA && h.Rrtype != dns.TypeAAAA {
				t.Fatalf("plainAnswer took the record %v", rr)
			}
		}
		if len(m.Extra) == 1 {
			if o, ok := m.Extra[0].(*dns.OPT); !ok || len(o.Option) != 0 {
				t.Fatalf("plainAnswer took %v", m.Extra[0])
			}
		}
	})
}

// TestPlainMiss: a miss whose upstream answer is plain (plainAnswer) is
// answered over UDP from the bytes received, as reply would answer it:
// the client's ID, spelling, RD and CD bits, RA, our OPT record for a
// client that sent one, the upstream's TTLs on the miss and the cache's
// clamped ones after; one that does not fit the client's size is
// truncated by reply; and TCP clients get reply's answer.
func TestPlainMiss(t *testing.T) {
	up := dnstest.Start(t)
	up.SetHandler(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg).SetReply(q)
		n := 3
		if strings.HasPrefix(q.Question[0].Name, "many") {
			n = 60
		}
		for i := range n {
			r.Answer = append(r.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 7200},
				AAAA: net.ParseIP(fmt.Sprintf("2001:db8::%d", i+1))})
		}
		r.SetEdns0(1232, false)
		w.WriteMsg(r) // uncompressed: the names written out
	})
	s := start(t, "cache: {max_ttl: 1h}\n", up)
	for i, c := range []struct {
		network string
		edns    bool
		do, cd  bool
	}{
		{"udp", true, false, false}, {"udp", false, false, false}, {"udp", true, true, true}, {"tcp", true, false, false},
	} {
		name := fmt.Sprintf("Plain%d.Example.", i)
		q := query(name, dns.TypeAAAA, c.edns)
		q.CheckingDisabled = c.cd
		if c.edns {
			q.IsEdns0().SetDo(c.do)
		}
		for _, want := range []uint32{7200, 3600} { // the miss, then the cached answer
			var r *dns.Msg
			if want == 7200 && c.network == "udp" {
				// Sent as received: the stub writes the name out in each
				// record, where reply would compress them.
				raw := askRaw(t, s.addr, q)
				wname := make([]byte, 256)
				n, _ := dns.PackDomainName(name, wname, 0, nil, false)
				if got := bytes.Count(raw, wname[:n]); got != 4 {
					t.Errorf("%+v: the miss's answer has the name %d times, want 4 (question and records, as received)", c, got)
				}
				r = new(dns.Msg)
				if err := r.Unpack(raw); err != nil {
					t.Fatal(err)
				}
			} else {
				r = s.ask(t, c.network, "", q)
			}
			if r.Id != q.Id || r.Question[0] != q.Question[0] || !r.RecursionAvailable || !r.RecursionDesired || r.CheckingDisabled != c.cd ||
				r.Authoritative || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 3 || len(r.Ns) != 0 {
				t.Fatalf("%+v: %v", c, r)
			}
			for _, rr := range r.Answer {
				if rr.Header().Name != name || rr.Header().Ttl != want {
					t.Errorf("%+v: record %v, want the name as asked and TTL %d", c, rr, want)
				}
			}
			switch o := r.IsEdns0(); {
			case !c.edns && o != nil, c.edns && o == nil:
				t.Errorf("%+v: OPT %v", c, o)
			case o != nil && (o.UDPSize() != maxUDP || o.Do() != c.do || len(o.Option) != 0 || len(r.Extra) != 1):
				t.Errorf("%+v: OPT %v, additional %v", c, o, r.Extra)
			}
		}
	}
	// 60 records do not fit 1232 bytes, compressed or not: truncated, with
	// the OPT record.
	r := s.ask(t, "udp", "", query("many.example.", dns.TypeAAAA, true))
	if !r.Truncated || len(r.Answer) != 0 || r.IsEdns0() == nil {
		t.Errorf("a long answer over UDP: %v", r)
	}
}

// askRaw sends q to addr over UDP and returns the answer's bytes.
func askRaw(t *testing.T, addr string, q *dns.Msg) []byte {
	t.Helper()
	c := sendUDP(t, addr, q)
	defer c.Close()
	c.SetDeadline(time.Now().Add(clientTimeout))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// sendUDP sends q to addr over UDP from a socket of its own, which it
// returns for the answer, if any, and for the caller to close.
func sendUDP(t *testing.T, addr string, q *dns.Msg) net.Conn {
	t.Helper()
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

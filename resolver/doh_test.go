package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/phonehome/phonehome/internal/testlog"
)

// startUpstreams runs a server from a config text with the upstreams
// written out, its metrics on a registry of its own and its log kept. A
// try gets 2 s and a query 5 s: a TLS handshake under the race detector on
// a busy machine takes a while, and nothing here waits for a timeout
// unless it tests one.
func startUpstreams(t *testing.T, text string, upstreams ...string) (*testServer, *testlog.Buffer) {
	t.Helper()
	cfg := parseConfig(t, "access: {rate_limit: 0}\n"+text)
	cfg.Listen, cfg.Upstreams = []string{"127.0.0.1:0"}, upstreams
	log := &testlog.Buffer{}
	clock := &testClock{}
	srv, err := New(cfg, Options{ResolvConf: "/nonexistent", TryTimeout: 2 * time.Second, Timeout: 5 * time.Second, Clock: clock.now,
		Log: slog.New(slog.NewTextHandler(log, nil)), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return &testServer{addr: srv.Addrs()[0], srv: srv, h: srv.handler, st: srv.State(), clock: clock}, log
}

// caFile writes the PEM certificates into a file of the test's and returns
// its path.
func caFile(t *testing.T, pems ...[]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, append([]byte(nil), bytesJoin(pems)...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func bytesJoin(pems [][]byte) []byte {
	var b []byte
	for _, p := range pems {
		b = append(b, p...)
	}
	return b
}

// trusting is the config line that trusts d's certificate.
func trusting(t *testing.T, d *dnstest.DoH) string {
	return "upstream_tls_ca: " + caFile(t, d.Cert().PEM) + "\n"
}

func mustAsk(t *testing.T, s *testServer, name string) *dns.Msg {
	t.Helper()
	r, err := s.exchange("udp", "", query(name, dns.TypeA, false))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// TestDoHUpstream: a query goes over HTTP/2 as a POST of the DNS message
// with ID 0 (RFC 8484, section 4.1) and comes back with the client's ID;
// the metrics count it under the upstream as written.
func TestDoHUpstream(t *testing.T) {
	d := dnstest.StartDoH(t)
	name := d.URL() + "#" + d.Addr()
	s, _ := startUpstreams(t, trusting(t, d), name)
	q := query("www.example.com.", dns.TypeA, false)
	q.Id = 4242
	r, err := s.exchange("udp", "", q)
	if err != nil || r.Id != 4242 || answerText(r) != dnstest.AnswerA {
		t.Fatalf("over DoH: %v %v", r, err)
	}
	if last := d.DNS.Last(); last == nil || last.Id != 0 {
		t.Errorf("the query went with ID %d, want 0", last.Id)
	}
	method, h := d.LastRequest()
	if method != http.MethodPost || h.Get("Content-Type") != "application/dns-message" || h.Get("Accept") != "application/dns-message" {
		t.Errorf("request %s %v", method, h)
	}
	if d.RequestsOver("HTTP/2.0") != 1 {
		t.Errorf("%d requests over HTTP/2, want 1", d.RequestsOver("HTTP/2.0"))
	}
	if n := testutil.ToFloat64(s.h.metrics.upstreamReqs.WithLabelValues(name, "NOERROR")); n != 1 {
		t.Errorf("phonehome_upstream_requests_total{upstream=%q} = %v, want 1", name, n)
	}
	if len(s.st.Forwarder.Upstreams) != 1 || s.st.Forwarder.Upstreams[0].doh == nil {
		t.Fatal("not a DoH upstream")
	}
}

// TestDoHFailover: a DoH upstream that fails (an HTTP error, no answer
// within the try) is backed off and the next upstream, UDP, answers; a UDP
// upstream that fails hands over to a DoH one the same way.
func TestDoHFailover(t *testing.T) {
	t.Run("doh-error-then-udp", func(t *testing.T) {
		d, plain := dnstest.StartDoH(t), dnstest.Start(t)
		s, log := startUpstreams(t, trusting(t, d), d.URL()+"#"+d.Addr(), plain.Addr())
		doh := s.st.Forwarder.Upstreams[0]
		d.SetFault(dnstest.FaultStatus)
		d.SetStatus(http.StatusServiceUnavailable)
		if r := mustAsk(t, s, "a.example."); answerText(r) != dnstest.AnswerA || plain.Seen("a.example") != 1 {
			t.Fatalf("failover: %v; UDP saw %d", r, plain.Seen("a.example"))
		}
		// The UDP upstream is also asked after the DoH one's hedge delay,
		// which on a loaded machine (a TLS handshake under the race
		// detector) can be before the HTTP error, and answer first.
		waitFor(t, "the DoH upstream to back off", func() bool { return !doh.healthy(time.Now()) })
		if d.Requests() != 1 {
			t.Fatalf("failover: DoH %d requests, want 1", d.Requests())
		}
		// Asked only as a hedge, when the UDP upstream is slower than its
		// hedge delay (a loaded machine).
		hedges := s.askHedged(t, "b.example.", doh.Name)
		waitFor(t, "the hedges' requests", func() bool { return d.Requests() >= 1+hedges })
		if d.Requests() != 1+hedges || plain.Seen("b.example") != 1 {
			t.Errorf("a backed-off DoH upstream was asked (%d requests, %d hedges)", d.Requests(), hedges)
		}
		// Each hedge got the 503 too; wait for their errors, so that none
		// backs the upstream off again after the probe below.
		protocol := s.h.metrics.upstreamErrs.WithLabelValues(doh.Name, "protocol")
		waitFor(t, "the hedges' protocol errors", func() bool { return testutil.ToFloat64(protocol) >= float64(1+hedges) })
		if n := testutil.ToFloat64(protocol); n != float64(1+hedges) {
			t.Errorf("protocol errors %v, want %d", n, 1+hedges)
		}
		if !strings.Contains(log.String(), "HTTP 503 Service Unavailable") {
			t.Errorf("the log does not say why:\n%s", log)
		}
		// Recovered and out of backoff: probed, then the first asked again.
		d.SetFault(dnstest.NoFault)
		doh.downUntil.Store(time.Now().UnixNano())
		mustAsk(t, s, "c.example.")
		recovered(t, doh)
		// The UDP upstream is asked as a hedge when the DoH one is
		// slower than its hedge delay, and may answer first.
		hedges = s.askHedged(t, "d.example.", plain.Addr())
		waitFor(t, "d.example over DoH", func() bool { return d.DNS.Seen("d.example") >= 1 })
		if d.DNS.Seen("c.example") != 1 || d.DNS.Seen("d.example") != 1 || seen(t, plain, "d.example", hedges) != hedges {
			t.Errorf("a recovered DoH upstream was not asked again (the UDP one asked %d times as a hedge)", hedges)
		}
	})
	t.Run("doh-timeout-then-udp", func(t *testing.T) {
		d, plain := dnstest.StartDoH(t), dnstest.Start(t)
		s, _ := startUpstreams(t, trusting(t, d), d.URL()+"#"+d.Addr(), plain.Addr())
		d.DNS.SetMode(dnstest.Drop)
		if r := mustAsk(t, s, "a.example."); answerText(r) != dnstest.AnswerA || plain.Seen("a.example") != 1 {
			t.Fatalf("failover: %v", r)
		}
		// The UDP upstream is asked after the DoH one's hedge delay, which
		// on a loaded machine can be before the DoH request has arrived.
		waitFor(t, "a.example over DoH", func() bool { return d.DNS.Seen("a.example") >= 1 })
		if n := d.DNS.Seen("a.example"); n != 1 {
			t.Fatalf("the DoH upstream saw a.example %d times, want 1", n)
		}
		// The DoH attempt times out after the UDP upstream has answered.
		timeouts := s.h.metrics.upstreamErrs.WithLabelValues(s.st.Forwarder.Upstreams[0].Name, "timeout")
		for give := time.Now().Add(10 * time.Second); testutil.ToFloat64(timeouts) == 0 && time.Now().Before(give); {
			time.Sleep(5 * time.Millisecond)
		}
		if n := testutil.ToFloat64(timeouts); n != 1 {
			t.Errorf("timeouts %v, want 1", n)
		}
	})
	t.Run("udp-then-doh", func(t *testing.T) {
		d, plain := dnstest.StartDoH(t), dnstest.Start(t)
		s, _ := startUpstreams(t, trusting(t, d), plain.Addr(), d.URL()+"#"+d.Addr())
		plain.SetMode(dnstest.Drop)
		if r := mustAsk(t, s, "a.example."); answerText(r) != dnstest.AnswerA || d.DNS.Seen("a.example") != 1 {
			t.Fatalf("failover to DoH: %v", r)
		}
		s.backOff(t, s.st.Forwarder.Upstreams[0])
		// Asked only as a hedge, when the DoH upstream is slower than its
		// hedge delay (a loaded machine).
		hedges := s.askHedged(t, "b.example.", plain.Addr())
		if seen(t, plain, "b.example", hedges) != hedges || d.DNS.Seen("b.example") != 1 {
			t.Errorf("the backed-off UDP upstream was asked again (%d times as a hedge)", hedges)
		}
	})
}

// TestDoHServeStale: when the only upstream, a DoH one, fails, an expired
// answer is served as for any upstream.
func TestDoHServeStale(t *testing.T) {
	d := dnstest.StartDoH(t)
	s, _ := startUpstreams(t, trusting(t, d), d.URL()+"#"+d.Addr())
	mustAsk(t, s, "one.example.")
	d.SetFault(dnstest.FaultStatus)
	s.clock.set(time.Hour)
	r, err := s.exchange("udp", "", query("one.example.", dns.TypeA, true))
	if code, _ := ede(r); err != nil || answerText(r) != dnstest.AnswerA || code != dns.ExtendedErrorCodeStaleAnswer {
		t.Errorf("stale: %v %v", r, err)
	}
}

// TestDoHConnReuse: hundreds of misses, many at once, cost a handful of
// TLS handshakes: over HTTP/2 one connection carries them (a burst at start
// waits for the first connection instead of opening one each), over
// HTTP/1.1 (a server without HTTP/2) at most dohConns do. The connections
// stay open: a second burst opens none.
func TestDoHConnReuse(t *testing.T) {
	for _, tc := range []struct {
		name, proto string
		misses      int
		opts        []dnstest.DoHOption
	}{
		{"http2", "HTTP/2.0", 300, nil},
		{"http1", "HTTP/1.1", 150, []dnstest.DoHOption{dnstest.HTTP1Only()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := dnstest.StartDoH(t, tc.opts...)
			s, _ := startUpstreams(t, trusting(t, d), d.URL()+"#"+d.Addr())
			burst := func(round int) {
				var wg sync.WaitGroup
				errs := make(chan error, tc.misses)
				sem := make(chan struct{}, 16)
				for i := range tc.misses {
					sem <- struct{}{}
					wg.Go(func() {
						defer func() { <-sem }()
						name := fmt.Sprintf("miss%d-%d.example.", round, i)
						r, err := s.exchange("udp", "", query(name, dns.TypeA, false))
						if err == nil && answerText(r) != dnstest.AnswerA {
							err = fmt.Errorf("%s: %v", name, r)
						}
						if err != nil {
							errs <- err
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			}
			burst(1)
			if d.RequestsOver(tc.proto) != tc.misses {
				t.Errorf("%d requests over %s, want %d", d.RequestsOver(tc.proto), tc.proto, tc.misses)
			}
			h := d.Handshakes()
			if h < 1 || h > dohConns {
				t.Errorf("%d TLS handshakes for %d misses, want 1 to %d", h, tc.misses, dohConns)
			}
			t.Logf("%d misses over %s, 16 at a time: %d handshakes, %d connections", tc.misses, tc.proto, h, d.Conns())
			burst(2)
			if d.Handshakes() != h || d.RequestsOver(tc.proto) != 2*tc.misses {
				t.Errorf("a second burst: %d handshakes, %d requests; want %d, %d", d.Handshakes(), d.RequestsOver(tc.proto), h, 2*tc.misses)
			}
		})
	}
}

// TestDoHBadAnswers: a server that answers an HTTP error, another content
// type, a body that is not DNS, or a DNS message with another ID or
// question has failed the try: the error says which, the upstream is
// backed off and counted under "protocol", and the next upstream answers.
func TestDoHBadAnswers(t *testing.T) {
	d, plain := dnstest.StartDoH(t), dnstest.Start(t)
	s, _ := startUpstreams(t, trusting(t, d), d.URL()+"#"+d.Addr(), plain.Addr())
	doh := s.st.Forwarder.Upstreams[0]
	cases := []struct {
		fault  dnstest.Fault
		status int
		want   string
	}{
		{dnstest.FaultStatus, http.StatusBadRequest, "HTTP 400 Bad Request"},
		{dnstest.FaultStatus, http.StatusNotFound, "HTTP 404 Not Found"},
		{dnstest.FaultStatus, http.StatusInternalServerError, "HTTP 500"},
		{dnstest.FaultStatus, http.StatusBadGateway, "HTTP 502"},
		{dnstest.FaultContentType, 0, `Content-Type "text/html; charset=utf-8"`},
		{dnstest.FaultNotDNS, 0, "not a DNS message"},
		{dnstest.FaultID, 0, "does not answer the query"},
		{dnstest.FaultQuestion, 0, "does not answer the query"},
	}
	for i, tc := range cases {
		d.SetFault(tc.fault)
		d.SetStatus(tc.status)
		q := new(dns.Msg).SetQuestion(fmt.Sprintf("direct%d.example.", i), dns.TypeA)
		r, err := doh.exchange(context.Background(), time.Now().Add(5*time.Second), q)
		var pe protocolError
		if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fault %d (%d): got %v %v, want an error saying %q", tc.fault, tc.status, r, err, tc.want)
		}
		doh.downUntil.Store(0)
		name := fmt.Sprintf("bad%d.example.", i)
		if r := mustAsk(t, s, name); answerText(r) != dnstest.AnswerA || plain.Seen(name) != 1 {
			t.Errorf("fault %d (%d): %v; UDP saw it %d times", tc.fault, tc.status, r, plain.Seen(name))
		}
		// The DoH upstream slower than its hedge delay (a loaded machine)
		// has the UDP one asked too, whose answer can come before the
		// DoH request has arrived or failed.
		waitFor(t, fmt.Sprintf("fault %d (%d): the DoH upstream asked and backed off", tc.fault, tc.status), func() bool {
			return !doh.healthy(time.Now()) && (d.DNS.Seen(name) > 0 || tc.fault == dnstest.FaultStatus)
		})
	}
	if n := testutil.ToFloat64(s.h.metrics.upstreamErrs.WithLabelValues(doh.Name, "protocol")); n != float64(len(cases)) {
		t.Errorf("protocol errors %v, want %d", n, len(cases))
	}
}

// TestUpstreamTLSCA: a DoH (or DoT) upstream's certificate is checked
// against the system's roots and upstream_tls_ca: without the CA, or with
// another, the query fails, with a clear error, and gets no answer; with
// it, it is answered. A CA file that cannot be read or holds no
// certificate is refused at its line.
func TestUpstreamTLSCA(t *testing.T) {
	d := dnstest.StartDoH(t)
	name := d.URL() + "#" + d.Addr()
	other, err := dnstest.NewCert("other.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ what, config string }{
		{"no CA", ""},
		{"another CA", "upstream_tls_ca: " + caFile(t, other.PEM) + "\n"},
	} {
		s, log := startUpstreams(t, tc.config, name)
		if r := mustAsk(t, s, "a.example."); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
			t.Errorf("%s: %v", tc.what, r)
		}
		if l := log.String(); !strings.Contains(l, "certificate signed by unknown authority") || !strings.Contains(l, "upstream_tls_ca") {
			t.Errorf("%s: the log does not say why:\n%s", tc.what, l)
		}
	}
	if d.DNS.Queries() != 0 {
		t.Errorf("%d queries reached a server whose certificate was not trusted", d.DNS.Queries())
	}
	s, _ := startUpstreams(t, "upstream_tls_ca: "+caFile(t, other.PEM, d.Cert().PEM)+"\n", name)
	if r := mustAsk(t, s, "a.example."); answerText(r) != dnstest.AnswerA {
		t.Errorf("with the CA: %v", r)
	}

	// tls:// upstreams are verified with the same file.
	dot := dnstest.Start(t, dnstest.WithTLS(), dnstest.WithPipelining())
	s, _ = startUpstreams(t, "upstream_tls_ca: "+caFile(t, dot.Cert().PEM)+"\n", "tls://"+dot.Addr()+"#"+dnstest.TLSServerName)
	if r := mustAsk(t, s, "b.example."); answerText(r) != dnstest.AnswerA || dot.QueriesTCP() != 1 {
		t.Errorf("DoT with the CA: %v", r)
	}

	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not a certificate\n"), 0o644)
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(t.TempDir(), "missing.pem"), "no such file"},
		{empty, "holds no PEM certificate"},
	} {
		cfg := parseConfig(t, "upstreams: ["+name+"]\nupstream_tls_ca: "+tc.file+"\n")
		cfg.Listen = []string{"127.0.0.1:0"}
		_, err := New(cfg, Options{ResolvConf: "/nonexistent"})
		if err == nil || !strings.Contains(err.Error(), "test.yaml:2") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("upstream_tls_ca %s: %v", tc.file, err)
		}
	}
}

// TestDoHLookup: a DoH upstream without #address has its host looked up
// once through the other upstreams, however many queries arrive at once;
// when the lookup fails, the other upstream answers and the log says why.
func TestDoHLookup(t *testing.T) {
	d := dnstest.StartDoH(t)
	plain := dnstest.Start(t)
	var at atomic.Value // the DoH server's address, "" for NXDOMAIN
	at.Store("127.0.0.1")
	plain.SetHandler(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		name := q.Question[0].Name
		switch {
		case name == dnstest.TLSServerName+".":
			if at.Load() == "" {
				m.Rcode = dns.RcodeNameError
			} else if q.Question[0].Qtype == dns.TypeA {
				rr, _ := dns.NewRR(name + " 60 IN A " + at.Load().(string))
				m.Answer = append(m.Answer, rr)
			}
		case q.Question[0].Qtype == dns.TypeA:
			rr, _ := dns.NewRR(name + " 60 IN A 192.0.2.99")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	s, log := startUpstreams(t, trusting(t, d), d.URL(), plain.Addr())
	patient(s)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			name := fmt.Sprintf("q%d.example.", i)
			r, err := s.exchange("udp", "", query(name, dns.TypeA, false))
			if err == nil && answerText(r) != dnstest.AnswerA {
				err = fmt.Errorf("%s: not answered over DoH: %v", name, r)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := plain.Seen(dnstest.TLSServerName); n != 1 || plain.Queries() != 1 {
		t.Errorf("the host was looked up %d times (%d queries to the plain upstream), want once", n, plain.Queries())
	}

	// An address found that cannot be reached (nothing listens on
	// 127.0.0.2) is forgotten: the plain upstream answers meanwhile, and
	// the next query looks the host up again.
	at.Store("127.0.0.2")
	s, _ = startUpstreams(t, trusting(t, d), d.URL(), plain.Addr())
	patient(s)
	if r := mustAsk(t, s, "moved1.example."); answerText(r) != "192.0.2.99" {
		t.Errorf("with the DoH server unreachable: %v", r)
	}
	at.Store("127.0.0.1")
	s.st.Forwarder.Upstreams[0].downUntil.Store(0)
	if r := mustAsk(t, s, "moved2.example."); answerText(r) != dnstest.AnswerA || plain.Seen(dnstest.TLSServerName) != 3 {
		t.Errorf("after the DoH server came back: %v; looked up %d times in all, want 3", r, plain.Seen(dnstest.TLSServerName))
	}

	// A server that cannot be looked up: the plain upstream answers.
	at.Store("")
	s, log = startUpstreams(t, trusting(t, d), d.URL(), plain.Addr())
	if r := mustAsk(t, s, "z.example."); answerText(r) != "192.0.2.99" {
		t.Errorf("with no address for the DoH server: %v", r)
	}
	if !strings.Contains(log.String(), "looking up "+dnstest.TLSServerName) {
		t.Errorf("the log does not say why:\n%s", log)
	}
}

// patient gives s's upstreams a round-trip time of a third of hedgeMax, as
// if each had answered that slowly, so that the next upstream is asked
// after hedgeMax (and the only one asked again after twice that), not
// hedgeFirst, until their answers bring it down: the DoH upstream's first
// exchange (a lookup, a TLS handshake under the race detector) can take
// longer than hedgeFirst on a loaded machine, and the plain upstream,
// asked meanwhile, would answer first.
func patient(s *testServer) {
	for _, u := range s.st.Forwarder.Upstreams {
		u.srtt.Store(int64(hedgeMax / hedgeRTTs))
	}
}

// TestDoHClose: closing the forwarder gives up a DoH query in flight at
// once, without blaming the upstream, and closes its connections, the busy
// one included; the upstream takes no query after.
func TestDoHClose(t *testing.T) {
	d := dnstest.StartDoH(t)
	d.DNS.SetMode(dnstest.Drop)
	u, err := parseUpstream(d.URL()+"#"+d.Addr(), d.Cert().Pool)
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder([]*Upstream{u}, 8, nil)
	f.TryTimeout, f.Timeout = time.Hour, time.Hour
	done := make(chan error, 1)
	go func() {
		_, err := f.Forward(f.ctx, query("held.example.", dns.TypeA, false))
		done <- err
	}()
	waitFor(t, "the query to arrive", func() bool { return d.DNS.Queries() == 1 })
	f.Close()
	select {
	case err := <-done:
		var nu *errNoUpstream
		if !errors.As(err, &nu) || !errors.Is(nu.last, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the query was not given up")
	}
	u.doh.connMu.Lock()
	n := len(u.doh.conns)
	u.doh.connMu.Unlock()
	if n != 0 {
		t.Errorf("%d connections open after close", n)
	}
	if _, err := u.exchange(context.Background(), time.Now().Add(time.Second), query("after.example.", dns.TypeA, false)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}

// TestDoHNeedsAnotherUpstream: a DoH upstream whose host is a name, with
// no #address and no other upstream to look it up through, is refused at
// its line with what to write instead.
func TestDoHNeedsAnotherUpstream(t *testing.T) {
	for _, tc := range []struct {
		upstreams string
		ok        bool
	}{
		{`["https://dns.example/dns-query"]`, false},
		{`["https://dns.example/dns-query", "https://dns2.example/dns-query"]`, false},
		{`["https://dns.example/dns-query", "https://dns2.example/dns-query#192.0.2.2"]`, true},
		{`["https://dns.example/dns-query", "192.0.2.53:53"]`, true},
		{`["https://192.0.2.1/dns-query"]`, true},
		{`["https://dns.example/dns-query#192.0.2.1"]`, true},
	} {
		cfg := parseConfig(t, "listen: [\"127.0.0.1:0\"]\nupstreams: "+tc.upstreams+"\n")
		r := config.NewReport(cfg.Source)
		cfg.Check(r)
		err := r.Err()
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v", tc.upstreams, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "test.yaml:2") || !strings.Contains(err.Error(), "no other upstream can look it up") ||
			!strings.Contains(err.Error(), "https://dns.example/dns-query#ADDRESS")) {
			t.Errorf("%s: unclear: %v", tc.upstreams, err)
		}
		if _, _, verr := Validate(cfg, "/nonexistent"); (verr == nil) != tc.ok {
			t.Errorf("%s: validate says %v", tc.upstreams, verr)
		}
	}
}

// TestDoHReload: a reload that names a DoH upstream again keeps it, with
// its open connection; one whose upstream_tls_ca changed is made anew.
func TestDoHReload(t *testing.T) {
	d := dnstest.StartDoH(t)
	name := d.URL() + "#" + d.Addr()
	ca := caFile(t, d.Cert().PEM)
	s, _ := startUpstreams(t, "upstream_tls_ca: "+ca+"\n", name)
	mustAsk(t, s, "one.example.")
	reload := func() {
		t.Helper()
		cfg := parseConfig(t, "access: {rate_limit: 0}\nupstream_tls_ca: "+ca+"\n")
		cfg.Listen, cfg.Upstreams = []string{s.addr}, []string{name}
		if err := s.srv.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	before := s.srv.State().Forwarder.Upstreams[0]
	reload()
	if s.srv.State().Forwarder.Upstreams[0] != before {
		t.Error("the reload made a new upstream for the same URL")
	}
	mustAsk(t, s, "two.example.")
	if d.Handshakes() != 1 || d.Conns() != 1 {
		t.Errorf("%d handshakes and %d connections after a reload, want the first of each", d.Handshakes(), d.Conns())
	}

	other, err := dnstest.NewCert("other.test")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(ca, append(append([]byte(nil), d.Cert().PEM...), other.PEM...), 0o644)
	reload()
	if s.srv.State().Forwarder.Upstreams[0] == before {
		t.Error("upstream_tls_ca changed, and the upstream was kept")
	}
	if r := mustAsk(t, s, "three.example."); answerText(r) != dnstest.AnswerA || d.Handshakes() != 2 {
		t.Errorf("after the CA changed: %v, %d handshakes", r, d.Handshakes())
	}
}

// TestParseDoHAddr: the https:// syntax, and the errors of what it is not.
func TestParseDoHAddr(t *testing.T) {
	for _, tc := range []struct {
		in, addr, server, url string
	}{
		{"https://dns.quad9.net/dns-query#9.9.9.9", "9.9.9.9:443", "dns.quad9.net", "https://dns.quad9.net/dns-query"},
		{"https://dns.quad9.net#9.9.9.9", "9.9.9.9:443", "dns.quad9.net", "https://dns.quad9.net/dns-query"},
		{"https://dns.quad9.net/dns-query{?dns}", "", "dns.quad9.net", "https://dns.quad9.net/dns-query"},
		{"https://dns.example:8443/q?x=1#[2001:db8::1]", "[2001:db8::1]:8443", "dns.example", "https://dns.example:8443/q?x=1"},
		{"https://dns.example/dns-query#2001:db8::1", "[2001:db8::1]:443", "dns.example", "https://dns.example/dns-query"},
		{"https://dns.example/dns-query#192.0.2.1:444", "192.0.2.1:444", "dns.example", "https://dns.example/dns-query"},
		{"https://1.1.1.1/dns-query", "1.1.1.1:443", "1.1.1.1", "https://1.1.1.1/dns-query"},
		{"https://[2606:4700::1111]:8443/", "[2606:4700::1111]:8443", "2606:4700::1111", "https://[2606:4700::1111]:8443/"},
	} {
		a, err := ParseUpstreamAddr(tc.in)
		if err != nil || a.Scheme != "https" || a.Addr != tc.addr || a.ServerName != tc.server || a.URL != tc.url || a.LookedUp() != (tc.addr == "") {
			t.Errorf("%s: %+v %v", tc.in, a, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"http://dns.example/dns-query", "write https://"},
		{"https:///dns-query", "no host"},
		{"https://dns.example/dns-query#dns.other", "not an IP address"},
		{"https://dns.example/dns-query#192.0.2.1:0", "not an IP address"},
		{"https://dns.example:0/", "not a port"},
		{"https://dns.example:99999/", "not a port"},
		{"https://user:pw@dns.example/", "user name"},
		{"https://dns!example/", "not a host name"},
		{"https://dns.example/{?foo}x", "URI template"},
		{"https://dns.example:x/", "not a URL"},
	} {
		if _, err := ParseUpstreamAddr(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

package resolver

import (
	"errors"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// batchRecorder is an observer that takes batches, and counts how they came.
type batchRecorder struct {
	recorder
	batches, inBatches int
}

func (r *batchRecorder) AnsweredBatch(as []Answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches++
	r.inBatches += len(as)
	r.answers = append(r.answers, as...)
}

func (r *batchRecorder) count() (answers, batches, inBatches int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.answers), r.batches, r.inBatches
}

// TestUDPObserversBatch: the UDP loop tells its answers to an observer
// that takes batches in batches, and to one that does not one by one;
// each answer once, with its duration, and a miss (answered off the loop)
// one by one to both.
func TestUDPObserversBatch(t *testing.T) {
	up := dnstest.Start(t)
	one, batched := &recorder{}, &batchRecorder{}
	s := startWith(t, Options{Observers: []Observer{one, batched}}, groupsConfig, up)
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 40
	for i := range n {
		b, _ := query("v10.events.data.microsoft.com.", dns.TypeA, i%2 == 0).Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for i := range n {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
	}
	for i := range n {
		for _, r := range []*recorder{one, &batched.recorder} {
			a := r.next(t)
			if a.Source != SourceSinkhole || a.Question.Name != "v10.events.data.microsoft.com." || a.Start.IsZero() || a.Duration < 0 || a.Transport != TransportUDP {
				t.Fatalf("answer %d: %+v", i, a)
			}
		}
	}
	if got, batches, inBatches := batched.count(); got != n || batches == 0 || inBatches != n {
		t.Errorf("the batch observer saw %d answers, %d in %d batches; want %d, all in batches", got, inBatches, batches, n)
	}

	// A miss is answered by a worker, and told one by one.
	s.ask(t, "udp", "", query("miss.example.com.", dns.TypeA, false))
	for _, r := range []*recorder{one, &batched.recorder} {
		if a := r.next(t); a.Source != SourceUpstream {
			t.Errorf("the miss: %+v", a)
		}
	}
	if _, _, inBatches := batched.count(); inBatches != n {
		t.Errorf("the miss came in a batch")
	}
}

// TestMetricsAnsweredBatch: the metrics count a batch of answers of more
// kinds of decision than a batch tallies (clients in two groups, catalog
// entries of every action, an alias, a protected endpoint, undecided
// answers) exactly as they count the same answers one by one.
func TestMetricsAnsweredBatch(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, groupsConfig, up)
	st := s.h.state.Load()
	var as []Answer
	sources := []AnswerSource{SourceCache, SourceUpstream, SourceSinkhole}
	for i, e := range st.Policy.Catalog.Entries {
		if len(as) >= 200 {
			break
		}
		if strings.Contains(e.Pattern, "*") {
			continue
		}
		for _, client := range []string{"127.0.0.1", "127.0.0.2"} {
			c := netip.MustParseAddr(client)
			a := Answer{Start: time.Now(), Client: c, Question: dns.Question{Name: e.Pattern + ".", Qtype: dns.TypeA, Qclass: dns.ClassINET},
				Decision: st.Policy.Decide(c, e.Pattern+"."), Rcode: i % 4, Source: sources[i%3], Transport: Transport(i % 2), Duration: time.Duration(i) * time.Microsecond}
			switch i % 7 {
			case 3:
				a.Decision.CNAME = "alias.example.com."
			case 5:
				a.Decision.Protected = true
			case 6:
				a.Decision.Group = nil // refused, say
			}
			as = append(as, a)
		}
	}
	one, batch := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	m1, m2 := newMetrics(one, "test", s.h, &tcpGate{}), newMetrics(batch, "test", s.h, &tcpGate{})
	for _, a := range as {
		m1.Answered(a)
	}
	m2.AnsweredBatch(as)
	want, got := gatherText(t, one), gatherText(t, batch)
	if got != want {
		t.Errorf("one by one:\n%s\nin a batch:\n%s", want, got)
	}
	kinds := map[decisionKey]bool{}
	for _, a := range as {
		if a.Decided() {
			kinds[keyOfDecision(&a.Decision)] = true
		}
	}
	if len(kinds) <= 8 || !strings.Contains(want, "phonehome_alias_queries_total{") || !strings.Contains(want, "phonehome_protected_overrides_total{") {
		t.Fatalf("the answers have %d kinds of decision, or no alias or protected endpoint:\n%s", len(kinds), want)
	}
}

// gatherText is what g gives a scrape, in the text format.
func gatherText(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	w := httptest.NewRecorder()
	promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 {
		t.Fatalf("scrape: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

// gateObserver holds up the first observer call for each answer that is
// not from the cache, until the test lets it go.
type gateObserver struct {
	entered chan Answer
	release chan struct{}
}

func (g *gateObserver) Answered(a Answer) {
	if a.Source != SourceCache {
		g.entered <- a
		<-g.release
	}
}

// TestUDPMissToldFirst: a miss answered over UDP is told to the observers
// and cached before its answer leaves, as the loop's answers are, so that
// a client that has its answer finds it logged, and the same question
// asked again at once is a cache hit. Both shapes of miss: a plain answer
// sent from the upstream's bytes, and a CNAME chain. While an observer
// holds the miss up, nothing has reached the client: the kernel puts a
// datagram sent on loopback in the receiver's queue within the sender's
// system call, so an answer sent before the observers were told would be
// there already.
func TestUDPMissToldFirst(t *testing.T) {
	up := dnstest.Start(t)
	up.SetChain("alias.example.com", "cdn.example.net")
	g := &gateObserver{entered: make(chan Answer), release: make(chan struct{})}
	rec := &recorder{}
	s := startWith(t, Options{Observers: []Observer{g, rec}}, groupsConfig, up)
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	for _, name := range []string{"plain.example.com.", "alias.example.com."} {
		b, _ := query(name, dns.TypeA, true).Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		select {
		case a := <-g.entered:
			if a.Question.Name != name {
				t.Fatalf("observed %s, want %s", a.Question.Name, name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer observed", name)
		}
		if n := queued(t, c.(*net.UDPConn)); n > 0 {
			t.Errorf("%s: the client had its answer (%d bytes) before the observers were told of it", name, n)
		}
		g.release <- struct{}{}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if a := rec.next(t); a.Source != SourceUpstream {
			t.Errorf("%s: source %v, want the upstream", name, a.Source)
		}
		// Asked again at once: from the cache.
		if r := s.ask(t, "udp", "", query(name, dns.TypeA, true)); r.Rcode != dns.RcodeSuccess {
			t.Errorf("%s again: %s", name, dns.RcodeToString[r.Rcode])
		}
		if a := rec.next(t); a.Source != SourceCache {
			t.Errorf("%s asked again at once: source %v, want the cache", name, a.Source)
		}
	}
}

// queued is the size of the datagram waiting on c, 0 for none; it does
// not wait.
func queued(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n, buf := 0, make([]byte, 512)
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if errors.Is(rerr, syscall.EAGAIN) {
		return 0
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	return n
}

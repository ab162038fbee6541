package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/dnstest"
)

// startWith is start with options: TCP limits, a registry, longer upstream
// timeouts (300 ms a try and 1 s in all unless set).
func startWith(t *testing.T, opts Options, config string, ups ...*dnstest.Upstream) *testServer {
	t.Helper()
	cfg := parseConfig(t, config)
	cfg.Listen = []string{"127.0.0.1:0"}
	for _, u := range ups {
		cfg.Upstreams = append(cfg.Upstreams, u.Addr())
	}
	clock := &testClock{}
	opts.ResolvConf, opts.Clock = "/nonexistent", clock.now
	if opts.TryTimeout == 0 {
		opts.TryTimeout, opts.Timeout = 300*time.Millisecond, time.Second
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return &testServer{addr: srv.Addrs()[0], srv: srv, h: srv.handler, st: srv.State(), clock: clock}
}

// dialFrom opens a TCP connection to s from the address from, closed when
// the test ends.
func dialFrom(t *testing.T, s *testServer, from string) net.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports why c is not closed by the server within 10 s
// without sending anything, or "".
func closedByServer(c net.Conn) string {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 512))
	var ne net.Error
	switch {
	case n > 0:
		return fmt.Sprintf("got %d bytes", n)
	case errors.As(err, &ne) && ne.Timeout():
		return "still open after 10 s"
	}
	return "" // EOF, or reset when the server closed with data unread
}

// writeQuery sends m on c with its two-byte length.
func writeQuery(t *testing.T, c net.Conn, m *dns.Msg) {
	t.Helper()
	if err := (&dns.Conn{Conn: c}).WriteMsg(m); err != nil {
		t.Fatal(err)
	}
}

// gathered is the value of the metric name ("name/reason" for one
// reason's) in reg, or -1 when there is none.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	name, reason, _ := strings.Cut(name, "/")
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if reason != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != reason) {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

func (g *tcpGate) count(why tcpClose) int { return int(g.closed[why].Load()) }

// TestTCPConnectionLimits: past the bound per client address and in all,
// new connections are closed at once and counted, while UDP clients,
// cache misses included, are answered, and so is a TCP client from
// another address or once a connection is closed.
func TestTCPConnectionLimits(t *testing.T) {
	up := dnstest.Start(t)
	reg := prometheus.NewRegistry()
	// The bounds from the config's keys (access.max_connections and
	// max_connections_per_client), as a user sets them.
	s := startWith(t, Options{Registry: reg, TCP: TCPLimits{Idle: time.Minute}}, "access: {max_connections: 6, max_connections_per_client: 3}", up)
	g := s.srv.tcpGate

	// One address opens ten connections: three are held, seven closed.
	for range 10 {
		dialFrom(t, s, "127.0.0.2")
	}
	waitFor(t, "3 held and 7 closed", func() bool { return g.conns() == 3 && g.count(tcpPerClient) == 7 })
	if r := s.ask(t, "tcp", "127.0.0.1", query("tcp.example.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
		t.Errorf("another address over TCP: %v", r)
	}
	waitFor(t, "back to 3 open", func() bool { return g.conns() == 3 })

	// Two more addresses fill the bound of six; the rest are closed.
	var third []net.Conn
	for range 3 {
		third = append(third, dialFrom(t, s, "127.0.0.3"))
	}
	waitFor(t, "6 open", func() bool { return g.conns() == 6 })
	for range 2 {
		c := dialFrom(t, s, "127.0.0.4")
		if why := closedByServer(c); why != "" {
			t.Errorf("a connection past the bound: %s", why)
		}
	}
	if r := s.ask(t, "udp", "127.0.0.1", query("udp-miss.example.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
		t.Errorf("UDP cache miss while TCP is full: %v", r)
	}
	if _, err := s.exchange("tcp", "127.0.0.1", query("tcp.example.", dns.TypeA, false)); err == nil {
		t.Error("a TCP query past the bound was answered")
	}
	waitFor(t, "3 closed for the limit", func() bool { return g.count(tcpLimit) == 3 })
	if g.conns() != 6 || g.count(tcpPerClient) != 7 {
		t.Errorf("%d open, %d closed per client", g.conns(), g.count(tcpPerClient))
	}
	for name, want := range map[string]float64{"phonehome_tcp_connections": 6, "phonehome_tcp_connections_limit": 6,
		"phonehome_tcp_closed_total/per_client": 7, "phonehome_tcp_closed_total/limit": 3, "phonehome_tcp_closed_total/idle": 0} {
		if got := gathered(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	// One closes: a TCP client gets in again.
	third[0].Close()
	waitFor(t, "5 open", func() bool { return g.conns() == 5 })
	if r := s.ask(t, "tcp", "127.0.0.1", query("tcp.example.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
		t.Errorf("TCP once a connection closed: %v", r)
	}
}

// TestTCPAccess: a client outside access.allow is closed at accept,
// before anything it sent is read.
func TestTCPAccess(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "access: {allow: [127.0.0.1/32]}\n", up)
	g := s.srv.tcpGate
	c := dialFrom(t, s, "127.0.0.3")
	writeQuery(t, c, query("www.example.com.", dns.TypeA, false))
	if why := closedByServer(c); why != "" {
		t.Errorf("stranger: %s", why)
	}
	waitFor(t, "counted", func() bool { return g.count(tcpAccess) == 1 })
	if n := s.h.counters.Refused.Load(); n != 0 || up.Queries() != 0 {
		t.Errorf("the stranger's query was read: %d refused, %d forwarded", n, up.Queries())
	}
	if r := s.ask(t, "tcp", "127.0.0.1", query("www.example.com.", dns.TypeA, false)); answerText(r) != dnstest.AnswerA {
		t.Errorf("allowed client: %v", r)
	}
}

// TestTCPIdle: a connection is closed once no query has come for the idle
// timeout, after its answers went out.
func TestTCPIdle(t *testing.T) {
	up := dnstest.Start(t)
	s := startWith(t, Options{TCP: TCPLimits{Idle: 200 * time.Millisecond}}, "", up)
	g := s.srv.tcpGate
	c := dialFrom(t, s, "127.0.0.1")
	dc := &dns.Conn{Conn: c}
	writeQuery(t, c, query("idle.example.", dns.TypeA, false))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r, err := dc.ReadMsg(); err != nil || answerText(r) != dnstest.AnswerA {
		t.Fatalf("answer: %v %v", r, err)
	}
	if why := closedByServer(c); why != "" {
		t.Errorf("idle connection: %s", why)
	}
	waitFor(t, "counted and gone", func() bool { return g.count(tcpIdle) == 1 && g.conns() == 0 })
	// One that never sends anything goes the same way.
	if why := closedByServer(dialFrom(t, s, "127.0.0.1")); why != "" {
		t.Errorf("silent connection: %s", why)
	}
	waitFor(t, "counted", func() bool { return g.count(tcpIdle) == 2 })
}

// TestTCPSlow: a client that trickles a message a byte at a time is cut
// when the message is not all there soon after its first byte, however
// long the idle timeout.
func TestTCPSlow(t *testing.T) {
	up := dnstest.Start(t)
	s := startWith(t, Options{TCP: TCPLimits{Idle: time.Minute, Message: 300 * time.Millisecond}}, "", up)
	g := s.srv.tcpGate
	c := dialFrom(t, s, "127.0.0.1")
	// A 100-byte message, of which at most 99 bytes ever come.
	if _, err := c.Write([]byte{0, 100}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	start := time.Now()
	for sent := 0; ; {
		if sent < 99 {
			if _, err := c.Write([]byte{0}); err != nil {
				break // reset: cut
			}
			sent++
		}
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Read(buf)
		if n > 0 {
			t.Fatalf("got %d bytes", n)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			break // EOF or reset: cut
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("a trickling client was not cut in 10 s")
		}
	}
	waitFor(t, "counted as slow", func() bool { return g.count(tcpSlow) == 1 && g.conns() == 0 })
	if g.count(tcpIdle) != 0 {
		t.Errorf("counted idle too")
	}
}

// TestTCPPipelined: ten queries written back to back on one connection are
// all answered, and the cached ones do not wait for the miss sent before
// them, which the upstream holds until the test lets it go.
func TestTCPPipelined(t *testing.T) {
	up := dnstest.Start(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "slow.example." {
			<-release
		}
		m := new(dns.Msg).SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A " + dnstest.AnswerA)
		m.Answer = []dns.RR{rr}
		w.WriteMsg(m)
	})
	// Upstream timeouts longer than the test, so the miss is answered only
	// when released.
	s := startWith(t, Options{TryTimeout: time.Minute, Timeout: time.Minute}, "", up)
	t.Cleanup(unblock) // before the server and the upstream stop
	var names []string
	for i := 1; i <= 9; i++ {
		names = append(names, fmt.Sprintf("p%d.example.", i))
		s.ask(t, "udp", "", query(names[i-1], dns.TypeA, false))
	}

	c := dialFrom(t, s, "127.0.0.1")
	var wire []byte
	for i, name := range append([]string{"slow.example."}, names...) {
		q := query(name, dns.TypeA, false)
		q.Id = uint16(100 + i)
		b, _ := q.Pack()
		wire = append(wire, byte(len(b)>>8), byte(len(b)))
		wire = append(wire, b...)
	}
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	dc := &dns.Conn{Conn: c}
	read := func() *dns.Msg {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatalf("reading an answer: %v", err)
		}
		want := "slow.example."
		if r.Id > 100 && r.Id <= 109 {
			want = names[r.Id-101]
		}
		if r.Id < 100 || r.Id > 109 || r.Question[0].Name != want || answerText(r) != dnstest.AnswerA {
			t.Fatalf("answer to the wrong question: %v", r)
		}
		return r
	}
	seen := map[uint16]bool{}
	for range 9 {
		r := read()
		if r.Id == 100 || seen[r.Id] {
			t.Fatalf("answer %d before the miss was released, or twice", r.Id)
		}
		seen[r.Id] = true
	}
	unblock()
	if r := read(); r.Id != 100 {
		t.Fatalf("last answer: %v", r)
	}
	for _, name := range names {
		if up.Seen(name) != 1 {
			t.Errorf("%s went upstream %d times", name, up.Seen(name))
		}
	}
}

// TestTCPShutdown: Close closes an idle connection at once, lets a query in
// flight be answered, then closes its connection too.
func TestTCPShutdown(t *testing.T) {
	up := dnstest.Start(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		<-release
		m := new(dns.Msg).SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A " + dnstest.AnswerA)
		m.Answer = []dns.RR{rr}
		w.WriteMsg(m)
	})
	s := startWith(t, Options{TryTimeout: time.Minute, Timeout: time.Minute}, "", up)
	t.Cleanup(unblock)
	idle := dialFrom(t, s, "127.0.0.1")
	busy := dialFrom(t, s, "127.0.0.1")
	writeQuery(t, busy, query("inflight.example.", dns.TypeA, false))
	waitFor(t, "asked upstream", func() bool { return up.Seen("inflight.example.") == 1 })

	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		closed <- s.srv.Close(ctx)
	}()
	if why := closedByServer(idle); why != "" {
		t.Fatalf("idle connection at shutdown: %s", why)
	}
	unblock()
	busy.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r, err := (&dns.Conn{Conn: busy}).ReadMsg(); err != nil || answerText(r) != dnstest.AnswerA {
		t.Fatalf("the query in flight: %v %v", r, err)
	}
	if why := closedByServer(busy); why != "" {
		t.Errorf("busy connection after its answer: %s", why)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := s.srv.tcpGate.conns(); n != 0 {
		t.Errorf("%d connections open after Close", n)
	}
}

func TestTCPConnsFromFileLimit(t *testing.T) {
	for nofile, want := range map[uint64]int{1 << 20: 524224, 1024: 448, 640: 256, 512: 192, 256: 64, 100: 16} {
		if got := tcpConnsFor(nofile); got != want {
			t.Errorf("open-file limit %d: room for %d connections, want %d", nofile, got, want)
		}
	}
	// The default is 256, or what a lower limit has room for; the config
	// may ask for more only within the limit.
	nofile, _ := openFileLimit()
	if got, want := defaultTCPConns(), min(256, tcpConnsFor(nofile)); got != want {
		t.Errorf("default under an open-file limit of %d: %d, want %d", nofile, got, want)
	}
	for text, says := range map[string]string{
		"access: {max_connections: -1}":                     "access.max_connections is -1: want 1 to",
		"access: {max_connections_per_client: -3}":          "access.max_connections_per_client is -3",
		fmt.Sprintf("access: {max_connections: %d}", 1<<21): "want 1 to 1048576",
	} {
		cfg := parseConfig(t, text)
		r := config.NewReport(cfg.Source)
		cfg.Check(r)
		if err := r.Err(); err == nil || !strings.Contains(err.Error(), says) || !strings.Contains(err.Error(), ":1:") {
			t.Errorf("%s: %v; want an error at line 1 saying %q", text, err, says)
		}
	}
	if room := tcpConnsFor(nofile); room < maxTCPConns {
		cfg := parseConfig(t, fmt.Sprintf("access: {max_connections: %d}", room+1))
		r := config.NewReport(cfg.Source)
		cfg.Check(r)
		if err := r.Err(); err == nil || !strings.Contains(err.Error(), "open-file limit") {
			t.Errorf("max_connections past the open-file limit's room: %v", err)
		}
	}
}

// TestTCPMalformed: a body that does not parse gets a bare FORMERR with its
// ID, one too short for a header nothing, and the connection goes on; a
// length no query has ends it. Each is counted.
func TestTCPMalformed(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "", up)
	c := dialFrom(t, s, "127.0.0.1")
	dc := &dns.Conn{Conn: c}
	for _, b := range [][]byte{
		{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 'x'},
		{0x12, 0x34, 0x01},
	} {
		if _, err := dc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	writeQuery(t, c, query("after.example.", dns.TypeA, false))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r, err := dc.ReadMsg(); err != nil || r.Id != 0x1234 || r.Rcode != dns.RcodeFormatError || !r.Response {
		t.Fatalf("garbage body: %v %v", r, err)
	}
	if r, err := dc.ReadMsg(); err != nil || answerText(r) != dnstest.AnswerA {
		t.Fatalf("the query after: %v %v", r, err)
	}
	if _, err := c.Write([]byte{0xff, 0xff, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if why := closedByServer(c); why != "" {
		t.Errorf("a 65535-byte message: %s", why)
	}
	if n := s.h.counters.Malformed.Load(); n != 3 {
		t.Errorf("malformed counted %d, want 3", n)
	}
}

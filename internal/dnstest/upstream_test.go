package dnstest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestMain fails the run if any server or handler goroutine outlives the
// tests: every Upstream must be fully stopped by its test's cleanup.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := LeftRunning(5*time.Second, "github.com/miekg/dns.", "/internal/dnstest."); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

var transports = []string{"udp", "tcp"}

// queryTimeout bounds every exchange that is expected to be answered.
const queryTimeout = 5 * time.Second

func query(name string, qtype uint16) *dns.Msg {
	return new(dns.Msg).SetQuestion(name, qtype)
}

func queryEDNS(name string, qtype uint16, size uint16) *dns.Msg {
	return query(name, qtype).SetEdns0(size, true)
}

func exchange(t *testing.T, network string, u *Upstream, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: timeout}
	r, _, err := c.Exchange(m, u.Addr())
	return r, err
}

func mustExchange(t *testing.T, network string, u *Upstream, m *dns.Msg) *dns.Msg {
	t.Helper()
	r, err := exchange(t, network, u, m, queryTimeout)
	if err != nil {
		t.Fatalf("%s exchange %s: %v", network, m.Question[0].String(), err)
	}
	if r.Id != m.Id || !r.Response {
		t.Fatalf("reply id %d response %v, want id %d response", r.Id, r.Response, m.Id)
	}
	return r
}

func TestStartAddr(t *testing.T) {
	u := Start(t)
	host, port, err := net.SplitHostPort(u.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if host != "127.0.0.1" || port == "0" {
		t.Errorf("Addr() = %q, want 127.0.0.1 and a real port", u.Addr())
	}
}

func TestDefaultAnswers(t *testing.T) {
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		wantRcode int
		wantRData []string // rdata of each answer, in order
		wantSOA   string   // zone of the SOA in authority, "" for none
	}{
		{"A", "www.example.com.", dns.TypeA, dns.RcodeSuccess, []string{AnswerA}, ""},
		{"AAAA", "www.example.com.", dns.TypeAAAA, dns.RcodeSuccess, []string{AnswerAAAA}, ""},
		{"TXT", "www.example.com.", dns.TypeTXT, dns.RcodeSuccess, []string{`"stub"`}, ""},
		{"MX", "example.com.", dns.TypeMX, dns.RcodeSuccess, []string{"10 mail.example."}, ""},
		{"other type is empty", "example.com.", dns.TypeSRV, dns.RcodeSuccess, nil, ""},
		{"case kept", "WwW.ExAmple.COM.", dns.TypeA, dns.RcodeSuccess, []string{AnswerA}, ""},
		{"nx apex", "nx.test.", dns.TypeA, dns.RcodeNameError, nil, NXDomainZone},
		{"nx below", "a.b.NX.test.", dns.TypeAAAA, dns.RcodeNameError, nil, NXDomainZone},
		{"nodata", "host.nodata.test.", dns.TypeA, dns.RcodeSuccess, nil, NoDataZone},
		{"not nx", "nx.test.example.", dns.TypeA, dns.RcodeSuccess, []string{AnswerA}, ""},
		{"big A is ordinary", BigName, dns.TypeA, dns.RcodeSuccess, []string{AnswerA}, ""},
	}
	u := Start(t)
	for _, network := range transports {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				q := query(tt.qname, tt.qtype)
				r := mustExchange(t, network, u, q)
				if r.Rcode != tt.wantRcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.wantRcode])
				}
				if !r.RecursionAvailable || r.Truncated {
					t.Errorf("RA %v TC %v, want RA and not TC", r.RecursionAvailable, r.Truncated)
				}
				if len(r.Question) != 1 || r.Question[0] != q.Question[0] {
					t.Errorf("question %v, want %v exactly", r.Question, q.Question)
				}
				var got []string
				for _, rr := range r.Answer {
					if rr.Header().Name != tt.qname || rr.Header().Ttl != DefaultTTL || rr.Header().Rrtype != tt.qtype {
						t.Errorf("answer header %v, want name %q, TTL %d, type %s", rr.Header(), tt.qname, DefaultTTL, dns.TypeToString[tt.qtype])
					}
					got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.wantRData) {
					t.Errorf("answers %q, want %q", got, tt.wantRData)
				}
				if tt.wantSOA == "" {
					if len(r.Ns) != 0 {
						t.Errorf("authority %v, want none", r.Ns)
					}
					return
				}
				if len(r.Ns) != 1 {
					t.Fatalf("authority %v, want one SOA", r.Ns)
				}
				soa, ok := r.Ns[0].(*dns.SOA)
				if !ok || soa.Hdr.Name != tt.wantSOA || soa.Minttl != NegativeTTL || soa.Hdr.Ttl != NegativeTTL {
					t.Errorf("authority %v, want SOA of %s with minimum and TTL %d", r.Ns[0], tt.wantSOA, NegativeTTL)
				}
			})
		}
	}
}

func TestEDNSEcho(t *testing.T) {
	u := Start(t)
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			r := mustExchange(t, network, u, query("example.com.", dns.TypeA))
			if opt := r.IsEdns0(); opt != nil {
				t.Errorf("reply to a query without EDNS has OPT %v", opt)
			}
			r = mustExchange(t, network, u, queryEDNS("example.com.", dns.TypeA, 1232))
			opt := r.IsEdns0()
			if opt == nil || !opt.Do() || opt.UDPSize() != 1232 {
				t.Errorf("reply OPT %v, want one echoing size 1232 and DO", opt)
			}
			if len(r.Answer) != 1 {
				t.Errorf("answers %v, want one", r.Answer)
			}
		})
	}
}

func TestSetTTL(t *testing.T) {
	u := Start(t)
	u.SetTTL(7)
	for _, network := range transports {
		r := mustExchange(t, network, u, query("example.com.", dns.TypeA))
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 7 {
			t.Errorf("%s: answers %v, want one with TTL 7", network, r.Answer)
		}
		// The negative TTL is the smaller of the SOA TTL and minimum.
		r = mustExchange(t, network, u, query("x.nx.test.", dns.TypeA))
		if len(r.Ns) != 1 || r.Ns[0].Header().Ttl != 7 {
			t.Errorf("%s: authority %v, want the SOA with TTL 7", network, r.Ns)
		}
	}
}

func TestBigTruncatedOverUDP(t *testing.T) {
	u := Start(t)
	tests := []struct {
		name string
		q    *dns.Msg
	}{
		{"no EDNS", query(BigName, dns.TypeTXT)},
		{"EDNS 1232", queryEDNS(BigName, dns.TypeTXT, 1232)},
		{"EDNS 4096", queryEDNS(BigName, dns.TypeTXT, 4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustExchange(t, "udp", u, tt.q)
			if !r.Truncated || len(r.Answer) != 0 || len(r.Ns) != 0 {
				t.Errorf("TC %v, %d answers, %d authority; want TC and no records", r.Truncated, len(r.Answer), len(r.Ns))
			}
			if r.Rcode != dns.RcodeSuccess || r.Question[0] != tt.q.Question[0] {
				t.Errorf("rcode %s question %v, want NOERROR and the question", dns.RcodeToString[r.Rcode], r.Question)
			}
			if (tt.q.IsEdns0() == nil) != (r.IsEdns0() == nil) {
				t.Errorf("reply OPT %v, query OPT %v: want both or neither", r.IsEdns0(), tt.q.IsEdns0())
			}
		})
	}
	t.Run("EDNS 65535 fits", func(t *testing.T) {
		r := mustExchange(t, "udp", u, queryEDNS(BigName, dns.TypeTXT, 65535))
		if r.Truncated || len(r.Answer) != BigRecords {
			t.Errorf("TC %v, %d answers; want %d answers", r.Truncated, len(r.Answer), BigRecords)
		}
	})
	t.Run("TCP full", func(t *testing.T) {
		r := mustExchange(t, "tcp", u, query(BigName, dns.TypeTXT))
		if r.Truncated || len(r.Answer) != BigRecords {
			t.Errorf("TC %v, %d answers; want %d answers", r.Truncated, len(r.Answer), BigRecords)
		}
		if r.Len() < 4000 {
			t.Errorf("reply is %d bytes, want about 4.5 KB", r.Len())
		}
	})
}

func TestModeRcodes(t *testing.T) {
	tests := []struct {
		mode  Mode
		rcode int
	}{
		{ServFail, dns.RcodeServerFailure},
		{Refused, dns.RcodeRefused},
	}
	for _, tt := range tests {
		for _, network := range transports {
			t.Run(tt.mode.String()+"/"+network, func(t *testing.T) {
				u := Start(t)
				u.SetMode(tt.mode)
				q := queryEDNS("Example.com.", dns.TypeA, 1232)
				r := mustExchange(t, network, u, q)
				if r.Rcode != tt.rcode || len(r.Answer) != 0 {
					t.Errorf("rcode %s, %d answers; want %s and none", dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tt.rcode])
				}
				if r.Question[0] != q.Question[0] || !r.RecursionAvailable || r.IsEdns0() == nil {
					t.Errorf("question %v RA %v OPT %v; want the question, RA and OPT", r.Question, r.RecursionAvailable, r.IsEdns0())
				}
			})
		}
	}
}

func TestModeTruncate(t *testing.T) {
	u := Start(t)
	u.SetMode(Truncate)
	r := mustExchange(t, "udp", u, queryEDNS("example.com.", dns.TypeA, 1232))
	if !r.Truncated || len(r.Answer) != 0 || r.IsEdns0() == nil {
		t.Errorf("udp: TC %v, answers %v, OPT %v; want TC, no answers, OPT", r.Truncated, r.Answer, r.IsEdns0())
	}
	r = mustExchange(t, "tcp", u, queryEDNS("example.com.", dns.TypeA, 1232))
	if r.Truncated || len(r.Answer) != 1 {
		t.Errorf("tcp: TC %v, answers %v; want the answer", r.Truncated, r.Answer)
	}
	// Without EDNS too.
	r, err := exchange(t, "udp", u, query("example.com.", dns.TypeA), queryTimeout)
	if err != nil || !r.Truncated {
		t.Fatalf("udp: %v, %v; want truncated", r, err)
	}
	if u.Queries() != 3 || u.QueriesTCP() != 1 {
		t.Errorf("Queries %d QueriesTCP %d, want 3 and 1", u.Queries(), u.QueriesTCP())
	}
}

func TestModeGarbage(t *testing.T) {
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			u := Start(t)
			u.SetMode(Garbage)
			start := time.Now()
			r, err := exchange(t, network, u, query("example.com.", dns.TypeA), queryTimeout)
			if err == nil {
				t.Fatalf("got reply %v, want an error", r)
			}
			// The error comes from what arrived, not from waiting it out.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("error %v after %v is a timeout, want a read or parse error", err, time.Since(start))
			}
			if u.Queries() != 1 {
				t.Errorf("Queries() = %d, want 1", u.Queries())
			}
		})
	}
}

func TestModeDrop(t *testing.T) {
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			u := Start(t)
			u.SetMode(Drop)
			r, err := exchange(t, network, u, query("example.com.", dns.TypeA), 200*time.Millisecond)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("got %v, %v; want a timeout", r, err)
			}
			if u.Queries() != 1 || u.Seen("example.com") != 1 {
				t.Errorf("Queries %d Seen %d, want the dropped query counted", u.Queries(), u.Seen("example.com"))
			}
		})
	}
}

func TestModeDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			u := Start(t)
			u.SetMode(Delay)
			u.SetDelay(delay)
			start := time.Now()
			r := mustExchange(t, network, u, query("example.com.", dns.TypeA))
			if took := time.Since(start); took < delay {
				t.Errorf("answered after %v, want at least %v", took, delay)
			}
			if len(r.Answer) != 1 {
				t.Errorf("answers %v, want the default answer", r.Answer)
			}
		})
	}
}

// TestDelayDoesNotBlock checks that a delayed query holds up neither other
// queries nor the end of the test.
func TestDelayDoesNotBlock(t *testing.T) {
	const delay = time.Minute
	for _, network := range transports {
		start := time.Now()
		t.Run(network, func(t *testing.T) {
			u := Start(t)
			u.SetMode(Delay)
			u.SetDelay(delay)

			var wg sync.WaitGroup
			wg.Go(func() {
				// Gives up long before the delay, which is still running in
				// the server when the test ends.
				_, err := exchange(t, network, u, query("slow.example.", dns.TypeA), 300*time.Millisecond)
				if err == nil {
					t.Error("delayed query answered, want a timeout")
				}
			})
			defer wg.Wait()

			for deadline := time.Now().Add(queryTimeout); u.Queries() == 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("delayed query did not arrive")
				}
			}
			u.SetMode(Answer)
			r := mustExchange(t, network, u, query("fast.example.", dns.TypeA))
			if len(r.Answer) != 1 {
				t.Errorf("answers %v, want the default answer", r.Answer)
			}
		})
		// The cleanup stopped the delayed handler instead of waiting a minute.
		if took := time.Since(start); took > delay/2 {
			t.Errorf("%s: test with a pending delayed reply took %v", network, took)
		}
	}
}

func TestCounters(t *testing.T) {
	u := Start(t)
	if u.Queries() != 0 || u.QueriesTCP() != 0 || u.Last() != nil || u.Seen("example.com.") != 0 {
		t.Fatal("a new Upstream has records")
	}
	mustExchange(t, "udp", u, query("Example.COM.", dns.TypeA))
	mustExchange(t, "udp", u, query("example.com.", dns.TypeAAAA))
	mustExchange(t, "tcp", u, query("EXAMPLE.com.", dns.TypeMX))
	mustExchange(t, "tcp", u, queryEDNS("other.example.", dns.TypeTXT, 1232))

	if got := u.Queries(); got != 4 {
		t.Errorf("Queries() = %d, want 4", got)
	}
	if got := u.QueriesTCP(); got != 2 {
		t.Errorf("QueriesTCP() = %d, want 2", got)
	}
	for _, name := range []string{"example.com.", "example.com", "EXAMPLE.COM"} {
		if got := u.Seen(name); got != 3 {
			t.Errorf("Seen(%q) = %d, want 3", name, got)
		}
	}
	if got := u.Seen("nowhere.example."); got != 0 {
		t.Errorf("Seen(nowhere) = %d, want 0", got)
	}

	last := u.Last()
	if last == nil || last.Question[0].Name != "other.example." || last.Question[0].Qtype != dns.TypeTXT || last.IsEdns0() == nil {
		t.Fatalf("Last() = %v, want the TXT query for other.example. with OPT", last)
	}
	last.Question[0].Name = "changed."
	if u.Last().Question[0].Name != "other.example." {
		t.Error("changing what Last returned changed the record")
	}
}

func TestSetHandler(t *testing.T) {
	u := Start(t)
	u.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Answer = []dns.RR{&dns.CNAME{
			Hdr:    dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60},
			Target: "target.example.",
		}}
		w.WriteMsg(m)
	})
	for _, network := range transports {
		r := mustExchange(t, network, u, query("alias.example.", dns.TypeA))
		if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeCNAME {
			t.Errorf("%s: answers %v, want the handler's CNAME", network, r.Answer)
		}
	}

	// Modes that are not about the answer still win over the handler.
	u.SetMode(ServFail)
	if r := mustExchange(t, "udp", u, query("alias.example.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("ServFail with a handler: rcode %s", dns.RcodeToString[r.Rcode])
	}
	u.SetMode(Answer)

	u.SetHandler(nil)
	r := mustExchange(t, "udp", u, query("alias.example.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeA {
		t.Errorf("after SetHandler(nil): answers %v, want the default A", r.Answer)
	}
	if u.Seen("alias.example.") != 4 {
		t.Errorf("Seen = %d, want handled queries counted too", u.Seen("alias.example."))
	}
}

// TestConcurrentUse changes behaviour while queries are in flight; it is
// for the race detector.
func TestConcurrentUse(t *testing.T) {
	u := Start(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			network := transports[i%2]
			for range 10 {
				// Any outcome is fine here; Drop and Garbage give errors.
				exchange(t, network, u, query(fmt.Sprintf("q%d.example.", i), dns.TypeA), 100*time.Millisecond)
				u.Queries()
				u.Last()
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			u.SetMode(Mode(i % len(modeNames)))
			u.SetDelay(time.Duration(i%3) * time.Millisecond)
			u.SetTTL(uint32(i))
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	// A client that timed out may be ahead of the server counting its query.
	for deadline := time.Now().Add(queryTimeout); u.Queries() != 80; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Queries() = %d, want 80", u.Queries())
		}
	}
}

func TestModeString(t *testing.T) {
	if got := Delay.String(); got != "Delay" {
		t.Errorf("Delay.String() = %q", got)
	}
	if got := Mode(99).String(); got != "Mode(99)" {
		t.Errorf("Mode(99).String() = %q", got)
	}
}

// TestTLS: WithTLS serves DNS over TLS on the TCP port with a certificate
// that RootCAs trusts, for TLSServerName, and counts the connections.
func TestTLS(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			opts := []Option{WithTLS()}
			if pipelined {
				opts = append(opts, WithPipelining())
			}
			u := Start(t, opts...)
			if u.RootCAs() == nil {
				t.Fatal("RootCAs() = nil")
			}
			c := &dns.Client{Net: "tcp-tls", Timeout: queryTimeout, TLSConfig: &tls.Config{RootCAs: u.RootCAs(), ServerName: TLSServerName}}
			conn, err := c.Dial(u.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for range 3 {
				r, _, err := c.ExchangeWithConn(query("example.com.", dns.TypeA), conn)
				if err != nil || len(r.Answer) != 1 {
					t.Fatalf("over TLS: %v %v", r, err)
				}
			}
			if u.Conns() != 1 || u.OpenConns() != 1 || u.QueriesTCP() != 3 {
				t.Errorf("Conns %d OpenConns %d QueriesTCP %d, want 1, 1, 3", u.Conns(), u.OpenConns(), u.QueriesTCP())
			}
			// Another name is refused by the client, and plain TCP gets nothing.
			bad := &dns.Client{Net: "tcp-tls", Timeout: queryTimeout, TLSConfig: &tls.Config{RootCAs: u.RootCAs(), ServerName: "other.test"}}
			if _, _, err := bad.Exchange(query("example.com.", dns.TypeA), u.Addr()); err == nil {
				t.Error("a client checking for another name accepted the certificate")
			}
			if _, err := exchange(t, "tcp", u, query("example.com.", dns.TypeA), 300*time.Millisecond); err == nil {
				t.Error("plain TCP answered on the TLS port")
			}
			// UDP stays plain.
			mustExchange(t, "udp", u, query("example.com.", dns.TypeA))
		})
	}
	if Start(t).RootCAs() != nil {
		t.Error("RootCAs() without TLS is not nil")
	}
}

// TestPipelining: WithPipelining answers the queries on one connection as
// each is ready, so a slow one does not hold up those behind it.
func TestPipelining(t *testing.T) {
	u := Start(t, WithPipelining())
	release := make(chan struct{})
	defer close(release) // before the cleanup stops the server
	u.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "slow.example." {
			<-release
		}
		m := new(dns.Msg).SetReply(r)
		answer(m, DefaultTTL)
		w.WriteMsg(m)
	})
	conn, err := dns.DialTimeout("tcp", u.Addr(), queryTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(queryTimeout))
	slow, fast := query("slow.example.", dns.TypeA), query("fast.example.", dns.TypeA)
	fast.Id = slow.Id + 1
	for _, m := range []*dns.Msg{slow, fast} {
		if err := conn.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	r, err := conn.ReadMsg()
	if err != nil || r.Id != fast.Id {
		t.Fatalf("first answer %v %v, want the fast one's", r, err)
	}
	release <- struct{}{}
	if r, err := conn.ReadMsg(); err != nil || r.Id != slow.Id {
		t.Fatalf("second answer %v %v, want the slow one's", r, err)
	}
}

// TestCloseConns: CloseConns closes the open connections from the server's
// side; the listener still accepts new ones.
func TestCloseConns(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			var opts []Option
			if pipelined {
				opts = append(opts, WithPipelining())
			}
			u := Start(t, opts...)
			conn, err := dns.DialTimeout("tcp", u.Addr(), queryTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(queryTimeout))
			if err := conn.WriteMsg(query("example.com.", dns.TypeA)); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.ReadMsg(); err != nil {
				t.Fatal(err)
			}
			u.CloseConns()
			if u.OpenConns() != 0 {
				t.Errorf("OpenConns() = %d after CloseConns", u.OpenConns())
			}
			if _, err := conn.ReadMsg(); err == nil {
				t.Error("the connection still reads after CloseConns")
			}
			mustExchange(t, "tcp", u, query("example.com.", dns.TypeA))
			if u.Conns() != 2 {
				t.Errorf("Conns() = %d, want 2", u.Conns())
			}
		})
	}
}

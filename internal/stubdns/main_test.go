package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startStub runs the stub on a free loopback port and returns its address.
func startStub(t *testing.T, sockets int) string {
	t.Helper()
	return startStubTLS(t, sockets, tlsConfig{}).addr
}

// startStubTLS is startStub with -tls options.
func startStubTLS(t *testing.T, sockets int, tc tlsConfig) served {
	t.Helper()
	return startStubFault(t, sockets, tc, fault{})
}

// startStubFault is startStubTLS with a -fault.
func startStubFault(t *testing.T, sockets int, tc tlsConfig, f fault) served {
	t.Helper()
	sigs := make(chan os.Signal, 1)
	ready := make(chan served, 1)
	done := make(chan error, 1)
	go func() { done <- run("127.0.0.1:0", sockets, 8, tc, f, "", sigs, ready) }()
	t.Cleanup(func() {
		sigs <- syscall.SIGTERM
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(5 * time.Second):
			t.Error("stub did not stop")
		}
	})
	select {
	case s := <-ready:
		return s
	case err := <-done:
		t.Fatal(err)
	}
	return served{}
}

func TestAnswers(t *testing.T) {
	addr := startStub(t, 2)
	cases := []struct {
		name  string
		qtype uint16
		edns  bool
		want  string // the answer record, "" for NODATA
	}{
		{"host1.example.com.", dns.TypeA, false, "host1.example.com.\t300\tIN\tA\t192.0.2.1"},
		{"Host1.Example.COM.", dns.TypeA, true, "Host1.Example.COM.\t300\tIN\tA\t192.0.2.1"},
		{"r12345.cold.example.", dns.TypeAAAA, true, "r12345.cold.example.\t300\tIN\tAAAA\t::"},
		{"example.com.", dns.TypeMX, false, ""},
		{"example.com.", dns.TypeHTTPS, true, ""},
		{".", dns.TypeNS, false, ""},
	}
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
		for _, tc := range cases {
			m := new(dns.Msg).SetQuestion(tc.name, tc.qtype)
			if tc.edns {
				m.SetEdns0(1232, true)
			}
			r, _, err := c.Exchange(m, addr)
			if err != nil {
				t.Fatalf("%s %s: %v", proto, tc.name, err)
			}
			if r.Id != m.Id || r.Rcode != dns.RcodeSuccess || !r.Response || !r.RecursionAvailable || r.Question[0] != m.Question[0] {
				t.Errorf("%s %s: bad header or question:\n%v", proto, tc.name, r)
			}
			var got string
			if len(r.Answer) == 1 {
				got = r.Answer[0].String()
			}
			if got != tc.want || len(r.Answer) > 1 || len(r.Ns) > 0 {
				t.Errorf("%s %s %s: answer %q, want %q", proto, tc.name, dns.TypeToString[tc.qtype], got, tc.want)
			}
			opt := r.IsEdns0()
			if tc.edns != (opt != nil) || opt != nil && (!opt.Do() || opt.UDPSize() != 1232) {
				t.Errorf("%s %s: OPT %v, want EDNS %v with DO", proto, tc.name, opt, tc.edns)
			}
		}
	}
}

// TestTLS: with -tls the stub answers DNS over TLS with a certificate it
// makes and writes to -ca, many queries on one connection.
func TestTLS(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	s := startStubTLS(t, 1, tlsConfig{listen: "127.0.0.1:0", ca: ca})
	if s.ca != ca || s.tls == "" {
		t.Fatalf("served %+v, want DNS over TLS with the certificate in %s", s, ca)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", ca)
	}
	c := &dns.Client{Net: "tcp-tls", Timeout: 2 * time.Second, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "stubdns.test"}}
	conn, err := c.Dial(s.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// More than miekg/dns's default of 128 queries per connection.
	for i := range 200 {
		m := new(dns.Msg).SetQuestion(fmt.Sprintf("r%d.cold.example.", i), dns.TypeA)
		r, _, err := c.ExchangeWithConn(m, conn)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("query %d: %v %v", i, r, err)
		}
	}
}

func TestRejects(t *testing.T) {
	q := new(dns.Msg).SetQuestion("example.com.", dns.TypeA)
	q.Id = 0x1234
	wire := func(f func(m *dns.Msg)) []byte {
		m := q.Copy()
		f(m)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good, _ := q.Pack()
	cases := []struct {
		name  string
		query []byte
		rcode int // -1: dropped
	}{
		{"short", good[:11], -1},
		{"response", wire(func(m *dns.Msg) { m.Response = true }), -1},
		{"notify", wire(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), dns.RcodeNotImplemented},
		{"two questions", wire(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), dns.RcodeFormatError},
		{"no question", wire(func(m *dns.Msg) { m.Question = nil }), dns.RcodeFormatError},
		{"cut name", good[:15], dns.RcodeFormatError},
		{"cut type", good[:len(good)-2], dns.RcodeFormatError},
	}
	out := make([]byte, 600)
	for _, tc := range cases {
		n := reply(out, tc.query)
		if tc.rcode < 0 {
			if n != 0 {
				t.Errorf("%s: answered, want dropped", tc.name)
			}
			continue
		}
		r := new(dns.Msg)
		if err := r.Unpack(out[:n]); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.Id != 0x1234 || !r.Response || r.Rcode != tc.rcode {
			t.Errorf("%s: got %v, want rcode %s", tc.name, r, dns.RcodeToString[tc.rcode])
		}
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	err := run("192.0.2.1:53", 1, 1, tlsConfig{}, fault{}, "", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "only loopback") {
		t.Errorf("got %v, want a refusal", err)
	}
	err = run("127.0.0.1:0", 1, 1, tlsConfig{listen: "192.0.2.1:853"}, fault{}, "", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "only loopback") {
		t.Errorf("-tls: got %v, want a refusal", err)
	}
}

// TestFaults: with -fault the stub answers late, not at all, or SERVFAIL,
// over UDP and TCP; a late answer over UDP does not hold up the next query.
func TestFaults(t *testing.T) {
	const delay = 300 * time.Millisecond
	slow := startStubFault(t, 1, tlsConfig{}, fault{mode: "slow", delay: delay}).addr
	drop := startStubFault(t, 1, tlsConfig{}, fault{mode: "drop"}).addr
	servfail := startStubFault(t, 1, tlsConfig{}, fault{mode: "servfail"}).addr
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
		q := new(dns.Msg).SetQuestion("host1.example.com.", dns.TypeA)

		// slow: two queries at once both come back about delay later.
		var wg sync.WaitGroup
		rtts := make([]time.Duration, 2)
		errs := make([]error, 2)
		for i := range rtts {
			wg.Go(func() {
				var r *dns.Msg
				r, rtts[i], errs[i] = c.Exchange(q.Copy(), slow)
				if errs[i] == nil && len(r.Answer) != 1 {
					errs[i] = fmt.Errorf("answer %v", r)
				}
			})
		}
		wg.Wait()
		for i := range rtts {
			if errs[i] != nil {
				t.Fatalf("%s slow: %v", proto, errs[i])
			}
			if rtts[i] < delay || proto == "udp" && rtts[i] > delay+delay/2 {
				t.Errorf("%s slow: answer after %v, want %v", proto, rtts[i], delay)
			}
		}

		// drop: nothing comes back.
		dc := &dns.Client{Net: proto, Timeout: 300 * time.Millisecond}
		if r, _, err := dc.Exchange(q.Copy(), drop); err == nil {
			t.Errorf("%s drop: got an answer %v", proto, r)
		}

		// servfail: SERVFAIL with the question and no records.
		r, _, err := c.Exchange(q.Copy(), servfail)
		if err != nil {
			t.Fatalf("%s servfail: %v", proto, err)
		}
		if r.Rcode != dns.RcodeServerFailure || len(r.Question) != 1 || r.Question[0] != q.Question[0] || len(r.Answer) != 0 {
			t.Errorf("%s servfail: got %v", proto, r)
		}
	}
}

func TestParseFault(t *testing.T) {
	good := map[string]fault{
		"":            {},
		"\n":          {},
		"drop\n":      {mode: "drop"},
		"servfail":    {mode: "servfail"},
		"slow 1.5s\n": {mode: "slow", delay: 1500 * time.Millisecond},
	}
	for in, want := range good {
		if f, err := parseFault(in); err != nil || f != want {
			t.Errorf("%q: got %+v, %v; want %+v", in, f, err, want)
		}
	}
	for _, in := range []string{"slow", "slow soon", "slow 0s", "drop 2s", "sometimes"} {
		if f, err := parseFault(in); err == nil {
			t.Errorf("%q: got %+v, want an error", in, f)
		}
	}
}

// TestFaultFile: SIGHUP takes the fault from -fault-file without a restart;
// a file that does not parse leaves the fault as it was.
func TestFaultFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "fault")
	// Unbuffered: a send returns once run has taken the signal, so after
	// SIGHUP and then SIGUSR1 the SIGHUP has been dealt with.
	sigs := make(chan os.Signal)
	ready := make(chan served, 1)
	done := make(chan error, 1)
	go func() { done <- run("127.0.0.1:0", 1, 8, tlsConfig{}, fault{}, file, sigs, ready) }()
	var addr string
	select {
	case s := <-ready:
		addr = s.addr
	case err := <-done:
		t.Fatal(err)
	}
	defer func() {
		sigs <- syscall.SIGTERM
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c := &dns.Client{Timeout: 300 * time.Millisecond}
	rcode := func() int {
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion("host1.example.com.", dns.TypeA), addr)
		if err != nil {
			return -1
		}
		return r.Rcode
	}
	// set writes the file, sends SIGHUP and checks the rcode.
	set := func(content string, want int) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		sigs <- syscall.SIGHUP
		sigs <- syscall.SIGUSR1
		if got := rcode(); got != want {
			t.Errorf("after %q: rcode %d, want %d", content, got, want)
		}
	}
	set("", dns.RcodeSuccess)
	set("servfail\n", dns.RcodeServerFailure)
	set("sometimes\n", dns.RcodeServerFailure) // does not parse: unchanged
	set("drop\n", -1)
	set("\n", dns.RcodeSuccess)
}

func TestFaultCheck(t *testing.T) {
	for _, f := range []fault{{mode: "sometimes"}, {mode: "slow"}} {
		if err := run("127.0.0.1:0", 1, 1, tlsConfig{}, f, "", nil, nil); err == nil {
			t.Errorf("%+v: no error", f)
		}
	}
}

// BenchmarkReply is the cost of answering one query, without the sockets.
func BenchmarkReply(b *testing.B) {
	q := new(dns.Msg).SetQuestion("r123456.cold.example.", dns.TypeA)
	q.SetEdns0(1232, false)
	wire, _ := q.Pack()
	out := make([]byte, len(wire)+maxExtra)
	for b.Loop() {
		reply(out, wire)
	}
}

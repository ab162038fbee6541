package resolver

import (
	"bytes"
	"fmt"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// wireAsk runs one packed query through the UDP loop's handling (the wire
// path first, as udpServer.handle does) and returns the answer it queued
// and whether the wire path answered it itself.
func wireAsk(t *testing.T, s *testServer, b []byte) (*dns.Msg, bool) {
	t.Helper()
	w := &batchWriter{udpReply: udpReply{addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}},
		batch: &batch{out: make([]ipv4.Message, 1)}, buf: make([]byte, 0, maxUDP)}
	return wireAskThrough(t, s, b, w, func() [][]byte {
		var out [][]byte
		for _, m := range w.batch.out[:w.batch.n] {
			out = append(out, m.Buffers[0])
		}
		return out
	})
}

// wireAskTCP is wireAsk over TCP: a writer that keeps what is sent.
func wireAskTCP(t *testing.T, s *testServer, b []byte) (*dns.Msg, bool) {
	t.Helper()
	w := &tcpWireWriter{fakeWriter: fakeWriter{remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}}
	return wireAskThrough(t, s, b, w, func() [][]byte { return w.sent })
}

func wireAskThrough(t *testing.T, s *testServer, b []byte, w wireWriter, sent func() [][]byte) (*dns.Msg, bool) {
	t.Helper()
	res := s.h.serveWire(w, b, time.Now())
	if res == wireNotMine {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			t.Fatal(err)
		}
		s.h.ServeDNS(w, req)
	}
	out := sent()
	if len(out) != 1 {
		t.Fatalf("%d answers sent", len(out))
	}
	r := new(dns.Msg)
	if err := r.Unpack(out[0]); err != nil {
		t.Fatalf("the answer does not unpack: %v", err)
	}
	return r, res == wireAnswered
}

// tcpWireWriter is a wireWriter over TCP for tests: it packs what ServeDNS
// writes, and keeps every answer.
type tcpWireWriter struct {
	fakeWriter
	sent [][]byte
}

func (w *tcpWireWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	w.sent = append(w.sent, b)
	return nil
}

func (w *tcpWireWriter) wireBuf() []byte   { return nil }
func (w *tcpWireWriter) wireSend(b []byte) { w.sent = append(w.sent, bytes.Clone(b)) }

// slowAsk answers the same query through ServeDNS alone, as a UDP query,
// and returns the answer as the client would read it.
func slowAsk(t *testing.T, s *testServer, b []byte) *dns.Msg {
	return slowAskFrom(t, s, b, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242})
}

// slowAskFrom is slowAsk from remote: a UDP or TCP address.
func slowAskFrom(t *testing.T, s *testServer, b []byte, remote net.Addr) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		t.Fatal(err)
	}
	w := &fakeWriter{remote: remote}
	s.h.ServeDNS(w, req)
	if len(w.msgs) != 1 {
		t.Fatalf("%d answers", len(w.msgs))
	}
	p, err := w.msgs[0].Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(p); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestWirePath: every query the wire path answers gets the answer
// ServeDNS gives it, record for record (TTLs within the second the two
// calls may straddle), and the queries it is not for go to ServeDNS; over
// UDP and over TCP (and so DNS over TLS and HTTPS, whose writers differ
// only in how they send).
func TestWirePath(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) { testWirePath(t, network) })
	}
}

func testWirePath(t *testing.T, network string) {
	ask, slowOf := wireAsk, slowAsk
	if network == "tcp" {
		ask = wireAskTCP
		slowOf = func(t *testing.T, s *testServer, b []byte) *dns.Msg {
			return slowAskFrom(t, s, b, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242})
		}
	}
	up := dnstest.Start(t)
	up.SetChain("alias.example.", "edge.cdn.example.", "e1.cdn.example.")
	up.SetChain("to-telemetry.example.", "v10.events.data.microsoft.com.")
	s := start(t, "sinkhole: {ttl: 1m}\n", up)

	type variant struct {
		name       string
		build      func(m *dns.Msg)
		fast, warm bool // the wire path answers it; warm the cache first
	}
	edns := func(size uint16, do bool, opts ...dns.EDNS0) func(m *dns.Msg) {
		return func(m *dns.Msg) {
			m.SetEdns0(size, do)
			m.IsEdns0().Option = opts
		}
	}
	var variants []variant
	for _, name := range []string{"www.example.com.", "WwW.ExAmPlE.cOm.", "alias.example.", "a-b_c.example."} {
		// Spelt otherwise than the cached question (asked first in
		// lower case), a name goes to ServeDNS.
		fast := name != "WwW.ExAmPlE.cOm."
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX} {
			n, qt := name, qtype
			variants = append(variants,
				variant{fmt.Sprintf("%s %s", n, dns.TypeToString[qt]), func(m *dns.Msg) { m.SetQuestion(n, qt) }, fast, true},
				variant{fmt.Sprintf("%s %s edns", n, dns.TypeToString[qt]), func(m *dns.Msg) { m.SetQuestion(n, qt); edns(1232, false)(m) }, fast, true},
				variant{fmt.Sprintf("%s %s do cd", n, dns.TypeToString[qt]), func(m *dns.Msg) {
					m.SetQuestion(n, qt)
					m.CheckingDisabled = true
					edns(4096, true)(m)
				}, fast, true},
			)
		}
	}
	variants = append(variants,
		variant{"sinkholed A", func(m *dns.Msg) { m.SetQuestion("v10.events.data.microsoft.com.", dns.TypeA) }, true, false},
		variant{"sinkholed AAAA edns", func(m *dns.Msg) {
			m.SetQuestion("V10.Events.Data.Microsoft.Com.", dns.TypeAAAA)
			edns(1232, false)(m)
		}, true, false},
		variant{"sinkholed A cookie", func(m *dns.Msg) {
			m.SetQuestion("v10.events.data.microsoft.com.", dns.TypeA)
			edns(512, true, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})(m)
		}, true, false},
		variant{"sinkholed TXT: a SOA, from ServeDNS", func(m *dns.Msg) { m.SetQuestion("v10.events.data.microsoft.com.", dns.TypeTXT) }, false, false},
		variant{"alias of a sinkholed name: ServeDNS", func(m *dns.Msg) { m.SetQuestion("to-telemetry.example.", dns.TypeA) }, false, true},
		variant{"no RD", func(m *dns.Msg) { m.SetQuestion("www.example.com.", dns.TypeA); m.RecursionDesired = false }, true, true},
		variant{"client subnet: ServeDNS", func(m *dns.Msg) {
			m.SetQuestion("www.example.com.", dns.TypeA)
			edns(1232, false, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(192, 0, 2, 0)})(m)
		}, false, true},
		variant{"escaped name: ServeDNS", func(m *dns.Msg) { m.SetQuestion(`a\.b.example.`, dns.TypeA) }, false, true},
		variant{"ANY: ServeDNS", func(m *dns.Msg) { m.SetQuestion("www.example.com.", dns.TypeANY) }, false, false},
		variant{"canary: ServeDNS", func(m *dns.Msg) { m.SetQuestion("use-application-dns.net.", dns.TypeA) }, false, false},
		variant{"DDR: ServeDNS", func(m *dns.Msg) { m.SetQuestion("_dns.resolver.arpa.", dns.TypeSVCB) }, false, false},
		variant{"CHAOS: ServeDNS", func(m *dns.Msg) {
			m.SetQuestion("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
		}, false, false},
	)

	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			q := new(dns.Msg)
			v.build(q)
			q.Id = 0xbeef
			b, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if v.warm {
				slowOf(t, s, b)
			}
			s.clock.set(7 * time.Second) // the cached TTLs have gone down
			defer s.clock.set(0)
			fast, took := ask(t, s, b)
			slow := slowOf(t, s, b)
			if took != v.fast {
				t.Errorf("the wire path answered it: %v, want %v", took, v.fast)
			}
			ttlFast, ttlSlow := ttlsOf(fast), ttlsOf(slow)
			for i := range min(len(ttlFast), len(ttlSlow)) {
				if d := int(ttlFast[i]) - int(ttlSlow[i]); d < -1 || d > 1 {
					t.Errorf("record %d: TTL %d on the wire path, %d from ServeDNS", i, ttlFast[i], ttlSlow[i])
				}
			}
			setTTLs(fast, 0)
			setTTLs(slow, 0)
			if fast.String() != slow.String() {
				t.Errorf("the wire path answered\n%s\nServeDNS\n%s", fast, slow)
			}
			if v.warm && ttlSlow[0] > 300-7 {
				t.Errorf("a cached answer 7 s old has TTL %d", ttlSlow[0])
			}
		})
	}
}

func ttlsOf(m *dns.Msg) (ttls []uint32) {
	headers(m, func(h *dns.RR_Header) { ttls = append(ttls, h.Ttl) })
	return ttls
}

func setTTLs(m *dns.Msg, ttl uint32) { headers(m, func(h *dns.RR_Header) { h.Ttl = ttl }) }

// TestWireTooBig: a cached answer larger than the client takes is left to
// ServeDNS, which truncates it.
func TestWireTooBig(t *testing.T) {
	up := dnstest.Start(t)
	up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		for i := range 40 {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 300 IN A 192.0.2.%d", r.Question[0].Name, i+1))
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	s := start(t, "", up)
	q := new(dns.Msg).SetQuestion("many.example.", dns.TypeA)
	q.SetEdns0(4096, false)
	big, _ := q.Pack()
	slowAsk(t, s, big) // cached over a large EDNS size
	q = new(dns.Msg).SetQuestion("many.example.", dns.TypeA)
	b, _ := q.Pack()
	r, took := wireAsk(t, s, b)
	if took || !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("an answer over 512 bytes to a client without EDNS: wire path %v, TC %v, %d records", took, r.Truncated, len(r.Answer))
	}
	r, took = wireAsk(t, s, big)
	if !took || len(r.Answer) != 40 {
		t.Errorf("the same within 1232 bytes: wire path %v, %d records", took, len(r.Answer))
	}
}

// TestParseWireNameLength: parseWire takes a name of 255 octets on the
// wire, the most RFC 1035 allows, and leaves one of 256 to ServeDNS,
// which drops it as malformed (a miss made from it went upstream, whose
// FORMERR without a question then counted as timeouts against it).
func TestParseWireNameLength(t *testing.T) {
	for _, c := range []struct {
		last int // the last label's length, after three of 63
		want bool
	}{{61, true}, {62, false}} {
		b := longNameQuery(c.last)
		var q wireQuery
		if got := parseWire(b, &q); got != c.want {
			t.Errorf("a name of %d octets: parseWire %v, want %v", 3*64+c.last+2, got, c.want)
		}
		if err := new(dns.Msg).Unpack(b); (err == nil) != c.want {
			t.Errorf("a name of %d octets: miekg/dns unpacks it: %v", 3*64+c.last+2, err)
		}
	}
}

// longNameQuery is a query for a name of three 63-octet labels and one of
// last octets, packed by hand (miekg/dns packs no name over 255 octets).
func longNameQuery(last int) []byte {
	b := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range []int{63, 63, 63, last} {
		b = append(b, byte(l))
		b = append(b, bytes.Repeat([]byte{'a'}, l)...)
	}
	return append(b, 0, 0, 1, 0, 1) // the root, type A, class IN
}

// FuzzParseWire: whatever parseWire takes, miekg/dns reads the same way:
// the same ID, flags, question (name as sent), EDNS0 size and DO bit.
//
//	go test -run '^$' -fuzz FuzzParseWire -fuzztime 1m ./resolver
func FuzzParseWire(f *testing.F) {
	f.Add(longNameQuery(62))
	for _, build := range []func(m *dns.Msg){
		func(m *dns.Msg) { m.SetQuestion("www.example.com.", dns.TypeA) },
		func(m *dns.Msg) { m.SetQuestion("A-b_C.example.", dns.TypeAAAA); m.SetEdns0(1232, true) },
		func(m *dns.Msg) {
			m.SetQuestion("x.example.", dns.TypeMX)
			m.SetEdns0(4096, false)
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
		},
	} {
		m := new(dns.Msg)
		build(m)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var q wireQuery
		if !parseWire(b, &q) {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatalf("parseWire took what miekg/dns does not: %v", err)
		}
		want := wireQuery{id: m.Id, rd: m.RecursionDesired, cd: m.CheckingDisabled, name: m.Question[0].Name,
			qtype: m.Question[0].Qtype, qclass: m.Question[0].Qclass, size: dns.MinMsgSize}
		if o := m.IsEdns0(); o != nil {
			want.edns, want.do, want.size = true, o.Do(), max(dns.MinMsgSize, min(int(o.UDPSize()), maxUDP))
		}
		want.question = q.question
		want.ad, want.plain = m.AuthenticatedData, !m.Zero && !m.Authoritative && !m.RecursionAvailable && m.Rcode == 0
		if o := m.IsEdns0(); o != nil {
			want.padded = padded(o)
			want.optClass, want.optTTL = o.Hdr.Class, o.Hdr.Ttl
			want.plain = want.plain && len(o.Option) == 0
		}
		if fmt.Sprint(q) != fmt.Sprint(want) {
			t.Fatalf("parseWire read %+v, miekg/dns %+v", q, want)
		}
		// msg makes what miekg/dns unpacks, for a plain query.
		if got := q.msg(); got == nil && q.plain || got != nil && !reflect.DeepEqual(got, m) {
			t.Fatalf("msg made\n%#v\nmiekg/dns unpacked\n%#v", got, m)
		}
		if !bytes.HasPrefix(b[12:], q.question) {
			t.Fatal("the question is not the packet's")
		}
	})
}

// TestWithoutOPT: an answer stored as received loses its OPT record when
// that is last, and is refused (packed anew by the cache) otherwise.
func TestWithoutOPT(t *testing.T) {
	m := new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)
	m.Response = true
	rr, _ := dns.NewRR("www.example.com. 300 IN A 192.0.2.1")
	m.Answer = []dns.RR{rr}
	extra, _ := dns.NewRR("ns.example.com. 300 IN A 192.0.2.53")
	m.Extra = []dns.RR{extra}
	m.Compress = true
	plain, _ := m.Pack()
	if got := withoutOPT(plain); !bytes.Equal(got, plain) || &got[0] == &plain[0] {
		t.Error("an answer without OPT is not kept as it is, in a copy")
	}
	m.SetEdns0(1232, true)
	withOPT, _ := m.Pack()
	if got := withoutOPT(withOPT); !bytes.Equal(got, plain) {
		t.Errorf("OPT last: %x, want %x", got, plain)
	}
	m.Extra = []dns.RR{m.Extra[1], m.Extra[0]} // OPT first, then the A
	optFirst, _ := m.Pack()
	for name, b := range map[string][]byte{"OPT not last": optFirst, "cut short": withOPT[:len(withOPT)-3], "nil": nil, "header only": withOPT[:12]} {
		if got := withoutOPT(b); got != nil {
			t.Errorf("%s: %x, want nil", name, got)
		}
	}
}

// TestWireMaxAge: the Cache-Control max-age of an answer the wire path
// wrote is the one maxAge gives the same answer unpacked.
func TestWireMaxAge(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, c := range []struct {
		name string
		m    func(m *dns.Msg)
	}{
		{"one A", func(m *dns.Msg) { m.Answer = []dns.RR{rr("a.example. 300 IN A 192.0.2.1")} }},
		{"the least of three", func(m *dns.Msg) {
			m.Answer = []dns.RR{rr("a.example. 300 IN CNAME b.example."), rr("b.example. 60 IN A 192.0.2.1"), rr("b.example. 90 IN A 192.0.2.2")}
		}},
		{"a SOA's minimum", func(m *dns.Msg) { m.Ns = []dns.RR{rr("example. 3600 IN SOA ns. host. 1 2 3 4 45")} }},
		{"a SOA's TTL", func(m *dns.Msg) { m.Ns = []dns.RR{rr("example. 30 IN SOA ns. host. 1 2 3 4 45")} }},
		{"with an OPT", func(m *dns.Msg) {
			m.Answer = []dns.RR{rr("a.example. 120 IN A 192.0.2.1")}
			m.SetEdns0(1232, false)
		}},
		{"no records", func(m *dns.Msg) { m.Rcode = dns.RcodeServerFailure }},
	} {
		m := new(dns.Msg).SetQuestion("a.example.", dns.TypeA)
		m.Response = true
		c.m(m)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := wireMaxAge(b), maxAge(m); got != want {
			t.Errorf("%s: %d from the wire, %d from the message", c.name, got, want)
		}
	}
}

// TestUpstreamQuery: the query sent upstream is the client's question with
// RD, the client's CD and AD bits, and an OPT record of 1232 bytes with the
// client's DO bit, as miekg/dns's SetEdns0 makes it; nothing else of the
// client's.
func TestUpstreamQuery(t *testing.T) {
	for _, edns := range []bool{false, true} {
		for _, bits := range []int{0, 1, 2, 4, 7} {
			req := query("Some.Example.", dns.TypeAAAA, edns)
			req.Id, req.RecursionDesired = 4242, false
			req.CheckingDisabled, req.AuthenticatedData = bits&1 != 0, bits&2 != 0
			if edns {
				req.IsEdns0().SetDo(bits&4 != 0)
				req.IsEdns0().Option = append(req.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(192, 0, 2, 0)})
			}
			want := new(dns.Msg)
			want.Question = []dns.Question{req.Question[0]}
			want.RecursionDesired, want.CheckingDisabled, want.AuthenticatedData = true, req.CheckingDisabled, req.AuthenticatedData
			want.SetEdns0(maxUDP, edns && bits&4 != 0)
			if got := upstreamQuery(req); !reflect.DeepEqual(got, want) {
				t.Errorf("edns %v, bits %d:\n%v\nwant\n%v", edns, bits, got, want)
			}
		}
	}
}

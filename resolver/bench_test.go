package resolver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// BenchmarkServeDNS measures the request path in-process for cache hits (no
// socket I/O, so per-query costs look larger than they are in a server),
// with the default policy and with a million-name user list, to show what a
// big list adds per query. The "packed" cases also pack each answer into a
// kept buffer, as the UDP loop's writer does, so that what reply asks of
// the packer (compression) is counted too: "packed" with the stub's
// one-record answers, "packed-chain" with answers of three records.
// "alias-chain" is "default" with answers through three CNAMEs to unlisted
// names, each hit deciding its chain from the memo.
func BenchmarkServeDNS(b *testing.B) {
	list := filepath.Join(b.TempDir(), "million.txt")
	f, err := os.Create(list)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range 1_000_000 {
		fmt.Fprintf(w, "t%d.d%d.example.net\n", i, i%200_000)
	}
	w.Flush()
	f.Close()
	up := dnstest.Start(b)
	// chain answers every name with two CNAMEs and an A record, an answer
	// whose names reply compresses.
	chain := dnstest.Start(b)
	chain.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		for _, s := range []string{r.Question[0].Name + " 300 IN CNAME edge.cdn.example.", "edge.cdn.example. 300 IN CNAME e1.edge.cdn.example.", "e1.edge.cdn.example. 300 IN A 192.0.2.1"} {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	// alias answers every name through three CNAMEs to unlisted names: the
	// chain is read when the answer is cached and decided on the first
	// hit, and the memo serves every hit after.
	alias := dnstest.Start(b)
	alias.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		for _, s := range []string{r.Question[0].Name + " 300 IN CNAME a.tm.example.", "a.tm.example. 300 IN CNAME b.cdn.example.", "b.cdn.example. 300 IN CNAME c.edge.example.", "c.edge.example. 300 IN A 192.0.2.1"} {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	for _, c := range []struct {
		name, config string
		pack         bool
		up           *dnstest.Upstream
	}{
		{"default", "access: {rate_limit: 0}\n", false, up},
		{"million-list", "access: {rate_limit: 0}\npolicy:\n  default:\n    lists: [{category: telemetry, file: " + list + "}]\n", false, up},
		{"packed", "access: {rate_limit: 0}\n", true, up},
		{"packed-chain", "access: {rate_limit: 0}\n", true, chain},
		{"alias-chain", "access: {rate_limit: 0}\n", false, alias},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := start(b, c.config, c.up)
			names := []string{"www.example.com.", "v10.events.data.microsoft.com.", "api.github.com.", "x.y.example.org.", "t5.d5.example.net."}
			var reqs []*dns.Msg
			for _, n := range names {
				q := query(n, dns.TypeA, false)
				reqs = append(reqs, q)
				s.h.ServeDNS(&fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}, q) // warm the cache
			}
			fw := &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
			var w dns.ResponseWriter = fw
			if c.pack {
				w = &packWriter{fakeWriter: fw, buf: make([]byte, 0, dns.MaxMsgSize)}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				fw.msgs = fw.msgs[:0]
				s.h.ServeDNS(w, reqs[i%len(reqs)])
				i++
			}
		})
	}
}

// packWriter is a fakeWriter that also packs each answer into one kept
// buffer, as the UDP loop's batchWriter does.
type packWriter struct {
	*fakeWriter
	buf []byte
}

func (w *packWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.PackBuffer(w.buf[:cap(w.buf)])
	if err != nil {
		return err
	}
	w.buf = b[:0]
	return w.fakeWriter.WriteMsg(m)
}

// missSerial numbers the names BenchmarkUDPMiss asks for, across its runs,
// so that every query misses the cache.
var missSerial int

// BenchmarkUDPMiss measures cache misses through the real UDP loop and
// forwarder on loopback: a client sends 64 queries for new names at once
// and reads their answers, again and again. The upstream is the tests'
// stub, in the same process, so its own costs are counted too (its
// allocations above all): read the figures as a difference between two
// commits, not as a miss's cost.
func BenchmarkUDPMiss(b *testing.B) {
	up := dnstest.Start(b)
	s := start(b, "access: {rate_limit: 0}\n", up)
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const inFlight = 64
	const name = "m000000000.bench.example."
	packed, err := query(name, dns.TypeA, true).Pack()
	if err != nil {
		b.Fatal(err)
	}
	digits := packed[12+2 : 12+1+len("m000000000")] // the label's digits, patched per query
	buf := make([]byte, 1500)
	b.ReportAllocs()
	for done := 0; done < b.N; {
		n := min(inFlight, b.N-done)
		for range n {
			missSerial++
			for i, v := len(digits)-1, missSerial; i >= 0; i, v = i-1, v/10 {
				digits[i] = byte('0' + v%10)
			}
			if _, err := c.Write(packed); err != nil {
				b.Fatal(err)
			}
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for range n {
			if _, err := c.Read(buf); err != nil {
				b.Fatalf("after %d answers: %v", done, err)
			}
			done++
		}
	}
}

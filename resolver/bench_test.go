package resolver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// BenchmarkServeDNS measures the request path in-process for cache hits (no
// socket I/O, so per-query costs look larger than they are in a server),
// with the default policy and with a million-name user list, to show what a
// big list adds per query.
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
	for _, c := range []struct{ name, config string }{
		{"default", "access: {rate_limit: 0}\n"},
		{"million-list", "access: {rate_limit: 0}\npolicy:\n  default:\n    lists: [{category: telemetry, file: " + list + "}]\n"},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := start(b, c.config, up)
			names := []string{"www.example.com.", "v10.events.data.microsoft.com.", "api.github.com.", "x.y.example.org.", "t5.d5.example.net."}
			var reqs []*dns.Msg
			for _, n := range names {
				q := query(n, dns.TypeA, false)
				reqs = append(reqs, q)
				s.h.ServeDNS(&fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}, q) // warm the cache
			}
			fw := &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				fw.msgs = fw.msgs[:0]
				s.h.ServeDNS(fw, reqs[i%len(reqs)])
				i++
			}
		})
	}
}

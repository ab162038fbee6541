package resolver

import (
	"net"
	"testing"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// fakeWriter is a dns.ResponseWriter that keeps what is written.
type fakeWriter struct {
	remote net.Addr
	msgs   []*dns.Msg
}

func (w *fakeWriter) LocalAddr() net.Addr       { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (w *fakeWriter) RemoteAddr() net.Addr      { return w.remote }
func (w *fakeWriter) WriteMsg(m *dns.Msg) error { w.msgs = append(w.msgs, m); return nil }
func (w *fakeWriter) Write(b []byte) (int, error) {
	return len(b), nil
}
func (w *fakeWriter) Close() error        { return nil }
func (w *fakeWriter) TsigStatus() error   { return nil }
func (w *fakeWriter) TsigTimersOnly(bool) {}
func (w *fakeWriter) Hijack()             {}
func (w *fakeWriter) Network() string     { return "udp" }

// FuzzHandler feeds arbitrary packets through the request path as the
// server would (only packets that unpack reach the handler): nothing may
// panic, every answer packs, keeps the client's ID, and fits its UDP size.
//
//	go test -run '^$' -fuzz FuzzHandler -fuzztime 2m ./resolver
func FuzzHandler(f *testing.F) {
	for _, q := range []*dns.Msg{
		query("www.example.com.", dns.TypeA, true),
		query("v10.events.data.microsoft.com.", dns.TypeAAAA, false),
		query("example.com.", dns.TypeANY, false),
		query(dnstest.BigName, dns.TypeTXT, false),
	} {
		b, _ := q.Pack()
		f.Add(b, true)
	}
	up := dnstest.Start(f)
	s := start(f, "", up)
	f.Fuzz(func(t *testing.T, b []byte, udp bool) {
		req := new(dns.Msg)
		if req.Unpack(b) != nil || len(req.Question) != 1 {
			return // the server drops or answers these before the handler
		}
		var remote net.Addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
		if !udp {
			remote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
		}
		w := &fakeWriter{remote: remote}
		s.h.ServeDNS(w, req)
		for _, m := range w.msgs {
			out, err := m.Pack()
			if err != nil {
				t.Fatalf("answer does not pack: %v\n%v", err, m)
			}
			if m.Id != req.Id {
				t.Fatal("answer lost the client's ID")
			}
			size := dns.MinMsgSize
			if o := req.IsEdns0(); o != nil {
				size = max(dns.MinMsgSize, min(int(o.UDPSize()), maxUDP))
			}
			if udp && len(out) > size {
				t.Fatalf("%d-byte UDP answer for a client of %d", len(out), size)
			}
		}
	})
}

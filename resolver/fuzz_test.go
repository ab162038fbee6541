package resolver

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"

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

// FuzzHandler feeds arbitrary packets to the server's UDP packet handling
// and, when they unpack, to the request path as a TCP query: nothing may
// panic, and every answer packs, keeps the client's ID, and fits the
// client's UDP size. Answers the UDP loop would batch are taken from the
// batch; those of cache misses, sent by a goroutine of their own, from a
// socket that plays the client.
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
		f.Add(b)
	}
	up := dnstest.Start(f)
	s := start(f, "access: {rate_limit: 0}", up)
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer client.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	u, err := newUDPServer(s.h, conn)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		parsed := req.Unpack(b) == nil
		size := dns.MinMsgSize
		if o := req.IsEdns0(); parsed && o != nil {
			size = max(dns.MinMsgSize, min(int(o.UDPSize()), maxUDP))
		}
		check := func(out []byte, udp bool) {
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatalf("answer does not unpack: %v", err)
			}
			if m.Id != req.Id {
				t.Fatal("answer lost the client's ID")
			}
			if udp && len(out) > size {
				t.Fatalf("%d-byte UDP answer for a client of %d", len(out), size)
			}
		}

		// UDP, as the read loop does it.
		bt := &batch{out: make([]ipv4.Message, 1)}
		w := &batchWriter{udpReply: udpReply{s: u, addr: client.LocalAddr().(*net.UDPAddr)}, batch: bt, buf: make([]byte, 0, maxUDP)}
		u.handle(w, b, time.Now())
		// A query gets one answer; a packet that does not parse, is too
		// short or too long, or is a response, gets none.
		query := parsed && len(b) >= 12 && len(b) < udpQuery && !req.Response
		switch {
		case bt.n > 0 && !query:
			t.Fatal("answered a packet that is not a query")
		case bt.n > 0:
			check(bt.out[0].Buffers[0], true)
		case query: // handed off: a cache miss
			client.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 65536)
			n, err := client.Read(buf)
			if err != nil {
				t.Fatalf("a query got no answer: %v", err)
			}
			check(buf[:n], true)
		}
		u.handed.Wait()

		// TCP, as the TCP loop (tcp.go) hands a parsed query to the Handler.
		if parsed {
			w := &fakeWriter{remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}}
			s.h.ServeDNS(w, req)
			for _, m := range w.msgs {
				out, err := m.Pack()
				if err != nil {
					t.Fatalf("answer does not pack: %v\n%v", err, m)
				}
				check(out, false)
			}
		}
	})
}

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// sinkholed is the name the test servers sinkhole.
const sinkholed = "telemetry.example.com."

// answer is what the test servers answer: 0.0.0.0 and :: for sinkholed,
// 192.0.2.1 for any other A, or everything forwarded when sinkhole is false.
func answer(q *dns.Msg, sinkhole bool) *dns.Msg {
	r := new(dns.Msg).SetReply(q)
	name := q.Question[0].Name
	hdr := dns.RR_Header{Name: name, Rrtype: q.Question[0].Qtype, Class: dns.ClassINET, Ttl: 60}
	switch {
	case q.Question[0].Qtype == dns.TypeA && sinkhole && name == sinkholed:
		r.Answer = []dns.RR{&dns.A{Hdr: hdr, A: net.IPv4zero}}
	case q.Question[0].Qtype == dns.TypeA:
		r.Answer = []dns.RR{&dns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 1)}}
	case q.Question[0].Qtype == dns.TypeAAAA:
		r.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: net.IPv6zero}}
	}
	return r
}

// certificate makes a self-signed certificate for bench.test and 127.0.0.1
// and writes it to a PEM file, the CA file of the client.
func certificate(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"bench.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, ca
}

// dotServer serves DNS over TLS on loopback, queries one at a time on each
// connection; with closeAfter, it closes each connection that long after
// its first answer.
func dotServer(t *testing.T, cert tls.Certificate, sinkhole bool, closeAfter time.Duration) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"dot"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				dc := &dns.Conn{Conn: c}
				for i := 0; ; i++ {
					q, err := dc.ReadMsg()
					if err != nil || len(q.Question) != 1 {
						return
					}
					if dc.WriteMsg(answer(q, sinkhole)) != nil {
						return
					}
					if i == 0 && closeAfter > 0 {
						time.AfterFunc(closeAfter, func() { c.Close() })
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// dohServer serves DNS over HTTPS (GET, HTTP/2) on loopback and counts the
// connections it accepted.
func dohServer(t *testing.T, cert tls.Certificate, conns *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wire, err := base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
		q := new(dns.Msg)
		if r.URL.Path != "/dns-query" || err != nil || q.Unpack(wire) != nil || len(q.Question) != 1 {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		b, _ := answer(q, true).Pack()
		w.Header().Set("Content-Type", "application/dns-message")
		w.Write(b)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestCheck: a server that sinkholes passes over each transport; one that
// forwards the sinkholed name fails, naming it.
func TestCheck(t *testing.T) {
	cert, ca := certificate(t)
	ctx := context.Background()

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) { w.WriteMsg(answer(q, true)) })}
	go udp.ActivateAndServe()
	defer udp.Shutdown()
	var dohConns atomic.Int64

	for _, tc := range []struct{ transport, server string }{
		{"udp", pc.LocalAddr().String()},
		{"dot", dotServer(t, cert, true, 0)},
		{"doh", dohServer(t, cert, &dohConns)},
	} {
		var out bytes.Buffer
		o := options{transport: tc.transport, server: tc.server, ca: ca, host: "bench.test", path: "/dns-query", timeout: 2 * time.Second}
		if err := check(ctx, o, sinkholed, "host1.example.com", &out); err != nil {
			t.Errorf("%s: %v\n%s", tc.transport, err, &out)
		}
		if !strings.Contains(out.String(), "telemetry.example.com. AAAA over "+tc.transport+": NOERROR [::]") {
			t.Errorf("%s: printed\n%s", tc.transport, &out)
		}
	}

	forwarder := dotServer(t, cert, false, 0)
	o := options{transport: "dot", server: forwarder, ca: ca, host: "bench.test", timeout: 2 * time.Second}
	if err := check(ctx, o, sinkholed, "host1.example.com", io.Discard); err == nil || !strings.Contains(err.Error(), "want the sinkhole's 0.0.0.0") {
		t.Errorf("a server that forwards the sinkholed name: %v", err)
	}
	o.host = "other.test"
	if err := check(ctx, o, sinkholed, "host1.example.com", io.Discard); err == nil {
		t.Error("a certificate for another name: no error")
	}
	o.server = "192.0.2.1:853"
	if err := check(ctx, o, sinkholed, "host1.example.com", io.Discard); err == nil {
		t.Error("a server off loopback: no error")
	}
}

// TestHold: every connection is opened and stays alive at a server that
// keeps them; none is alive at one that closes them, over DNS over TLS and
// over DNS over HTTPS.
func TestHold(t *testing.T) {
	cert, ca := certificate(t)
	ctx := context.Background()
	h := holdOptions{conns: 20, from: "127.0.0.1", sources: 1, hold: 300 * time.Millisecond, name: "probe.example."}

	var out bytes.Buffer
	o := options{transport: "dot", server: dotServer(t, cert, true, 0), ca: ca, host: "bench.test", timeout: 2 * time.Second}
	if err := hold(ctx, o, h, &out); err != nil || out.String() != "opened 20 failed 0\nalive 20 of 20\n" {
		t.Errorf("dot, kept: %v\n%s", err, &out)
	}

	out.Reset()
	o.server = dotServer(t, cert, true, 100*time.Millisecond)
	if err := hold(ctx, o, h, &out); err != nil || out.String() != "opened 20 failed 0\nalive 0 of 20\n" {
		t.Errorf("dot, closed: %v\n%s", err, &out)
	}

	out.Reset()
	var conns atomic.Int64
	o = options{transport: "doh", server: dohServer(t, cert, &conns), ca: ca, host: "bench.test", path: "/dns-query", timeout: 2 * time.Second}
	if err := hold(ctx, o, h, &out); err != nil || out.String() != "opened 20 failed 0\nalive 20 of 20\n" {
		t.Errorf("doh: %v\n%s", err, &out)
	}
	if conns.Load() != 20 {
		t.Errorf("doh: the server saw %d connections, want 20", conns.Load())
	}

	if err := hold(ctx, options{transport: "udp"}, h, io.Discard); err == nil {
		t.Error("hold over udp: no error")
	}
}

// TestPerf: every query of two passes through a file is answered, over DNS
// over TLS and over HTTPS, and printed as dnsperf prints it; a server that
// never answers gets every query counted lost after -t.
func TestPerf(t *testing.T) {
	cert, ca := certificate(t)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "queries.txt")
	if err := os.WriteFile(file, []byte("host1.example.com A\n"+sinkholed+" AAAA\n\nhost2.example.com A\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var dohConns atomic.Int64
	for _, tc := range []struct{ transport, server string }{
		{"dot", dotServer(t, cert, true, 0)},
		{"doh", dohServer(t, cert, &dohConns)},
	} {
		var out bytes.Buffer
		o := options{transport: tc.transport, server: tc.server, ca: ca, host: "bench.test", path: "/dns-query", timeout: 2 * time.Second}
		if err := perf(ctx, o, perfOptions{file: file, runs: 2, outstanding: 4, conns: 2, verbose: true}, &out); err != nil {
			t.Fatalf("%s: %v", tc.transport, err)
		}
		got := out.String()
		for _, want := range []string{"Queries sent:         6\n", "Queries completed:    6 (100.00%)", "Queries lost:         0 ",
			"Response codes:       NOERROR 6 (100.00%)", "> NOERROR telemetry.example.com. AAAA "} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: no %q in\n%s", tc.transport, want, got)
			}
		}
	}
	if dohConns.Load() != 2 {
		t.Errorf("doh: %d connections, want the 2 of -c", dohConns.Load())
	}

	// A DNS over TLS server that takes queries and never answers.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	var out bytes.Buffer
	o := options{transport: "dot", server: ln.Addr().String(), ca: ca, host: "bench.test", timeout: 300 * time.Millisecond}
	began := time.Now()
	if err := perf(ctx, o, perfOptions{file: file, runs: 1, outstanding: 10, conns: 1, verbose: true}, &out); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("took %v with a timeout of 0.3 s", d)
	}
	if got := out.String(); !strings.Contains(got, "Queries lost:         3 (100.00%)") || !strings.Contains(got, "> T host2.example.com A\n") {
		t.Errorf("a server that never answers:\n%s", got)
	}
}

package resolver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/testlog"
)

// encServer is a phonehome with DNS over TLS and DNS over HTTPS on
// 127.0.0.1, its certificate signed by a CA made for the test.
type encServer struct {
	*testServer
	ca                *dnstest.CA
	certFile, keyFile string
	dot, doh          string // the listeners' addresses
	config            string // the config text, for reloads
	ups               []*dnstest.Upstream
	logs              *testlog.Buffer
}

// loopbackLeaf is a certificate for phonehome.test, 127.0.0.1 and ::1.
var loopbackLeaf = dnstest.Leaf{Names: []string{"phonehome.test"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}

// startEncrypted runs a server whose config is config with tls_listen,
// https_listen, tls_cert and tls_key added, with a certificate for leaf.
func startEncrypted(t testing.TB, opts Options, leaf dnstest.Leaf, config string, ups ...*dnstest.Upstream) *encServer {
	t.Helper()
	ca, err := dnstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &encServer{ca: ca, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), ups: ups, logs: &testlog.Buffer{}}
	s.writeCert(t, leaf)
	s.config = fmt.Sprintf("tls_listen: [\"127.0.0.1:0\"]\nhttps_listen: [\"127.0.0.1:0\"]\ntls_cert: %q\ntls_key: %q\n", s.certFile, s.keyFile) + config
	clock := &testClock{}
	opts.ResolvConf, opts.Clock = "/nonexistent", clock.now
	if opts.TryTimeout == 0 {
		opts.TryTimeout, opts.Timeout = 300*time.Millisecond, time.Second
	}
	opts.Log = slog.New(slog.NewTextHandler(s.logs, nil))
	srv, err := New(s.parse(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	s.testServer = &testServer{addr: srv.Addrs()[0], srv: srv, h: srv.handler, st: srv.State(), clock: clock}
	s.dot, s.doh = srv.TLSAddrs()[0], srv.HTTPSAddrs()[0]
	return s
}

// parse reads the server's config text anew, as a reload does.
func (s *encServer) parse(t testing.TB) *Config {
	t.Helper()
	cfg := parseConfig(t, s.config)
	cfg.Listen = []string{"127.0.0.1:0"}
	for _, u := range s.ups {
		cfg.Upstreams = append(cfg.Upstreams, u.Addr())
	}
	return cfg
}

// writeCert puts a new certificate for leaf, and its key, in the server's
// files.
func (s *encServer) writeCert(t testing.TB, leaf dnstest.Leaf) {
	t.Helper()
	c, k, err := s.ca.Issue(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.certFile, c, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *encServer) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: s.ca.Pool, ServerName: "127.0.0.1"}
}

// dialer dials from the address from ("" for any).
func dialer(from string) *net.Dialer {
	d := &net.Dialer{Timeout: 3 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return d
}

// askDoT sends m over DNS over TLS from the address from.
func (s *encServer) askDoT(from string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: "tcp-tls", Timeout: 3 * time.Second, TLSConfig: s.tlsConfig(), Dialer: dialer(from)}
	r, _, err := c.Exchange(m, s.dot)
	return r, err
}

// httpClient is a DoH client from the address from, over HTTP/2 (h2) or
// HTTP/1.1.
func (s *encServer) httpClient(t *testing.T, from string, h2 bool) *http.Client {
	p := new(http.Protocols)
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{TLSClientConfig: s.tlsConfig(), DialContext: dialer(from).DialContext, Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// dohRequest is a DoH request for m: a GET with the dns parameter, or a
// POST of the message.
func (s *encServer) dohRequest(method string, m *dns.Msg) *http.Request {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	url := "https://" + s.doh + "/dns-query"
	var r *http.Request
	if method == http.MethodGet {
		r, err = http.NewRequest(method, url+"?dns="+base64.RawURLEncoding.EncodeToString(b), nil)
	} else {
		r, err = http.NewRequest(method, url, bytes.NewReader(b))
		r.Header.Set("Content-Type", "application/dns-message")
	}
	if err != nil {
		panic(err)
	}
	return r
}

// askDoH sends r and reads its answer, with the response (body read).
func askDoH(c *http.Client, r *http.Request) (*dns.Msg, *http.Response, error) {
	resp, err := c.Do(r)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, resp, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp, fmt.Errorf("HTTP %s: %s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/dns-message" {
		return nil, resp, fmt.Errorf("Content-Type %q", ct)
	}
	m := new(dns.Msg)
	if err := m.Unpack(body); err != nil {
		return nil, resp, err
	}
	return m, resp, nil
}

// transports are the ways a test asks the encrypted listeners: DNS over
// TLS, and DNS over HTTPS by GET and POST, over HTTP/2 and HTTP/1.1.
var transports = []string{"dot", "doh-get-h2", "doh-post-h2", "doh-get-http1", "doh-post-http1"}

// ask sends m over transport from the address from.
func (s *encServer) ask(t *testing.T, transport, from string, m *dns.Msg) (*dns.Msg, error) {
	t.Helper()
	if transport == "dot" {
		return s.askDoT(from, m)
	}
	// doh-METHOD-PROTO
	parts := strings.Split(transport, "-")
	method, proto := parts[1], parts[2]
	c := s.httpClient(t, from, proto == "h2")
	r, resp, err := askDoH(c, s.dohRequest(strings.ToUpper(method), m))
	if err == nil && (proto == "h2") != (resp.ProtoMajor == 2) {
		return nil, fmt.Errorf("answered over %s", resp.Proto)
	}
	return r, err
}

// responses is phonehome_responses_total for a transport, over every rcode
// and source.
func responses(t *testing.T, reg *prometheus.Registry, transport string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, f := range fams {
		if f.GetName() != "phonehome_responses_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "transport" && l.GetValue() == transport {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestEncryptedListeners: over DNS over TLS and DNS over HTTPS (GET and
// POST, HTTP/2 and HTTP/1.1) a name is forwarded and a telemetry name is
// sinkholed with its EDE, as over UDP; the metrics count each transport.
func TestEncryptedListeners(t *testing.T) {
	up := dnstest.Start(t)
	reg := prometheus.NewRegistry()
	s := startEncrypted(t, Options{Registry: reg}, loopbackLeaf, "access: {rate_limit: 0}\n", up)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			q := query("www.example.com.", dns.TypeA, false)
			q.Id = 0xbeef
			r, err := s.ask(t, tr, "", q)
			if err != nil {
				t.Fatal(err)
			}
			if r.Id != 0xbeef || answerText(r) != dnstest.AnswerA {
				t.Errorf("forwarded: %v", r)
			}
			r, err = s.ask(t, tr, "", query("v10.events.data.microsoft.com.", dns.TypeA, true))
			if err != nil {
				t.Fatal(err)
			}
			if code, text := ede(r); answerText(r) != "0.0.0.0" || code != dns.ExtendedErrorCodeBlocked || !strings.Contains(text, "telemetry") {
				t.Errorf("sinkholed: %v", r)
			}
		})
	}
	s.testServer.ask(t, "udp", "127.0.0.1", query("udp.example.", dns.TypeA, false))
	// Observers are told once the answer is sent: wait for the last.
	for transport, want := range map[string]float64{"dot": 2, "doh": 8, "udp": 1} {
		waitFor(t, fmt.Sprintf("phonehome_responses_total{transport=%q} %v", transport, want), func() bool { return responses(t, reg, transport) == want })
	}
	if got := responses(t, reg, "tcp"); got != 0 {
		t.Errorf("phonehome_responses_total{transport=\"tcp\"} = %v", got)
	}
	if n := up.Seen("v10.events.data.microsoft.com"); n != 0 {
		t.Errorf("a sinkholed name went upstream %d times", n)
	}
}

// TestTLS12Suites: over TLS 1.2 the listeners take AEAD suites only (RFC
// 9113, section 9.2.2; RFC 8310): a client offering CBC suites alone gets
// no handshake, over DoT or DoH, and one offering GCM does.
func TestTLS12Suites(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "", up)
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}
	gcm := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	for _, addr := range []string{s.dot, s.doh} {
		for _, c := range []struct {
			suites []uint16
			ok     bool
		}{{cbc, false}, {gcm, true}} {
			tc := s.tlsConfig()
			tc.MaxVersion, tc.CipherSuites = tls.VersionTLS12, c.suites
			conn, err := tls.DialWithDialer(dialer(""), "tcp", addr, tc)
			if err == nil {
				conn.Close()
			}
			if (err == nil) != c.ok {
				t.Errorf("%s, TLS 1.2 with %s: handshake error %v", addr, tls.CipherSuiteName(c.suites[0]), err)
			}
		}
	}
}

// TestEncryptedAccess: a client outside access.allow is turned away over
// every transport: REFUSED over UDP, and over TCP, TLS and HTTPS its
// connection is closed before anything is read, the TLS handshake
// included; nothing goes upstream.
func TestEncryptedAccess(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "access: {allow: [127.0.0.1/32]}\n", up)
	g := s.srv.tcpGate
	q := query("www.example.com.", dns.TypeA, false)
	if r := s.testServer.ask(t, "udp", "127.0.0.2", q); r.Rcode != dns.RcodeRefused {
		t.Errorf("udp: %v", r)
	}
	if _, err := s.exchange("tcp", "127.0.0.2", q); err == nil {
		t.Error("tcp: answered")
	}
	for _, tr := range transports[:3] {
		if r, err := s.ask(t, tr, "127.0.0.2", q); err == nil {
			t.Errorf("%s: answered %v", tr, r)
		}
	}
	waitFor(t, "every connection closed for access", func() bool { return g.count(tcpAccess) >= 4 })
	if up.Queries() != 0 {
		t.Errorf("%d queries went upstream", up.Queries())
	}
	// From inside, every transport answers.
	for _, tr := range transports {
		if r, err := s.ask(t, tr, "127.0.0.1", q); err != nil || answerText(r) != dnstest.AnswerA {
			t.Errorf("%s from inside: %v %v", tr, r, err)
		}
	}
}

// TestCertificateReload: phonehome starts with an expired certificate,
// says so, and clients refuse it; a new one put in its place is used from
// the reload on, without a restart; a broken certificate or a key that is
// not the certificate's is refused at reload, and the good one stays.
func TestCertificateReload(t *testing.T) {
	up := dnstest.Start(t)
	expired := loopbackLeaf
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	s := startEncrypted(t, Options{}, expired, "", up)
	if !strings.Contains(s.logs.String(), "expired on") {
		t.Errorf("no warning of the expired certificate:\n%s", s.logs.String())
	}
	q := query("www.example.com.", dns.TypeA, false)
	for _, tr := range []string{"dot", "doh-post-h2"} {
		if _, err := s.ask(t, tr, "", q); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("%s with an expired certificate: %v", tr, err)
		}
	}

	s.writeCert(t, loopbackLeaf)
	if err := s.srv.Reload(s.parse(t)); err != nil {
		t.Fatal(err)
	}
	good := s.srv.State().Cert.Leaf
	for _, tr := range []string{"dot", "doh-post-h2", "doh-get-http1"} {
		if r, err := s.ask(t, tr, "", q); err != nil || answerText(r) != dnstest.AnswerA {
			t.Errorf("%s after the reload: %v %v", tr, r, err)
		}
	}
	conn, err := tls.DialWithDialer(dialer(""), "tcp", s.dot, s.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().PeerCertificates[0]; !got.Equal(good) {
		t.Errorf("the handshake gave certificate %v, not the new one %v", got.SerialNumber, good.SerialNumber)
	}
	conn.Close()

	// A key that is not the certificate's, then a certificate file that is
	// not one: each refused at its line, the good certificate kept.
	other, _, _ := s.ca.Issue(loopbackLeaf)
	os.WriteFile(s.certFile, other, 0o644)
	err = s.srv.Reload(s.parse(t))
	if err == nil || !strings.Contains(err.Error(), "test.yaml:4:") || !strings.Contains(err.Error(), "not the private key of the certificate") {
		t.Errorf("a key that is not the certificate's: %v", err)
	}
	os.WriteFile(s.certFile, []byte("not a certificate\n"), 0o644)
	err = s.srv.Reload(s.parse(t))
	if err == nil || !strings.Contains(err.Error(), "test.yaml:3:") || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a broken certificate: %v", err)
	}
	if !s.srv.State().Cert.Leaf.Equal(good) {
		t.Error("a failed reload replaced the certificate")
	}
	if r, err := s.ask(t, "dot", "", q); err != nil || answerText(r) != dnstest.AnswerA {
		t.Errorf("after failed reloads: %v %v", r, err)
	}
}

// clients records the client address of every answered query, in turn.
type clients struct {
	mu   sync.Mutex
	seen []string
}

func (c *clients) Answered(a Answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, a.Client.String())
}

// nth is the client of the nth query answered (from 1), or "".
func (c *clients) nth(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) < n {
		return ""
	}
	return c.seen[n-1]
}

// TestTrustedProxies: X-Forwarded-For names the client only when the
// request comes from a trusted proxy, and then the access list, the rate
// limit and the policy see that client; a trusted proxy is held to the
// connection bound in all, not per client.
func TestTrustedProxies(t *testing.T) {
	up := dnstest.Start(t)
	seen, answered, hc := &clients{}, 0, map[string]*http.Client{}
	s := startEncrypted(t, Options{Observers: []Observer{seen}, TCP: TCPLimits{PerClient: 1, Idle: time.Minute}}, loopbackLeaf, `
trusted_proxies: [127.0.0.1]
access: {allow: [127.0.0.0/8, 10.0.0.0/8], rate_limit: 0}
policy:
  groups:
    - {name: kids, clients: [10.1.1.1], actions: {spotlight: sinkhole}}
`, up)
	for _, c := range []struct {
		name, from, xff string
		client, answer  string // "" for an HTTP error
	}{
		{"proxied.example.", "127.0.0.1", "192.0.2.9, 10.1.1.1", "10.1.1.1", dnstest.AnswerA},
		// The group of the client the proxy names decides.
		{"arc.msn.com.", "127.0.0.1", "10.1.1.1", "10.1.1.1", "0.0.0.0"},
		// A second trusted proxy, to the right, is passed over.
		{"twice.example.", "127.0.0.1", "10.1.1.1, 127.0.0.1", "10.1.1.1", dnstest.AnswerA},
		{"port.example.", "127.0.0.1", "[2001:db8::7]:4711", "2001:db8::7", ""},
		// Not from a trusted proxy: the header is the client's own word.
		{"untrusted.example.", "127.0.0.2", "10.1.1.1", "127.0.0.2", dnstest.AnswerA},
		{"api.msn.com.", "127.0.0.2", "10.1.1.1", "127.0.0.2", dnstest.AnswerA},
		{"direct.example.", "127.0.0.1", "", "127.0.0.1", dnstest.AnswerA},
		{"broken.example.", "127.0.0.1", "not-an-address", "", ""},
	} {
		r := s.dohRequest(http.MethodPost, query(c.name, dns.TypeA, false))
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		// One client per address, which keeps its connection: the bound
		// per client is 1.
		if hc[c.from] == nil {
			hc[c.from] = s.httpClient(t, c.from, true)
		}
		m, resp, err := askDoH(hc[c.from], r)
		switch {
		case c.client == "":
			if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %v %v", c.name, m, err)
			}
			continue
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
			continue
		case c.answer == "" && m.Rcode != dns.RcodeRefused:
			t.Errorf("%s from %s outside access.allow: %v", c.name, c.client, m)
		case c.answer != "" && answerText(m) != c.answer:
			t.Errorf("%s: %s, want %s", c.name, answerText(m), c.answer)
		}
		answered++
		waitFor(t, c.name+" observed", func() bool { return seen.nth(answered) != "" })
		if got := seen.nth(answered); got != c.client {
			t.Errorf("%s from %s with X-Forwarded-For %q: client %s, want %s", c.name, c.from, c.xff, got, c.client)
		}
	}

	// The bound per client (1 here) does not hold for the trusted proxy.
	g := s.srv.tcpGate
	before := g.count(tcpPerClient)
	for _, from := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.3", "127.0.0.3"} {
		c, err := dialer(from).Dial("tcp", s.doh)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, "one closed per client", func() bool { return g.count(tcpPerClient) == before+1 })
}

// TestDDR: _dns.resolver.arpa, type SVCB, names each encrypted listener:
// ALPN, port, the address and for DNS over HTTPS the path, with the
// certificate's name as target and its address in the additional section;
// over every transport.
func TestDDR(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "", up)
	_, dotPort, _ := net.SplitHostPort(s.dot)
	_, dohPort, _ := net.SplitHostPort(s.doh)
	check := func(t *testing.T, r *dns.Msg) {
		t.Helper()
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
			t.Fatalf("answer: %v", r)
		}
		want := []struct{ alpn, port, path string }{{"h2", dohPort, "/dns-query{?dns}"}, {"dot", dotPort, ""}}
		for i, rr := range r.Answer {
			svcb, ok := rr.(*dns.SVCB)
			if !ok {
				t.Fatalf("record %d is %T", i, rr)
			}
			got := map[string]string{}
			for _, kv := range svcb.Value {
				got[kv.Key().String()] = kv.String()
			}
			if svcb.Priority != uint16(i+1) || svcb.Target != "phonehome.test." || got["alpn"] != want[i].alpn || got["port"] != want[i].port ||
				got["ipv4hint"] != "127.0.0.1" || got["dohpath"] != want[i].path {
				t.Errorf("record %d: %v", i, svcb)
			}
		}
		var extra []string
		for _, rr := range r.Extra {
			if a, ok := rr.(*dns.A); ok {
				extra = append(extra, a.Hdr.Name+" "+a.A.String())
			}
		}
		if strings.Join(extra, ",") != "phonehome.test. 127.0.0.1" {
			t.Errorf("additional: %v", r.Extra)
		}
	}
	ddr := query("_dns.resolver.arpa.", dns.TypeSVCB, true)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) { check(t, s.testServer.ask(t, network, "", ddr)) })
	}
	for _, tr := range []string{"dot", "doh-get-h2"} {
		t.Run(tr, func(t *testing.T) {
			r, err := s.ask(t, tr, "", ddr)
			if err != nil {
				t.Fatal(err)
			}
			check(t, r)
		})
	}
	// Other types of the name: NODATA, as without listeners.
	if r := s.testServer.ask(t, "udp", "", query("_dns.resolver.arpa.", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("type A: %v", r)
	}
	if up.Seen("_dns.resolver.arpa") != 0 {
		t.Error("the DDR name went upstream")
	}
}

// ddrWriter is a writer for DDR answers with any local and remote address.
type ddrWriter struct {
	fakeWriter
	local net.Addr
}

func (w *ddrWriter) LocalAddr() net.Addr { return w.local }

// TestDDRAddresses: a listener on a wildcard address is given at the
// address the query came to (of its family), and one on loopback only to
// clients on loopback; the target is the certificate's first host name
// (not a wildcard), given the hinted addresses in the additional section.
// A certificate that names no host gives no record at all: RFC 9462,
// section 4, rules out the target "." for _dns.resolver.arpa.
func TestDDRAddresses(t *testing.T) {
	d := &designated{}
	for _, e := range []struct {
		doh  bool
		addr string
	}{{true, "0.0.0.0:443"}, {false, "[::]:853"}, {false, "127.0.0.1:853"}} {
		d.add(e.doh, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(e.addr)))
	}
	named := &State{Cert: &tls.Certificate{Leaf: &x509.Certificate{DNSNames: []string{"*.home.arpa", "PhoneHome.home.arpa"}}}}
	for _, c := range []struct {
		local, remote string
		want          []string
		extra         string
	}{
		{"192.168.1.2:53", "192.168.1.30:5000", []string{"h2 443 ipv4hint=192.168.1.2", "dot 853 ipv4hint=192.168.1.2"}, "A 192.168.1.2"},
		{"[fd00::2]:53", "[fd00::30]:5000", []string{"dot 853 ipv6hint=fd00::2"}, "AAAA fd00::2"},
		{"127.0.0.1:53", "127.0.0.1:5000", []string{"h2 443 ipv4hint=127.0.0.1", "dot 853 ipv4hint=127.0.0.1", "dot 853 ipv4hint=127.0.0.1"}, "A 127.0.0.1"},
		{"0.0.0.0:53", "192.168.1.30:5000", []string{}, ""},
	} {
		w := &ddrWriter{fakeWriter: fakeWriter{remote: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(c.remote))}, local: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(c.local))}
		m := rcodeMsg(query("_dns.resolver.arpa.", dns.TypeSVCB, false), dns.RcodeSuccess)
		d.answer(m, w, named)
		got := []string{}
		for _, rr := range m.Answer {
			svcb := rr.(*dns.SVCB)
			if svcb.Target != "phonehome.home.arpa." {
				t.Errorf("target %s, want the certificate's host name", svcb.Target)
			}
			var kv []string
			for _, v := range svcb.Value {
				if v.Key() == dns.SVCB_ALPN || v.Key() == dns.SVCB_PORT {
					kv = append(kv, v.String())
				} else if v.Key() != dns.SVCB_DOHPATH {
					kv = append(kv, v.Key().String()+"="+v.String())
				}
			}
			got = append(got, strings.Join(kv, " "))
		}
		if strings.Join(got, "; ") != strings.Join(c.want, "; ") {
			t.Errorf("a query to %s from %s: %q, want %q", c.local, c.remote, got, c.want)
		}
		var extra []string
		for _, rr := range m.Extra {
			h := rr.Header()
			extra = append(extra, h.Name+" "+dns.TypeToString[h.Rrtype]+" "+strings.TrimPrefix(rr.String(), h.String()))
		}
		want := ""
		if c.extra != "" {
			want = "phonehome.home.arpa. " + c.extra
		}
		if strings.Join(extra, "; ") != want {
			t.Errorf("a query to %s from %s: additional %q, want %q", c.local, c.remote, extra, want)
		}

		// Without a host name: NODATA, whatever the listeners.
		for _, st := range []*State{{}, {Cert: &tls.Certificate{Leaf: &x509.Certificate{DNSNames: []string{"*.home.arpa"}, IPAddresses: []net.IP{net.ParseIP("192.168.1.2")}}}}} {
			m := rcodeMsg(query("_dns.resolver.arpa.", dns.TypeSVCB, false), dns.RcodeSuccess)
			d.answer(m, w, st)
			if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(m.Extra) != 0 {
				t.Errorf("a query to %s from %s, the certificate naming no host: %v", c.local, c.remote, m)
			}
		}
	}
}

// TestDDRNeedsHostName: with a certificate that names addresses only, DDR
// is off, _dns.resolver.arpa NODATA, and phonehome says why at start and
// at each reload; a certificate with a host name put in its place turns
// DDR on from the reload.
func TestDDRNeedsHostName(t *testing.T) {
	up := dnstest.Start(t)
	addressesOnly := dnstest.Leaf{IPs: loopbackLeaf.IPs}
	s := startEncrypted(t, Options{}, addressesOnly, "", up)
	const warning = "names no host"
	if n := strings.Count(s.logs.String(), warning); n != 1 {
		t.Errorf("%d warnings at start:\n%s", n, s.logs.String())
	}
	ddr := query("_dns.resolver.arpa.", dns.TypeSVCB, true)
	check := func(what string, records int) {
		t.Helper()
		for _, network := range []string{"udp", "tcp"} {
			r := s.testServer.ask(t, network, "", ddr)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != records {
				t.Errorf("%s, over %s: %v", what, network, r)
			}
			for _, rr := range r.Answer {
				if rr.(*dns.SVCB).Target != "phonehome.test." {
					t.Errorf("%s: target %s", what, rr.(*dns.SVCB).Target)
				}
			}
		}
		if r, err := s.ask(t, "dot", "", ddr); err != nil || len(r.Answer) != records {
			t.Errorf("%s, over TLS: %v %v", what, r, err)
		}
	}
	check("addresses only", 0)

	s.writeCert(t, loopbackLeaf)
	if err := s.srv.Reload(s.parse(t)); err != nil {
		t.Fatal(err)
	}
	check("with a host name", 2)
	if n := strings.Count(s.logs.String(), warning); n != 1 {
		t.Errorf("%d warnings once the certificate has a host name, want the one at start:\n%s", n, s.logs.String())
	}

	s.writeCert(t, addressesOnly)
	if err := s.srv.Reload(s.parse(t)); err != nil {
		t.Fatal(err)
	}
	check("addresses only again", 0)
	if n := strings.Count(s.logs.String(), warning); n != 2 {
		t.Errorf("%d warnings after the reload:\n%s", n, s.logs.String())
	}
	if up.Seen("_dns.resolver.arpa") != 0 {
		t.Error("the DDR name went upstream")
	}
}

// TestDoHCacheControl: a DoH answer may be cached by HTTP for its smallest
// TTL: the record's, the sinkhole's, a negative answer's SOA minimum, and
// not at all for REFUSED; and only by the client, never by a shared cache
// (private), since the answer depends on the client's group and on pauses.
func TestDoHCacheControl(t *testing.T) {
	up := dnstest.Start(t)
	up.SetTTL(123)
	s := startEncrypted(t, Options{}, loopbackLeaf, "sinkhole: {ttl: 45s}\n", up)
	c := s.httpClient(t, "", true)
	for _, q := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"www.example.com.", dns.TypeA, "private, max-age=123"},
		{"v10.events.data.microsoft.com.", dns.TypeA, "private, max-age=45"},
		{"v10.events.data.microsoft.com.", dns.TypeTXT, "private, max-age=45"}, // NODATA with the sinkhole's SOA
		{"gone." + dnstest.NXDomainZone, dns.TypeA, fmt.Sprintf("private, max-age=%d", dnstest.NegativeTTL)},
	} {
		_, resp, err := askDoH(c, s.dohRequest(http.MethodGet, query(q.name, q.qtype, false)))
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		if got := resp.Header.Get("Cache-Control"); got != q.want {
			t.Errorf("%s %s: Cache-Control %q, want %q", q.name, dns.TypeToString[q.qtype], got, q.want)
		}
	}
	// REFUSED: no record, no caching. Asked through a trusted proxy for a
	// client outside access.allow.
	if err := s.reloadWith(t, "trusted_proxies: [127.0.0.1]\naccess: {allow: [127.0.0.1/32]}\n"); err != nil {
		t.Fatal(err)
	}
	r := s.dohRequest(http.MethodGet, query("www.example.com.", dns.TypeA, false))
	r.Header.Set("X-Forwarded-For", "192.0.2.77")
	m, resp, err := askDoH(c, r)
	if err != nil || m.Rcode != dns.RcodeRefused || resp.Header.Get("Cache-Control") != "private, max-age=0" {
		t.Errorf("refused: %v %v %v", m, resp.Header, err)
	}
}

// reloadWith reloads the server with config in place of the text after the
// listeners' keys.
func (s *encServer) reloadWith(t *testing.T, config string) error {
	t.Helper()
	head, _, _ := strings.Cut(s.config, "tls_key:")
	keyLine := "tls_key: " + fmt.Sprintf("%q", s.keyFile) + "\n"
	s.config = head + keyLine + config
	return s.srv.Reload(s.parse(t))
}

// TestPadding: a client that pads its query gets an answer padded to a
// multiple of 468 bytes over TLS and HTTPS (RFC 8467); no padding for one
// that did not ask, nor over UDP and TCP.
func TestPadding(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "access: {rate_limit: 0}\n", up)
	paddedQuery := func(name string) *dns.Msg {
		q := query(name, dns.TypeA, true)
		o := q.IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 128-q.Len()-4)})
		return q
	}
	padding := func(m *dns.Msg) (int, bool) {
		if o := m.IsEdns0(); o != nil {
			for _, e := range o.Option {
				if p, ok := e.(*dns.EDNS0_PADDING); ok {
					return len(p.Padding), true
				}
			}
		}
		return 0, false
	}
	for _, tr := range []string{"dot", "doh-post-h2", "doh-get-http1"} {
		for _, name := range []string{"www.example.com.", "v10.events.data.microsoft.com.", "_dns.resolver.arpa."} {
			r, err := s.ask(t, tr, "", paddedQuery(name))
			if err != nil {
				t.Fatalf("%s %s: %v", tr, name, err)
			}
			b, _ := r.Pack()
			if _, ok := padding(r); !ok || len(b)%paddingBlock != 0 {
				t.Errorf("%s %s: %d bytes (padding %v)", tr, name, len(b), ok)
			}
			r, err = s.ask(t, tr, "", query(name, dns.TypeA, true))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := padding(r); ok {
				t.Errorf("%s %s: padded without asking", tr, name)
			}
		}
	}
	for _, network := range []string{"udp", "tcp"} {
		if r := s.testServer.ask(t, network, "", paddedQuery("www.example.com.")); r.IsEdns0() == nil {
			t.Errorf("%s: no EDNS0", network)
		} else if _, ok := padding(r); ok {
			t.Errorf("%s: padded in the clear", network)
		}
	}
}

// TestDoTBounds: the bounds of DNS over TCP hold for DNS over TLS, with the
// same counts: connections per client, a connection that never starts its
// handshake (cut at the idle time of plain TCP, however long the idle time
// of TLS connections), one idle after its answer, and one trickling a
// message.
func TestDoTBounds(t *testing.T) {
	up := dnstest.Start(t)
	// A second, not less: the handshake happens within the idle time.
	// Once it is done, a connection may idle for two.
	s := startEncrypted(t, Options{TCP: TCPLimits{PerClient: 2, Idle: time.Second, Message: time.Second, TLSIdle: 2 * time.Second}}, loopbackLeaf, "", up)
	g := s.srv.tcpGate

	// Per client: the third connection from one address is closed unread.
	var held []net.Conn
	for range 3 {
		c, err := dialer("127.0.0.2").Dial("tcp", s.dot)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, "one closed per client", func() bool { return g.count(tcpPerClient) == 1 })
	// The two held never start a handshake: closed as idle.
	for _, c := range held[:2] {
		if why := closedByServer(c); why != "" {
			t.Errorf("a connection without a handshake: %s", why)
		}
		c.Close()
	}
	held[2].Close()
	waitFor(t, "two closed idle", func() bool { return g.count(tcpIdle) == 2 })

	// Idle after an answer.
	conn, err := tls.DialWithDialer(dialer(""), "tcp", s.dot, s.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dc := &dns.Conn{Conn: conn}
	if err := dc.WriteMsg(query("idle.example.", dns.TypeA, false)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r, err := dc.ReadMsg(); err != nil || answerText(r) != dnstest.AnswerA {
		t.Fatalf("answer: %v %v", r, err)
	}
	if why := closedByServer(conn); why != "" {
		t.Errorf("idle DoT connection: %s", why)
	}
	waitFor(t, "three closed idle", func() bool { return g.count(tcpIdle) == 3 })

	// A message that trickles: its first byte, then nothing.
	slow, err := tls.DialWithDialer(dialer(""), "tcp", s.dot, s.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	if why := closedByServer(slow); why != "" {
		t.Errorf("a trickling DoT client: %s", why)
	}
	waitFor(t, "one closed slow", func() bool { return g.count(tcpSlow) == 1 })
	waitFor(t, "none open", func() bool { return g.conns() == 0 })
}

// TestEncryptedConfigErrors: the encrypted listeners' keys are checked
// with the rest of the config, each error at its line.
func TestEncryptedConfigErrors(t *testing.T) {
	for _, c := range []struct{ config, want string }{
		{"tls_listen: [\"127.0.0.1:853\"]\n", "test.yaml:1:1: tls_listen needs a certificate: tls_cert and tls_key"},
		{"https_listen: [192.168.1.2]\n", "test.yaml:1:1: https_listen needs a certificate"},
		{"tls_cert: cert.pem\n", "test.yaml:1:1: tls_cert needs tls_key"},
		{"tls_listen: [\"localhost:853\"]\ntls_cert: c\ntls_key: k\n", "test.yaml:1:14: tls_listen: \"localhost:853\": \"localhost\" is not an IP address"},
		{"tls_listen: [127.0.0.1]\ntls_cert: c\ntls_key: k\nupstreams: [\"tls://127.0.0.1:853#phonehome.test\"]\n", "test.yaml:4:1: upstream tls://127.0.0.1:853#phonehome.test is phonehome's own listen address 127.0.0.1:853: queries would loop"},
		{"https_listen: [\"[::1]:8443\"]\ntls_cert: c\ntls_key: k\nupstreams: [\"https://phonehome.test:8443/dns-query#::1\"]\n", "queries would loop"},
		{"trusted_proxies: [192.168.1.300]\n", "test.yaml:1:19: trusted_proxies: bad client address \"192.168.1.300\""},
	} {
		cfg := &Config{}
		src, err := config.Decode("test.yaml", []byte(c.config), cfg)
		if err == nil {
			cfg.Source = src
			_, _, err = prepare(cfg, nil, &Options{ResolvConf: "/nonexistent"})
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.config, err, c.want)
		}
	}
}

// TestEncryptedDefaults: an address alone gets the usual port.
func TestEncryptedDefaults(t *testing.T) {
	cfg := parseConfig(t, "tls_listen: [192.168.1.2, \"::\", \"[fd00::2]\", \"10.0.0.1:8853\"]\nhttps_listen: [192.168.1.2]\ntls_cert: c\ntls_key: k\n")
	cfg.SetDefaults()
	if got := strings.Join(cfg.TLSListen, " "); got != "192.168.1.2:853 [::]:853 [fd00::2]:853 10.0.0.1:8853" {
		t.Errorf("tls_listen: %s", got)
	}
	if got := strings.Join(cfg.HTTPSListen, " "); got != "192.168.1.2:443" {
		t.Errorf("https_listen: %s", got)
	}
}

// TestCertCoverage: the warning names the addresses the certificate lacks
// and says why they matter; loopback addresses need none. A certificate
// that names no host is warned of too: DDR is off without one.
func TestCertCoverage(t *testing.T) {
	ca, err := dnstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(leaf dnstest.Leaf) *tls.Certificate {
		t.Helper()
		certPEM, keyPEM, err := ca.Issue(leaf)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &cert
	}
	cert := issue(dnstest.Leaf{Names: []string{"phonehome.home.arpa"}, IPs: []net.IP{net.ParseIP("192.168.1.2")}})
	cfg := &Config{Listen: []string{"192.168.1.2:53", "192.168.1.3:53", "127.0.0.1:53", "[fd00::2]:53"}, TLSListen: []string{"192.168.1.2:853"}, TLSCert: "cert.pem"}
	warns := certWarnings(cfg, cert, time.Now())
	if len(warns) != 1 || !strings.Contains(warns[0], "does not name 192.168.1.3, fd00::2, where phonehome listens") || !strings.Contains(warns[0], "DDR") {
		t.Errorf("warnings: %q", warns)
	}
	// Addresses only, or a wildcard name: no host for DDR's records.
	for _, leaf := range []dnstest.Leaf{{IPs: []net.IP{net.ParseIP("192.168.1.2")}}, {Names: []string{"*.home.arpa"}, IPs: []net.IP{net.ParseIP("192.168.1.2")}}} {
		cfg := &Config{Listen: []string{"192.168.1.2:53"}, HTTPSListen: []string{"192.168.1.2:443"}, TLSCert: "cert.pem"}
		warns := certWarnings(cfg, issue(leaf), time.Now())
		if len(warns) != 1 || !strings.Contains(warns[0], "cert.pem names no host") || !strings.Contains(warns[0], "DDR is off") || !strings.Contains(warns[0], "RFC 9462, section 4") {
			t.Errorf("a certificate for %v %v: %q", leaf.Names, leaf.IPs, warns)
		}
	}
	cfg.TLSListen = nil
	if warns := certWarnings(cfg, issue(dnstest.Leaf{IPs: []net.IP{net.ParseIP("192.168.1.2")}}), time.Now()); len(warns) != 0 {
		t.Errorf("without encrypted listeners: %q", warns)
	}
	if warns := certWarnings(cfg, cert, time.Now().Add(48*time.Hour)); len(warns) != 1 || !strings.Contains(warns[0], "expired on") {
		t.Errorf("expired: %q", warns)
	}
}

// TestDoHRequests: what is not a DNS-over-HTTPS query gets a 4xx status.
func TestDoHRequests(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "", up)
	c := s.httpClient(t, "", true)
	q, _ := query("www.example.com.", dns.TypeA, false).Pack()
	resp := func(m *dns.Msg) []byte { m.Response = true; b, _ := m.Pack(); return b }(query("www.example.com.", dns.TypeA, false))
	base := "https://" + s.doh
	for _, r := range []struct {
		method, path, ctype string
		body                []byte
		want                int
	}{
		{"GET", "/dns-query?dns=" + base64.RawURLEncoding.EncodeToString(q), "", nil, 200},
		{"GET", "/dns-query?dns=" + base64.URLEncoding.EncodeToString(q), "", nil, 200}, // padding forgiven
		{"GET", "/dns-query", "", nil, 400},
		{"GET", "/dns-query?dns=!!!", "", nil, 400},
		{"GET", "/dns-query?dns=AAAA", "", nil, 400},
		{"GET", "/dns-query?dns=" + base64.RawURLEncoding.EncodeToString(resp), "", nil, 400},
		{"GET", "/dns-query?dns=" + strings.Repeat("A", 6000), "", nil, 414},
		{"POST", "/dns-query", "application/dns-message", q, 200},
		{"POST", "/dns-query", "application/dns-message; charset=binary", q, 200},
		{"POST", "/dns-query", "application/json", q, 415},
		{"POST", "/dns-query", "", q, 415},
		{"POST", "/dns-query", "application/dns-message", append(bytes.Clone(q), make([]byte, 5000)...), 413},
		{"POST", "/dns-query", "application/dns-message", []byte{1, 2, 3}, 400},
		{"POST", "/dns-query", "application/dns-message", append(bytes.Clone(q[:12]), 0xff), 400},
		{"PUT", "/dns-query", "application/dns-message", q, 405},
		{"DELETE", "/dns-query", "", nil, 405},
		{"GET", "/other?dns=" + base64.RawURLEncoding.EncodeToString(q), "", nil, 404},
	} {
		req, err := http.NewRequest(r.method, base+r.path, bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		if r.ctype != "" {
			req.Header.Set("Content-Type", r.ctype)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", r.method, r.path, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != r.want {
			t.Errorf("%s %.60s (%s): %d, want %d", r.method, r.path, r.ctype, res.StatusCode, r.want)
		}
		if r.want == 405 && res.Header.Get("Allow") != "GET, POST" {
			t.Errorf("405 without Allow: %v", res.Header)
		}
	}
	// A body longer than a query, its length said (over either protocol)
	// or not (HTTP/2 only: over HTTP/1.1 the server then closes the
	// connection with the rest unread, which may reset it before the
	// client reads the 413): 413.
	for _, h2 := range []bool{true, false} {
		c := s.httpClient(t, "", h2)
		for _, length := range []int64{5000, -1} {
			if length < 0 && !h2 {
				continue
			}
			req, err := http.NewRequest("POST", base+"/dns-query", bytes.NewReader(append(bytes.Clone(q), make([]byte, 5000-len(q))...)))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = length
			req.Header.Set("Content-Type", "application/dns-message")
			res, err := c.Do(req)
			if err != nil {
				t.Fatalf("a 5000-byte POST (HTTP/2 %v, length %d): %v", h2, length, err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("a 5000-byte POST (HTTP/2 %v, length %d): %d", h2, length, res.StatusCode)
			}
		}
	}
}

// TestDoHRateLimit: over the rate limit a DoH request gets 429, where a UDP
// query is dropped.
func TestDoHRateLimit(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "access: {rate_limit: 1}\n", up)
	c := s.httpClient(t, "", true)
	codes := map[int]int{}
	for range 10 {
		_, resp, _ := askDoH(c, s.dohRequest(http.MethodPost, query("www.example.com.", dns.TypeA, false)))
		if resp != nil {
			codes[resp.StatusCode]++
		}
	}
	if codes[200] < 1 || codes[429] < 1 || codes[200]+codes[429] != 10 {
		t.Errorf("statuses: %v", codes)
	}
}

// TestDoHBounds: the bounds of DNS over TCP hold for DNS over HTTPS:
// connections per client, a connection that never starts its handshake,
// and one idle after its answer, over HTTP/2 (doh2.go) and HTTP/1.1
// (net/http).
func TestDoHBounds(t *testing.T) {
	up := dnstest.Start(t)
	// A second, not less: the handshake is bounded by the message time.
	s := startEncrypted(t, Options{TCP: TCPLimits{PerClient: 2, Idle: time.Second, Message: time.Second, TLSIdle: time.Second}}, loopbackLeaf, "", up)
	g := s.srv.tcpGate
	var held []net.Conn
	for range 3 {
		c, err := dialer("127.0.0.2").Dial("tcp", s.doh)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, "one closed per client", func() bool { return g.count(tcpPerClient) == 1 })
	for _, c := range held[:2] {
		if why := closedByServer(c); why != "" {
			t.Errorf("a connection without a handshake: %s", why)
		}
	}
	waitFor(t, "none open", func() bool { return g.conns() == 0 })
	for _, h2 := range []bool{true, false} {
		c := s.httpClient(t, "", h2)
		if _, _, err := askDoH(c, s.dohRequest(http.MethodPost, query("idle.example.", dns.TypeA, false))); err != nil {
			t.Fatal(err)
		}
		// The client keeps its connection; the server closes it.
		waitFor(t, "the idle connection closed", func() bool { return g.conns() == 0 })
	}
}

// TestIdleHandOver: a DoT or DoH connection whose reader answered a
// query and then waited idleProbe hands the wait to a goroutine of its own
// (one whose stack has not grown answering), which waits on the socket
// (on Linux) and serves on, a query handed off meanwhile included; idle
// again to the end of its idle time, the connection is closed and
// counted.
func TestIdleHandOver(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{TCP: TCPLimits{TLSIdle: 2 * time.Second}}, loopbackLeaf, "access: {rate_limit: 0}\n", up)
	handedOver := func(creator string) bool {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "created by github.com/phonehome/phonehome/resolver."+creator+" ") &&
				(runtime.GOOS != "linux" || strings.Contains(g, "resolver.awaitReadable(")) {
				return true
			}
		}
		return false
	}

	_, ask := s.dotAsker(t)
	ask("first.example.")
	waitFor(t, "the DoT reader handed over", func() bool { return handedOver("(*tcpConn).loop") })
	ask("second.example.")
	// A query that waits for a slow upstream past idleProbe is answered,
	// though its reader has handed over meanwhile and the connection has
	// dropped its answer buffers.
	up.SetMode(dnstest.Delay)
	up.SetDelay(250 * time.Millisecond)
	ask("slow.example.")
	up.SetMode(dnstest.Answer)

	doh := s.httpClient(t, "", true)
	if _, _, err := askDoH(doh, s.dohRequest(http.MethodGet, query("first.example.", dns.TypeA, false))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the DoH reader handed over", func() bool { return handedOver("(*doh2Conn).serve") })
	if _, _, err := askDoH(doh, s.dohRequest(http.MethodGet, query("second.example.", dns.TypeA, false))); err != nil {
		t.Fatal(err)
	}
	g := s.srv.tcpGate
	waitFor(t, "both connections closed idle", func() bool { return g.count(tcpIdle) == 2 && g.conns() == 0 })
}

// dotAsker opens a DoT connection to s, closed when the test ends, and
// gives a function that asks it for a name and checks the stub's answer.
func (s *encServer) dotAsker(t *testing.T) (*dns.Conn, func(name string)) {
	t.Helper()
	dot, err := tls.DialWithDialer(dialer(""), "tcp", s.dot, s.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dot.Close() })
	dc := &dns.Conn{Conn: dot}
	return dc, func(name string) {
		t.Helper()
		if err := dc.WriteMsg(query(name, dns.TypeA, false)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dot.SetReadDeadline(time.Now().Add(10 * time.Second))
		if r, err := dc.ReadMsg(); err != nil || answerText(r) != dnstest.AnswerA {
			t.Fatalf("%s: %v %v", name, r, err)
		}
	}
}

// TestIdleShutdown: connections whose readers wait on their sockets
// (TestIdleHandOver) are woken by shutdown, which ends them at once rather
// than at the end of their idle time.
func TestIdleShutdown(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "access: {rate_limit: 0}\n", up)
	dc, ask := s.dotAsker(t)
	ask("first.example.")
	doh := s.httpClient(t, "", true)
	if _, _, err := askDoH(doh, s.dohRequest(http.MethodGet, query("first.example.", dns.TypeA, false))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both readers waiting on their sockets", func() bool {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "resolver.awaitReadable(") == 2 || runtime.GOOS != "linux"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Close(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := dc.ReadMsg(); err == nil {
		t.Error("the DoT connection is still open after shutdown")
	}
}

// TestEncryptedIdle: a DNS-over-TLS or DNS-over-HTTPS connection that has
// served a query is kept for the next one past the idle time of plain TCP
// (RFC 7858, section 3.4), while a plain TCP connection opened after its
// answer is closed for idling meanwhile. No clock is read: the plain
// connection, closed by the server, is the measure of the time gone.
func TestEncryptedIdle(t *testing.T) {
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{TCP: TCPLimits{Idle: 200 * time.Millisecond, TLSIdle: time.Minute}}, loopbackLeaf, "access: {rate_limit: 0}\n", up)
	g := s.srv.tcpGate

	_, ask := s.dotAsker(t)
	ask("first.example.")
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	doh := s.httpClient(t, "", true)
	if _, _, err := askDoH(doh, s.dohRequest(http.MethodGet, query("first.example.", dns.TypeA, false)).WithContext(httptrace.WithClientTrace(context.Background(), trace))); err != nil {
		t.Fatal(err)
	}

	// A plain TCP connection, opened after both answers, idles out.
	if why := closedByServer(dialFrom(t, s.testServer, "127.0.0.1")); why != "" {
		t.Fatalf("plain TCP connection: %s", why)
	}
	waitFor(t, "the plain connection counted", func() bool { return g.count(tcpIdle) >= 1 })

	// Both encrypted connections have been idle longer, and serve on.
	ask("second.example.")
	if _, _, err := askDoH(doh, s.dohRequest(http.MethodGet, query("second.example.", dns.TypeA, false)).WithContext(httptrace.WithClientTrace(context.Background(), trace))); err != nil || !reused {
		t.Errorf("DNS over HTTPS after the plain idle time: reused %v, %v", reused, err)
	}
	if n := g.count(tcpIdle); n != 1 {
		t.Errorf("%d connections closed idle, want the plain one", n)
	}

	// One that never completes its handshake is cut at the plain bound
	// all the same.
	if why := closedByServer(dialFrom(t, &testServer{addr: s.dot}, "127.0.0.1")); why != "" {
		t.Errorf("a DoT connection without a handshake: %s", why)
	}
}

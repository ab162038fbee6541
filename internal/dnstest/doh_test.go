package dnstest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dohClient is an HTTP client that trusts d's certificate and connects to
// its address whatever the URL's host, offering HTTP/2 and HTTP/1.1.
func dohClient(t *testing.T, d *DoH) *http.Client {
	t.Helper()
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: d.Cert().Pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, d.Addr())
		},
		Protocols: p,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: queryTimeout}
}

// post sends m to d and returns the status, the content type and the body.
func post(t *testing.T, c *http.Client, d *DoH, m *dns.Msg, ctype string) (*http.Response, []byte) {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post(d.URL(), ctype, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestDoH: the stub answers POST and GET over HTTP/2 (or HTTP/1.1 alone
// with HTTP1Only), through its DNS stub, and counts handshakes,
// connections and requests; each fault answers as promised.
func TestDoH(t *testing.T) {
	d := StartDoH(t)
	c := dohClient(t, d)
	for range 3 {
		resp, body := post(t, c, d, query("example.com.", dns.TypeA), "application/dns-message")
		r := new(dns.Msg)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/dns-message" || r.Unpack(body) != nil || len(r.Answer) != 1 {
			t.Fatalf("POST: %s %q %v", resp.Status, resp.Header.Get("Content-Type"), r)
		}
	}
	if d.Handshakes() != 1 || d.Conns() != 1 || d.Requests() != 3 || d.RequestsOver("HTTP/2.0") != 3 || d.DNS.Queries() != 3 {
		t.Errorf("handshakes %d, conns %d, requests %d (%d over HTTP/2), queries %d; want 1, 1, 3 (3), 3",
			d.Handshakes(), d.Conns(), d.Requests(), d.RequestsOver("HTTP/2.0"), d.DNS.Queries())
	}
	if method, h := d.LastRequest(); method != http.MethodPost || h.Get("Content-Type") != "application/dns-message" {
		t.Errorf("last request %s %v", method, h)
	}
	b, _ := query("get.example.", dns.TypeAAAA).Pack()
	resp, err := c.Get(d.URL() + "?dns=" + base64.RawURLEncoding.EncodeToString(b))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %v %v", resp, err)
	}
	resp.Body.Close()
	if d.DNS.Seen("get.example") != 1 {
		t.Error("GET did not reach the DNS stub")
	}
	if resp, _ := post(t, c, d, query("example.com.", dns.TypeA), "text/plain"); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("another content type: %s", resp.Status)
	}

	for _, tc := range []struct {
		fault Fault
		check func(*http.Response, []byte) bool
	}{
		{FaultStatus, func(r *http.Response, _ []byte) bool { return r.StatusCode == http.StatusBadGateway }},
		{FaultContentType, func(r *http.Response, _ []byte) bool {
			return r.StatusCode == http.StatusOK && strings.HasPrefix(r.Header.Get("Content-Type"), "text/html")
		}},
		{FaultNotDNS, func(r *http.Response, b []byte) bool {
			return r.StatusCode == http.StatusOK && new(dns.Msg).Unpack(b) != nil
		}},
		{FaultID, func(_ *http.Response, b []byte) bool { m := new(dns.Msg); return m.Unpack(b) == nil && m.Id == 7+1 }},
		{FaultQuestion, func(_ *http.Response, b []byte) bool {
			m := new(dns.Msg)
			return m.Unpack(b) == nil && m.Question[0].Name == "other.fault.example."
		}},
	} {
		d.SetFault(tc.fault)
		d.SetStatus(http.StatusBadGateway)
		q := query("fault.example.", dns.TypeA)
		q.Id = 7
		if resp, body := post(t, c, d, q, "application/dns-message"); !tc.check(resp, body) {
			t.Errorf("fault %d: %s %q %x", tc.fault, resp.Status, resp.Header.Get("Content-Type"), body)
		}
	}
	d.SetFault(NoFault)

	// Drop holds the request until the client gives up; Garbage resets it.
	for _, m := range []Mode{Drop, Garbage} {
		d.DNS.SetMode(m)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		b, _ := query("held.example.", dns.TypeA).Pack()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.URL(), bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/dns-message")
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("%v: got %s", m, resp.Status)
		}
		cancel()
	}
}

// TestDoHHTTP1Only: a server without HTTP/2 serves HTTP/1.1 to a client
// that offers both.
func TestDoHHTTP1Only(t *testing.T) {
	d := StartDoH(t, HTTP1Only())
	c := dohClient(t, d)
	resp, _ := post(t, c, d, query("example.com.", dns.TypeA), "application/dns-message")
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" || d.RequestsOver("HTTP/1.1") != 1 {
		t.Errorf("%s over %s; %d requests over HTTP/1.1", resp.Status, resp.Proto, d.RequestsOver("HTTP/1.1"))
	}
}

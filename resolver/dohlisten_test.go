package resolver

import (
	"bytes"
	"encoding/base64"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// FuzzDoHRequest feeds the DNS-over-HTTPS handler requests of any method,
// content type, query string and body: nothing may panic; a request is
// answered 200 with a DNS answer to its query (same ID, Cache-Control
// max-age) only when it is a GET with one dns parameter in base64url or a
// POST of application/dns-message holding a DNS query, and gets a 4xx
// status otherwise: 405 for another method, 415 for a POST of another
// content type, never a 5xx. The seeds are in
// testdata/fuzz/FuzzDoHRequest besides those below.
//
//	go test -run '^$' -fuzz FuzzDoHRequest -fuzztime 2m ./resolver
func FuzzDoHRequest(f *testing.F) {
	q, _ := query("www.example.com.", dns.TypeA, true).Pack()
	sinkholed, _ := query("v10.events.data.microsoft.com.", dns.TypeAAAA, false).Pack()
	f.Add("GET", "", "dns="+base64.RawURLEncoding.EncodeToString(q), []byte(nil))
	f.Add("GET", "", "dns="+base64.URLEncoding.EncodeToString(sinkholed), []byte(nil))
	f.Add("POST", "application/dns-message", "", q)
	f.Add("POST", "application/dns-message", "", sinkholed)
	f.Add("POST", "text/plain", "", q)
	f.Add("PUT", "application/dns-message", "", q)
	f.Add("GET", "", "dns=AAAA&dns=BBBB", []byte(nil))
	up := dnstest.Start(f)
	s := start(f, "access: {rate_limit: 0}", up)
	d := &dohServer{h: s.h}
	f.Fuzz(func(t *testing.T, method, contentType, rawQuery string, body []byte) {
		r, err := http.NewRequest(method, "https://127.0.0.1/dns-query", bytes.NewReader(body))
		if err != nil {
			return // no method net/http would hand a handler
		}
		method = r.Method // "" is GET
		r.URL.RawQuery = rawQuery
		r.RemoteAddr = "127.0.0.1:5000"
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		d.ServeHTTP(w, r)

		code := w.Code
		switch {
		case method != http.MethodGet && method != http.MethodPost:
			if code != http.StatusMethodNotAllowed {
				t.Fatalf("method %q: %d", method, code)
			}
			return
		case method == http.MethodPost && !dnsMessageType(contentType):
			if code != http.StatusUnsupportedMediaType {
				t.Fatalf("a POST of %q: %d", contentType, code)
			}
			return
		case code != http.StatusOK:
			if code < 400 || code > 499 {
				t.Fatalf("status %d: %s", code, w.Body)
			}
			return
		}
		// 200: a DNS answer to the query that was sent.
		sent := body
		if method == http.MethodGet {
			sent, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(r.URL.Query().Get("dns"), "="))
			if err != nil {
				t.Fatalf("answered a GET whose dns parameter is not base64url: %v", err)
			}
		}
		req := new(dns.Msg)
		if err := req.Unpack(sent); err != nil || req.Response {
			t.Fatalf("answered a message that is not a query (%v)", err)
		}
		if ct := w.Header().Get("Content-Type"); ct != dohMediaType {
			t.Fatalf("Content-Type %q", ct)
		}
		if !strings.HasPrefix(w.Header().Get("Cache-Control"), "max-age=") {
			t.Fatalf("Cache-Control %q", w.Header().Get("Cache-Control"))
		}
		m := new(dns.Msg)
		if err := m.Unpack(w.Body.Bytes()); err != nil {
			t.Fatalf("the answer does not unpack: %v", err)
		}
		if m.Id != req.Id || !m.Response {
			t.Fatalf("not an answer to the query: %v", m)
		}
	})
}

// dnsMessageType is isDNSMessage, written again for the fuzzer.
func dnsMessageType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/dns-message"
}

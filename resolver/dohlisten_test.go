package resolver

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// FuzzDoHRequest feeds the DNS-over-HTTPS handler requests of any method,
// content type, query string and body: nothing may panic; a request is
// answered 200 with a DNS answer to its query (same ID, Cache-Control
// private, max-age) only when it is a GET with one dns parameter in base64url or a
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
		if !strings.HasPrefix(w.Header().Get("Cache-Control"), "private, max-age=") {
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

// h2Conn is a client of phonehome's DNS over HTTPS that speaks HTTP/2
// frame by frame, so that a test can send what net/http's client would
// not (a body that goes on after the query) and see the server's flow
// control: how much it lets a client send, and what it gives back. It is
// used from the test's goroutine only: each round trip is a PING, and the
// frames before its ack are read in turn.
type h2Conn struct {
	t     *testing.T
	conn  net.Conn
	fr    *http2.Framer
	hbuf  bytes.Buffer
	henc  *hpack.Encoder
	pings uint64

	connWindow   int64            // what we may still send on the connection
	streamWindow int64            // the server's SETTINGS_INITIAL_WINDOW_SIZE
	windows      map[uint32]int64 // what we may still send on each stream
	returned     int64            // connection window the server gave back
	status       map[uint32]string
	reset        map[uint32]bool
}

// dialH2 opens an HTTP/2 connection to the server's DNS-over-HTTPS
// listener, and reads the server's settings and first window updates.
// Every read and write is bounded by a deadline 30 s away.
func (s *encServer) dialH2(t *testing.T) *h2Conn {
	t.Helper()
	c := s.dialH2Raw(t)
	if _, err := io.WriteString(c.conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	c.ping()
	c.returned = 0 // what the server gave at the start is no answer to a body
	return c
}

// request opens stream id with a request's header block, ending the stream
// (no body) or not.
func (c *h2Conn) request(id uint32, endStream bool, fields ...string) {
	c.t.Helper()
	c.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	c.windows[id] = c.streamWindow
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: endStream}); err != nil {
		c.t.Fatal(err)
	}
}

// sendBody sends body bytes on stream id, never ending it, as long as the
// server's flow control lets it, up to max; it returns how many it sent.
// After each burst a PING round trip reads the window updates the server
// sent for it, so the result does not depend on timing.
func (c *h2Conn) sendBody(id uint32, max int64) int64 {
	c.t.Helper()
	chunk := make([]byte, 16<<10) // the largest frame a server must take
	sent := int64(0)
	for sent < max && !c.reset[id] {
		n := min(c.connWindow, c.windows[id], max-sent)
		if n <= 0 {
			break
		}
		for left := n; left > 0; {
			k := min(left, int64(len(chunk)))
			if err := c.fr.WriteData(id, false, chunk[:k]); err != nil {
				c.t.Fatalf("after %d bytes: %v", sent, err)
			}
			left -= k
		}
		c.connWindow -= n
		c.windows[id] -= n
		sent += n
		c.ping()
	}
	return sent
}

// ping sends a PING and reads frames until its ack, taking in settings,
// window updates, responses' status and resets.
func (c *h2Conn) ping() {
	c.t.Helper()
	c.pings++
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], c.pings)
	if err := c.fr.WritePing(false, data); err != nil {
		c.t.Fatal(err)
	}
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() && f.Data == data {
				return
			}
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				for id := range c.windows {
					c.windows[id] += int64(v) - c.streamWindow
				}
				c.streamWindow = int64(v)
			}
			if err := c.fr.WriteSettingsAck(); err != nil {
				c.t.Fatal(err)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				c.connWindow += int64(f.Increment)
				c.returned += int64(f.Increment)
			} else {
				c.windows[f.StreamID] += int64(f.Increment)
			}
		case *http2.MetaHeadersFrame:
			c.status[f.StreamID] = f.PseudoValue("status")
		case *http2.RSTStreamFrame:
			c.reset[f.StreamID] = true
		case *http2.GoAwayFrame:
			c.t.Fatalf("GOAWAY: %v", f.ErrCode)
		}
	}
}

// TestDoHBodyNotKept: while a query waits for the upstreams, the server
// keeps nothing of what the client goes on sending on its stream (here a
// GET that carries a body), and lets it send no more than a small window
// before flow control stops it, where net/http's defaults would have it
// hold a megabyte per connection; a POST whose Content-Length is more than
// a query gets 413 before anything is read. Measured in HTTP/2 flow
// control, not in time: the server gives back, in WINDOW_UPDATE frames,
// the credit of bytes it dropped, and never of those it keeps.
func TestDoHBodyNotKept(t *testing.T) {
	up := dnstest.Start(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "held.example." {
			<-release
		}
		m := new(dns.Msg).SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A " + dnstest.AnswerA)
		m.Answer = []dns.RR{rr}
		w.WriteMsg(m)
	})
	// Timeouts longer than the test: the query waits until released, and
	// the body is not cut by the message time.
	s := startEncrypted(t, Options{TryTimeout: time.Minute, Timeout: time.Minute, TCP: TCPLimits{Message: time.Minute, TLSIdle: time.Minute}}, loopbackLeaf, "", up)
	t.Cleanup(unblock) // before the server and the upstream stop
	c := s.dialH2(t)
	if c.streamWindow > dohStreamWindow || c.connWindow > dohConnWindow {
		t.Errorf("the server lets a stream send %d bytes ahead and a connection %d", c.streamWindow, c.connWindow)
	}

	q, _ := query("held.example.", dns.TypeA, false).Pack()
	c.request(1, false, ":method", "GET", ":scheme", "https", ":authority", s.doh,
		":path", "/dns-query?dns="+base64.RawURLEncoding.EncodeToString(q))
	waitFor(t, "the query upstream", func() bool { return up.Seen("held.example.") == 1 })
	sent := c.sendBody(1, 4<<20)
	t.Logf("the client could send %d bytes after its query; the server gave back %d", sent, c.returned)
	if held := sent - c.returned; sent > dohStreamWindow || held > 4<<10 {
		t.Errorf("the client sent %d bytes after its query, and the server holds %d of them", sent, held)
	}
	if c.status[1] != "" {
		t.Errorf("answered before the upstream: %s", c.status[1])
	}

	// Another stream on the connection is not held up.
	q, _ = query("other.example.", dns.TypeA, false).Pack()
	c.request(3, true, ":method", "GET", ":scheme", "https", ":authority", s.doh,
		":path", "/dns-query?dns="+base64.RawURLEncoding.EncodeToString(q))
	for c.status[3] == "" {
		c.ping()
	}
	if c.status[3] != "200" {
		t.Errorf("a query on another stream: %s", c.status[3])
	}

	// A POST that says it is longer than a query: 413, its body unread.
	c.request(5, false, ":method", "POST", ":scheme", "https", ":authority", s.doh, ":path", "/dns-query",
		"content-type", "application/dns-message", "content-length", "5000")
	for c.status[5] == "" {
		c.ping()
	}
	if c.status[5] != "413" {
		t.Errorf("a POST of 5000 bytes: %s", c.status[5])
	}

	// Released, the held query is answered.
	unblock()
	for c.status[1] == "" {
		c.ping()
	}
	if c.status[1] != "200" {
		t.Errorf("the held query: %s", c.status[1])
	}
}

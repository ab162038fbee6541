package dnstest

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DoHPath is the path a DoH stub serves.
const DoHPath = "/dns-query"

// Fault is what a DoH stub does wrong, whatever its DNS answer.
type Fault int

const (
	// NoFault answers as a DNS-over-HTTPS server should.
	NoFault Fault = iota
	// FaultStatus answers with the HTTP status SetStatus gave (500 unless
	// set) and a text body; the query does not reach the DNS stub.
	FaultStatus
	// FaultContentType answers 200 with the DNS answer, as text/html.
	FaultContentType
	// FaultNotDNS answers 200, application/dns-message, with a few bytes
	// that are not a DNS message.
	FaultNotDNS
	// FaultID answers with the query's ID plus one.
	FaultID
	// FaultQuestion answers with another question than the query's.
	FaultQuestion
)

// DoH is a DNS-over-HTTPS server (RFC 8484) on 127.0.0.1 for tests: POST
// and GET on DoHPath, over HTTP/2 or HTTP/1.1 as the client's ALPN and the
// options choose, with TLS by a certificate made at start for
// TLSServerName, 127.0.0.1 and ::1 (Cert). Each query is handed to DNS, an
// Upstream whose modes, handler and counters apply as over UDP and TCP
// (Drop holds the request until the client gives up; Garbage resets it).
// It counts TLS handshakes, connections and requests, and SetFault makes it
// answer what a broken server answers. All methods are safe for concurrent
// use.
type DoH struct {
	// DNS answers the queries; its Addr also serves them over UDP and TCP.
	DNS *Upstream

	addr     string
	l        net.Listener
	cert     *Cert
	srv      *http.Server
	exited   chan error
	done     chan struct{} // closed when the test ends: held requests give up
	handlers sync.WaitGroup

	mu         sync.Mutex
	fault      Fault
	status     int
	handshakes int
	conns      int
	requests   int
	protos     map[string]int
	header     http.Header // of the last request
	method     string
	stopping   bool
}

// DoHOption changes how StartDoH serves.
type DoHOption func(*dohOptions)

type dohOptions struct {
	http1 bool
}

// HTTP1Only makes the server offer HTTP/1.1 alone, as a server without
// HTTP/2 does.
func HTTP1Only() DoHOption { return func(o *dohOptions) { o.http1 = true } }

// StartDoH starts a DoH stub on 127.0.0.1 with a free port and stops it
// when the test ends: the HTTP server, its handlers and its DNS stub have
// all returned by then.
func StartDoH(t testing.TB, opts ...DoHOption) *DoH {
	t.Helper()
	var o dohOptions
	for _, opt := range opts {
		opt(&o)
	}
	cert, err := NewCert(TLSServerName)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dnstest: listening for DoH: %v", err)
	}
	d := &DoH{addr: l.Addr().String(), l: l, cert: cert, done: make(chan struct{}), exited: make(chan error, 1), status: http.StatusInternalServerError, protos: map[string]int{}}
	// Registered before Start's, so it runs after: the DNS stub's delays
	// have given up by then, and no request waits on them.
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("dnstest: stopping DoH %s: %v", d.addr, err)
		}
	})
	d.DNS = Start(t)
	d.srv = &http.Server{
		Handler: d,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert.TLS},
			MinVersion:   tls.VersionTLS12,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				d.mu.Lock()
				d.handshakes++
				d.mu.Unlock()
				return nil, nil // the server's own config
			},
		},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				d.mu.Lock()
				d.conns++
				d.mu.Unlock()
			}
		},
		ReadHeaderTimeout: 5 * time.Second,
		// Clients that give up on a certificate are expected here.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	if o.http1 {
		d.srv.Protocols = new(http.Protocols)
		d.srv.Protocols.SetHTTP1(true)
	}
	go func() { d.exited <- d.srv.ServeTLS(l, "", "") }()
	return d
}

// stop shuts the server down: requests held (Drop) are let go, then every
// connection closes once its requests are done.
func (d *DoH) stop() error {
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	close(d.done)
	if d.srv == nil {
		d.l.Close() // Start failed: nothing was served
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	err := d.srv.Shutdown(ctx)
	if err != nil {
		d.srv.Close()
	}
	if e := <-d.exited; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	d.handlers.Wait()
	return err
}

// URL is the stub's URL with its name: "https://dnstest.test:port/dns-query".
// The name resolves nowhere: write the address after '#', or answer it from
// another stub.
func (d *DoH) URL() string {
	_, port, _ := net.SplitHostPort(d.addr)
	return "https://" + net.JoinHostPort(TLSServerName, port) + DoHPath
}

// Addr is the stub's address, "127.0.0.1:port".
func (d *DoH) Addr() string { return d.addr }

// Cert is the stub's certificate: its PEM is a CA file that trusts it.
func (d *DoH) Cert() *Cert { return d.cert }

// SetFault sets what the stub does wrong; NoFault (the default) answers
// right.
func (d *DoH) SetFault(f Fault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fault = f
}

// SetStatus sets the HTTP status of FaultStatus.
func (d *DoH) SetStatus(code int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status = code
}

// Handshakes returns how many TLS handshakes clients began, resumptions
// included.
func (d *DoH) Handshakes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.handshakes
}

// Conns returns how many TCP connections the stub accepted.
func (d *DoH) Conns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns
}

// Requests returns how many HTTP requests arrived, on any path.
func (d *DoH) Requests() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.requests
}

// RequestsOver returns how many of them came over proto, "HTTP/2.0" or
// "HTTP/1.1".
func (d *DoH) RequestsOver(proto string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.protos[proto]
}

// LastRequest returns the method and a copy of the headers of the last
// request, or "" and nil when none came.
func (d *DoH) LastRequest() (string, http.Header) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.method, d.header.Clone()
}

// ServeHTTP answers one DNS-over-HTTPS request.
func (d *DoH) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	}
	d.handlers.Add(1)
	defer d.handlers.Done()
	d.requests++
	d.protos[r.Proto]++
	d.method, d.header = r.Method, r.Header.Clone()
	fault, status := d.fault, d.status
	d.mu.Unlock()

	if r.URL.Path != DoHPath {
		http.NotFound(w, r)
		return
	}
	var wire []byte
	switch r.Method {
	case http.MethodPost:
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/dns-message" {
			http.Error(w, "want Content-Type application/dns-message", http.StatusUnsupportedMediaType)
			return
		}
		var err error
		if wire, err = io.ReadAll(io.LimitReader(r.Body, dns.MaxMsgSize)); err != nil {
			return
		}
	case http.MethodGet:
		var err error
		if wire, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns")); err != nil {
			http.Error(w, "dns= is not base64url", http.StatusBadRequest)
			return
		}
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		return
	}
	q := new(dns.Msg)
	if err := q.Unpack(wire); err != nil || len(q.Question) != 1 {
		http.Error(w, "not a DNS query", http.StatusBadRequest)
		return
	}
	if fault == FaultStatus {
		http.Error(w, http.StatusText(status), status)
		return
	}

	cw := &captureWriter{remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
	d.DNS.serveDNS(cw, q)
	m := cw.msg
	if m == nil {
		if !cw.closed { // Drop: hold the request until the client gives up
			select {
			case <-r.Context().Done():
			case <-d.done:
			}
		}
		panic(http.ErrAbortHandler) // reset the stream, or close the connection
	}
	switch fault {
	case FaultID:
		m.Id++
	case FaultQuestion:
		m.Question[0].Name = "other." + m.Question[0].Name
	}
	body, err := m.Pack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ct := "application/dns-message"
	switch fault {
	case FaultContentType:
		ct = "text/html; charset=utf-8"
	case FaultNotDNS:
		body = make([]byte, garbageLen)
		for i := range body {
			body[i] = byte(rand.Uint32())
		}
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// captureWriter is the dns.ResponseWriter a DoH request hands the DNS stub:
// it keeps the answer for the HTTP response. Its remote address is a TCP
// one, so the stub never truncates.
type captureWriter struct {
	remote net.Addr
	msg    *dns.Msg
	closed bool
}

func (w *captureWriter) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}
}
func (w *captureWriter) RemoteAddr() net.Addr { return w.remote }
func (w *captureWriter) WriteMsg(m *dns.Msg) error {
	w.msg = m.Copy()
	return nil
}

func (w *captureWriter) Write(b []byte) (int, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, fmt.Errorf("dnstest: a DoH answer must be a DNS message: %w", err)
	}
	w.msg = m
	return len(b), nil
}

func (w *captureWriter) Close() error        { w.closed = true; return nil }
func (w *captureWriter) TsigStatus() error   { return nil }
func (w *captureWriter) TsigTimersOnly(bool) {}
func (w *captureWriter) Hijack()             {}

// Command loadtls is the client of the load benchmark (bench/load.sh) for
// what dnsperf does not do: it checks what a DNS server answers, over plain
// DNS, DNS over TLS or DNS over HTTPS; it holds many idle encrypted
// connections open at a server, so that the benchmark can read the server's
// resident memory with them open; and it loads a server over DNS over HTTPS
// (or TLS) as dnsperf would, where Debian 12's dnsperf loses answers.
//
//	loadtls check -transport dot -server 127.0.0.1:5311 -ca ca.pem -host bench.test \
//	        -sinkholed NAME -ordinary NAME
//
// asks for the A and AAAA of the sinkholed name and the A of the ordinary
// one, prints each answer, and exits 1 unless the first two are NOERROR
// with exactly 0.0.0.0 and :: (phonehome's null_ip sinkhole) and the third
// is NOERROR with an address other than 0.0.0.0.
//
//	loadtls hold -transport dot -server 127.0.0.1:5311 -ca ca.pem -host bench.test \
//	        -conns 1000 -from 127.0.1.1 -sources 100 -hold 3s -name NAME
//
// opens -conns connections, spread over -sources loopback source addresses
// from -from on, and asks one query for NAME on each, so that every
// handshake is done and the server holds each connection's state; prints
// "opened N failed F"; keeps them open and idle for -hold; asks again on
// each and prints "alive N of M": the connections the server kept open all
// along (over DNS over HTTPS, a request that needed a new connection does
// not count). The benchmark reads the server's memory between the lines.
//
//	loadtls perf -transport doh -server 127.0.0.1:5321 -ca ca.pem -host bench.test \
//	        -d FILE [-n RUNS] [-l SECONDS] [-q OUTSTANDING] [-Q RATE] [-c CONNS] [-t SECONDS] [-v]
//
// is a load generator with dnsperf's flags and the lines of its output that
// bench/load.sh reads, for DNS over HTTPS, which dnsperf 2.10 cannot
// measure (see perf.go), and DNS over TLS.
//
// -transport is udp (check only), dot (DNS over TLS, RFC 7858, ALPN "dot")
// or doh (DNS over HTTPS, RFC 8484: GET https://-host-path?dns=…, HTTP/2
// when the server offers it). The server's certificate must chain to -ca and
// name -host. It refuses servers and source addresses off loopback.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/bench/loopback"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "check" && os.Args[1] != "hold" && os.Args[1] != "perf") {
		fmt.Fprintln(os.Stderr, "usage: loadtls check|hold|perf -transport udp|dot|doh -server ADDR:PORT [flags] (loadtls check -h)")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet("loadtls "+mode, flag.ExitOnError)
	var o options
	fs.StringVar(&o.transport, "transport", "dot", "udp, dot or doh")
	fs.StringVar(&o.server, "server", "127.0.0.1:853", "the server (loopback only)")
	fs.StringVar(&o.ca, "ca", "", "PEM file of the CA the server's certificate chains to (dot, doh)")
	fs.StringVar(&o.host, "host", "bench.test", "the name the server's certificate must hold (dot, doh)")
	fs.StringVar(&o.path, "path", "/dns-query", "the DNS over HTTPS path")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long one query, with its connection's set-up, may take")
	sinkholed := fs.String("sinkholed", "", "check: a name the server sinkholes")
	ordinary := fs.String("ordinary", "", "check: a name the server forwards")
	conns := fs.Int("conns", 1000, "hold: connections")
	from := fs.String("from", "127.0.1.1", "hold: the first loopback source address")
	sources := fs.Int("sources", 100, "hold: source addresses, -from and the ones after it")
	holdFor := fs.Duration("hold", 3*time.Second, "hold: how long to keep the connections idle")
	name := fs.String("name", "probe.example.", "hold: the name asked on each connection")
	deadline := fs.Duration("deadline", 2*time.Minute, "give up after this long in all (perf: at least -l + 1 min)")
	var p perfOptions
	fs.StringVar(&p.file, "d", "", "perf: the queries, \"name type\" a line")
	fs.IntVar(&p.runs, "n", 0, "perf: passes through -d at most (0: no bound)")
	seconds := fs.Float64("l", 0, "perf: seconds to send for (0: no bound)")
	fs.IntVar(&p.outstanding, "q", 100, "perf: queries in flight at most")
	fs.IntVar(&p.rate, "Q", 0, "perf: queries a second at most (0: no bound)")
	fs.IntVar(&p.conns, "c", 1, "perf: connections")
	fs.BoolVar(&p.verbose, "v", false, "perf: a line for each query answered or timed out")
	t := fs.Float64("t", 0, "perf: -timeout in seconds, as dnsperf's -t")
	fs.Parse(os.Args[2:])
	if *t > 0 {
		o.timeout = time.Duration(*t * float64(time.Second))
	}
	p.duration = time.Duration(*seconds * float64(time.Second))
	if mode == "perf" {
		*deadline = max(*deadline, p.duration+time.Minute)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *deadline)
	defer cancel()
	var err error
	switch mode {
	case "check":
		err = check(ctx, o, *sinkholed, *ordinary, os.Stdout)
	case "hold":
		err = hold(ctx, o, holdOptions{conns: *conns, from: *from, sources: *sources, hold: *holdFor, name: *name}, os.Stdout)
	case "perf":
		err = perf(ctx, o, p, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtls:", err)
		os.Exit(1)
	}
}

// options say how to reach the server.
type options struct {
	transport, server, ca, host, path string
	timeout                           time.Duration
}

// client is one connection to the server (for udp, one socket).
type client interface {
	// exchange sends m and returns the server's answer to it.
	exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
	// reused says whether every exchange so far went over the first
	// connection.
	reused() bool
	Close() error
}

// dial opens a client from src (any source when src is not valid): over
// DNS over TLS with its handshake done, over DNS over HTTPS with its
// connection left to the first exchange.
func dial(ctx context.Context, o options, src netip.Addr) (client, error) {
	server, err := netip.ParseAddrPort(o.server)
	if err != nil {
		return nil, fmt.Errorf("-server: %w", err)
	}
	if !server.Addr().IsLoopback() {
		return nil, fmt.Errorf("-server %s: only loopback servers are asked", o.server)
	}
	d := &net.Dialer{Timeout: o.timeout}
	if src.IsValid() {
		if !src.IsLoopback() {
			return nil, fmt.Errorf("source %s: only loopback sources are used", src)
		}
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	switch o.transport {
	case "udp":
		if src.IsValid() {
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		c, err := d.DialContext(ctx, "udp", o.server)
		if err != nil {
			return nil, err
		}
		return &streamClient{conn: &dns.Conn{Conn: c}, timeout: o.timeout}, nil
	case "dot":
		cfg, err := tlsConfig(o, "dot")
		if err != nil {
			return nil, err
		}
		td := &tls.Dialer{NetDialer: d, Config: cfg}
		ctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		c, err := td.DialContext(ctx, "tcp", o.server)
		if err != nil {
			return nil, err
		}
		return &streamClient{conn: &dns.Conn{Conn: c}, timeout: o.timeout}, nil
	case "doh":
		cfg, err := tlsConfig(o, "h2", "http/1.1")
		if err != nil {
			return nil, err
		}
		c := &dohClient{url: "https://" + o.host + o.path, timeout: o.timeout}
		td := &tls.Dialer{NetDialer: d, Config: cfg}
		tr := &http.Transport{
			// Every request goes to the server, whatever the URL's host.
			DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				c.dials.Add(1)
				return td.DialContext(ctx, network, o.server)
			},
			ForceAttemptHTTP2: true,
			MaxConnsPerHost:   1,
		}
		c.http = &http.Client{Transport: tr, Timeout: o.timeout}
		return c, nil
	}
	return nil, fmt.Errorf("-transport %q: want udp, dot or doh", o.transport)
}

// tlsConfig trusts -ca alone and offers the ALPN protocols given.
func tlsConfig(o options, alpn ...string) (*tls.Config, error) {
	pem, err := os.ReadFile(o.ca)
	if err != nil {
		return nil, fmt.Errorf("-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-ca %s: no certificate in it", o.ca)
	}
	return &tls.Config{RootCAs: roots, ServerName: o.host, NextProtos: alpn, MinVersion: tls.VersionTLS12}, nil
}

// streamClient asks over one UDP socket or one DNS over TLS connection,
// a query at a time.
type streamClient struct {
	conn    *dns.Conn
	timeout time.Duration
}

func (c *streamClient) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.conn.SetDeadline(deadline)
	if err := c.conn.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		r, err := c.conn.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == m.Id {
			return r, nil
		}
	}
}

func (c *streamClient) reused() bool { return true }
func (c *streamClient) Close() error { return c.conn.Close() }

// dohClient asks by GET over one HTTP connection, which its transport opens
// (again, when the server has closed it: dials counts them).
type dohClient struct {
	http    *http.Client
	url     string
	timeout time.Duration
	dials   atomic.Int32
}

func (c *dohClient) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	id := m.Id
	m.Id = 0 // RFC 8484, section 4.1: cache-friendly
	wire, err := m.Pack()
	m.Id = id
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"?dns="+base64.RawURLEncoding.EncodeToString(wire), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/dns-message")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 65536))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s (%s): %s", resp.Status, resp.Proto, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	r := new(dns.Msg)
	if err := r.Unpack(body); err != nil {
		return nil, fmt.Errorf("the answer (%s): %w", resp.Proto, err)
	}
	r.Id = id
	return r, nil
}

func (c *dohClient) reused() bool { return c.dials.Load() == 1 }

func (c *dohClient) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// query is a recursive query for name and type t, without EDNS0 (as
// dnsperf sends them).
func query(name string, t uint16) *dns.Msg {
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), t)
	m.RecursionDesired = true
	return m
}

// check asks for the sinkholed name's A and AAAA and the ordinary name's A,
// writes each answer to out, and says what was not as it should be.
func check(ctx context.Context, o options, sinkholed, ordinary string, out io.Writer) error {
	if sinkholed == "" || ordinary == "" {
		return errors.New("check needs -sinkholed and -ordinary")
	}
	c, err := dial(ctx, o, netip.Addr{})
	if err != nil {
		return err
	}
	defer c.Close()
	var wrong []string
	for _, q := range []struct {
		name string
		t    uint16
		want string // the one address of a sinkhole answer; "" for any address but 0.0.0.0
	}{{sinkholed, dns.TypeA, "0.0.0.0"}, {sinkholed, dns.TypeAAAA, "::"}, {ordinary, dns.TypeA, ""}} {
		what := fmt.Sprintf("%s %s over %s", dns.Fqdn(q.name), dns.TypeToString[q.t], o.transport)
		r, err := c.exchange(ctx, query(q.name, q.t))
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		addrs := addresses(r, q.t)
		fmt.Fprintf(out, "%s: %s %v\n", what, dns.RcodeToString[r.Rcode], addrs)
		switch {
		case r.Rcode != dns.RcodeSuccess:
			wrong = append(wrong, fmt.Sprintf("%s: %s, want NOERROR", what, dns.RcodeToString[r.Rcode]))
		case q.want != "" && (len(addrs) != 1 || addrs[0] != q.want || len(r.Answer) != 1):
			wrong = append(wrong, fmt.Sprintf("%s: %v, want the sinkhole's %s alone", what, r.Answer, q.want))
		case q.want == "" && (len(addrs) == 0 || addrs[0] == "0.0.0.0"):
			wrong = append(wrong, fmt.Sprintf("%s: %v, want a forwarded address", what, r.Answer))
		}
	}
	if wrong != nil {
		return errors.New(fmt.Sprint(wrong))
	}
	return nil
}

// addresses are the addresses of type t in r's answer section.
func addresses(r *dns.Msg, t uint16) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			if t == dns.TypeA {
				out = append(out, rr.A.String())
			}
		case *dns.AAAA:
			if t == dns.TypeAAAA {
				out = append(out, rr.AAAA.String())
			}
		}
	}
	return out
}

// holdOptions are hold's own flags.
type holdOptions struct {
	conns, sources int
	from, name     string
	hold           time.Duration
}

// opening bounds the connections being set up at once.
const opening = 32

// hold opens the connections, writes "opened N failed F" to out, keeps them
// idle, asks again on each and writes "alive N of M". Every connection is
// closed when it returns.
func hold(ctx context.Context, o options, h holdOptions, out io.Writer) error {
	if o.transport != "dot" && o.transport != "doh" {
		return fmt.Errorf("hold: -transport %q: want dot or doh", o.transport)
	}
	srcs, err := loopback.Sources(h.from, h.sources)
	if err != nil {
		return err
	}
	clients := make([]client, h.conns)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	fail := func(err error) {
		failed.Add(1)
		once.Do(func() { firstErr = err })
	}
	sem := make(chan struct{}, opening)
	var wg sync.WaitGroup
	for i := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := dial(ctx, o, srcs[i%len(srcs)])
			if err != nil {
				fail(err)
				return
			}
			if _, err := c.exchange(ctx, query(h.name, dns.TypeA)); err != nil {
				c.Close()
				fail(err)
				return
			}
			clients[i] = c
		})
	}
	wg.Wait()
	opened := h.conns - int(failed.Load())
	fmt.Fprintf(out, "opened %d failed %d\n", opened, failed.Load())
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "loadtls: the first connection that failed: %v\n", firstErr)
	}
	if opened == 0 {
		return errors.New("no connection opened")
	}

	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(h.hold):
	}

	var alive atomic.Int64
	for _, c := range clients {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := c.exchange(ctx, query(h.name, dns.TypeA)); err == nil && c.reused() {
				alive.Add(1)
			}
		})
	}
	wg.Wait()
	fmt.Fprintf(out, "alive %d of %d\n", alive.Load(), h.conns)
	return nil
}

package resolver

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/dnstest"
)

func TestUpstreamTransports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := new(dns.Msg)
	q.SetQuestion("dot.example.", dns.TypeA)

	stub := dnstest.Start(t, dnstest.WithTLS())
	u, err := ParseUpstream("tls://" + stub.Addr() + "#" + dnstest.TLSServerName)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	u.tls.RootCAs = stub.RootCAs()
	if r, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err != nil || len(r.Answer) != 1 {
		t.Errorf("DNS over TLS: %v %v", r, err)
	}
	// The certificate is verified against the servername.
	u, _ = ParseUpstream("tls://" + stub.Addr() + "#other.test")
	defer u.close()
	u.tls.RootCAs = stub.RootCAs()
	if _, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err == nil {
		t.Error("a certificate for another name was accepted")
	}

	plain := dnstest.Start(t)
	u, _ = ParseUpstream("tcp://" + plain.Addr())
	defer u.close()
	if r, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err != nil || len(r.Answer) != 1 || plain.QueriesTCP() != 1 {
		t.Errorf("tcp://: %v %v", r, err)
	}
	for _, bad := range []string{"http://1.1.1.1/dns-query", "1.1.1.1"} {
		if _, err := ParseUpstream(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestForwarderCloseCancels: closing a forwarder ends the exchanges still
// waiting at once, through the context the request path passes, without
// blaming the upstream.
func TestForwarderCloseCancels(t *testing.T) {
	stub := dnstest.Start(t)
	stub.SetMode(dnstest.Drop)
	u, _ := ParseUpstream(stub.Addr())
	f := NewForwarder([]*Upstream{u}, 8, nil)
	f.TryTimeout, f.Timeout = time.Hour, time.Hour
	q := new(dns.Msg)
	q.SetQuestion("never.example.", dns.TypeA)
	done := make(chan error, 1)
	go func() {
		_, err := f.Forward(f.ctx, "never", q)
		done <- err
	}()
	waitFor(t, "the query to arrive", func() bool { return stub.Queries() == 1 })
	f.Close()
	select {
	case err := <-done:
		var nu *errNoUpstream
		if !errors.As(err, &nu) || !errors.Is(nu.last, context.Canceled) || nu.timeout {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Forward still waits 30 s after Close")
	}
	if !u.healthy(time.Now()) {
		t.Error("the upstream was marked down for a query the forwarder gave up")
	}
}

// TestUDPSocketsRenew: the pool replaces each socket after maxUses queries,
// so source ports keep changing, and answers still arrive.
func TestUDPSocketsRenew(t *testing.T) {
	stub := dnstest.Start(t)
	u, _ := ParseUpstream(stub.Addr())
	defer u.close()
	ctx := context.Background()
	ports := map[string]bool{}
	for i := range 2 * maxUses * udpSockets {
		q := new(dns.Msg)
		q.SetQuestion("renew.example.", dns.TypeA)
		r, err := u.exchange(ctx, time.Now().Add(5*time.Second), q)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("query %d: %v %v", i, r, err)
		}
		u.pool.mu.Lock()
		for _, s := range u.pool.socks {
			ports[s.conn.LocalAddr().String()] = true
		}
		u.pool.mu.Unlock()
	}
	if len(ports) <= udpSockets {
		t.Errorf("%d source ports over %d queries: sockets are not renewed", len(ports), 2*maxUses*udpSockets)
	}
}

// TestForwarderOverload: past the bound on queries waiting for upstreams,
// a new miss fails at once instead of piling up goroutines.
func TestForwarderOverload(t *testing.T) {
	stub := dnstest.Start(t)
	stub.SetMode(dnstest.Delay)
	stub.SetDelay(300 * time.Millisecond)
	u, _ := ParseUpstream(stub.Addr())
	f := NewForwarder([]*Upstream{u}, 1, nil)
	defer f.Close()
	q := func(name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		return m
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.Forward(context.Background(), "slow", q("slow.example."))
		done <- err
	}()
	for stub.Seen("slow.example") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if _, err := f.Forward(context.Background(), "other", q("other.example.")); err != ErrOverload || time.Since(start) > 100*time.Millisecond {
		t.Errorf("second query while one waits: %v after %v", err, time.Since(start))
	}
	if err := <-done; err != nil {
		t.Errorf("first query: %v", err)
	}
}

// TestUDPReusedIDs: an ID is free again as soon as its answer is read, so
// another query on the socket may take it while the first is still winding
// up. Each query must get its own answer all the same. With IDs narrowed to
// 16, this timed out whenever the first query's cleanup removed the second
// one's registration.
func TestUDPReusedIDs(t *testing.T) {
	stub := dnstest.Start(t)
	u, _ := ParseUpstream(stub.Addr())
	defer u.close()
	u.pool.ids = func() uint16 { return uint16(mrand.IntN(16)) }
	var wg sync.WaitGroup
	var failed atomic.Int32
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				q := new(dns.Msg)
				q.SetQuestion(fmt.Sprintf("id%d-%d.example.", g, i), dns.TypeA)
				r, err := u.exchange(context.Background(), time.Now().Add(time.Second), q)
				if err != nil || len(r.Answer) != 1 || r.Question[0].Name != q.Question[0].Name {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 2400 queries got no answer of their own", n)
	}
}

// TestParseUpstreamAgreesWithConfig: the resolver reads upstreams with the
// config check's own syntax, so validate and serve cannot disagree.
func TestParseUpstreamAgreesWithConfig(t *testing.T) {
	for _, s := range []string{"127.0.0.1:53", "udp://127.0.0.1:53", "tcp://[::1]:53", "tls://127.0.0.1:853#dns.example", "tls://127.0.0.1:853",
		"tcp://127.0.0.1:53#name", "dns.example:53", "quic://127.0.0.1:853", "127.0.0.1", "tls://127.0.0.1:99999",
		"https://dns.example/dns-query#192.0.2.1", "https://192.0.2.1", "http://dns.example/dns-query", "https://dns.example/#name"} {
		_, perr := ParseUpstream(s)
		r := config.NewReport(nil)
		(&Config{Upstreams: []string{s}}).Check(r)
		cerr := r.Err()
		if (perr == nil) != (cerr == nil) {
			t.Errorf("%s: ParseUpstream says %v, the config check %v", s, perr, cerr)
		}
	}
	u, err := ParseUpstream("tls://127.0.0.1:853")
	if err != nil || u.tls.ServerName != "127.0.0.1" || u.addr != "127.0.0.1:853" {
		t.Errorf("tls without a name: %v %+v", err, u)
	}
}

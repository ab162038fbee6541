package resolver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// startTLS runs a DNS-over-TLS server on 127.0.0.1 for the name dns.test
// and returns its address and a pool that trusts its certificate.
func startTLS(t *testing.T) (string, *x509.CertPool) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dns.test"}, DNSNames: []string{"dns.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Net: "tcp-tls", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.53")
		r.Answer = []dns.RR{rr}
		w.WriteMsg(r)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String(), pool
}

func TestUpstreamTransports(t *testing.T) {
	addr, pool := startTLS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := new(dns.Msg)
	q.SetQuestion("dot.example.", dns.TypeA)

	u, err := ParseUpstream("tls://" + addr + "#dns.test")
	if err != nil {
		t.Fatal(err)
	}
	u.tls.RootCAs = pool
	if r, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err != nil || len(r.Answer) != 1 {
		t.Errorf("DNS over TLS: %v %v", r, err)
	}
	// The certificate is verified against the servername.
	u, _ = ParseUpstream("tls://" + addr + "#other.test")
	u.tls.RootCAs = pool
	if _, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err == nil {
		t.Error("a certificate for another name was accepted")
	}

	stub := dnstest.Start(t)
	u, _ = ParseUpstream("tcp://" + stub.Addr())
	if r, err := u.exchange(ctx, time.Now().Add(5*time.Second), q.Copy()); err != nil || len(r.Answer) != 1 || stub.QueriesTCP() != 1 {
		t.Errorf("tcp://: %v %v", r, err)
	}
	for _, bad := range []string{"https://1.1.1.1:443", "1.1.1.1"} {
		if _, err := ParseUpstream(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
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
	orig := queryID
	queryID = func() uint16 { return uint16(mrand.IntN(16)) }
	defer func() { queryID = orig }()
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

package resolver

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// TestSendQueue: datagrams sent on one queue by many goroutines at once
// all arrive, each whole.
func TestSendQueue(t *testing.T) {
	rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rc.SetReadBuffer(1 << 20)
	sc, err := net.DialUDP("udp", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	q := newSendQueue(sc)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.send(fmt.Appendf(nil, "datagram %03d", i), nil, nil)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	buf := make([]byte, 64)
	rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(seen) < n {
		k, err := rc.Read(buf)
		if err != nil {
			t.Fatalf("%d of %d datagrams arrived: %v", len(seen), n, err)
		}
		seen[string(buf[:k])] = true
	}
	for i := range n {
		if !seen[fmt.Sprintf("datagram %03d", i)] {
			t.Errorf("datagram %d missing", i)
		}
	}
}

// TestMissWorkers: misses run on workers kept from one miss to the next,
// not on a goroutine each.
func TestMissWorkers(t *testing.T) {
	up := dnstest.Start(t)
	s := start(t, "", up)
	for i := range 50 {
		s.ask(t, "udp", "", query(fmt.Sprintf("m%d.example.", i), dns.TypeA, false))
	}
	if up.Queries() != 50 {
		t.Fatalf("%d upstream queries, want 50", up.Queries())
	}
	n := int32(0)
	for _, u := range s.srv.udp {
		n += u.workers.Load()
	}
	// One query at a time: each miss finds the worker of the one before
	// idle, or nearly always (a miss may come while the worker is still
	// on its way back, and then another starts).
	if n < 1 || n > 25 {
		t.Errorf("%d workers after 50 misses one at a time", n)
	}
}

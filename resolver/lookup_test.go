package resolver

import (
	"context"
	"testing"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// TestLookup: Lookup asks the upstream past the policy, the cache and the
// observers: a sinkholed name comes back as the upstream answers it, each
// lookup goes upstream, and no observer hears of it; after Close it fails.
func TestLookup(t *testing.T) {
	up := dnstest.Start(t)
	up.SetPTR("127.0.0.9", "kids-pc.lan")
	s, rec := startRecorded(t, "", up)
	ptr := new(dns.Msg)
	rev, _ := dns.ReverseAddr("127.0.0.9")
	ptr.SetQuestion(rev, dns.TypePTR)
	for range 2 {
		r, err := s.srv.Lookup(context.Background(), ptr)
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := r.Answer[0].(*dns.PTR); !ok || p.Ptr != "kids-pc.lan." || r.Id != ptr.Id {
			t.Errorf("PTR answer: %v", r)
		}
	}
	tel := new(dns.Msg)
	tel.SetQuestion("v10.events.data.microsoft.com.", dns.TypeA)
	r, err := s.srv.Lookup(context.Background(), tel)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != dnstest.AnswerA {
		t.Errorf("a sinkholed name: %v %v, want the upstream's answer", r, err)
	}
	if up.Seen(rev) != 2 {
		t.Errorf("the upstream saw %d lookups, want 2 (no cache)", up.Seen(rev))
	}
	rec.mu.Lock()
	n := len(rec.answers)
	rec.mu.Unlock()
	if n != 0 {
		t.Errorf("observers heard of %d lookups", n)
	}
	if _, err := s.srv.Lookup(context.Background(), new(dns.Msg)); err == nil {
		t.Error("a lookup with no question")
	}
	s.srv.Close(context.Background())
	if _, err := s.srv.Lookup(context.Background(), ptr); err == nil {
		t.Error("a lookup after Close")
	}
}

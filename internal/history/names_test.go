package history

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/internal/querylog"
)

// ptrLookup answers every PTR lookup with name, once release is closed.
func ptrLookup(name string, release <-chan struct{}) clientnames.LookupFunc {
	return func(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r := new(dns.Msg).SetReply(q)
		r.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 3600}, Ptr: name}}
		return r, nil
	}
}

// TestNames: the file keeps the names of the machines it counts, the
// config's at once and a PTR lookup's a flush later; a machine not named
// for the retention is forgotten; with anonymize_clients the table is
// emptied.
func TestNames(t *testing.T) {
	backends(t, func(t *testing.T, cfg Config) {
		clk := &clock{t: t0}
		names := clientnames.New(clientnames.Config{}, clientnames.Options{Now: clk.Now,
			ConfigNames: map[netip.Addr]string{netip.MustParseAddr("192.168.1.20"): "kids-pc", netip.MustParseAddr("192.168.1.30"): "nas", netip.MustParseAddr("192.168.1.0"): "anon"}})
		defer names.Close()
		// The lookup answers only after the first flush, which must not
		// have its name yet however fast the lookup would be.
		release := make(chan struct{})
		names.Start(ptrLookup("laptop.lan.", release))
		s, _ := open(t, cfg, Options{Now: clk.Now, Names: names})
		r, err := s.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		read := func() map[string]string {
			t.Helper()
			got, err := r.Names(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		flush := func(clients ...string) {
			t.Helper()
			for _, c := range clients {
				s.Answered(answer(t, c, telemetry, clk.Now()))
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		v := names.Version()
		flush("192.168.1.20", "192.168.1.21")
		if got, want := read(), map[string]string{"192.168.1.20": "kids-pc", "192.168.1.30": "nas"}; !reflect.DeepEqual(got, want) {
			t.Errorf("after the first flush: %v, want %v", got, want)
		}
		// The flush asked for 192.168.1.21's name: once found, the next
		// flush writes it.
		close(release)
		for deadline := time.Now().Add(10 * time.Second); names.Version() == v; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("192.168.1.21 was not looked up")
			}
		}
		flush("192.168.1.20")
		if got := read(); got["192.168.1.21"] != "laptop.lan" || len(got) != 3 {
			t.Errorf("after the lookup: %v", got)
		}

		// A row last known long ago is dropped at the hourly rewrite; the
		// names known are written again with the new time.
		db := storeDB(t, s)
		if _, err := db.Exec(`INSERT INTO client_names ({i}client, name, updated_ms) VALUES ({'i'}'10.0.0.9', 'gone', ?)`, t0.Add(-100*24*time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		clk.Set(t0.Add(90 * time.Minute))
		flush("192.168.1.20")
		if got := read(); got["10.0.0.9"] != "" || got["192.168.1.20"] != "kids-pc" {
			t.Errorf("after the hourly rewrite: %v", got)
		}
		if n := one(t, db, `SELECT count(*) FROM client_names WHERE updated_ms = ?`, t0.Add(90*time.Minute).UnixMilli()); n != 3 {
			t.Errorf("%d names rewritten at the hour, want 3", n)
		}

		// anonymize_clients: no name is kept.
		s.Apply(cfg, querylog.Config{AnonymizeClients: true})
		names.Apply(clientnames.Config{}, nil, true)
		flush("192.168.1.20")
		if got := read(); len(got) != 0 {
			t.Errorf("with anonymize_clients: %v", got)
		}
	})
}

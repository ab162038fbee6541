package web

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// TestAPINames: /api/clients, /api/events and /api/undocumented carry a
// machine's name beside its address, and none with anonymize_clients, not
// even the config's.
func TestAPINames(t *testing.T) {
	cfg := &resolver.Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"127.0.0.1:9"}}
	s, err := resolver.New(cfg, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	names := clientnames.New(clientnames.Config{ClientNames: clientnames.ConfigOnly}, clientnames.Options{ConfigNames: map[netip.Addr]string{
		netip.MustParseAddr("192.168.1.20"): "kids-pc", netip.MustParseAddr("192.168.1.0"): "lan"}})
	defer names.Close()
	g := &policy.Group{Name: "kids"}
	rule := &policy.Rule{Category: "undocumented", Action: policy.Log}
	for _, anonymize := range []bool{false, true} {
		activity := NewActivity(10, 10, anonymize)
		h := NewAPI(s, activity, nil, Config{}, nil, WithNames(names)).Handler()
		for _, from := range []string{"192.168.1.20", "192.168.1.21"} {
			activity.Answered(resolver.Answer{Start: time.Now(), Client: netip.MustParseAddr(from), Question: dns.Question{Name: "foo.windows.com.", Qtype: dns.TypeA},
				Decision: policy.Decision{Group: g, Action: policy.Log, Match: policy.Match{Rule: rule, Literal: "windows.com"}}})
		}
		var clients []ClientCount
		getJSON(t, h, "/api/clients", &clients)
		got := map[string]string{}
		for _, c := range clients {
			got[c.Client] = c.ClientName
		}
		var events []Event
		getJSON(t, h, "/api/events", &events)
		var undoc Undocumented
		getJSON(t, h, "/api/undocumented", &undoc)
		if !anonymize {
			if len(got) != 2 || got["192.168.1.20"] != "kids-pc" || got["192.168.1.21"] != "" {
				t.Errorf("/api/clients: %v", got)
			}
			if len(events) != 2 || events[0].ClientName != "kids-pc" || events[1].ClientName != "" {
				t.Errorf("/api/events: %+v", events)
			}
			if len(undoc.Hosts) != 1 || len(undoc.Hosts[0].ClientNames) != 1 || undoc.Hosts[0].ClientNames["192.168.1.20"] != "kids-pc" {
				t.Errorf("/api/undocumented: %+v", undoc)
			}
			continue
		}
		if len(got) != 1 || got["192.168.1.0"] != "" {
			t.Errorf("anonymized /api/clients: %v", got)
		}
		if len(events) != 2 || events[0].ClientName != "" || events[1].ClientName != "" {
			t.Errorf("anonymized /api/events: %+v", events)
		}
		if len(undoc.Hosts) != 1 || undoc.Hosts[0].ClientNames != nil {
			t.Errorf("anonymized /api/undocumented: %+v", undoc)
		}
	}
}

// TestHistoryNames: /api/new, /api/endpoints?client= and
// /api/events?before= carry the names the history keeps; with
// anonymize_clients none.
func TestHistoryNames(t *testing.T) {
	p, _, err := policy.Compile(policy.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	names := clientnames.New(clientnames.Config{ClientNames: clientnames.ConfigOnly}, clientnames.Options{ConfigNames: map[netip.Addr]string{
		netip.MustParseAddr("192.168.1.23"): "kids-pc"}})
	defer names.Close()
	path := filepath.Join(t.TempDir(), "history.db")
	st, err := history.Open(history.Config{Path: path, Flush: time.Hour}, history.Options{Names: names})
	if err != nil {
		t.Fatal(err)
	}
	for _, client := range []string{"192.168.1.23", "192.168.1.40"} {
		c := netip.MustParseAddr(client)
		st.Answered(resolver.Answer{Start: time.Now().Add(-time.Minute), Client: c, Question: dns.Question{Name: "v10.events.data.microsoft.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET},
			Decision: p.Decide(c, "v10.events.data.microsoft.com."), Source: resolver.SourceSinkhole})
	}
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	r, err := history.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg := &resolver.Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"127.0.0.1:9"}}
	s, err := resolver.New(cfg, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	for _, anonymize := range []bool{false, true} {
		h := NewAPI(s, NewActivity(10, 10, anonymize), nil, Config{}, nil, WithHistory(r), WithNames(names)).Handler()
		var fresh history.NewEndpoints
		getJSON(t, h, "/api/new?since=-1h", &fresh)
		got := map[string]string{}
		for _, e := range fresh.Endpoints {
			got[e.Client] = e.ClientName
		}
		var es history.Endpoints
		getJSON(t, h, "/api/endpoints?client=192.168.1.23", &es)
		var page history.EventPage
		getJSON(t, h, "/api/events?before=now", &page)
		evs := map[string]string{}
		for _, e := range page.Events {
			evs[e.Client] = e.ClientName
		}
		want := map[string]string{"192.168.1.23": "kids-pc", "192.168.1.40": ""}
		wantName := "kids-pc"
		if anonymize {
			want = map[string]string{"192.168.1.23": "", "192.168.1.40": ""}
			wantName = ""
		}
		if len(got) != 2 || got["192.168.1.23"] != want["192.168.1.23"] || got["192.168.1.40"] != "" {
			t.Errorf("anonymize %v: /api/new names %v, want %v", anonymize, got, want)
		}
		if es.ClientName != wantName {
			t.Errorf("anonymize %v: /api/endpoints client_name %q, want %q", anonymize, es.ClientName, wantName)
		}
		if len(evs) != 2 || evs["192.168.1.23"] != want["192.168.1.23"] || evs["192.168.1.40"] != "" {
			t.Errorf("anonymize %v: /api/events?before= names %v, want %v", anonymize, evs, want)
		}
	}
}

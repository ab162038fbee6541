package web

import (
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/querylog"
)

// askUndocumented adds to a a query for name from client at the time at,
// decided "undocumented" under the first-party pattern.
func askUndocumented(a *Activity, client, name, pattern string, at time.Time) {
	a.add(netip.MustParseAddr(client), undocumented(client, name, pattern, at), nil)
}

func undocumented(client, name, pattern string, at time.Time) querylog.Record {
	return querylog.Record{Time: at, Client: client, Name: name, Type: "A", Action: "log", Category: "undocumented", Pattern: pattern, Edition: "all"}
}

// TestActivityUndocumented: each undocumented name is counted once however
// it is spelled, with its domain, first and last seen, and the machines
// that asked; documented matches are not among them; the busiest come first.
func TestActivityUndocumented(t *testing.T) {
	a := NewActivity(10, 10, false)
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	askUndocumented(a, "192.168.1.5", "foo.windows.com.", "*.windows.com", t0.Add(time.Second))
	askUndocumented(a, "192.168.1.6", "FOO.Windows.COM.", "*.windows.com", t0) // finished after a later one
	askUndocumented(a, "192.168.1.5", "foo.windows.com.", "*.windows.com", t0.Add(2*time.Second))
	askUndocumented(a, "192.168.1.7", "microsoft.com.", "microsoft.com", t0)
	r := undocumented("192.168.1.5", "v10.events.data.microsoft.com.", "v10.events.data.microsoft.com", t0)
	r.Category = "telemetry"
	a.add(netip.MustParseAddr(r.Client), r, nil)

	got := a.Undocumented()
	want := Undocumented{Hosts: []UndocumentedHost{
		{Name: "foo.windows.com", Domain: "windows.com", Count: 3, FirstSeen: t0, LastSeen: t0.Add(2 * time.Second),
			Clients: []string{"192.168.1.5", "192.168.1.6"}},
		{Name: "microsoft.com", Domain: "microsoft.com", Count: 1, FirstSeen: t0, LastSeen: t0, Clients: []string{"192.168.1.7"}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	// A copy: counting on does not change what was returned.
	got.Hosts[0].Clients[0] = "changed"
	askUndocumented(a, "192.168.1.8", "foo.windows.com.", "*.windows.com", t0.Add(3*time.Second))
	if got.Hosts[0].Count != 3 || len(got.Hosts[0].Clients) != 2 {
		t.Errorf("the returned host changed: %+v", got.Hosts[0])
	}
	if now := a.Undocumented().Hosts[0]; now.Count != 4 || !reflect.DeepEqual(now.Clients, []string{"192.168.1.5", "192.168.1.6", "192.168.1.8"}) {
		t.Errorf("after one more query: %+v", now)
	}
}

// TestActivityUndocumentedBounds: a name keeps at most
// maxUndocumentedClients machines and counts the queries from the rest; the
// table keeps the maxUndocumented names asked for most recently, so a name
// machines keep asking for outlives a flood of new ones, and Others counts
// the names forgotten.
func TestActivityUndocumentedBounds(t *testing.T) {
	a := NewActivity(10, 10, false)
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range maxUndocumentedClients + 5 {
		askUndocumented(a, fmt.Sprintf("10.0.0.%d", i+1), "busy.microsoft.com.", "*.microsoft.com", t0)
	}
	askUndocumented(a, "10.0.0.1", "busy.microsoft.com.", "*.microsoft.com", t0)  // kept already
	askUndocumented(a, "10.0.0.21", "busy.microsoft.com.", "*.microsoft.com", t0) // one of the rest, again
	busy := a.Undocumented().Hosts[0]
	if busy.Count != maxUndocumentedClients+7 || len(busy.Clients) != maxUndocumentedClients || busy.MoreClients != 6 {
		t.Errorf("count %d, %d clients, %d more; want %d, %d, 6", busy.Count, len(busy.Clients), busy.MoreClients, maxUndocumentedClients+7, maxUndocumentedClients)
	}

	for i := range maxUndocumented + 10 {
		askUndocumented(a, "10.0.0.1", fmt.Sprintf("h%d.windows.com.", i), "*.windows.com", t0)
		if i%100 == 0 {
			askUndocumented(a, "10.0.0.2", "busy.microsoft.com.", "*.microsoft.com", t0) // still asked for
		}
	}
	askUndocumented(a, "10.0.0.2", "h2000.windows.com.", "*.windows.com", t0) // new: one more forgotten
	got := a.Undocumented()
	if len(got.Hosts) != maxUndocumented || got.Others != 12 {
		t.Errorf("%d names, %d others; want %d, 12", len(got.Hosts), got.Others, maxUndocumented)
	}
	if got.Hosts[0].Name != "busy.microsoft.com" || got.Hosts[0].Count != maxUndocumentedClients+7+11 {
		t.Errorf("busiest: %+v", got.Hosts[0])
	}
	for _, h := range got.Hosts[1:] {
		if h.Count != 1 {
			t.Fatalf("%s: count %d", h.Name, h.Count)
		}
	}
}

// TestActivityUndocumentedConcurrent: Undocumented may be called while add
// goes on (run with -race).
func TestActivityUndocumentedConcurrent(t *testing.T) {
	a := NewActivity(10, 10, false)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 2000 {
			askUndocumented(a, fmt.Sprintf("10.0.%d.%d", i%3, i%40), fmt.Sprintf("h%d.windows.com.", i%50), "*.windows.com", time.Now())
		}
	}()
	for range 200 {
		for _, h := range a.Undocumented().Hosts {
			_ = append(h.Clients, "x") // a copy of its own to grow
		}
	}
	wg.Wait()
	var total uint64
	for _, h := range a.Undocumented().Hosts {
		total += h.Count
	}
	if total != 2000 {
		t.Errorf("counted %d queries, want 2000", total)
	}
}

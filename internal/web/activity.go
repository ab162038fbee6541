package web

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/resolver"
)

// Activity is the bounded in-memory history the web page shows: a ring of
// recent catalog matches, totals per category and action, counts per
// endpoint, per-client counters in an LRU, and the undocumented Microsoft
// names asked for. Memory stays flat however long phonehome runs.
// It is an observer of the resolver's request path.
type Activity struct {
	// anonymize zeroes the host part of client addresses
	// (querylog.anonymize_clients).
	anonymize atomic.Bool

	mu        sync.Mutex
	ring      []Event
	next      int
	seq       uint64
	totals    map[catAction]uint64
	endpoints map[string]*EndpointCount
	clients   *lru.Cache[netip.Addr, *ClientCount]
	started   time.Time

	undocumented *lru.Cache[string, *UndocumentedHost] // by name: lower case, no trailing dot
	others       uint64                                // names forgotten to make room
}

// Event is one catalog match in the feed: its query log line and an ID.
type Event struct {
	ID uint64 `json:"id"`
	querylog.Record
}

type catAction struct{ category, action string }

// EndpointCount is how often one pattern was asked for, and what was done:
// one group's sinkhole can be another's log.
type EndpointCount struct {
	Pattern     string            `json:"pattern"`
	Category    string            `json:"category"`
	Actions     map[string]uint64 `json:"actions"`
	Description string            `json:"description"`
	Count       uint64            `json:"count"`
}

// ClientCount is what one client asked for.
type ClientCount struct {
	Client string `json:"client"`
	// ClientName is the machine's name, filled in by the API.
	ClientName string            `json:"client_name,omitempty"`
	Group      string            `json:"group"`
	Edition    string            `json:"edition"`
	Total      uint64            `json:"total"`
	Categories map[string]uint64 `json:"categories"`
	LastSeen   time.Time         `json:"last_seen"`

	addr netip.Addr // the address a name may be given for; zero when anonymized
}

// UndocumentedHost is one name under a Microsoft domain that no Microsoft
// document lists, and who asked for it.
type UndocumentedHost struct {
	Name      string    `json:"name"`   // lower case, no trailing dot
	Domain    string    `json:"domain"` // the first-party domain it is under
	Count     uint64    `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Clients are the first maxUndocumentedClients machines that asked;
	// MoreClients counts the queries from any other machine.
	Clients     []string `json:"clients"`
	MoreClients uint64   `json:"more_clients"`
	// ClientNames are the names of those machines that have one, by
	// address; filled in by the API.
	ClientNames map[string]string `json:"client_names,omitempty"`
}

// Undocumented is what /api/undocumented returns: the names kept, busiest
// first, and Others, how many names were forgotten to make room.
type Undocumented struct {
	Hosts  []UndocumentedHost `json:"hosts"`
	Others uint64             `json:"others"`
}

const (
	// maxEndpoints bounds the endpoint table; documented patterns are far fewer.
	maxEndpoints = 4096
	// maxUndocumented bounds the undocumented names kept, and
	// maxUndocumentedClients the machines kept for each: a few hundred
	// kilobytes at most, however many names a network makes up.
	maxUndocumented        = 1000
	maxUndocumentedClients = 16
)

// NewActivity keeps the last events matches and up to clients clients;
// anonymize zeroes the host part of their addresses.
func NewActivity(events, clients int, anonymize bool) *Activity {
	a := &Activity{ring: make([]Event, 0, events), totals: map[catAction]uint64{}, endpoints: map[string]*EndpointCount{},
		started: time.Now()}
	a.anonymize.Store(anonymize)
	a.undocumented, _ = lru.NewWithEvict(maxUndocumented, func(string, *UndocumentedHost) { a.others++ })
	a.clients, _ = lru.New[netip.Addr, *ClientCount](clients)
	return a
}

// Answered keeps a decided query that matched a catalog entry or a list,
// whatever was done with it.
func (a *Activity) Answered(ans resolver.Answer) { a.AnsweredBatch([]resolver.Answer{ans}) }

// AnsweredBatch keeps the matches of a batch of answers (the UDP loop's),
// under one hold of the lock.
func (a *Activity) AnsweredBatch(as []resolver.Answer) {
	first := 0
	for first < len(as) && !kept(&as[first]) {
		first++
	}
	if first == len(as) {
		return
	}
	anonymize := a.anonymize.Load()
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := first; i < len(as); i++ {
		if kept(&as[i]) {
			a.keep(&as[i], anonymize)
		}
	}
}

// kept reports whether the feed keeps an answer: a decided query that
// matched a catalog entry or a list.
func kept(ans *resolver.Answer) bool { return ans.Decided() && ans.Decision.Match.Rule != nil }

// keep adds an answer kept; a.mu is held.
func (a *Activity) keep(ans *resolver.Answer, anonymize bool) {
	client := ans.Client
	if anonymize {
		client = querylog.Anonymize(client)
	}
	a.addLocked(client, querylog.NewRecord(ans, anonymize), ans.Decision.Match.Rule.Entry)
}

// SetAnonymize turns anonymize_clients on or off (a reload).
func (a *Activity) SetAnonymize(on bool) { a.anonymize.Store(on) }

// add records one catalog or list match, of the entry e (nil for a list's
// line).
func (a *Activity) add(client netip.Addr, r querylog.Record, e *endpoints.Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addLocked(client, r, e)
}

// addLocked is add with a.mu held. The entry's description is spelled
// only for the endpoint's first match.
func (a *Activity) addLocked(client netip.Addr, r querylog.Record, entry *endpoints.Entry) {
	a.seq++
	ev := Event{ID: a.seq, Record: r}
	if len(a.ring) < cap(a.ring) {
		a.ring = append(a.ring, ev)
	} else {
		a.ring[a.next] = ev
		a.next = (a.next + 1) % len(a.ring)
	}
	a.totals[catAction{r.Category, r.Action}]++
	e, ok := a.endpoints[r.Pattern]
	if !ok && len(a.endpoints) < maxEndpoints {
		desc := ""
		if entry != nil {
			desc = entry.Description()
		}
		e = &EndpointCount{Pattern: r.Pattern, Category: r.Category, Actions: map[string]uint64{}, Description: desc}
		a.endpoints[r.Pattern] = e
	}
	if e != nil {
		e.Count++
		e.Actions[r.Action]++
	}
	c, ok := a.clients.Get(client)
	if !ok {
		c = &ClientCount{Client: r.Client, Categories: map[string]uint64{}, addr: r.ClientAddr()}
		a.clients.Add(client, c)
	}
	c.Group, c.Edition, c.LastSeen = r.Group, r.Edition, r.Time
	c.Total++
	c.Categories[r.Category]++
	if r.Category == string(endpoints.Undocumented) {
		a.addUndocumented(r)
	}
}

// addUndocumented counts a query for an undocumented name; a.mu is held.
// The table keeps the maxUndocumented names asked for most recently: a
// flood of made-up names pushes out names nobody asks for any more, not
// the ones machines keep asking for, and a.others counts what it forgot.
func (a *Activity) addUndocumented(r querylog.Record) {
	name := strings.ToLower(strings.TrimSuffix(r.Name, "."))
	u, ok := a.undocumented.Get(name)
	if !ok {
		u = &UndocumentedHost{Name: name, Domain: strings.TrimPrefix(r.Pattern, "*."), FirstSeen: r.Time}
		a.undocumented.Add(name, u)
	}
	u.Count++
	// Queries finish out of order: r.Time is when this one started.
	if r.Time.Before(u.FirstSeen) {
		u.FirstSeen = r.Time
	}
	if r.Time.After(u.LastSeen) {
		u.LastSeen = r.Time
	}
	switch {
	case slices.Contains(u.Clients, r.Client):
	case len(u.Clients) < maxUndocumentedClients:
		u.Clients = append(u.Clients, r.Client)
	default:
		u.MoreClients++
	}
}

// Events returns the matches after id since, oldest first.
func (a *Activity) Events(since uint64) []Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []Event{}
	for i := range a.ring {
		ev := a.ring[(a.next+i)%len(a.ring)]
		if ev.ID > since {
			out = append(out, ev)
		}
	}
	return out
}

// CategoryTotal is the count of one category and action.
type CategoryTotal struct {
	Category string `json:"category"`
	Action   string `json:"action"`
	Count    uint64 `json:"count"`
}

// Summary is what /api/summary returns.
type Summary struct {
	Since        time.Time        `json:"since"`
	Matches      uint64           `json:"matches"`
	Categories   []CategoryTotal  `json:"categories"`
	TopEndpoints []*EndpointCount `json:"top_endpoints"`
}

// Summary returns the totals and the top endpoints.
func (a *Activity) Summary(top int) Summary {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Summary{Since: a.started, Matches: a.seq, Categories: []CategoryTotal{}, TopEndpoints: []*EndpointCount{}}
	for k, n := range a.totals {
		s.Categories = append(s.Categories, CategoryTotal{k.category, k.action, n})
	}
	slices.SortFunc(s.Categories, func(x, y CategoryTotal) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Category, y.Category))
	})
	for _, e := range a.endpoints {
		s.TopEndpoints = append(s.TopEndpoints, e)
	}
	slices.SortFunc(s.TopEndpoints, func(x, y *EndpointCount) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Pattern, y.Pattern))
	})
	if len(s.TopEndpoints) > top {
		s.TopEndpoints = s.TopEndpoints[:top]
	}
	for i, e := range s.TopEndpoints { // copies: add goes on counting
		c := *e
		c.Actions = maps.Clone(e.Actions)
		s.TopEndpoints[i] = &c
	}
	return s
}

// Clients returns every client remembered, busiest first.
func (a *Activity) Clients() []ClientCount {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []ClientCount{}
	for _, c := range a.clients.Values() {
		cc := *c
		cc.Categories = make(map[string]uint64, len(c.Categories))
		for k, v := range c.Categories {
			cc.Categories[k] = v
		}
		out = append(out, cc)
	}
	slices.SortFunc(out, func(x, y ClientCount) int { return cmp.Compare(y.Total, x.Total) })
	return out
}

// Undocumented returns the undocumented names asked for, busiest first, as
// copies that stay still while add goes on counting.
func (a *Activity) Undocumented() Undocumented {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := Undocumented{Hosts: make([]UndocumentedHost, 0, a.undocumented.Len()), Others: a.others}
	for _, u := range a.undocumented.Values() {
		c := *u
		c.Clients = slices.Clone(u.Clients)
		out.Hosts = append(out.Hosts, c)
	}
	slices.SortFunc(out.Hosts, func(x, y UndocumentedHost) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Name, y.Name))
	})
	return out
}

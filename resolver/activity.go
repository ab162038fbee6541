package resolver

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Activity is the bounded in-memory history the web page shows: a ring of
// recent catalog matches, totals per category and action, counts per
// endpoint, and per-client counters in an LRU. Memory stays flat however
// long phonehome runs.
type Activity struct {
	mu        sync.Mutex
	ring      []Event
	next      int
	seq       uint64
	totals    map[catAction]uint64
	endpoints map[string]*EndpointCount
	clients   *lru.Cache[netip.Addr, *ClientCount]
	started   time.Time
}

// Event is one catalog match in the feed.
type Event struct {
	ID uint64 `json:"id"`
	Record
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
	Client     string            `json:"client"`
	Group      string            `json:"group"`
	Edition    string            `json:"edition"`
	Total      uint64            `json:"total"`
	Categories map[string]uint64 `json:"categories"`
	LastSeen   time.Time         `json:"last_seen"`
}

// maxEndpoints bounds the endpoint table; documented patterns are far fewer.
const maxEndpoints = 4096

// NewActivity keeps the last events matches and up to clients clients.
func NewActivity(events, clients int) *Activity {
	a := &Activity{ring: make([]Event, 0, events), totals: map[catAction]uint64{}, endpoints: map[string]*EndpointCount{}, started: time.Now()}
	a.clients, _ = lru.New[netip.Addr, *ClientCount](clients)
	return a
}

// add records one catalog or list match.
func (a *Activity) add(client netip.Addr, r Record, description string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
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
		e = &EndpointCount{Pattern: r.Pattern, Category: r.Category, Actions: map[string]uint64{}, Description: description}
		a.endpoints[r.Pattern] = e
	}
	if e != nil {
		e.Count++
		e.Actions[r.Action]++
	}
	c, ok := a.clients.Get(client)
	if !ok {
		c = &ClientCount{Client: r.Client, Categories: map[string]uint64{}}
		a.clients.Add(client, c)
	}
	c.Group, c.Edition, c.LastSeen = r.Group, r.Edition, r.Time
	c.Total++
	c.Categories[r.Category]++
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

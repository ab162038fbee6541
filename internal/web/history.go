package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/policy"
)

// WithHistory serves the history through r: /api/history,
// /api/endpoints, /api/new, /api/instances and /api/events?before=. Without it (history:
// off) those answer 404, saying so.
func WithHistory(r *history.Reader) Option {
	return func(a *API) { a.history = r }
}

// historyTimeout bounds one read of the history file.
const historyTimeout = 10 * time.Second

// defaultRange is how far back from and since go when not given.
const defaultRange = 24 * time.Hour

// historyRoutes adds the routes that read the history file. They are GET
// routes: filter's rules for every request are all they need.
func (a *API) historyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/history", a.withHistory(a.series))
	mux.HandleFunc("GET /api/endpoints", a.withHistory(a.endpoints))
	mux.HandleFunc("GET /api/new", a.withHistory(a.newEndpoints))
	mux.HandleFunc("GET /api/instances", a.withHistory(a.instances))
}

// instances is GET /api/instances: the phonehome instances whose history
// this is (one for the file, every one writing a shared database), with
// the matches each counted in the range.
func (a *API) instances(w http.ResponseWriter, r *http.Request) {
	p := readParams(r, "from", "to")
	to := p.time("to", p.now)
	from := p.time("from", to.Add(-defaultRange))
	if p.failed(w) {
		return
	}
	is, err := a.history.Instances(r.Context(), from, to)
	replyHistory(w, is, err)
}

// withHistory answers 404 when the history is off, and bounds the time a
// handler may read the file.
func (a *API) withHistory(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.history == nil {
			http.Error(w, fmt.Sprintf("history is off (history: off in the config file), so there is nothing at %s\n", r.URL.Path), http.StatusNotFound)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), historyTimeout)
		defer cancel()
		h(w, r.WithContext(ctx))
	}
}

// series is GET /api/history: counts per bucket and category.
func (a *API) series(w http.ResponseWriter, r *http.Request) {
	p := readParams(r, "from", "to", "step", "client", "group", "category", "action", "instance")
	to := p.time("to", p.now)
	q := history.SeriesQuery{From: p.time("from", to.Add(-defaultRange)), To: to, Step: p.step("step"), Filter: p.filter()}
	if p.failed(w) {
		return
	}
	s, err := a.history.Series(r.Context(), q)
	replyHistory(w, s, err)
}

// endpoints is GET /api/endpoints: per pattern, the count, first and last
// seen.
func (a *API) endpoints(w http.ResponseWriter, r *http.Request) {
	p := readParams(r, "client", "from", "to", "limit", "offset", "instance")
	to := p.time("to", p.now)
	q := history.EndpointsQuery{Client: p.client("client"), Instance: p.word("instance"), From: p.time("from", to.Add(-defaultRange)), To: to,
		Limit: p.int("limit", 1, history.MaxLimit), Offset: p.int("offset", 0, history.MaxOffset)}
	if p.failed(w) {
		return
	}
	es, err := a.history.Endpoints(r.Context(), q)
	if err == nil && es.Client != "" {
		es.ClientName = a.historyNames(r.Context())[es.Client]
	}
	replyHistory(w, es, err)
}

// newEndpoints is GET /api/new: first contacts since a time.
func (a *API) newEndpoints(w http.ResponseWriter, r *http.Request) {
	p := readParams(r, "since", "client", "limit", "offset")
	q := history.NewQuery{Since: p.time("since", p.now.Add(-defaultRange)), Client: p.client("client"),
		Limit: p.int("limit", 1, history.MaxLimit), Offset: p.int("offset", 0, history.MaxOffset)}
	if p.failed(w) {
		return
	}
	n, err := a.history.New(r.Context(), q)
	if err == nil {
		names := a.historyNames(r.Context())
		for i := range n.Endpoints {
			n.Endpoints[i].ClientName = names[n.Endpoints[i].Client]
		}
	}
	replyHistory(w, n, err)
}

// olderEvents is GET /api/events?before=: stored events before a time or
// a page's next, newest first.
func (a *API) olderEvents(w http.ResponseWriter, r *http.Request) {
	a.withHistory(func(w http.ResponseWriter, r *http.Request) {
		p := readParams(r, "before", "client", "group", "category", "action", "instance", "limit")
		q := history.EventsQuery{Filter: p.filter(), Limit: p.int("limit", 1, history.MaxLimit)}
		before, err := history.ParseCursor(p.get("before"), p.now)
		if err != nil {
			p.fail("before", err)
		}
		q.Before = before
		if p.failed(w) {
			return
		}
		page, err := a.history.Events(r.Context(), q)
		if err == nil {
			names := a.historyNames(r.Context())
			for i := range page.Events {
				page.Events[i].ClientName = names[page.Events[i].Client]
			}
		}
		replyHistory(w, page, err)
	})(w, r)
}

// replyHistory answers a Reader's result: 400 for a parameter it cannot
// take, 503 when the file cannot be read (not there yet, or a read that
// took too long).
func replyHistory(w http.ResponseWriter, v any, err error) {
	var pe *history.ParamError
	switch {
	case errors.As(err, &pe):
		http.Error(w, pe.Error()+"\n", http.StatusBadRequest)
	case errors.Is(err, context.DeadlineExceeded):
		http.Error(w, fmt.Sprintf("history: the read took over %v; ask for less\n", historyTimeout), http.StatusServiceUnavailable)
	case err != nil:
		http.Error(w, err.Error()+"\n", http.StatusServiceUnavailable)
	default:
		replyJSON(w, v)
	}
}

// params reads a request's query parameters: only the route's, each at
// most once. It keeps the first problem, which failed answers with 400.
type params struct {
	q   url.Values
	now time.Time
	err error
}

func readParams(r *http.Request, known ...string) *params {
	p := &params{q: r.URL.Query(), now: time.Now()}
	names := make([]string, 0, len(p.q))
	for name := range p.q {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch {
		case !slices.Contains(known, name):
			p.fail(name, fmt.Errorf("unknown parameter: want %s", strings.Join(known, ", ")))
		case len(p.q[name]) > 1:
			p.fail(name, errors.New("given more than once"))
		}
	}
	return p
}

// fail keeps the first problem, naming its parameter.
func (p *params) fail(name string, err error) {
	if p.err == nil {
		p.err = &history.ParamError{Param: name, Msg: err.Error()}
	}
}

// failed answers 400 when a parameter could not be read.
func (p *params) failed(w http.ResponseWriter) bool {
	if p.err != nil {
		http.Error(w, p.err.Error()+"\n", http.StatusBadRequest)
	}
	return p.err != nil
}

func (p *params) get(name string) string { return p.q.Get(name) }

// time reads a time as history.ParseTime does.
func (p *params) time(name string, def time.Time) time.Time {
	v := p.get(name)
	if v == "" {
		return def
	}
	t, err := history.ParseTime(v, p.now)
	if err != nil {
		p.fail(name, err)
	}
	return t
}

// step reads a step; 0 (none given) leaves it to history.AutoStep.
func (p *params) step(name string) time.Duration {
	v := p.get(name)
	if v == "" {
		return 0
	}
	d, err := history.ParseStep(v)
	if err != nil {
		p.fail(name, err)
	}
	return d
}

// client reads an IP address, spelled as the history spells clients.
func (p *params) client(name string) string {
	v := p.get(name)
	if v == "" {
		return ""
	}
	ip, err := netip.ParseAddr(v)
	if err != nil || ip.Zone() != "" {
		p.fail(name, fmt.Errorf("%q is not an IP address: want a client's address, such as 192.168.1.23 or fd00::23", v))
		return ""
	}
	return ip.String()
}

// word reads a group, category or instance name: printable, at most 255
// bytes.
func (p *params) word(name string) string {
	v := p.get(name)
	if len(v) > 255 || strings.ContainsFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) {
		p.fail(name, fmt.Errorf("%.40q is not a %s name", v, name))
		return ""
	}
	return v
}

// filter reads client, group, category, action and instance.
func (p *params) filter() history.Filter {
	f := history.Filter{Client: p.client("client"), Group: p.word("group"), Category: strings.ToLower(p.word("category")), Instance: p.word("instance")}
	if v := p.get("action"); v != "" {
		act, err := policy.ParseAction(v)
		if err != nil {
			p.fail("action", err)
		}
		f.Action = act.String()
	}
	return f
}

// int reads a whole number from lo to hi; 0 (the Reader's default) when
// not given.
func (p *params) int(name string, lo, hi int) int {
	v := p.get(name)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, fmt.Errorf("%q: want a whole number from %d to %d", v, lo, hi))
		return 0
	}
	return n
}

// Package web serves phonehome's HTTP side: the metrics, the health checks,
// the JSON API and the live web page, with the in-memory activity the page
// shows. Its types are the API's.
package web

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/resolver"
)

// Config is the web side's part of the config file.
type Config struct {
	// HTTP is the address of the metrics, web page and API; "" turns it off.
	HTTP *string `yaml:"http"`
	// HTTPToken, when set, is needed (Authorization: Bearer TOKEN) for the
	// calls that change something.
	HTTPToken string `yaml:"http_token"`
	// HTTPHosts are the names, besides IP addresses and localhost, that a
	// request may give as its Host: phonehome.lan to open
	// http://phonehome.lan:8053/. Any other name is refused, so that a web
	// site whose name someone re-resolves to this address (DNS rebinding)
	// cannot use the API.
	HTTPHosts []string `yaml:"http_hosts"`
}

// DefaultHTTP is the HTTP address when the config names none.
const DefaultHTTP = "127.0.0.1:8053"

// SetDefaults fills in what the file left out.
func (c *Config) SetDefaults() {
	if c.HTTP == nil {
		addr := DefaultHTTP
		c.HTTP = &addr
	}
}

// Check reports a bad HTTP address or host name.
func (c *Config) Check(r *config.Report) {
	if c.HTTP != nil && *c.HTTP != "" {
		if err := config.CheckHostPort(*c.HTTP); err != nil {
			r.Key("http", "http: %v", err)
		}
	}
	for i, h := range c.HTTPHosts {
		if err := checkHostName(h); err != nil {
			r.Value(fmt.Sprintf("http_hosts[%d]", i), "http_hosts: %v", err)
		}
	}
}

// checkHostName reports why s cannot be a name of http_hosts.
func checkHostName(s string) error {
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return fmt.Errorf("%q is an IP address; IP addresses are always allowed, list names only", s)
	}
	if h, port, err := net.SplitHostPort(s); err == nil && checkHostName(h) == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err == nil {
			return fmt.Errorf("%q has a port; list the name only (%q), any port is allowed", s, h)
		}
	}
	return config.CheckHostName(s)
}

// API serves the metrics, health checks, the JSON API and the web page of
// a running resolver.
type API struct {
	resolver *resolver.Server
	activity *Activity
	history  *history.Reader    // nil with history: off
	names    *clientnames.Names // nil: machines by address only
	gatherer prometheus.Gatherer
	reload   func() ([]string, error) // what SIGHUP does; it names the keys that need a restart
	refused  *prometheus.CounterVec   // phonehome_http_refused_total{reason}
	token    atomic.Pointer[string]
	hosts    atomic.Pointer[map[string]bool] // http_hosts, as normalHost gives them

	// setPause pauses (nil resumes): the resolver's own, or the fleet's
	// (WithPause).
	setPause func(*resolver.Pause) error
}

// NewAPI serves s: the metrics of reg (where it adds its own), the page's
// data from activity, and POST /api/reload through reload. c gives
// http_token and http_hosts. A nil reg is a registry of its own. Options
// add what not every server has: WithHistory.
func NewAPI(s *resolver.Server, activity *Activity, reg *prometheus.Registry, c Config, reload func() ([]string, error), opts ...Option) *API {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	a := &API{resolver: s, activity: activity, gatherer: reg, reload: reload, refused: newRefusedMetric(reg)}
	a.setPause = func(p *resolver.Pause) error { s.SetPause(p); return nil }
	for _, o := range opts {
		o(a)
	}
	a.Apply(c)
	return a
}

// Option is something NewAPI serves besides what it always does.
type Option func(*API)

// Apply takes what a reload changes of the web side: http_token and
// http_hosts (the address is read at start only).
func (a *API) Apply(c Config) {
	token := c.HTTPToken
	a.token.Store(&token)
	hosts := make(map[string]bool, len(c.HTTPHosts))
	for _, h := range c.HTTPHosts {
		hosts[normalHost(h)] = true
	}
	a.hosts.Store(&hosts)
}

// Handler returns the API's routes, behind filter: no route sees a request
// with a foreign Host, nor a POST from another web site.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.gatherer, promhttp.HandlerOpts{}))
	// healthz: the process runs.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	// readyz: the listeners are up (they are before this server starts) and
	// at least one upstream is answering.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.resolver.Ready() {
			http.Error(w, "no upstream is answering\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /api/summary", func(w http.ResponseWriter, _ *http.Request) {
		replyJSON(w, struct {
			Summary
			Paused *Pause `json:"paused"`
		}{a.activity.Summary(20), pauseOf(a.resolver.Paused())})
	})
	mux.HandleFunc("GET /api/clients", func(w http.ResponseWriter, _ *http.Request) { replyJSON(w, a.nameClients(a.activity.Clients())) })
	mux.HandleFunc("GET /api/undocumented", func(w http.ResponseWriter, _ *http.Request) {
		replyJSON(w, a.nameUndocumented(a.activity.Undocumented()))
	})
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("before") {
			a.olderEvents(w, r) // from the history file: history.go
			return
		}
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		replyJSON(w, a.nameEvents(a.activity.Events(since)))
	})
	a.historyRoutes(mux)
	mux.HandleFunc("POST /api/pause", a.guard(a.pause))
	mux.HandleFunc("POST /api/resume", a.guard(func(w http.ResponseWriter, _ *http.Request) {
		replyJSON(w, pauseReply(nil, a.setPause(nil)))
	}))
	mux.HandleFunc("POST /api/reload", a.guard(func(w http.ResponseWriter, _ *http.Request) {
		restart, err := a.reload()
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		replyJSON(w, map[string]any{"reload": "ok", "restart_needed": append([]string{}, restart...)})
	}))
	mux.Handle("GET /{$}", pageHandler())
	return a.filter(mux)
}

// Serve serves h on addr and returns the server and the bound address.
func Serve(addr string, h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_, port, _ := net.SplitHostPort(addr)
		return nil, "", fmt.Errorf("http: %w%s", err, resolver.BindHint(port, err, `-http or http: ("" turns it off)`))
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	return hs, ln.Addr().String(), nil
}

// Pause is a pause in force, as the API shows it.
type Pause struct {
	Until      time.Time `json:"until"`
	Categories []string  `json:"categories,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	By         string    `json:"by,omitempty"` // the instance that set a fleet-wide pause
}

func pauseOf(p *resolver.Pause) *Pause {
	if p == nil {
		return nil
	}
	return &Pause{Until: p.Until, Categories: p.Categories, Reason: p.Reason, By: p.By}
}

// PauseRequest is the body of POST /api/pause, as "phonehome pause" sends it.
type PauseRequest struct {
	Duration   string   `json:"duration"` // "15m"
	Categories []string `json:"categories"`
	Reason     string   `json:"reason,omitempty"`
}

// maxReason bounds a pause's reason.
const maxReason = 200

// WithPause makes pause and resume go through set (the fleet's: it
// applies them here and shares them with the other instances) rather than
// straight to the resolver. An error from set means it applied here only;
// the answer says so in "warning".
func WithPause(set func(*resolver.Pause) error) Option {
	return func(a *API) { a.setPause = set }
}

// pauseReply is the answer to a pause or resume: the pause in force, and
// a warning when it was not shared with the other instances.
func pauseReply(p *resolver.Pause, err error) map[string]any {
	reply := map[string]any{"paused": pauseOf(p)}
	if err != nil {
		reply["warning"] = err.Error()
	}
	return reply
}

func (a *API) pause(w http.ResponseWriter, r *http.Request) {
	var req PauseRequest
	// filter bounds the body (maxBody).
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		if tooLarge(err) {
			a.refuse(w, refusedSize, http.StatusRequestEntityTooLarge, "request body over %d bytes\n", maxBody)
			return
		}
		http.Error(w, "want JSON like {\"duration\": \"15m\", \"categories\": [\"telemetry\"]}\n", http.StatusBadRequest)
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil || d <= 0 || d > 24*time.Hour {
		http.Error(w, "duration: want a Go duration between 1s and 24h, such as 15m\n", http.StatusBadRequest)
		return
	}
	if len(req.Reason) > maxReason {
		http.Error(w, fmt.Sprintf("reason: want at most %d bytes\n", maxReason), http.StatusBadRequest)
		return
	}
	p := &resolver.Pause{Until: time.Now().Add(d), Categories: req.Categories, Reason: req.Reason}
	err = a.setPause(p)
	replyJSON(w, pauseReply(a.resolver.Paused(), err))
}

func replyJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

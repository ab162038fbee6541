// Package web serves phonehome's HTTP side: the metrics, the health checks,
// the JSON API and the live web page, with the in-memory activity the page
// shows. Its types are the API's.
package web

import (
	"crypto/subtle"
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

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/resolver"
)

// Config is the web side's part of the config file.
type Config struct {
	// HTTP is the address of the metrics, web page and API; "" turns it off.
	HTTP *string `yaml:"http"`
	// HTTPToken, when set, is needed (Authorization: Bearer TOKEN) for the
	// calls that change something.
	HTTPToken string `yaml:"http_token"`
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

// Check reports a bad HTTP address.
func (c *Config) Check(r *config.Report) {
	if c.HTTP != nil && *c.HTTP != "" {
		if err := config.CheckHostPort(*c.HTTP); err != nil {
			r.Key("http", "http: %v", err)
		}
	}
}

// API serves the metrics, health checks, the JSON API and the web page of
// a running resolver.
type API struct {
	resolver *resolver.Server
	activity *Activity
	gatherer prometheus.Gatherer
	reload   func() ([]string, error) // what SIGHUP does; it names the keys that need a restart
	token    atomic.Pointer[string]
}

// NewAPI serves s: its metrics from g, the page's data from activity, and
// POST /api/reload through reload. token is http_token ("" for none).
func NewAPI(s *resolver.Server, activity *Activity, g prometheus.Gatherer, token string, reload func() ([]string, error)) *API {
	a := &API{resolver: s, activity: activity, gatherer: g, reload: reload}
	a.SetToken(token)
	return a
}

// SetToken changes http_token; a reload calls it.
func (a *API) SetToken(token string) { a.token.Store(&token) }

// Handler returns the API's routes.
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
	mux.HandleFunc("GET /api/clients", func(w http.ResponseWriter, _ *http.Request) { replyJSON(w, a.activity.Clients()) })
	mux.HandleFunc("GET /api/undocumented", func(w http.ResponseWriter, _ *http.Request) { replyJSON(w, a.activity.Undocumented()) })
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		replyJSON(w, a.activity.Events(since))
	})
	mux.HandleFunc("POST /api/pause", a.guard(a.pause))
	mux.HandleFunc("POST /api/resume", a.guard(func(w http.ResponseWriter, _ *http.Request) {
		a.resolver.SetPause(nil)
		replyJSON(w, map[string]any{"paused": nil})
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
	return mux
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

// guard lets a state-changing request through only from an address in
// access.allow and, when http_token is set, with the token
// ("Authorization: Bearer TOKEN").
func (a *API) guard(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ip, err := netip.ParseAddr(host)
		if err != nil || !a.resolver.State().Allowed(ip) {
			http.Error(w, "forbidden: not an address in access.allow\n", http.StatusForbidden)
			return
		}
		if token := *a.token.Load(); token != "" {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				http.Error(w, "unauthorized: this needs http_token as Authorization: Bearer TOKEN\n", http.StatusUnauthorized)
				return
			}
		}
		next(w, r)
	}
}

// Pause is a pause in force, as the API shows it.
type Pause struct {
	Until      time.Time `json:"until"`
	Categories []string  `json:"categories,omitempty"`
}

func pauseOf(p *resolver.Pause) *Pause {
	if p == nil {
		return nil
	}
	return &Pause{Until: p.Until, Categories: p.Categories}
}

// PauseRequest is the body of POST /api/pause, as "phonehome pause" sends it.
type PauseRequest struct {
	Duration   string   `json:"duration"` // "15m"
	Categories []string `json:"categories"`
}

func (a *API) pause(w http.ResponseWriter, r *http.Request) {
	var req PauseRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "want JSON like {\"duration\": \"15m\", \"categories\": [\"telemetry\"]}\n", http.StatusBadRequest)
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil || d <= 0 || d > 24*time.Hour {
		http.Error(w, "duration: want a Go duration between 1s and 24h, such as 15m\n", http.StatusBadRequest)
		return
	}
	p := &resolver.Pause{Until: time.Now().Add(d), Categories: req.Categories}
	a.resolver.SetPause(p)
	replyJSON(w, map[string]any{"paused": pauseOf(p)})
}

func replyJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

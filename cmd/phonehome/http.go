package main

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phonehome/phonehome/resolver"
)

// api serves the metrics, health checks, the JSON API and the web page.
type api struct {
	h      *resolver.Handler
	reg    *prometheus.Registry
	token  string
	reload func() error // what SIGHUP does
}

// startHTTP serves the api on addr and returns the server and the bound
// address.
func startHTTP(addr string, a *api) (*http.Server, string, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	// healthz: the process runs.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	// readyz: the listeners are up (they are before this server starts) and
	// at least one upstream is answering.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if a.h.State().Forwarder.Healthy() == 0 {
			http.Error(w, "no upstream is answering\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /api/summary", func(w http.ResponseWriter, _ *http.Request) {
		replyJSON(w, struct {
			resolver.Summary
			Paused *resolver.Pause `json:"paused"`
		}{a.h.Activity.Summary(20), a.h.Paused()})
	})
	mux.HandleFunc("GET /api/clients", func(w http.ResponseWriter, _ *http.Request) { replyJSON(w, a.h.Activity.Clients()) })
	mux.HandleFunc("GET /api/undocumented", func(w http.ResponseWriter, _ *http.Request) { replyJSON(w, a.h.Activity.Undocumented()) })
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		replyJSON(w, a.h.Activity.Events(since))
	})
	mux.HandleFunc("POST /api/pause", a.guard(a.pause))
	mux.HandleFunc("POST /api/resume", a.guard(func(w http.ResponseWriter, _ *http.Request) {
		a.h.SetPause(nil)
		replyJSON(w, map[string]any{"paused": nil})
	}))
	mux.HandleFunc("POST /api/reload", a.guard(func(w http.ResponseWriter, _ *http.Request) {
		if err := a.reload(); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		replyJSON(w, map[string]string{"reload": "ok"})
	}))
	mux.Handle("GET /{$}", pageHandler())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("http: %w", err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	return hs, ln.Addr().String(), nil
}

// guard lets a state-changing request through only from an address in
// access.allow and, when http_token is set, with the token
// ("Authorization: Bearer TOKEN").
func (a *api) guard(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ip, err := netip.ParseAddr(host)
		if err != nil || !a.h.State().Allowed(ip) {
			http.Error(w, "forbidden: not an address in access.allow\n", http.StatusForbidden)
			return
		}
		if a.token != "" {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
				http.Error(w, "unauthorized: this needs http_token as Authorization: Bearer TOKEN\n", http.StatusUnauthorized)
				return
			}
		}
		next(w, r)
	}
}

// pauseRequest is the body of POST /api/pause.
type pauseRequest struct {
	Duration   string   `json:"duration"` // "15m"
	Categories []string `json:"categories"`
}

func (a *api) pause(w http.ResponseWriter, r *http.Request) {
	var req pauseRequest
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
	a.h.SetPause(p)
	replyJSON(w, map[string]any{"paused": p})
}

func replyJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

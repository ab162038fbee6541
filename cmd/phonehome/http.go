package main

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phonehome/phonehome/resolver"
)

// startHTTP serves /metrics, /healthz and /readyz on addr and returns the
// server and the bound address.
func startHTTP(addr string, reg *prometheus.Registry, h *resolver.Handler) (*http.Server, string, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// healthz: the process runs.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	// readyz: the listeners are up (they are before this server starts) and
	// at least one upstream is answering.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if h.State().Forwarder.Healthy() == 0 {
			http.Error(w, "no upstream is answering\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("http: %w", err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	return hs, ln.Addr().String(), nil
}

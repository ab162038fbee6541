package fleet

import "github.com/prometheus/client_golang/prometheus"

// metrics are a Fleet's own; Collector hands them to the registry serve
// makes.
type metrics struct {
	connected prometheus.Gauge
	failures  prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonehome_fleet_connected",
			Help: "1 while the shared database (history.dsn) is connected and pause and resume are shared with the other instances; 0 while phonehome retries it, and they stay on this instance."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonehome_fleet_connect_failures_total",
			Help: "Connections to the shared database that could not be made or that broke."}),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.connected.Describe(ch)
	m.failures.Describe(ch)
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.connected.Collect(ch)
	m.failures.Collect(ch)
}

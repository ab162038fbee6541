package history

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Store's own; Collector hands them to the registry serve
// makes.
type metrics struct {
	path                 string
	file                 bool // path is a file, whose size is reported
	rowsCounts, rowsSeen prometheus.Counter
	rowsTotals           prometheus.Counter
	rowsPatternTotals    prometheus.Counter
	rowsEvents           prometheus.Counter
	rows                 *prometheus.CounterVec
	writeSeconds         prometheus.Histogram
	failures             prometheus.Counter
	dropped              *prometheus.CounterVec
	droppedCounts        prometheus.Counter
	droppedEvents        prometheus.Counter
	pending              prometheus.Gauge
	sizeDesc             *prometheus.Desc
}

// Label names and values of the history metrics.
const (
	labelTable = "table"
	labelPart  = "part"
)

func newMetrics(path string, file bool) *metrics {
	m := &metrics{path: path, file: file}
	m.rows = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_history_rows_written_total",
		Help: "Rows written to the history file, by table: counts, seen (first and last seen), totals and pattern_totals (every client's counts together), events (the events, packed in blocks)."}, []string{labelTable})
	m.rowsCounts, m.rowsSeen, m.rowsEvents = m.rows.WithLabelValues("counts"), m.rows.WithLabelValues("seen"), m.rows.WithLabelValues("events")
	m.rowsTotals, m.rowsPatternTotals = m.rows.WithLabelValues("totals"), m.rows.WithLabelValues("pattern_totals")
	m.writeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "phonehome_history_write_duration_seconds",
		Help:    "Time to write one flush of the history (one transaction).",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)})
	m.failures = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonehome_history_flush_failures_total",
		Help: "Flushes of the history that could not be written (what they held is kept for the next, up to the backlog bound)."})
	m.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonehome_history_dropped_total",
		Help: "Records the history dropped because its backlog was full (the database could not be written for a while) or it was closed: counts (queries not counted) or events."}, []string{labelPart})
	m.droppedCounts, m.droppedEvents = m.dropped.WithLabelValues("counts"), m.dropped.WithLabelValues("events")
	m.pending = prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonehome_history_pending_queries",
		Help: "Queries counted in memory that the last flush could not write (the history is behind); 0 when the database is being written."})
	m.sizeDesc = prometheus.NewDesc("phonehome_history_database_bytes",
		"Size of the history file on disk, its write-ahead log included.", nil, nil)
	return m
}

// Collector reports the store's metrics; the database size is read from
// the files at each scrape.
func (s *Store) Collector() prometheus.Collector { return s.m }

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.rows.Describe(ch)
	m.writeSeconds.Describe(ch)
	m.failures.Describe(ch)
	m.dropped.Describe(ch)
	m.pending.Describe(ch)
	ch <- m.sizeDesc
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.rows.Collect(ch)
	m.writeSeconds.Collect(ch)
	m.failures.Collect(ch)
	m.dropped.Collect(ch)
	m.pending.Collect(ch)
	if m.file {
		ch <- prometheus.MustNewConstMetric(m.sizeDesc, prometheus.GaugeValue, float64(fileSize(m.path)))
	}
}

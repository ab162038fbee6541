// Package querylog writes the query log: one JSON object per line for each
// catalog or list match (or every query), from a goroutine of its own. It
// is an observer of the resolver's request path.
package querylog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/resolver"
)

// Config is the querylog: section of the config file.
type Config struct {
	// Output is "stdout" (the default), "stderr", "off" or a file path.
	Output string `yaml:"output"`
	// AllQueries logs every query, not just catalog and list matches.
	AllQueries bool `yaml:"all_queries"`
	// AnonymizeClients zeroes the host part of client addresses, here
	// and in every other view of clients.
	AnonymizeClients bool `yaml:"anonymize_clients"`
}

// SetDefaults fills in what the file left out.
func (c *Config) SetDefaults() {
	if c.Output == "" {
		c.Output = "stdout"
	}
}

// Record is one line of the query log.
type Record struct {
	Time   time.Time `json:"time"`
	Client string    `json:"client"`
	// ClientName is the machine's name (internal/clientnames), when it has
	// one; never for an anonymized client.
	ClientName string `json:"client_name,omitempty"`
	Group      string `json:"group"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	Action     string `json:"action"`
	Category   string `json:"category"`
	Pattern    string `json:"pattern,omitempty"`
	// Windows are the versions whose documents list the matched entry for
	// the group's editions; Family is a documented member of the matched
	// family ("family of v10.events.data.microsoft.com").
	Windows string `json:"windows,omitempty"`
	Family  string `json:"family,omitempty"`
	// CNAME is the name of the answer's CNAME chain whose pattern decided:
	// the question name is an alias of the matched endpoint.
	CNAME   string `json:"cname,omitempty"`
	Edition string `json:"edition"`
	Rcode   string `json:"rcode"`
	Source  string `json:"source"`
	// Transport is what the query came over: udp, tcp, dot (DNS over
	// TLS) or doh (DNS over HTTPS). The history does not keep it.
	Transport string  `json:"transport,omitempty"`
	Duration  float64 `json:"duration"` // seconds
	// Instance is the phonehome that answered, in a history shared by
	// several (history.dsn); the query log itself leaves it out.
	Instance string `json:"instance,omitempty"`

	// addr is the client's address when Client is not anonymized: the
	// address a name may be given for.
	addr netip.Addr
}

// ClientAddr is the client's address, or the zero Addr when the record's
// client is anonymized: a name is looked for only when it is valid.
func (r *Record) ClientAddr() netip.Addr { return r.addr }

// Log writes one JSON object per line, from its own goroutine. Add never
// blocks answering: when the writer falls behind, records are dropped and
// counted.
type Log struct {
	all       atomic.Bool // every query, not just catalog matches
	anonymize atomic.Bool // zero the host part of client addresses

	// mu guards the records queued for the writer, at most max of them,
	// and closed: an answer that finishes after Close still calls Add.
	// A slice the writer swaps for its own, not a channel of max records:
	// the queue takes memory for what is logged, not for the most that
	// could be.
	mu      sync.Mutex
	queued  []Record
	max     int
	closed  bool
	Dropped atomic.Uint64
	names   *clientnames.Names // nil: no names
	path    string             // a file output, reopened by Reopen; "" for stdout/stderr
	reopen  chan reopenRequest
	stop    chan struct{} // closed by Close
	done    chan struct{}

	// The writer goroutine's own, after start.
	w    io.Writer
	file *os.File
}

type reopenRequest struct {
	file *os.File
	done chan struct{}
}

// Open opens cfg.Output: "stdout", "stderr", "off" (nil, no log) or a file
// path (appended to). Records carry the machine's name that names gives
// (nil: none), asked for by the writer, off the answer path.
func Open(cfg Config, names *clientnames.Names) (*Log, error) {
	var w io.Writer
	var file *os.File
	output := cfg.Output
	switch output {
	case "off", "":
		return nil, nil
	case "stdout":
		w = os.Stdout
	case "stderr":
		w = os.Stderr
	default:
		f, err := openLogFile(output)
		if err != nil {
			return nil, err
		}
		w, file = f, f
	}
	l := newLog(w, cfg.AllQueries, cfg.AnonymizeClients, 4096)
	l.path, l.file, l.names = output, file, names
	go l.run()
	return l, nil
}

// NewWriter logs to w; for tests and embedding.
func NewWriter(w io.Writer, all, anonymize bool, buffer int) *Log {
	l := newLog(w, all, anonymize, buffer)
	go l.run()
	return l
}

func newLog(w io.Writer, all, anonymize bool, buffer int) *Log {
	l := &Log{w: w, max: buffer, reopen: make(chan reopenRequest), stop: make(chan struct{}), done: make(chan struct{})}
	l.all.Store(all)
	l.anonymize.Store(anonymize)
	return l
}

// Apply takes a reloaded config's all_queries and anonymize_clients; the
// output is chosen at start.
func (l *Log) Apply(cfg Config) {
	if l != nil {
		l.all.Store(cfg.AllQueries)
		l.anonymize.Store(cfg.AnonymizeClients)
	}
}

// Answered logs a decided query that matched a catalog entry or a list and
// was not allowed, or every decided query with all_queries.
func (l *Log) Answered(a resolver.Answer) { l.AnsweredBatch([]resolver.Answer{a}) }

// AnsweredBatch logs what Answered would of a batch of answers (the UDP
// loop's), queued under one hold of the lock.
func (l *Log) AnsweredBatch(as []resolver.Answer) {
	all, anonymize := l.all.Load(), l.anonymize.Load()
	locked, dropped := false, 0
	for i := range as {
		a := &as[i]
		if !a.Decided() || !a.Match() && !all {
			continue
		}
		if !locked {
			l.mu.Lock()
			locked = true
		}
		if l.closed || len(l.queued) >= l.max {
			dropped++
			continue
		}
		l.queued = append(l.queued, NewRecord(a, anonymize))
	}
	if locked {
		l.mu.Unlock()
	}
	if dropped > 0 {
		l.Dropped.Add(uint64(dropped))
	}
}

// NewRecord spells an answered query as a query log line; anonymize zeroes
// the client's host part.
func NewRecord(a *resolver.Answer, anonymize bool) Record {
	client, d, q := a.Client, &a.Decision, a.Question
	addr := client
	if anonymize {
		client, addr = Anonymize(client), netip.Addr{}
	}
	r := Record{addr: addr, Time: a.Start, Client: client.String(), Group: d.Group.Name, Name: q.Name, Type: dns.TypeToString[q.Qtype],
		Action: d.Action.String(), Category: string(d.Category()), Edition: d.Group.Edition.String(),
		Rcode: dns.RcodeToString[a.Rcode], Source: a.Source.String(), Transport: a.Transport.String(), Duration: a.Duration.Seconds()}
	r.CNAME = d.CNAME
	if d.Match.Rule != nil {
		r.Pattern = d.Match.Pattern()
		if e := d.Match.Rule.Entry; e != nil {
			switch e.Kind {
			case endpoints.Documented:
				r.Windows = d.Match.Rule.Versions
			case endpoints.Family:
				r.Family = e.Members[0]
			}
		}
	}
	return r
}

var descDropped = prometheus.NewDesc("phonehome_querylog_dropped_total", "Query log records dropped because the writer fell behind.", nil, nil)

// Collector reports the records dropped; it reports 0 for a nil (off) log.
func (l *Log) Collector() prometheus.Collector { return droppedCollector{l} }

type droppedCollector struct{ l *Log }

func (c droppedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descDropped }

func (c droppedCollector) Collect(ch chan<- prometheus.Metric) {
	var n uint64
	if c.l != nil {
		n = c.l.Dropped.Load()
	}
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(n))
}

func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("query log: %w", err)
	}
	return f, nil
}

// Reopen reopens a file output, so that logrotate can move the old one
// away (phonehome does this on SIGUSR1). It returns once what was buffered
// for the old file is written to it and the new file is in use.
func (l *Log) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	f, err := openLogFile(l.path)
	if err != nil {
		return err
	}
	req := reopenRequest{file: f, done: make(chan struct{})}
	select {
	case l.reopen <- req:
		<-req.done
	case <-l.done: // closed
		f.Close()
	}
	return nil
}

// Add queues a record, or drops and counts it when the queue is full or
// the log is closed.
func (l *Log) Add(r Record) {
	l.mu.Lock()
	if l.closed || len(l.queued) >= l.max {
		l.mu.Unlock()
		l.Dropped.Add(1)
		return
	}
	l.queued = append(l.queued, r)
	l.mu.Unlock()
}

// run writes the records queued, and flushes them, every writeEvery. It
// wakes on its ticker rather than for each record: a record that woke it
// made it runnable on the answering core, and under load the runtime then
// handed that core to it in the middle of the read loop's system calls
// (a context switch each way). It alone touches the writer, so a reopen
// writes what was queued before it to the old file.
func (l *Log) run() {
	defer close(l.done)
	bw := bufio.NewWriterSize(l.w, 64<<10)
	var buf []byte
	var batch []Record // the queue the writer had last, for Add's next one
	// drain writes what is queued, and reports whether the log is still
	// open.
	drain := func() bool {
		l.mu.Lock()
		batch, l.queued = l.queued, batch[:0]
		open := !l.closed
		l.mu.Unlock()
		for i := range batch {
			r := &batch[i]
			if r.ClientName == "" && r.addr.IsValid() {
				r.ClientName = l.names.Name(r.addr)
			}
			buf = append(r.appendJSON(buf[:0]), '\n')
			bw.Write(buf)
		}
		clear(batch) // its strings are not kept alive
		return open
	}
	tick := time.NewTicker(writeEvery)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			drain()
			bw.Flush()
			if l.file != nil {
				l.file.Close()
			}
			return
		case req := <-l.reopen:
			open := drain()
			bw.Flush()
			if l.file != nil {
				l.file.Close()
			}
			l.w, l.file = req.file, req.file
			bw.Reset(req.file)
			close(req.done)
			if !open {
				l.file.Close()
				return
			}
		case <-tick.C:
			open := drain()
			if bw.Buffered() > 0 {
				bw.Flush()
			}
			if !open {
				if l.file != nil {
					l.file.Close()
				}
				return
			}
		}
	}
}

// writeEvery is how often the writer writes what is queued: at most 4,096
// records may wait (Open), 200,000 logged queries a second.
const writeEvery = 20 * time.Millisecond

// appendJSON appends r as JSON that decodes as encoding/json's would (it
// writes numbers such as 5e-05 in exponent form where encoding/json would
// not), without reflection: the query log runs on the same core as the
// answers.
func (r *Record) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = appendField(b, `","client":`, r.Client)
	if r.ClientName != "" {
		b = appendField(b, `,"client_name":`, r.ClientName)
	}
	b = appendField(b, `,"group":`, r.Group)
	b = appendField(b, `,"name":`, r.Name)
	b = appendField(b, `,"type":`, r.Type)
	b = appendField(b, `,"action":`, r.Action)
	b = appendField(b, `,"category":`, r.Category)
	if r.Pattern != "" {
		b = appendField(b, `,"pattern":`, r.Pattern)
	}
	if r.Windows != "" {
		b = appendField(b, `,"windows":`, r.Windows)
	}
	if r.Family != "" {
		b = appendField(b, `,"family":`, r.Family)
	}
	if r.CNAME != "" {
		b = appendField(b, `,"cname":`, r.CNAME)
	}
	b = appendField(b, `,"edition":`, r.Edition)
	b = appendField(b, `,"rcode":`, r.Rcode)
	b = appendField(b, `,"source":`, r.Source)
	if r.Transport != "" {
		b = appendField(b, `,"transport":`, r.Transport)
	}
	b = append(b, `,"duration":`...)
	b = strconv.AppendFloat(b, r.Duration, 'g', -1, 64)
	if r.Instance != "" {
		b = appendField(b, `,"instance":`, r.Instance)
	}
	return append(b, '}')
}

// appendField appends a key and a JSON string. Names and words are plain
// ASCII nearly always; anything else (a user's group name, say) goes
// through encoding/json.
func appendField(b []byte, key, s string) []byte {
	b = append(b, key...)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Close writes what is queued and closes a file output. Records added
// later are dropped and counted.
func (l *Log) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	l.mu.Unlock()
	<-l.done
}

// Anonymize zeroes the host part of an address: the last octet of IPv4,
// the last 80 bits of IPv6.
func Anonymize(a netip.Addr) netip.Addr {
	if a.Is4() {
		b := a.As4()
		b[3] = 0
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	clear(b[6:])
	return netip.AddrFrom16(b)
}

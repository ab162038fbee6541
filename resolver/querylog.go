package resolver

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
)

// Record is one line of the query log.
type Record struct {
	Time     time.Time `json:"time"`
	Client   string    `json:"client"`
	Group    string    `json:"group"`
	Name     string    `json:"name"`
	Type     string    `json:"type"`
	Action   string    `json:"action"`
	Category string    `json:"category"`
	Pattern  string    `json:"pattern,omitempty"`
	Edition  string    `json:"edition"`
	Rcode    string    `json:"rcode"`
	Source   string    `json:"source"`
	Duration float64   `json:"duration"` // seconds
}

// QueryLog writes one JSON object per line, from its own goroutine. Add
// never blocks answering: when the writer falls behind, records are dropped
// and counted.
type QueryLog struct {
	All       bool // every query, not just catalog matches
	Anonymize bool // zero the host part of client addresses

	ch      chan Record
	Dropped atomic.Uint64
	path    string // a file output, reopened by Reopen; "" for stdout/stderr
	mu      sync.Mutex
	w       io.Writer
	file    *os.File
	done    chan struct{}
}

// OpenQueryLog opens output: "stdout", "stderr", "off" (nil, no log) or a
// file path (appended to).
func OpenQueryLog(output string, all, anonymize bool) (*QueryLog, error) {
	l := &QueryLog{All: all, Anonymize: anonymize, ch: make(chan Record, 4096), done: make(chan struct{})}
	switch output {
	case "off", "":
		return nil, nil
	case "stdout":
		l.w = os.Stdout
	case "stderr":
		l.w = os.Stderr
	default:
		l.path = output
		if err := l.Reopen(); err != nil {
			return nil, err
		}
	}
	go l.run()
	return l, nil
}

// NewQueryLogWriter logs to w; for tests and embedding.
func NewQueryLogWriter(w io.Writer, all, anonymize bool, buffer int) *QueryLog {
	l := &QueryLog{All: all, Anonymize: anonymize, ch: make(chan Record, buffer), done: make(chan struct{}), w: w}
	go l.run()
	return l
}

// Reopen reopens a file output, so that logrotate can move the old one
// away (phonehome does this on SIGUSR1).
func (l *QueryLog) Reopen() error {
	if l == nil || l.path == "" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("query log: %w", err)
	}
	l.mu.Lock()
	old := l.file
	l.file, l.w = f, f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Add queues a record, or drops and counts it when the queue is full.
func (l *QueryLog) Add(r Record) {
	select {
	case l.ch <- r:
	default:
		l.Dropped.Add(1)
	}
}

// run writes records, and flushes what it has written ten times a second:
// under load a write system call per record would take the server's core.
func (l *QueryLog) run() {
	defer close(l.done)
	var bw *bufio.Writer
	var cur io.Writer
	var buf []byte
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-l.ch:
			if !ok {
				if bw != nil {
					bw.Flush()
				}
				return
			}
			l.mu.Lock()
			if l.w != cur {
				if bw != nil {
					bw.Flush()
				}
				cur, bw = l.w, bufio.NewWriterSize(l.w, 64<<10)
			}
			l.mu.Unlock()
			buf = append(r.appendJSON(buf[:0]), '\n')
			bw.Write(buf)
		case <-tick.C:
			if bw != nil && bw.Buffered() > 0 {
				bw.Flush()
			}
		}
	}
}

// appendJSON appends r as encoding/json would write it, without its
// reflection: the query log runs on the same core as the answers.
func (r *Record) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = appendField(b, `","client":`, r.Client)
	b = appendField(b, `,"group":`, r.Group)
	b = appendField(b, `,"name":`, r.Name)
	b = appendField(b, `,"type":`, r.Type)
	b = appendField(b, `,"action":`, r.Action)
	b = appendField(b, `,"category":`, r.Category)
	if r.Pattern != "" {
		b = appendField(b, `,"pattern":`, r.Pattern)
	}
	b = appendField(b, `,"edition":`, r.Edition)
	b = appendField(b, `,"rcode":`, r.Rcode)
	b = appendField(b, `,"source":`, r.Source)
	b = append(b, `,"duration":`...)
	b = strconv.AppendFloat(b, r.Duration, 'g', -1, 64)
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

// Close writes what is queued and closes a file output.
func (l *QueryLog) Close() {
	if l == nil {
		return
	}
	close(l.ch)
	<-l.done
	if l.file != nil {
		l.file.Close()
	}
}

// anonymize zeroes the host part of an address: the last octet of IPv4,
// the last 80 bits of IPv6.
func anonymize(a netip.Addr) netip.Addr {
	if a.Is4() {
		b := a.As4()
		b[3] = 0
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	clear(b[6:])
	return netip.AddrFrom16(b)
}

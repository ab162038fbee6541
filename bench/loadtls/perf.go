package main

// perf is a load generator in dnsperf's manner for DNS over TLS and DNS over
// HTTPS, for what dnsperf 2.10 (Debian 12's) cannot measure: its DNS over
// HTTPS client takes one answer per read of a connection ("TODO: need to be
// able to receive multiple responses at the same time" in its net_doh.c;
// DNS-OARC/dnsperf issue 240), so answers that arrive together, as
// dnsdist's do and phonehome's sometimes do, wait for a later read or time
// out, and the run measures dnsperf. perf reads every frame as it comes.
//
// It takes dnsperf's flags, as bench/load.sh passes them (-d, -n, -l, -q,
// -Q, -c, -t, -v), and prints the lines of dnsperf's output the script
// reads: with -v "> RCODE name type seconds" for each answer and "> T name
// type" for each query that timed out, then "Queries sent:", "Queries
// completed:", "Queries lost:" and "Response codes:". Like dnsperf it sends
// each query at once, in a write of its own, on the -c connections in turn,
// with at most -q unanswered. Over DNS over HTTPS a query is a GET of
// -path?dns=(the query, ID 0, base64url) on HTTP/2, HEADERS alone, and an
// answer other than 200 counts as a response code "HTTP-status". A
// connection the server closes is opened again (counted as a
// reconnection); its unanswered queries time out.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// perfOptions are perf's own flags, dnsperf's.
type perfOptions struct {
	file        string        // -d: "name type" a line
	runs        int           // -n: passes through the file (0: no bound)
	duration    time.Duration // -l: how long to send (0: no bound)
	outstanding int           // -q
	rate        int           // -Q: queries a second at most (0: no bound)
	conns       int           // -c
	verbose     bool          // -v
}

// line is one query of the file, ready to send.
type line struct {
	name, qtype string
	wire        []byte // ID 0
	path        string // DNS over HTTPS: -path?dns=...
}

// readLines reads the file and packs each query.
func readLines(file, path string) ([]line, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []line
	for n, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], ";") {
			continue
		}
		t := dns.TypeA
		if len(f) > 1 {
			var ok bool
			if t, ok = dns.StringToType[strings.ToUpper(f[1])]; !ok {
				return nil, fmt.Errorf("%s:%d: unknown type %q", file, n+1, f[1])
			}
		}
		m := query(f[0], t)
		m.Id = 0
		wire, err := m.Pack()
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n+1, err)
		}
		out = append(out, line{name: f[0], qtype: dns.TypeToString[t], wire: wire,
			path: path + "?dns=" + base64.RawURLEncoding.EncodeToString(wire)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no query in it", file)
	}
	return out, nil
}

// pending is a query sent and not answered yet.
type pending struct {
	l     *line
	start time.Time
}

// session is one connection of the run.
type session interface {
	// send writes the query at once; an error means the connection is
	// unusable.
	send(l *line) error
	// busy says whether the connection has all the queries in flight it
	// may have.
	busy() bool
	dead() bool
	// expire removes and returns the queries sent before t.
	expire(t time.Time) []pending
	close()
}

// perfRun is the state of one run.
type perfRun struct {
	o       options
	p       perfOptions
	timeout time.Duration
	lines   []line
	slots   chan struct{} // one per query in flight: at most -q

	sent, completed, lost, reconnects atomic.Int64
	mu                                sync.Mutex
	codes                             map[string]int64
	out                               *bufio.Writer // the -v lines, under mu

	readers sync.WaitGroup
}

// done counts an answer (label: its RCODE, or HTTP-status) and frees its
// slot.
func (r *perfRun) done(p pending, label string) {
	d := time.Since(p.start)
	r.completed.Add(1)
	r.mu.Lock()
	r.codes[label]++
	if r.p.verbose {
		fmt.Fprintf(r.out, "> %s %s %s %.6f\n", label, p.l.name, p.l.qtype, d.Seconds())
	}
	r.mu.Unlock()
	<-r.slots
}

// timedOut counts a query without an answer and frees its slot.
func (r *perfRun) timedOut(p pending) {
	r.lost.Add(1)
	if r.p.verbose {
		r.mu.Lock()
		fmt.Fprintf(r.out, "> T %s %s\n", p.l.name, p.l.qtype)
		r.mu.Unlock()
	}
	<-r.slots
}

// rcodeOf is the RCODE of a DNS message, by name.
func rcodeOf(msg []byte) string {
	if len(msg) < 12 {
		return "SHORT"
	}
	rc := int(msg[3] & 0x0f)
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return strconv.Itoa(rc)
}

// perf runs the load and writes dnsperf's statistics to out.
func perf(ctx context.Context, o options, p perfOptions, out io.Writer) error {
	if o.transport != "dot" && o.transport != "doh" {
		return fmt.Errorf("perf: -transport %q: want dot or doh (dnsperf does udp)", o.transport)
	}
	lines, err := readLines(p.file, o.path)
	if err != nil {
		return err
	}
	p.outstanding = max(p.outstanding, 1)
	p.conns = max(p.conns, 1)
	bw := bufio.NewWriterSize(out, 64<<10)
	defer bw.Flush()
	r := &perfRun{o: o, p: p, timeout: o.timeout, lines: lines, slots: make(chan struct{}, p.outstanding),
		codes: map[string]int64{}, out: bw}

	// The connections, all open before the first query, as dnsperf has them.
	slots := make([]atomic.Pointer[sessionSlot], p.conns)
	var mu sync.Mutex
	var all []session // every session, current or closed, for the janitor
	stopped := false  // under mu: set when the run's sessions are closed
	var wg sync.WaitGroup
	var firstErr error
	for i := range slots {
		wg.Go(func() {
			s, err := r.dial(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			slots[i].Store(&sessionSlot{s: s})
			all = append(all, s)
		})
	}
	wg.Wait()
	defer func() {
		mu.Lock()
		stopped = true
		for _, s := range all {
			s.close()
		}
		mu.Unlock()
		r.readers.Wait()
	}()
	if firstErr != nil {
		return firstErr
	}

	// The janitor times queries out.
	stopJanitor := make(chan struct{})
	janitorDone := make(chan struct{})
	expireAll := func(t time.Time) {
		mu.Lock()
		ss := append([]session(nil), all...)
		mu.Unlock()
		for _, s := range ss {
			for _, q := range s.expire(t) {
				r.timedOut(q)
			}
		}
	}
	go func() {
		defer close(janitorDone)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopJanitor:
				return
			case now := <-t.C:
				expireAll(now.Add(-r.timeout))
			}
		}
	}()

	// redial opens slot i's connection again, in the background.
	redial := func(i int, old *sessionSlot) {
		if !old.redialing.CompareAndSwap(false, true) {
			return
		}
		go func() {
			for ctx.Err() == nil {
				s, err := r.dial(ctx)
				if err == nil {
					mu.Lock()
					defer mu.Unlock()
					if stopped {
						s.close() // the run is over
						return
					}
					all = append(all, s)
					slots[i].Store(&sessionSlot{s: s})
					r.reconnects.Add(1)
					return
				}
				time.Sleep(100 * time.Millisecond)
				mu.Lock()
				over := stopped
				mu.Unlock()
				if over {
					return
				}
			}
		}()
	}

	// The sender.
	began := time.Now()
	var end <-chan time.Time
	if p.duration > 0 {
		tm := time.NewTimer(p.duration)
		defer tm.Stop()
		end = tm.C
	}
	next, pass, rr := 0, 0, 0
	sendLoop := func() {
		for {
			if next == len(lines) {
				next, pass = 0, pass+1
				if p.runs > 0 && pass >= p.runs {
					return
				}
			}
			if p.rate > 0 {
				due := began.Add(time.Duration(float64(r.sent.Load()) / float64(p.rate) * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-end:
						return
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
			}
			select {
			case <-end:
				return
			case <-ctx.Done():
				return
			case r.slots <- struct{}{}:
			}
			// A connection that is open and not busy, in turn.
			var s session
			for s == nil {
				for k := range slots {
					i := (rr + k) % len(slots)
					sl := slots[i].Load()
					if sl.s.dead() {
						redial(i, sl)
						continue
					}
					if !sl.s.busy() {
						s, rr = sl.s, i+1
						break
					}
				}
				if s == nil {
					select {
					case <-end:
						<-r.slots
						return
					case <-ctx.Done():
						<-r.slots
						return
					case <-time.After(100 * time.Microsecond):
					}
				}
			}
			if err := s.send(&lines[next]); err != nil {
				<-r.slots
				continue
			}
			r.sent.Add(1)
			next++
		}
	}
	sendLoop()

	// The answers still to come, for up to -t.
	wait := time.Now().Add(r.timeout + 100*time.Millisecond)
	for len(r.slots) > 0 && time.Now().Before(wait) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	close(stopJanitor)
	<-janitorDone
	expireAll(time.Now().Add(time.Hour)) // everything left
	runTime := time.Since(began)

	r.mu.Lock()
	defer r.mu.Unlock()
	sent, completed, lost := r.sent.Load(), r.completed.Load(), r.lost.Load()
	pct := func(n int64) float64 {
		if sent == 0 {
			return 0
		}
		return 100 * float64(n) / float64(sent)
	}
	fmt.Fprintf(bw, "\nStatistics:\n\n")
	fmt.Fprintf(bw, "  Queries sent:         %d\n", sent)
	fmt.Fprintf(bw, "  Queries completed:    %d (%.2f%%)\n", completed, pct(completed))
	fmt.Fprintf(bw, "  Queries lost:         %d (%.2f%%)\n\n", lost, pct(lost))
	labels := make([]string, 0, len(r.codes))
	for l := range r.codes {
		labels = append(labels, l)
	}
	sort.Slice(labels, func(i, j int) bool { return r.codes[labels[i]] > r.codes[labels[j]] })
	var codes []string
	for _, l := range labels {
		codes = append(codes, fmt.Sprintf("%s %d (%.2f%%)", l, r.codes[l], 100*float64(r.codes[l])/float64(max(completed, 1))))
	}
	fmt.Fprintf(bw, "  Response codes:       %s\n", strings.Join(codes, ", "))
	fmt.Fprintf(bw, "  Run time (s):         %.6f\n", runTime.Seconds())
	fmt.Fprintf(bw, "  Queries per second:   %.6f\n", float64(completed)/runTime.Seconds())
	fmt.Fprintf(bw, "  Reconnections:        %d\n", r.reconnects.Load())
	return nil
}

// sessionSlot holds one of the -c connections; redialing is set once its
// replacement is being opened.
type sessionSlot struct {
	s         session
	redialing atomic.Bool
}

// dial opens one connection of the run, its handshake done (and over DNS
// over HTTPS, the server's SETTINGS read), and starts its reader.
func (r *perfRun) dial(ctx context.Context) (session, error) {
	alpn := "dot"
	if r.o.transport == "doh" {
		alpn = "h2"
	}
	cfg, err := tlsConfig(r.o, alpn)
	if err != nil {
		return nil, err
	}
	td := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c, err := td.DialContext(dctx, "tcp", r.o.server)
	if err != nil {
		return nil, err
	}
	conn := c.(*tls.Conn)
	if r.o.transport == "dot" {
		s := &dotSession{r: r, conn: conn, inflight: map[uint16]pending{}}
		r.readers.Go(s.read)
		return s, nil
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		conn.Close()
		return nil, fmt.Errorf("the server chose ALPN %q, not h2", p)
	}
	s := &dohSession{r: r, conn: conn, inflight: map[uint32]*dohStream{}, nextStream: 1, ready: make(chan struct{})}
	s.maxStreams.Store(100) // until the server's SETTINGS say otherwise
	s.bw = bufio.NewWriterSize(conn, 16<<10)
	s.fr = http2.NewFramer(s.bw, bufio.NewReaderSize(conn, 64<<10))
	s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	s.enc = hpack.NewEncoder(&s.hbuf)
	s.bw.WriteString(http2.ClientPreface)
	s.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	s.fr.WriteWindowUpdate(0, 1<<30)
	conn.SetWriteDeadline(time.Now().Add(r.timeout))
	if err := s.bw.Flush(); err != nil {
		conn.Close()
		return nil, err
	}
	r.readers.Go(s.read)
	select {
	case <-s.ready:
		return s, nil
	case <-dctx.Done():
		conn.Close()
		return nil, errors.New("no SETTINGS from the server")
	}
}

// dotSession sends length-prefixed queries on one DNS over TLS connection,
// pipelined, matched to their answers by ID.
type dotSession struct {
	r        *perfRun
	conn     *tls.Conn
	mu       sync.Mutex
	nextID   uint16
	inflight map[uint16]pending
	scratch  []byte
	isDead   atomic.Bool
}

func (s *dotSession) send(l *line) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		s.nextID++
		if _, taken := s.inflight[s.nextID]; !taken {
			break
		}
	}
	s.scratch = binary.BigEndian.AppendUint16(s.scratch[:0], uint16(len(l.wire)))
	s.scratch = append(s.scratch, l.wire...)
	binary.BigEndian.PutUint16(s.scratch[2:], s.nextID)
	id := s.nextID
	s.inflight[id] = pending{l: l, start: time.Now()}
	s.conn.SetWriteDeadline(time.Now().Add(s.r.timeout))
	_, err := s.conn.Write(s.scratch)
	if err != nil {
		s.isDead.Store(true)
		if _, waiting := s.inflight[id]; !waiting {
			return nil // answered (or timed out) all the same: its slot is free
		}
		delete(s.inflight, id)
	}
	return err
}

func (s *dotSession) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight) >= 60000
}

func (s *dotSession) dead() bool { return s.isDead.Load() }

func (s *dotSession) expire(t time.Time) []pending {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []pending
	for id, p := range s.inflight {
		if p.start.Before(t) {
			out = append(out, p)
			delete(s.inflight, id)
		}
	}
	return out
}

func (s *dotSession) close() { s.conn.Close() }

// read takes the answers until the connection ends.
func (s *dotSession) read() {
	defer s.isDead.Store(true)
	br := bufio.NewReaderSize(s.conn, 64<<10)
	var hdr [2]byte
	buf := make([]byte, 65535)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		msg := buf[:binary.BigEndian.Uint16(hdr[:])]
		if _, err := io.ReadFull(br, msg); err != nil || len(msg) < 12 {
			return
		}
		id := binary.BigEndian.Uint16(msg)
		s.mu.Lock()
		p, ok := s.inflight[id]
		delete(s.inflight, id)
		s.mu.Unlock()
		if ok {
			s.r.done(p, rcodeOf(msg))
		}
	}
}

// dohSession sends GET requests on one HTTP/2 connection, a stream each.
type dohSession struct {
	r    *perfRun
	conn *tls.Conn
	fr   *http2.Framer

	mu         sync.Mutex // the writes (framer, encoder, buffer) and the streams
	bw         *bufio.Writer
	enc        *hpack.Encoder
	hbuf       bytes.Buffer
	nextStream uint32
	inflight   map[uint32]*dohStream

	maxStreams atomic.Uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	ready      chan struct{} // closed at the server's first SETTINGS
	isDead     atomic.Bool   // no new stream: the connection ended, or GOAWAY
}

// dohStream is one request: its query, then the answer as it comes.
type dohStream struct {
	pending
	status int
	body   []byte
}

func (s *dohSession) send(l *line) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextStream
	s.nextStream += 2
	s.hbuf.Reset()
	s.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	s.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "https"})
	s.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: s.r.o.host})
	s.enc.WriteField(hpack.HeaderField{Name: ":path", Value: l.path, Sensitive: true}) // not indexed: each is new
	s.enc.WriteField(hpack.HeaderField{Name: "accept", Value: "application/dns-message"})
	s.inflight[id] = &dohStream{pending: pending{l: l, start: time.Now()}}
	s.conn.SetWriteDeadline(time.Now().Add(s.r.timeout))
	err := s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	if err == nil {
		err = s.bw.Flush()
	}
	if err != nil {
		s.isDead.Store(true)
		if _, waiting := s.inflight[id]; !waiting {
			return nil // answered (or timed out) all the same: its slot is free
		}
		delete(s.inflight, id)
	}
	return err
}

func (s *dohSession) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint32(len(s.inflight)) >= s.maxStreams.Load()
}

func (s *dohSession) dead() bool { return s.isDead.Load() }

func (s *dohSession) expire(t time.Time) []pending {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []pending
	for id, st := range s.inflight {
		if st.start.Before(t) {
			out = append(out, st.pending)
			delete(s.inflight, id)
		}
	}
	return out
}

func (s *dohSession) close() { s.conn.Close() }

// write writes control frames (under mu) and flushes them.
func (s *dohSession) write(f func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(s.r.timeout))
	if f() != nil || s.bw.Flush() != nil {
		s.isDead.Store(true)
	}
}

// stream is the request of stream id, if it is still waiting.
func (s *dohSession) stream(id uint32) *dohStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[id]
}

// finish counts the answer of stream id, unless it has timed out.
func (s *dohSession) finish(id uint32) {
	s.mu.Lock()
	st, ok := s.inflight[id]
	delete(s.inflight, id)
	s.mu.Unlock()
	if !ok {
		return
	}
	label := "HTTP-" + strconv.Itoa(st.status)
	if st.status == 200 {
		label = rcodeOf(st.body)
	}
	s.r.done(st.pending, label)
}

// read takes the frames until the connection ends.
func (s *dohSession) read() {
	defer s.isDead.Store(true)
	var ready sync.Once
	defer ready.Do(func() { close(s.ready) })
	var unacked uint32 // DATA bytes the connection's window has not been given back
	for {
		f, err := s.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			f.ForeachSetting(func(st http2.Setting) error {
				switch st.ID {
				case http2.SettingMaxConcurrentStreams:
					s.maxStreams.Store(st.Val)
				case http2.SettingHeaderTableSize:
					s.mu.Lock()
					s.enc.SetMaxDynamicTableSizeLimit(st.Val)
					s.mu.Unlock()
				}
				return nil
			})
			s.write(s.fr.WriteSettingsAck)
			ready.Do(func() { close(s.ready) })
		case *http2.MetaHeadersFrame:
			if st := s.stream(f.StreamID); st != nil {
				st.status, _ = strconv.Atoi(f.PseudoValue("status"))
			}
			if f.StreamEnded() {
				s.finish(f.StreamID)
			}
		case *http2.DataFrame:
			if st := s.stream(f.StreamID); st != nil {
				st.body = append(st.body, f.Data()...)
			}
			if f.StreamEnded() {
				s.finish(f.StreamID)
			}
			if unacked += f.Length; unacked >= 1<<20 {
				n := unacked
				unacked = 0
				s.write(func() error { return s.fr.WriteWindowUpdate(0, n) })
			}
		case *http2.RSTStreamFrame:
			// No answer: it times out.
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				s.write(func() error { return s.fr.WritePing(true, data) })
			}
		case *http2.GoAwayFrame:
			s.isDead.Store(true) // streams up to f.LastStreamID are still answered
		}
	}
}

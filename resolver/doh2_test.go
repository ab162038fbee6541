package resolver

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// The tests here speak HTTP/2 to phonehome's own server (doh2.go) frame by
// frame, over TLS on loopback, and check the frames it sends back against
// RFC 9113: streams and their states, flow control, SETTINGS, PING,
// RST_STREAM and GOAWAY, and the HTTP answers of RFC 8484 on top.

// h2ReadWait bounds every read of a test's client: the server has sent
// nothing, nor closed the connection, for that long.
const h2ReadWait = 10 * time.Second

// h2Stream is what the server sent on one stream.
type h2Stream struct {
	status  string            // the response's :status
	header  map[string]string // its other fields
	headers int               // HEADERS frames
	data    []byte            // DATA payloads, padding left out
	frames  []int             // the length of each DATA frame
	ended   bool              // END_STREAM seen
	rst     bool              // RST_STREAM seen
	rstCode http2.ErrCode     // the last RST_STREAM's
	rsts    int               // RST_STREAM frames
	late    int               // HEADERS or DATA after END_STREAM or RST_STREAM
}

// h2GoAway is a GOAWAY the server sent.
type h2GoAway struct {
	code http2.ErrCode
	last uint32
}

// h2Log reads the frames the server sends on an h2Conn and records them:
// a test sends frames with the h2Conn and reads with the log, from its own
// goroutine only. The server's SETTINGS are acknowledged as they come.
type h2Log struct {
	t            *testing.T
	c            *h2Conn
	streams      map[uint32]*h2Stream
	pingAcks     [][8]byte
	pings        int // PINGs from the server, not acks
	settingsAcks int
	goAway       *h2GoAway
	afterGoAway  int   // frames after the GOAWAY
	closed       error // the read error that ended the connection
	seq          uint32
	wait         time.Duration // bounds each read: h2ReadWait unless set
}

func newH2Log(c *h2Conn) *h2Log {
	return &h2Log{t: c.t, c: c, streams: map[uint32]*h2Stream{}, wait: h2ReadWait}
}

func (l *h2Log) stream(id uint32) *h2Stream {
	st := l.streams[id]
	if st == nil {
		st = &h2Stream{header: map[string]string{}}
		l.streams[id] = st
	}
	return st
}

// dataTotal is how many DATA bytes came on every stream together.
func (l *h2Log) dataTotal() int {
	n := 0
	for _, st := range l.streams {
		n += len(st.data)
	}
	return n
}

// read reads and records one frame. It returns nil, the error that ended
// the connection (kept in closed), or a timeout error.
func (l *h2Log) read() error {
	if l.closed != nil {
		return l.closed
	}
	l.c.conn.SetReadDeadline(time.Now().Add(l.wait))
	f, err := l.c.fr.ReadFrame()
	if err != nil {
		if isTimeout(err) {
			return err
		}
		l.closed = err
		return err
	}
	l.take(f)
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (l *h2Log) take(f http2.Frame) {
	if l.goAway != nil {
		l.afterGoAway++
	}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		st := l.stream(f.StreamID)
		if st.ended || st.rst {
			st.late++
		}
		st.headers++
		if st.status == "" {
			st.status = f.PseudoValue("status")
		}
		for _, hf := range f.RegularFields() {
			st.header[hf.Name] = hf.Value
		}
		st.ended = st.ended || f.StreamEnded()
	case *http2.DataFrame:
		st := l.stream(f.StreamID)
		if st.ended || st.rst {
			st.late++
		}
		st.data = append(st.data, f.Data()...)
		st.frames = append(st.frames, len(f.Data()))
		st.ended = st.ended || f.StreamEnded()
	case *http2.RSTStreamFrame:
		st := l.stream(f.StreamID)
		st.rst, st.rstCode = true, f.ErrCode
		st.rsts++
	case *http2.SettingsFrame:
		if f.IsAck() {
			l.settingsAcks++
			return
		}
		h2Must(l.t, l.c.fr.WriteSettingsAck())
	case *http2.PingFrame:
		if f.IsAck() {
			l.pingAcks = append(l.pingAcks, f.Data)
		} else {
			l.pings++
		}
	case *http2.GoAwayFrame:
		if l.goAway == nil {
			l.goAway = &h2GoAway{code: f.ErrCode, last: f.LastStreamID}
		}
	}
}

// next reads one frame, and reports false once the connection is closed.
// A server silent for h2ReadWait fails the test.
func (l *h2Log) next() bool {
	l.t.Helper()
	err := l.read()
	if err != nil && isTimeout(err) {
		l.t.Fatalf("nothing from the server for %v%s", l.wait, l.why())
	}
	return err == nil
}

// why describes how the connection ended, for a failure's message.
func (l *h2Log) why() string {
	s := ""
	if l.goAway != nil {
		s += fmt.Sprintf("; GOAWAY %v, last stream %d", l.goAway.code, l.goAway.last)
	}
	if l.closed != nil {
		s += fmt.Sprintf("; connection ended: %v", l.closed)
	}
	return s
}

// until reads frames until cond holds; the connection may not end first.
func (l *h2Log) until(what string, cond func() bool) {
	l.t.Helper()
	for !cond() {
		if !l.next() {
			l.t.Fatalf("the connection ended before %s%s", what, l.why())
		}
	}
}

// roundTrip sends a PING and reads until its ack: whatever the server sent
// for the frames before it, and had to send at once, has come.
func (l *h2Log) roundTrip() {
	l.t.Helper()
	l.seq++
	data := [8]byte{'r', 't'}
	binary.BigEndian.PutUint32(data[4:], l.seq)
	h2Must(l.t, l.c.fr.WritePing(false, data))
	l.until("the PING ack", func() bool { return slices.Contains(l.pingAcks, data) })
}

// ended waits for stream id's response to end, by END_STREAM or RST_STREAM.
func (l *h2Log) ended(id uint32) *h2Stream {
	l.t.Helper()
	st := l.stream(id)
	l.until(fmt.Sprintf("the end of stream %d", id), func() bool { return st.ended || st.rst })
	return st
}

// waitClosed reads until the server closes the connection, and returns
// the read error (nil: the server kept it open, sending nothing, for
// l.wait).
func (l *h2Log) waitClosed() error {
	for {
		if err := l.read(); err != nil {
			if isTimeout(err) {
				return nil
			}
			return err
		}
	}
}

// expectGoAway reads until a GOAWAY, whose code must be one of codes, and
// then until the server closes the connection, which it does without
// another frame (the tests call it with no query in flight).
func (l *h2Log) expectGoAway(codes ...http2.ErrCode) *h2GoAway {
	l.t.Helper()
	for l.goAway == nil {
		if !l.next() {
			l.t.Fatalf("the connection ended without GOAWAY (want %v)%s", codes, l.why())
		}
	}
	if !slices.Contains(codes, l.goAway.code) {
		l.t.Errorf("GOAWAY %v, want %v", l.goAway.code, codes)
	}
	err := l.waitClosed()
	if l.afterGoAway != 0 {
		l.t.Errorf("%d frames after GOAWAY", l.afterGoAway)
	}
	switch {
	case err == nil:
		l.t.Errorf("the connection is still open %v after GOAWAY%s", l.wait, h2Stacks())
	case !closedConn(err):
		l.t.Errorf("after GOAWAY: %v, want the connection closed", err)
	}
	return l.goAway
}

// closedConn reports whether err is how a read ends on a connection the
// server closed: TLS close_notify or a TCP reset.
func closedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// answer checks that stream id was answered 200 with a DNS answer to q,
// and returns it (nil, the test failed, if it was not).
func (l *h2Log) answer(id uint32, q *dns.Msg) *dns.Msg {
	l.t.Helper()
	st := l.stream(id)
	if st.status != "200" || !st.ended || (st.rst && st.rstCode != http2.ErrCodeNo) {
		l.t.Errorf("stream %d: status %q, ended %v, reset %v (%v): %q", id, st.status, st.ended, st.rst, st.rstCode, st.data)
		return nil
	}
	if ct := st.header["content-type"]; ct != dohMediaType {
		l.t.Errorf("stream %d: content-type %q", id, ct)
	}
	if cl := st.header["content-length"]; cl != strconv.Itoa(len(st.data)) {
		l.t.Errorf("stream %d: content-length %q, %d bytes of DATA", id, cl, len(st.data))
	}
	if cc := st.header["cache-control"]; !strings.HasPrefix(cc, "private, max-age=") {
		l.t.Errorf("stream %d: cache-control %q", id, cc)
	}
	if st.headers != 1 || st.late != 0 {
		l.t.Errorf("stream %d: %d HEADERS frames, %d frames after its end", id, st.headers, st.late)
	}
	m := new(dns.Msg)
	if err := m.Unpack(st.data); err != nil {
		l.t.Errorf("stream %d: the answer does not unpack: %v", id, err)
		return nil
	}
	if m.Id != q.Id || !m.Response || len(m.Question) != 1 || m.Question[0] != q.Question[0] {
		l.t.Errorf("stream %d: not an answer to %v: %v", id, q.Question[0], m)
		return nil
	}
	return m
}

// httpError checks that stream id was answered status, as http.Error
// answers.
func (l *h2Log) httpError(id uint32, status int) {
	l.t.Helper()
	st := l.stream(id)
	if st.status != strconv.Itoa(status) || !st.ended {
		l.t.Errorf("stream %d: status %q (ended %v, reset %v %v), want %d: %q", id, st.status, st.ended, st.rst, st.rstCode, status, st.data)
		return
	}
	if ct := st.header["content-type"]; ct != "text/plain; charset=utf-8" {
		l.t.Errorf("stream %d: content-type %q", id, ct)
	}
	if cl := st.header["content-length"]; cl != strconv.Itoa(len(st.data)) {
		l.t.Errorf("stream %d: content-length %q, %d bytes of DATA", id, cl, len(st.data))
	}
	if st.rst && st.rstCode != http2.ErrCodeNo {
		l.t.Errorf("stream %d: reset %v after its response", id, st.rstCode)
	}
}

func h2Must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// h2Get is the header of a GET of q.
func h2Get(s *encServer, q *dns.Msg) []string {
	return []string{":method", "GET", ":scheme", "https", ":authority", s.doh, ":path", "/dns-query?dns=" + base64.RawURLEncoding.EncodeToString(packed(q))}
}

// h2Post is the header of a POST to /dns-query, with extra fields.
func h2Post(s *encServer, extra ...string) []string {
	return append([]string{":method", "POST", ":scheme", "https", ":authority", s.doh, ":path", "/dns-query"}, extra...)
}

// packed is q in wire format.
func packed(q *dns.Msg) []byte {
	b, err := q.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// h2Question is a query for name with a fixed ID.
func h2Question(name string, qtype uint16, id uint16) *dns.Msg {
	q := query(name, qtype, false)
	q.Id = id
	return q
}

// bigTXT is how many TXT strings of 250 bytes the stub answers a TXT
// query under big.example. with: over 16 KB.
const bigTXT = 80

// h2Stub has up answer A queries with dnstest.AnswerA, TXT queries under
// big.example. with bigTXT long strings, and hold the queries under
// held.example. until release is closed (never, if it is nil).
func h2Stub(up *dnstest.Upstream, release <-chan struct{}) {
	up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		if strings.HasSuffix(q.Name, "held.example.") && release != nil {
			<-release
		}
		m := new(dns.Msg).SetReply(r)
		if q.Qtype == dns.TypeTXT && strings.HasSuffix(q.Name, "big.example.") {
			for i := range bigTXT {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
					Txt: []string{strings.Repeat(string(rune('a'+i%26)), 250)}})
			}
		} else {
			rr, _ := dns.NewRR(q.Name + " 300 IN A " + dnstest.AnswerA)
			m.Answer = []dns.RR{rr}
		}
		w.WriteMsg(m)
	})
}

// h2Server is startEncrypted with rate limits off, whose stop at the end
// of the test is bounded: a server that does not stop within 7 s (an
// HTTP/2 connection that never ends holds it) fails the test instead of
// hanging it. Cleanups registered after it run before it.
func h2Server(t testing.TB, opts Options, ups ...*dnstest.Upstream) *encServer {
	t.Helper()
	s := startEncrypted(t, opts, loopbackLeaf, "access: {rate_limit: 0}\n", ups...)
	t.Cleanup(func() {
		if err := waitStopped(s.stop()); err != nil {
			t.Error(err)
		}
	})
	return s
}

// stop closes the server in a goroutine of its own; the channel gets
// Close's result. Closing it again (startEncrypted's cleanup) does nothing.
func (s *encServer) stop() <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.srv.Close(ctx)
	}()
	return done
}

// waitStopped waits for a stop's result, 7 s at most: Close gives the
// connections 5.
func waitStopped(done <-chan error) error {
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("stopping the server: %v", err)
		}
		return nil
	case <-time.After(7 * time.Second):
		return errors.New("the server did not stop within 7 s: an HTTP/2 connection of it does not end")
	}
}

// h2Tracked is how many HTTP/2 connections the server serves.
func h2Tracked(s *encServer) int {
	n := 0
	for _, d := range s.srv.doh {
		d.mu.Lock()
		n += len(d.conns)
		d.mu.Unlock()
	}
	return n
}

// h2Handed is how many queries the server's HTTP/2 connections have handed
// to goroutines of their own that have not returned.
func h2Handed(s *encServer) int {
	n := 0
	for _, d := range s.srv.doh {
		d.mu.Lock()
		for c := range d.conns {
			n += len(c.waits.slots)
		}
		d.mu.Unlock()
	}
	return n
}

// pollFor is waitFor without failing: it reports whether cond came to hold
// within d.
func pollFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// h2Stacks is the stacks of the goroutines of the server's HTTP/2
// connections, for a failure's message.
func h2Stacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "resolver.(*doh2Conn)") || strings.Contains(g, "serveH2") {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; the connections' goroutines:\n\n" + strings.Join(out, "\n\n")
}

// dialH2Raw opens a TLS connection that chose h2, with nothing sent on it
// yet: no preface.
func (s *encServer) dialH2Raw(t *testing.T) *h2Conn {
	t.Helper()
	tc := s.tlsConfig()
	tc.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(dialer(""), "tcp", s.doh, tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &h2Conn{t: t, conn: conn, fr: http2.NewFramer(conn, conn), connWindow: 65535, streamWindow: 65535,
		windows: map[uint32]int64{}, status: map[uint32]string{}, reset: map[uint32]bool{}}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// TestDoH2Pipelined: 20 GETs sent on one connection before any answer is
// read, half of them answered from the cache and half by the upstream, are
// all answered 200, each on its stream with the answer to its own query.
func TestDoH2Pipelined(t *testing.T) {
	up := dnstest.Start(t)
	h2Stub(up, nil)
	s := h2Server(t, Options{}, up)
	c := s.dialH2(t)
	l := newH2Log(c)

	warm := h2Question("cached.pipelined.example.", dns.TypeA, 0x4000)
	c.request(1, true, h2Get(s, warm)...)
	l.ended(1)
	l.answer(1, warm)

	qs := map[uint32]*dns.Msg{}
	for i := range 20 {
		id := uint32(3 + 2*i)
		name := fmt.Sprintf("p%d.pipelined.example.", i)
		if i%2 == 0 {
			name = warm.Question[0].Name
		}
		qs[id] = h2Question(name, dns.TypeA, uint16(0x4100+i))
		c.request(id, true, h2Get(s, qs[id])...)
	}
	l.until("20 answers", func() bool {
		for id := range qs {
			if st := l.stream(id); !st.ended && !st.rst {
				return false
			}
		}
		return true
	})
	for id, q := range qs {
		if r := l.answer(id, q); r != nil && answerText(r) != dnstest.AnswerA {
			t.Errorf("stream %d: %v", id, r)
		}
	}
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
}

// TestDoH2FlowControl: the server sends no more DATA than the client's
// windows let it: a stream's (SETTINGS_INITIAL_WINDOW_SIZE, then its
// WINDOW_UPDATEs, and a new SETTINGS) and the connection's.
func TestDoH2FlowControl(t *testing.T) {
	up := dnstest.Start(t)
	h2Stub(up, nil)
	s := h2Server(t, Options{}, up)

	t.Run("stream window of 10 bytes", func(t *testing.T) {
		c := s.dialH2(t)
		l := newH2Log(c)
		h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10}))
		l.roundTrip()
		if l.settingsAcks != 1 {
			t.Fatalf("%d SETTINGS acks", l.settingsAcks)
		}
		q := h2Question("small-window.example.", dns.TypeA, 0x5001)
		c.request(1, true, h2Get(s, q)...)
		st := l.stream(1)
		l.until("the answer's HEADERS", func() bool { return st.headers > 0 || st.rst })
		l.roundTrip()
		if st.status != "200" || len(st.data) != 10 || st.ended {
			t.Fatalf("with a window of 10 bytes: status %q, %d bytes of DATA, ended %v", st.status, len(st.data), st.ended)
		}
		size, _ := strconv.Atoi(st.header["content-length"])
		if size <= 20 {
			t.Fatalf("content-length %q: too short an answer for the test", st.header["content-length"])
		}

		// Credit for the connection alone: the stream still has none.
		h2Must(t, c.fr.WriteWindowUpdate(0, 10))
		l.roundTrip()
		if len(st.data) != 10 {
			t.Fatalf("after a WINDOW_UPDATE of the connection only: %d bytes of DATA, want 10", len(st.data))
		}
		// 5 bytes more for the stream: 5 bytes more come.
		h2Must(t, c.fr.WriteWindowUpdate(1, 5))
		l.roundTrip()
		if len(st.data) != 15 || st.ended {
			t.Fatalf("after a WINDOW_UPDATE of 5 bytes: %d bytes of DATA (ended %v), want 15", len(st.data), st.ended)
		}
		h2Must(t, c.fr.WriteWindowUpdate(1, uint32(size)))
		l.ended(1)
		l.answer(1, q)
	})

	t.Run("SETTINGS opens a window of 0", func(t *testing.T) {
		c := s.dialH2(t)
		l := newH2Log(c)
		h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
		l.roundTrip()
		q := h2Question("zero-window.example.", dns.TypeA, 0x5002)
		c.request(1, true, h2Get(s, q)...)
		st := l.stream(1)
		l.until("the answer's HEADERS", func() bool { return st.headers > 0 || st.rst })
		l.roundTrip()
		if st.status != "200" || len(st.frames) != 0 || st.ended {
			t.Fatalf("with a window of 0: status %q, %d DATA frames, ended %v", st.status, len(st.frames), st.ended)
		}
		// RFC 9113, section 6.9.2: a new SETTINGS_INITIAL_WINDOW_SIZE
		// changes the window of every open stream.
		h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535}))
		l.ended(1)
		l.answer(1, q)
	})

	t.Run("connection window", func(t *testing.T) {
		c := s.dialH2(t)
		l := newH2Log(c)
		// Streams may take a megabyte each: the connection's 65535 bytes
		// are what holds the answers back.
		h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}))
		l.roundTrip()
		qs := map[uint32]*dns.Msg{}
		for i := range 4 {
			id := uint32(1 + 2*i)
			qs[id] = h2Question(fmt.Sprintf("c%d.big.example.", i), dns.TypeTXT, uint16(0x5100+i))
			c.request(id, true, h2Get(s, qs[id])...)
		}
		l.until("65535 bytes of answers", func() bool {
			for id := range qs {
				if l.stream(id).headers == 0 && !l.stream(id).rst {
					return false
				}
			}
			return l.dataTotal() >= 65535
		})
		l.roundTrip()
		if n := l.dataTotal(); n != 65535 {
			t.Fatalf("%d bytes of DATA on a connection window of 65535", n)
		}
		ended := 0
		for id := range qs {
			if l.stream(id).ended {
				ended++
			}
		}
		if ended == len(qs) {
			t.Fatalf("all %d answers ended within the connection's window", ended)
		}
		h2Must(t, c.fr.WriteWindowUpdate(0, 1<<20))
		for id, q := range qs {
			l.ended(id)
			if r := l.answer(id, q); r != nil && len(r.Answer) != bigTXT {
				t.Errorf("stream %d: %d records", id, len(r.Answer))
			}
		}
	})
}

// TestDoH2LargeAnswer: an answer over 16 KB is sent in DATA frames no
// larger than the client's SETTINGS_MAX_FRAME_SIZE: 16384 unless it says
// more.
func TestDoH2LargeAnswer(t *testing.T) {
	up := dnstest.Start(t)
	h2Stub(up, nil)
	s := h2Server(t, Options{}, up)
	for i, maxFrame := range []uint32{0, 20000} {
		t.Run(fmt.Sprintf("max frame %d", maxFrame), func(t *testing.T) {
			c := s.dialH2(t)
			l := newH2Log(c)
			limit := 16384
			if maxFrame != 0 {
				h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrame}))
				l.roundTrip()
				limit = int(maxFrame)
			}
			q := h2Question(fmt.Sprintf("f%d.big.example.", i), dns.TypeTXT, uint16(0x5200+i))
			c.request(1, true, h2Get(s, q)...)
			st := l.ended(1)
			r := l.answer(1, q)
			if r == nil {
				return
			}
			if len(r.Answer) != bigTXT {
				t.Errorf("%d records", len(r.Answer))
			}
			if len(st.data) <= 16384 {
				t.Fatalf("the answer is %d bytes: too short for the test", len(st.data))
			}
			for _, n := range st.frames {
				if n > limit {
					t.Errorf("a DATA frame of %d bytes, over %d; frames: %v", n, limit, st.frames)
				}
			}
			if maxFrame == 0 && len(st.frames) < 2 {
				t.Errorf("frames %v", st.frames)
			}
		})
	}
}

// TestDoH2RefusedStream: a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS
// (32) is reset with REFUSED_STREAM and never reaches the upstream; the 32
// streams open are answered, and once they are another stream is too.
func TestDoH2RefusedStream(t *testing.T) {
	up := dnstest.Start(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	h2Stub(up, release)
	s := h2Server(t, Options{TryTimeout: time.Minute, Timeout: time.Minute, TCP: TCPLimits{Message: time.Minute, TLSIdle: time.Minute}}, up)
	t.Cleanup(unblock)
	c := s.dialH2(t)
	l := newH2Log(c)

	qs := map[uint32]*dns.Msg{}
	for i := range tcpInFlight {
		id := uint32(1 + 2*i)
		qs[id] = h2Question(fmt.Sprintf("h%d.held.example.", i), dns.TypeA, uint16(0x6000+i))
		c.request(id, true, h2Get(s, qs[id])...)
	}
	over := uint32(1 + 2*tcpInFlight)
	c.request(over, true, h2Get(s, h2Question("refused.held.example.", dns.TypeA, 0x6100))...)
	st := l.stream(over)
	l.until("RST_STREAM of the stream over the limit", func() bool { return st.rst || st.headers > 0 })
	if !st.rst || st.rstCode != http2.ErrCodeRefusedStream || st.headers != 0 {
		t.Errorf("stream %d, over the limit: reset %v with %v, status %q", over, st.rst, st.rstCode, st.status)
	}
	for id := range qs {
		if l.stream(id).headers > 0 || l.stream(id).rst {
			t.Errorf("stream %d answered or reset while its query is held: status %q", id, l.stream(id).status)
		}
	}

	unblock()
	for id, q := range qs {
		l.ended(id)
		if r := l.answer(id, q); r != nil && answerText(r) != dnstest.AnswerA {
			t.Errorf("stream %d: %v", id, r)
		}
	}
	q := h2Question("after.example.", dns.TypeA, 0x6101)
	c.request(over+2, true, h2Get(s, q)...)
	l.ended(over + 2)
	l.answer(over+2, q)
	if n := up.Seen("refused.held.example."); n != 0 {
		t.Errorf("the refused stream's query reached the upstream %d times", n)
	}
}

// TestDoH2ClientReset: a stream the client resets while its query waits
// for the upstream gets nothing more, not even once the answer comes; the
// connection answers the other streams meanwhile and after.
func TestDoH2ClientReset(t *testing.T) {
	up := dnstest.Start(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	h2Stub(up, release)
	s := h2Server(t, Options{TryTimeout: time.Minute, Timeout: time.Minute, TCP: TCPLimits{Message: time.Minute, TLSIdle: time.Minute}}, up)
	t.Cleanup(unblock)
	c := s.dialH2(t)
	l := newH2Log(c)

	held := h2Question("held.example.", dns.TypeA, 0x7001)
	c.request(1, true, h2Get(s, held)...)
	waitFor(t, "the query upstream", func() bool { return up.Seen("held.example.") >= 1 })
	h2Must(t, c.fr.WriteRSTStream(1, http2.ErrCodeCancel))

	other := h2Question("other.example.", dns.TypeA, 0x7003)
	c.request(3, true, h2Get(s, other)...)
	l.ended(3)
	l.answer(3, other)

	// The held query is answered, and its goroutine ends: whatever it
	// would have sent is sent before the next PING's ack.
	unblock()
	waitFor(t, "the held query's end", func() bool { return h2Handed(s) == 0 })
	l.roundTrip()
	if st := l.stream(1); st.headers != 0 || len(st.frames) != 0 || st.rst {
		t.Errorf("stream 1, reset by the client: status %q, %d DATA frames, RST_STREAM %v %v", st.status, len(st.frames), st.rst, st.rstCode)
	}

	again := h2Question("held.example.", dns.TypeA, 0x7005)
	c.request(5, true, h2Get(s, again)...)
	l.ended(5)
	l.answer(5, again)
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
}

// TestDoH2PingSettings: the server's SETTINGS come first, with its bounds;
// the client's SETTINGS are acknowledged, unknown settings ignored; a PING
// is acknowledged with its data, in order, and a PING ack is not.
func TestDoH2PingSettings(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{}, up)
	c := s.dialH2Raw(t)
	if _, err := io.WriteString(c.conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c.conn.SetReadDeadline(time.Now().Add(h2ReadWait))
	f, err := c.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("the server's first frame: %v", f)
	}
	for id, want := range map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: tcpInFlight,
		http2.SettingInitialWindowSize:    dohStreamWindow,
		http2.SettingMaxHeaderListSize:    dohMaxHeader,
	} {
		if v, ok := sf.Value(id); !ok || v != want {
			t.Errorf("%v: %d (%v), want %d", id, v, ok, want)
		}
	}
	l := newH2Log(c)
	h2Must(t, c.fr.WriteSettingsAck())
	h2Must(t, c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: 4096},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384},
		http2.Setting{ID: 0xf0f0, Val: 7}, // unknown: ignored (RFC 9113, section 6.5.2)
	))
	l.until("the SETTINGS ack", func() bool { return l.settingsAcks == 1 })

	data := [8]byte{'p', 'h', 'o', 'n', 'e', 'h', 'o', 'm'}
	h2Must(t, c.fr.WritePing(false, data))
	l.until("the PING ack", func() bool { return len(l.pingAcks) == 1 })
	if l.pingAcks[0] != data {
		t.Errorf("PING %q acknowledged with %q", data[:], l.pingAcks[0][:])
	}

	// An unsolicited ack is not acknowledged; two PINGs are, in order.
	h2Must(t, c.fr.WritePing(true, [8]byte{'u', 'n', 's', 'o', 'l', 'i', 'c', 't'}))
	a, b := [8]byte{'f', 'i', 'r', 's', 't'}, [8]byte{'s', 'e', 'c', 'o', 'n', 'd'}
	h2Must(t, c.fr.WritePing(false, a))
	h2Must(t, c.fr.WritePing(false, b))
	l.until("two PING acks", func() bool { return len(l.pingAcks) >= 3 })
	if l.pingAcks[1] != a || l.pingAcks[2] != b {
		t.Errorf("PING acks %q, want %q then %q", l.pingAcks[1:], a[:], b[:])
	}
	if l.pings != 0 {
		t.Errorf("the server sent %d PINGs", l.pings)
	}

	// SETTINGS again, empty: acknowledged too; the connection serves.
	h2Must(t, c.fr.WriteSettings())
	l.until("the second SETTINGS ack", func() bool { return l.settingsAcks == 2 })
	q := h2Question("ping.example.", dns.TypeA, 0x7101)
	c.request(1, true, h2Get(s, q)...)
	l.ended(1)
	l.answer(1, q)
	l.roundTrip()
	if len(l.pingAcks) != 4 || l.settingsAcks != 2 {
		t.Errorf("%d PING acks and %d SETTINGS acks, want 4 and 2", len(l.pingAcks), l.settingsAcks)
	}
}

// TestDoH2ConnectionErrors: each protocol error a client may make on the
// connection ends it with a GOAWAY of the right code, whose last stream is
// the last the server took, and then the server closes it.
func TestDoH2ConnectionErrors(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{}, up)
	q := h2Question("error.example.", dns.TypeA, 0x7201)
	answered := func(l *h2Log, id uint32) {
		l.c.request(id, true, h2Get(s, q)...)
		l.ended(id)
		l.answer(id, q)
	}
	for _, tc := range []struct {
		name  string
		send  func(l *h2Log)
		codes []http2.ErrCode
		last  uint32
	}{
		{"HEADERS on an even stream", func(l *h2Log) {
			l.c.request(2, true, h2Get(s, q)...)
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"DATA on an idle stream", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteData(3, true, []byte{0}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"DATA on stream 0", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FrameData, http2.FlagDataEndStream, 0, []byte{0}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"HEADERS on a stream lower than one opened", func(l *h2Log) {
			answered(l, 5)
			l.c.request(3, true, h2Get(s, q)...)
		}, []http2.ErrCode{http2.ErrCodeStreamClosed, http2.ErrCodeProtocol}, 5},
		{"HEADERS on a stream the client ended", func(l *h2Log) {
			answered(l, 1)
			l.c.request(1, true, h2Get(s, q)...)
		}, []http2.ErrCode{http2.ErrCodeStreamClosed, http2.ErrCodeProtocol}, 1},
		{"RST_STREAM on an idle stream", func(l *h2Log) {
			answered(l, 1)
			h2Must(l.t, l.c.fr.WriteRSTStream(7, http2.ErrCodeCancel))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 1},
		{"RST_STREAM on stream 0", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FrameRSTStream, 0, 0, []byte{0, 0, 0, 8}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"WINDOW_UPDATE on an idle stream", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteWindowUpdate(9, 100))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"WINDOW_UPDATE of 0 on the connection", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"connection window over 2^31-1", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteWindowUpdate(0, 1<<31-1))
		}, []http2.ErrCode{http2.ErrCodeFlowControl}, 0},
		{"SETTINGS_ENABLE_PUSH of 2", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}))
		}, []http2.ErrCode{http2.ErrCodeFlowControl}, 0},
		{"SETTINGS_MAX_FRAME_SIZE under 16384", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1000}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"SETTINGS of 5 bytes", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0, 0, 1}))
		}, []http2.ErrCode{http2.ErrCodeFrameSize}, 0},
		{"SETTINGS ack with a payload", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, []byte{0, 4, 0, 0, 1, 0}))
		}, []http2.ErrCode{http2.ErrCodeFrameSize}, 0},
		{"SETTINGS on a stream", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"PING on a stream", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8)))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"PING of 7 bytes", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7)))
		}, []http2.ErrCode{http2.ErrCodeFrameSize}, 0},
		{"a frame over SETTINGS_MAX_FRAME_SIZE", func(l *h2Log) {
			// Its header and a byte: the server reads no further.
			_, err := l.c.conn.Write([]byte{0x00, 0x40, 0x01, byte(http2.FrameData), 0x01, 0x00, 0x00, 0x00, 0x01, 'x'})
			h2Must(l.t, err)
		}, []http2.ErrCode{http2.ErrCodeFrameSize}, 0},
		{"PUSH_PROMISE", func(l *h2Log) {
			answered(l, 1)
			h2Must(l.t, l.c.fr.WriteRawFrame(http2.FramePushPromise, http2.FlagPushPromiseEndHeaders, 1, []byte{0, 0, 0, 2}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 1},
		{"CONTINUATION without HEADERS", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteContinuation(1, true, []byte{0x82}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"HEADERS not followed by its CONTINUATION", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndHeaders: false, EndStream: true}))
			h2Must(l.t, l.c.fr.WritePing(false, [8]byte{}))
		}, []http2.ErrCode{http2.ErrCodeProtocol}, 0},
		{"a header block that does not decode", func(l *h2Log) {
			h2Must(l.t, l.c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff}, EndHeaders: true, EndStream: true}))
		}, []http2.ErrCode{http2.ErrCodeCompression}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dialH2(t)
			l := newH2Log(c)
			tc.send(l)
			g := l.expectGoAway(tc.codes...)
			if g.last != tc.last {
				t.Errorf("GOAWAY's last stream %d, want %d", g.last, tc.last)
			}
		})
	}
}

// TestDoH2StreamErrors: a malformed request, or a frame a stream's state
// does not allow, resets that stream with the right code; the connection
// goes on, and answers the next stream.
func TestDoH2StreamErrors(t *testing.T) {
	up := dnstest.Start(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	h2Stub(up, release)
	s := h2Server(t, Options{TryTimeout: time.Minute, Timeout: time.Minute, TCP: TCPLimits{Message: time.Minute, TLSIdle: time.Minute}}, up)
	t.Cleanup(unblock)
	q := h2Question("stream-error.example.", dns.TypeA, 0x7301)
	path := h2Get(s, q)[7]
	c := s.dialH2(t)
	l := newH2Log(c)
	id := uint32(1)
	for _, tc := range []struct {
		name string
		send func(id uint32)
		code http2.ErrCode
	}{
		{"no :method", func(id uint32) {
			c.request(id, true, ":scheme", "https", ":authority", s.doh, ":path", path)
		}, http2.ErrCodeProtocol},
		{"no :path", func(id uint32) {
			c.request(id, true, ":method", "GET", ":scheme", "https", ":authority", s.doh)
		}, http2.ErrCodeProtocol},
		{"no :scheme", func(id uint32) {
			c.request(id, true, ":method", "GET", ":authority", s.doh, ":path", path)
		}, http2.ErrCodeProtocol},
		{"an unknown pseudo-header", func(id uint32) {
			c.request(id, true, append(h2Get(s, q), ":foo", "bar")...)
		}, http2.ErrCodeProtocol},
		{"a response pseudo-header", func(id uint32) {
			c.request(id, true, append(h2Get(s, q), ":status", "200")...)
		}, http2.ErrCodeProtocol},
		{"a pseudo-header after a regular one", func(id uint32) {
			c.request(id, true, ":method", "GET", ":scheme", "https", "accept", dohMediaType, ":path", path)
		}, http2.ErrCodeProtocol},
		{"an upper-case header name", func(id uint32) {
			c.request(id, true, append(h2Get(s, q), "Accept", dohMediaType)...)
		}, http2.ErrCodeProtocol},
		{"a content-length that is no number", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType, "content-length", "twelve")...)
		}, http2.ErrCodeProtocol},
		{"WINDOW_UPDATE of 0 on an open stream", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType)...)
			h2Must(t, c.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, id, []byte{0, 0, 0, 0}))
		}, http2.ErrCodeProtocol},
		{"a stream window over 2^31-1", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType)...)
			h2Must(t, c.fr.WriteWindowUpdate(id, 1<<31-1))
		}, http2.ErrCodeFlowControl},
		{"DATA after END_STREAM", func(id uint32) {
			held := h2Question(fmt.Sprintf("s%d.held.example.", id), dns.TypeA, 0x7302)
			c.request(id, true, h2Get(s, held)...)
			h2Must(t, c.fr.WriteData(id, true, []byte("more")))
		}, http2.ErrCodeStreamClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.t, c.t = t, t
			tc.send(id)
			st := l.ended(id)
			if !st.rst || st.rstCode != tc.code || st.headers != 0 {
				t.Errorf("stream %d: reset %v with %v, status %q; want RST_STREAM %v", id, st.rst, st.rstCode, st.status, tc.code)
			}
			// The connection goes on.
			next := id + 2
			c.request(next, true, h2Get(s, q)...)
			l.ended(next)
			l.answer(next, q)
			id += 4
		})
	}
	l.t, c.t = t, t
	unblock()
	l.roundTrip()
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
}

// TestDoH2StreamErrorDataInFlight: a client may send a request's body
// before it learns that its header got the stream reset; the server
// ignores those frames on the stream it closed (RFC 9113, section 5.1:
// closed) and goes on. A stream ID, once used, is not opened again (RFC
// 9113, section 5.1.1).
func TestDoH2StreamErrorDataInFlight(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{}, up)
	q := h2Question("in-flight.example.", dns.TypeA, 0x7401)
	body := packed(q)
	for _, tc := range []struct {
		name   string
		header []string
	}{
		// Reset by doh2.go's own checks.
		{"no :method", []string{":scheme", "https", ":authority", s.doh, ":path", "/dns-query", "content-type", dohMediaType}},
		// Reset on the framer's checks of the header block.
		{"an upper-case header name", h2Post(s, "Content-Type", dohMediaType)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dialH2(t)
			l := newH2Log(c)
			c.request(1, false, tc.header...)
			h2Must(t, c.fr.WriteData(1, true, body))
			c.request(3, true, h2Get(s, q)...)
			l.ended(3)
			l.answer(3, q)
			if st := l.stream(1); !st.rst || st.rstCode != http2.ErrCodeProtocol || st.headers != 0 {
				t.Errorf("stream 1: reset %v with %v, status %q; want RST_STREAM PROTOCOL_ERROR", st.rst, st.rstCode, st.status)
			}
			l.roundTrip()
			if l.goAway != nil {
				t.Errorf("GOAWAY %v", l.goAway.code)
			}
		})
		t.Run(tc.name+", stream ID used again", func(t *testing.T) {
			c := s.dialH2(t)
			l := newH2Log(c)
			c.request(1, true, tc.header...)
			st := l.ended(1)
			if !st.rst || st.rstCode != http2.ErrCodeProtocol {
				t.Fatalf("stream 1: reset %v with %v, status %q; want RST_STREAM PROTOCOL_ERROR", st.rst, st.rstCode, st.status)
			}
			st.rst = false
			c.request(1, true, h2Get(s, q)...)
			for l.goAway == nil && st.headers == 0 && !st.rst {
				if !l.next() {
					break
				}
			}
			if l.goAway == nil {
				t.Fatalf("HEADERS on stream 1, used and reset: status %q, reset %v %v; want GOAWAY PROTOCOL_ERROR or STREAM_CLOSED", st.status, st.rst, st.rstCode)
			}
			l.expectGoAway(http2.ErrCodeProtocol, http2.ErrCodeStreamClosed)
		})
	}
}

// TestDoH2HTTPStatus: the HTTP answers of RFC 8484 over the server's own
// HTTP/2: errors for another path, method, content type, or a body not as
// long as it says; 200 for POSTs whose body comes in several DATA frames,
// padded, or followed by trailers. All on one connection, which goes on.
func TestDoH2HTTPStatus(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{}, up)
	c := s.dialH2(t)
	l := newH2Log(c)
	q := h2Question("status.example.", dns.TypeA, 0x7501)
	body := packed(q)
	get := h2Get(s, q)
	id := uint32(1)
	for _, tc := range []struct {
		name   string
		send   func(id uint32)
		status int // 200: the answer to q
		check  func(st *h2Stream)
	}{
		{"GET", func(id uint32) { c.request(id, true, get...) }, 200, nil},
		{"GET of another path", func(id uint32) {
			c.request(id, true, ":method", "GET", ":scheme", "https", ":authority", s.doh, ":path", "/other?"+strings.SplitN(get[7], "?", 2)[1])
		}, 404, func(st *h2Stream) {
			if string(st.data) != "404 page not found\n" {
				t.Errorf("body %q", st.data)
			}
		}},
		{"GET without dns", func(id uint32) {
			c.request(id, true, ":method", "GET", ":scheme", "https", ":authority", s.doh, ":path", "/dns-query?name=x")
		}, 400, nil},
		{"GET of a dns that is not base64url", func(id uint32) {
			c.request(id, true, ":method", "GET", ":scheme", "https", ":authority", s.doh, ":path", "/dns-query?dns=!!!")
		}, 400, nil},
		{"PUT", func(id uint32) {
			c.request(id, true, ":method", "PUT", ":scheme", "https", ":authority", s.doh, ":path", "/dns-query")
		}, 405, func(st *h2Stream) {
			if st.header["allow"] != "GET, POST" {
				t.Errorf("allow %q", st.header["allow"])
			}
		}},
		{"POST of text/plain", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", "text/plain")...)
			h2Must(t, c.fr.WriteData(id, true, body))
		}, 415, nil},
		{"POST without content-type", func(id uint32) {
			c.request(id, false, h2Post(s)...)
			h2Must(t, c.fr.WriteData(id, true, body))
		}, 415, nil},
		// Malformed (RFC 9113, section 8.1.1): RST_STREAM PROTOCOL_ERROR,
		// written 0 here.
		{"POST shorter than its content-length", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType, "content-length", strconv.Itoa(len(body)+5))...)
			h2Must(t, c.fr.WriteData(id, true, body))
		}, 0, nil},
		{"POST longer than its content-length", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType, "content-length", strconv.Itoa(len(body)-5))...)
			h2Must(t, c.fr.WriteData(id, true, body))
		}, 0, nil},
		{"POST longer than a query", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType)...)
			h2Must(t, c.fr.WriteData(id, false, make([]byte, 3000)))
			h2Must(t, c.fr.WriteData(id, true, make([]byte, 3000)))
		}, 413, nil},
		{"POST", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType, "content-length", strconv.Itoa(len(body)))...)
			h2Must(t, c.fr.WriteData(id, true, body))
		}, 200, nil},
		{"POST in three DATA frames", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType, "content-length", strconv.Itoa(len(body)))...)
			h2Must(t, c.fr.WriteData(id, false, body[:5]))
			h2Must(t, c.fr.WriteData(id, false, body[5:12]))
			h2Must(t, c.fr.WriteData(id, true, body[12:]))
		}, 200, nil},
		{"POST ended by an empty DATA frame", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType)...)
			h2Must(t, c.fr.WriteData(id, false, body))
			h2Must(t, c.fr.WriteData(id, true, nil))
		}, 200, nil},
		{"POST of padded DATA", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType, "content-length", strconv.Itoa(len(body)))...)
			h2Must(t, c.fr.WriteDataPadded(id, true, body, make([]byte, 40)))
		}, 200, nil},
		{"POST with trailers", func(id uint32) {
			c.request(id, false, h2Post(s, "content-type", dohMediaType)...)
			h2Must(t, c.fr.WriteData(id, false, body))
			c.hbuf.Reset()
			c.henc.WriteField(hpack.HeaderField{Name: "x-checksum", Value: "none"})
			h2Must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: true}))
		}, 200, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.t, c.t = t, t
			tc.send(id)
			st := l.ended(id)
			switch {
			case tc.status == 0:
				if !st.rst || st.rstCode != http2.ErrCodeProtocol || st.status != "" {
					t.Errorf("stream %d: status %q, reset %v %v; want RST_STREAM PROTOCOL_ERROR", id, st.status, st.rst, st.rstCode)
				}
			case tc.status == 200:
				l.answer(id, q)
			default:
				l.httpError(id, tc.status)
			}
			if tc.check != nil {
				tc.check(st)
			}
			id += 2
		})
	}
	l.t, c.t = t, t
	l.roundTrip()
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
}

// TestDoH2Shutdown: when the server stops, an HTTP/2 connection gets
// GOAWAY with NO_ERROR naming the last stream it took; a query it was
// waiting for is answered before the connection closes. A client's own
// GOAWAY has its queries answered and the connection closed.
func TestDoH2Shutdown(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		up := dnstest.Start(t)
		s := h2Server(t, Options{}, up)
		c := s.dialH2(t)
		l := newH2Log(c)
		q := h2Question("idle.example.", dns.TypeA, 0x7601)
		c.request(1, true, h2Get(s, q)...)
		l.ended(1)
		l.answer(1, q)
		stopped := s.stop()
		g := l.expectGoAway(http2.ErrCodeNo)
		if g.last != 1 {
			t.Errorf("GOAWAY's last stream %d, want 1", g.last)
		}
		if err := waitStopped(stopped); err != nil {
			t.Error(err)
		}
	})

	t.Run("query in flight", func(t *testing.T) {
		up := dnstest.Start(t)
		release := make(chan struct{})
		unblock := sync.OnceFunc(func() { close(release) })
		h2Stub(up, release)
		s := h2Server(t, Options{TryTimeout: time.Minute, Timeout: time.Minute}, up)
		t.Cleanup(unblock)
		c := s.dialH2(t)
		l := newH2Log(c)
		q := h2Question("held.example.", dns.TypeA, 0x7602)
		c.request(1, true, h2Get(s, q)...)
		waitFor(t, "the query upstream", func() bool { return up.Seen("held.example.") >= 1 })
		stopped := s.stop()
		l.until("GOAWAY", func() bool { return l.goAway != nil })
		if l.goAway.code != http2.ErrCodeNo || l.goAway.last != 1 {
			t.Errorf("GOAWAY %v, last stream %d; want NO_ERROR, 1", l.goAway.code, l.goAway.last)
		}
		unblock()
		l.ended(1)
		l.answer(1, q)
		if err := l.waitClosed(); err == nil || !closedConn(err) {
			t.Errorf("after the last answer: %v, want the connection closed", err)
		}
		if err := waitStopped(stopped); err != nil {
			t.Error(err)
		}
	})

	t.Run("client GOAWAY", func(t *testing.T) {
		up := dnstest.Start(t)
		s := h2Server(t, Options{}, up)
		c := s.dialH2(t)
		l := newH2Log(c)
		q := h2Question("client-goaway.example.", dns.TypeA, 0x7603)
		c.request(1, true, h2Get(s, q)...)
		h2Must(t, c.fr.WriteGoAway(0, http2.ErrCodeNo, nil))
		l.ended(1)
		l.answer(1, q)
		if err := l.waitClosed(); err == nil || !closedConn(err) {
			t.Errorf("after the client's GOAWAY: %v, want the connection closed", err)
		}
	})
}

// TestDoH2OpenStreamAtEnd: a connection that ends (the client goes, its
// request times out, a protocol error, the server stops) while a stream
// is still open, its request not all there or its answer held back by
// flow control, is closed and forgotten like any other.
func TestDoH2OpenStreamAtEnd(t *testing.T) {
	// openPost opens stream 1 with a POST whose body is still to come,
	// and makes sure the server has read it.
	openPost := func(s *encServer, c *h2Conn, l *h2Log) {
		l.wait = 3 * time.Second
		c.request(1, false, h2Post(s, "content-type", dohMediaType)...)
		l.roundTrip()
	}
	t.Run("client gone mid-request", func(t *testing.T) {
		up := dnstest.Start(t)
		s := h2Server(t, Options{}, up)
		c := s.dialH2(t)
		l := newH2Log(c)
		openPost(s, c, l)
		c.conn.Close()
		if !pollFor(3*time.Second, func() bool { return h2Tracked(s) == 0 }) {
			t.Errorf("the server still serves the connection 3 s after the client closed it%s", h2Stacks())
		}
	})
	t.Run("request timed out", func(t *testing.T) {
		up := dnstest.Start(t)
		s := h2Server(t, Options{TCP: TCPLimits{Message: 300 * time.Millisecond}}, up)
		c := s.dialH2(t)
		l := newH2Log(c)
		openPost(s, c, l)
		if err := l.waitClosed(); err == nil || !closedConn(err) {
			t.Errorf("a request not all there within the message time: %v (nil: still open after %v), want the connection closed%s", err, l.wait, h2Stacks())
		}
	})
	t.Run("protocol error mid-request", func(t *testing.T) {
		up := dnstest.Start(t)
		s := h2Server(t, Options{}, up)
		c := s.dialH2(t)
		l := newH2Log(c)
		openPost(s, c, l)
		c.request(4, true, h2Post(s)...)
		if g := l.expectGoAway(http2.ErrCodeProtocol); g.last != 1 {
			t.Errorf("GOAWAY's last stream %d, want 1", g.last)
		}
	})
	t.Run("server stops mid-request", func(t *testing.T) {
		up := dnstest.Start(t)
		s := h2Server(t, Options{}, up)
		c := s.dialH2(t)
		l := newH2Log(c)
		openPost(s, c, l)
		stopped := s.stop()
		l.expectGoAway(http2.ErrCodeNo)
		if err := waitStopped(stopped); err != nil {
			t.Error(err)
		}
	})
	t.Run("client gone with an answer held by flow control", func(t *testing.T) {
		up := dnstest.Start(t)
		s := h2Server(t, Options{}, up)
		c := s.dialH2(t)
		l := newH2Log(c)
		l.wait = 3 * time.Second
		h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
		q := h2Question("blocked.example.", dns.TypeA, 0x7701)
		c.request(1, true, h2Get(s, q)...)
		st := l.stream(1)
		l.until("the answer's HEADERS", func() bool { return st.headers > 0 || st.rst })
		c.conn.Close()
		if !pollFor(3*time.Second, func() bool { return h2Tracked(s) == 0 }) {
			t.Errorf("the server still serves the connection 3 s after the client closed it%s", h2Stacks())
		}
	})
}

// h2Frames is frames written by a fresh client framer and hpack encoder.
func h2Frames(write func(fr *http2.Framer, block func(fields ...string) []byte)) []byte {
	var b, hb bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	enc := hpack.NewEncoder(&hb)
	write(fr, func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	})
	return b.Bytes()
}

// FuzzDoH2Frames writes arbitrary bytes to an HTTP/2 connection after a
// valid preface and SETTINGS, then a PING, and closes its side: the server
// must not panic, must send only frames that parse, and must close the
// connection within 5 s (after answering what it took, if anything).
//
//	go test -run '^$' -fuzz FuzzDoH2Frames -fuzztime 20s ./resolver
func FuzzDoH2Frames(f *testing.F) {
	q := packed(h2Question("www.example.com.", dns.TypeA, 0x7801))
	get := []string{":method", "GET", ":scheme", "https", ":authority", "127.0.0.1", ":path", "/dns-query?dns=" + base64.RawURLEncoding.EncodeToString(q)}
	post := []string{":method", "POST", ":scheme", "https", ":authority", "127.0.0.1", ":path", "/dns-query", "content-type", dohMediaType}
	f.Add(h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(get...), EndHeaders: true, EndStream: true})
	}))
	f.Add(h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(post...), EndHeaders: true})
		fr.WriteData(1, false, q[:7])
		fr.WriteDataPadded(1, false, q[7:], []byte{0, 0, 0})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-trailer", "1"), EndHeaders: true, EndStream: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(get...), EndHeaders: true, EndStream: true})
		fr.WriteRSTStream(3, http2.ErrCodeCancel)
	}))
	f.Add(h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteWindowUpdate(0, 1000)
		fr.WritePriority(5, http2.PriorityParam{StreamDep: 3, Weight: 10})
		fr.WriteRawFrame(0x20, 0, 7, []byte("unknown frame type"))
		fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(get...), EndHeaders: false})
		fr.WriteContinuation(1, true, nil)
	}))
	// A frame header announcing more than comes.
	f.Add([]byte{0x00, 0x40, 0x00, byte(http2.FrameData), 0x01, 0x00, 0x00, 0x00, 0x01, 'x'})

	up := dnstest.Start(f)
	s := h2Server(f, Options{TCP: TCPLimits{PerClient: 256}}, up)
	var preface bytes.Buffer
	preface.WriteString(http2.ClientPreface)
	http2.NewFramer(&preface, nil).WriteSettings()
	var ping bytes.Buffer
	http2.NewFramer(&ping, nil).WritePing(false, [8]byte{'f', 'u', 'z', 'z'})

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return
		}
		tc := s.tlsConfig()
		tc.NextProtos = []string{"h2"}
		conn, err := tls.DialWithDialer(dialer(""), "tcp", s.doh, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Under the 10 s after which the fuzzing engine takes a worker
		// for hung.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		wrote := make(chan error, 1)
		go func() {
			var err error
			for _, p := range [][]byte{preface.Bytes(), b, ping.Bytes()} {
				if _, err = conn.Write(p); err != nil {
					break
				}
			}
			if err == nil {
				err = conn.CloseWrite()
			}
			wrote <- err
		}()
		fr := http2.NewFramer(nil, conn)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		for {
			_, err := fr.ReadFrame()
			if err == nil {
				continue
			}
			var ce http2.ConnectionError
			var se http2.StreamError
			switch {
			case isTimeout(err):
				t.Fatalf("the server neither closed the connection nor sent anything for 5 s%s", h2Stacks())
			case errors.As(err, &ce), errors.As(err, &se), errors.Is(err, http2.ErrFrameTooLarge):
				t.Fatalf("the server sent a frame that does not parse: %v", err)
			}
			break
		}
		<-wrote // bounded by the write deadline
	})
}

// h2ServerConn is the one HTTP/2 connection the server serves, as the
// server holds it.
func h2ServerConn(t *testing.T, s *encServer) *doh2Conn {
	t.Helper()
	var conns []*doh2Conn
	for _, d := range s.srv.doh {
		d.mu.Lock()
		for c := range d.conns {
			conns = append(conns, c)
		}
		d.mu.Unlock()
	}
	if len(conns) != 1 {
		t.Fatalf("the server serves %d HTTP/2 connections, want 1", len(conns))
	}
	return conns[0]
}

// h2Held is how many answers a server's connection holds for lack of
// flow control credit, and how many streams it has open.
func h2Held(c *doh2Conn) (blocked, streams int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.blocked), len(c.streams)
}

// encode is the frames write writes, with header blocks compressed by c's
// own encoder: for the test to send as it likes, but in the order
// encoded, as the server's decoder follows the encoder's state.
func (c *h2Conn) encode(write func(fr *http2.Framer, block func(fields ...string) []byte)) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	write(fr, func(fields ...string) []byte {
		c.hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			c.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(c.hbuf.Bytes())
	})
	return b.Bytes()
}

// write sends b in one write: one TLS record, which the server reads at
// once.
func (c *h2Conn) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// TestDoH2ResetLeavesBlocked: answers held back by flow control whose
// streams the client then resets are forgotten, bodies and all: 200
// GETs of a cached name on a stream window of 0, each reset by the client
// once answered, leave the connection with no answer waiting for credit
// and no stream open; a new GET is held, and answered once the window
// opens.
func TestDoH2ResetLeavesBlocked(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{}, up)
	c := s.dialH2(t)
	l := newH2Log(c)
	warm := h2Question("reset-blocked.example.", dns.TypeA, 0x7a00)
	c.request(1, true, h2Get(s, warm)...)
	l.ended(1)
	l.answer(1, warm)

	h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
	l.roundTrip()
	const pairs = 200
	for i := range pairs {
		id := uint32(3 + 2*i)
		c.request(id, true, h2Get(s, h2Question(warm.Question[0].Name, dns.TypeA, uint16(0x7a01+i)))...)
		h2Must(t, c.fr.WriteRSTStream(id, http2.ErrCodeCancel))
	}
	l.roundTrip()
	// Each was answered before its reset came: its HEADERS, and no DATA
	// for lack of credit.
	for i := range pairs {
		id := uint32(3 + 2*i)
		if st := l.stream(id); st.status != "200" || len(st.frames) != 0 || st.ended || st.rst {
			t.Fatalf("stream %d: status %q, %d DATA frames, ended %v, reset %v %v; want the answer's HEADERS alone",
				id, st.status, len(st.frames), st.ended, st.rst, st.rstCode)
		}
	}
	sc := h2ServerConn(t, s)
	if blocked, streams := h2Held(sc); blocked != 0 || streams != 0 {
		t.Errorf("after %d answers held by flow control and reset by the client: %d answers wait for credit, %d streams open; want none",
			pairs, blocked, streams)
	}

	// The window still works: a new answer waits for it, and comes when
	// it opens.
	last := uint32(3 + 2*pairs)
	q := h2Question(warm.Question[0].Name, dns.TypeA, 0x7b00)
	c.request(last, true, h2Get(s, q)...)
	l.roundTrip()
	if blocked, streams := h2Held(sc); blocked != 1 || streams != 1 {
		t.Errorf("a new answer held by flow control: %d answers wait for credit, %d streams open; want 1 and 1", blocked, streams)
	}
	h2Must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535}))
	l.ended(last)
	l.answer(last, q)
	l.roundTrip()
	for i := range pairs {
		if st := l.stream(uint32(3 + 2*i)); len(st.frames) != 0 || st.rst {
			t.Errorf("stream %d, reset by the client: %d DATA frames, RST_STREAM %v %v", 3+2*i, len(st.frames), st.rst, st.rstCode)
		}
	}
	if blocked, streams := h2Held(sc); blocked != 0 || streams != 0 {
		t.Errorf("at the end: %d answers wait for credit, %d streams open", blocked, streams)
	}
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
}

// TestDoH2SplitFrames: a client whose every write ends inside the next
// frame (TLS records cut wherever its buffer was) has its answers all the
// same: each write carries a whole request, GET or POST of a cached name,
// and the first bytes of the next request's HEADERS frame (the last, of a
// PING's), and that request's answer comes before the client sends more.
// The server never sees a pause between whole frames.
func TestDoH2SplitFrames(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{TCP: TCPLimits{Message: time.Minute, TLSIdle: time.Minute}}, up)
	name := "split.example."
	// The cache is filled on another connection: this one sends nothing
	// but the requests, cut.
	{
		c0 := s.dialH2(t)
		l0 := newH2Log(c0)
		warm := h2Question(name, dns.TypeA, 0x7c00)
		c0.request(1, true, h2Get(s, warm)...)
		l0.ended(1)
		l0.answer(1, warm)
	}

	c := s.dialH2(t)
	l := newH2Log(c)
	l.wait = 3 * time.Second
	const n = 12
	qs := map[uint32]*dns.Msg{}
	var all []byte
	var starts []int // where each request begins in all, then the PING
	for i := range n {
		id := uint32(1 + 2*i)
		q := h2Question(name, dns.TypeA, uint16(0x7c01+i))
		qs[id] = q
		starts = append(starts, len(all))
		all = append(all, c.encode(func(fr *http2.Framer, block func(...string) []byte) {
			if i%2 == 0 {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(h2Get(s, q)...), EndHeaders: true, EndStream: true})
				return
			}
			body := packed(q)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(h2Post(s, "content-type", dohMediaType)...), EndHeaders: true})
			fr.WriteData(id, false, body[:7])
			fr.WriteData(id, true, body[7:])
		})...)
	}
	starts = append(starts, len(all))
	ping := [8]byte{'s', 'p', 'l', 'i', 't'}
	all = append(all, c.encode(func(fr *http2.Framer, _ func(...string) []byte) { fr.WritePing(false, ping) })...)

	// Cut 1 to 12 bytes into the next frame: inside its 9-byte header,
	// just after it, or into its payload.
	cuts := []int{1, 5, 8, 9, 10, 12}
	from := 0
	for i := range n {
		to := starts[i+1] + cuts[i%len(cuts)]
		c.write(all[from:to])
		from = to
		id := uint32(1 + 2*i)
		st := l.stream(id)
		for !st.ended && !st.rst {
			if err := l.read(); err != nil {
				t.Fatalf("stream %d: no answer to a write that ends %d bytes into the next frame: %v (a timeout: nothing for %v)%s",
					id, cuts[i%len(cuts)], err, l.wait, l.why())
			}
		}
		l.answer(id, qs[id])
	}
	c.write(all[from:])
	l.until("the PING ack", func() bool { return slices.Contains(l.pingAcks, ping) })
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
}

// h2SlowClient is the server's bounds for a client that takes its time:
// the message time short, the idle time long.
var h2SlowClient = Options{TCP: TCPLimits{Message: 300 * time.Millisecond, TLSIdle: time.Minute}}

// h2ClosedSlow checks that the server closed the connection as slow (err,
// the read that ended it) after the message time of h2SlowClient since
// start, well before its idle time.
func h2ClosedSlow(t *testing.T, s *encServer, start time.Time, err error) {
	t.Helper()
	took := time.Since(start)
	if !closedConn(err) {
		t.Errorf("the connection ended with %v after %v, want it closed", err, took)
	}
	if took < 290*time.Millisecond || took > 3*time.Second {
		t.Errorf("the connection closed %v after the request began; the message time is 300 ms", took)
	}
	g := s.srv.tcpGate
	waitFor(t, "the connection counted as slow", func() bool { return g.count(tcpSlow) == 1 })
	if n := g.count(tcpIdle); n != 0 {
		t.Errorf("%d connections counted as idle", n)
	}
}

// TestDoH2MessageTimeFromFirstFrame: the message time bounds a request
// from its first frame, whatever else the client sends meanwhile: a POST
// whose body never ends, on a connection kept busy with a PING every 50
// ms (each acknowledged), is closed after the message time, counted as
// slow, not after the idle time of a minute.
func TestDoH2MessageTimeFromFirstFrame(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, h2SlowClient, up)
	c := s.dialH2(t)
	l := newH2Log(c)
	l.wait = 2 * time.Second
	body := packed(h2Question("slow-post.example.", dns.TypeA, 0x7d01))
	start := time.Now()
	c.request(1, false, h2Post(s, "content-type", dohMediaType)...)
	h2Must(t, c.fr.WriteData(1, false, body[:5]))

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	acked := 0
	var closed error
	for closed == nil {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the connection is still open 5 s after a request began whose body never ends (the message time is 300 ms), after %d PINGs acknowledged%s",
				acked, h2Stacks())
		}
		<-tick.C
		l.seq++
		data := [8]byte{'b', 'u', 's', 'y'}
		binary.BigEndian.PutUint32(data[4:], l.seq)
		if err := c.fr.WritePing(false, data); err != nil {
			if closed = l.waitClosed(); closed == nil {
				t.Fatalf("writing a PING: %v, yet the connection is open", err)
			}
			break
		}
		for !slices.Contains(l.pingAcks, data) {
			if err := l.read(); err != nil {
				if isTimeout(err) {
					t.Fatalf("PING %d neither acknowledged nor the connection closed within %v", l.seq, l.wait)
				}
				closed = err
				break
			}
		}
		if closed == nil {
			acked++
		}
	}
	t.Logf("%d PINGs acknowledged before the connection closed", acked)
	if acked < 2 {
		t.Errorf("only %d PINGs acknowledged while the request was open: the connection was not kept busy", acked)
	}
	h2ClosedSlow(t, s, start, closed)
	if st := l.stream(1); st.headers != 0 {
		t.Errorf("the request not all there was answered: status %q", st.status)
	}
}

// TestDoH2PartialFrameBounded: a frame that comes in part is bounded by
// the message time from its first bytes: a client that sends the first 5
// bytes of a HEADERS frame and nothing more has the connection closed
// after the message time, counted as slow, not after the idle time of a
// minute. Whether those bytes come alone, to a server waiting for a
// frame, or behind a whole frame in the same write; and so for a frame's
// whole header and the first bytes of its payload.
func TestDoH2PartialFrameBounded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int  // bytes of the HEADERS frame sent
		behind bool // a PING first, in the same write
	}{
		{"5 bytes alone", 5, false},
		{"5 bytes behind a whole frame", 5, true},
		{"header and 3 bytes of payload alone", 12, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := dnstest.Start(t)
			s := h2Server(t, h2SlowClient, up)
			c := s.dialH2(t)
			l := newH2Log(c)
			l.wait = 3 * time.Second
			q := h2Question("partial.example.", dns.TypeA, 0x7e01)
			ping := [8]byte{'p', 'a', 'r', 't'}
			b := c.encode(func(fr *http2.Framer, block func(...string) []byte) {
				if tc.behind {
					fr.WritePing(false, ping)
				}
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(h2Get(s, q)...), EndHeaders: true, EndStream: true})
			})
			if tc.behind {
				b = b[:17+tc.n]
			} else {
				b = b[:tc.n]
			}
			start := time.Now()
			c.write(b)
			if tc.behind {
				l.until("the PING ack", func() bool { return slices.Contains(l.pingAcks, ping) })
			}
			err := l.waitClosed()
			if err == nil {
				t.Fatalf("the connection is still open %v after the first %d bytes of a frame (the message time is 300 ms, the idle time a minute)%s",
					time.Since(start), tc.n, h2Stacks())
			}
			h2ClosedSlow(t, s, start, err)
		})
	}
}

// TestDoH2TrailersAfterEarlyAnswer: a POST answered on its header block
// (415: not application/dns-message) has its stream closed by the server
// while the client may still send the rest of it; its DATA and trailers,
// sent together with a GET on the next stream, are ignored (RFC 9113,
// section 5.1): the GET is answered, and the connection goes on.
func TestDoH2TrailersAfterEarlyAnswer(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{}, up)
	c := s.dialH2(t)
	l := newH2Log(c)
	q := h2Question("trailers.example.", dns.TypeA, 0x7f01)
	c.request(1, false, h2Post(s, "content-type", "text/plain")...)
	st := l.ended(1)
	l.httpError(1, 415)
	l.roundTrip()
	rsts, code := st.rsts, st.rstCode

	c.write(c.encode(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteData(1, false, packed(q))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-checksum", "none"), EndHeaders: true, EndStream: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(h2Get(s, q)...), EndHeaders: true, EndStream: true})
	}))
	for l.goAway == nil && !l.stream(3).ended && !l.stream(3).rst {
		if !l.next() {
			break
		}
	}
	if l.goAway != nil {
		t.Fatalf("the rest of a POST answered early, with its trailers: GOAWAY %v, last stream %d", l.goAway.code, l.goAway.last)
	}
	l.answer(3, q)
	l.roundTrip()
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
	if st.rsts != rsts || st.rstCode != code || st.late != 0 || st.headers != 1 {
		t.Errorf("stream 1, after its DATA and trailers: %d RST_STREAM frames (%v), %d before; %d HEADERS, %d frames after its end",
			st.rsts, st.rstCode, rsts, st.headers, st.late)
	}
}

// TestDoH2DataOnClosedStream: DATA on a stream the client ended and the
// server answered and closed, without resetting it, is a stream error
// (RFC 9113, sections 5.1 and 6.1): RST_STREAM STREAM_CLOSED, and the
// connection goes on.
func TestDoH2DataOnClosedStream(t *testing.T) {
	up := dnstest.Start(t)
	s := h2Server(t, Options{}, up)
	c := s.dialH2(t)
	l := newH2Log(c)
	q := h2Question("closed-stream.example.", dns.TypeA, 0x7f11)
	c.request(1, true, h2Get(s, q)...)
	st := l.ended(1)
	l.answer(1, q)
	l.roundTrip()
	if st.rsts != 0 {
		t.Fatalf("stream 1, answered: RST_STREAM %v", st.rstCode)
	}

	h2Must(t, c.fr.WriteData(1, true, []byte("late")))
	l.roundTrip()
	if st.rsts != 1 || st.rstCode != http2.ErrCodeStreamClosed || st.late != 0 {
		t.Errorf("DATA on stream 1, closed: %d RST_STREAM frames (the last %v), %d frames after its end; want one RST_STREAM STREAM_CLOSED%s",
			st.rsts, st.rstCode, st.late, l.why())
	}
	q2 := h2Question("closed-stream.example.", dns.TypeA, 0x7f13)
	c.request(3, true, h2Get(s, q2)...)
	l.ended(3)
	l.answer(3, q2)
	l.roundTrip()
	if l.goAway != nil {
		t.Errorf("GOAWAY %v", l.goAway.code)
	}
}

package resolver

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// DNS over HTTPS on HTTP/2, served here rather than by net/http. net/http's
// HTTP/2 server runs every request in a goroutine of its own, hands each
// response to the connection's goroutine, and flushes it from yet another,
// in a TLS record and a write of its own: 45 µs of CPU a cached answer,
// against 7 for dnsdist's DNS over HTTPS and 6 for phonehome's own DNS over
// TLS, most of it outside the request path. A DNS query is one small
// request and one small response, so a connection here is read by one
// goroutine that answers what it can at once, as DNS over TCP does, and
// hands cache misses to goroutines of their own; a writer goroutine, alive
// while streams are open, sends in one write all that was queued since it
// last ran, woken when the reader has no whole frame left to read.
//
// golang.org/x/net/http2 reads and writes the frames (Framer: sizes,
// padding, header blocks with their CONTINUATION frames, the pseudo-header
// rules) and hpack compresses the headers; what is here is the rest of RFC
// 9113 a server needs: the connection preface and settings, streams and
// their states, flow control both ways, PING, RST_STREAM and GOAWAY. A
// request is a GET or POST of /dns-query and nothing else; the HTTP
// checks and the answer are dohServer's, shared with HTTP/1.1 (which
// net/http still serves, dohlisten.go).

// doh2Conn is one HTTP/2 connection.
type doh2Conn struct {
	d       *dohServer
	conn    *tls.Conn
	peer    netip.AddrPort
	br      *bufio.Reader // from tlsReaders; none while await waits
	rf      *http2.Framer // reads frames through br (Read); the reader's own
	lastID  uint32        // the highest stream the client has opened
	waits   handOffs      // the queries handed off
	wake    chan struct{} // tells the writer there is something to write
	writers sync.WaitGroup

	// mu guards the streams and everything written: frames are encoded
	// into out, in the order they are sent (the header compression's
	// state depends on it), and written by flush.
	mu         sync.Mutex
	streams    map[uint32]*doh2Stream
	out        bytes.Buffer
	wf         *http2.Framer // writes frames into out
	henc       *hpack.Encoder
	hbuf       bytes.Buffer
	window     int64         // what the client lets us send on the connection
	initial    int64         // and on a new stream (its SETTINGS_INITIAL_WINDOW_SIZE)
	maxFrame   int           // the largest frame it takes
	blocked    []*doh2Stream // answers waiting for flow control credit, in order
	broken     bool          // a write failed: nothing more is sent
	goingAway  bool          // GOAWAY sent: no new stream
	dispatched int           // requests the reader has handed on: the reader's own
	writing    bool          // the writer goroutine runs
	readerDone bool          // the reader has stopped
	peerGone   bool          // the client sent GOAWAY
	// The streams reset here last, whose frames still coming are
	// ignored (RFC 9113, section 5.1, "closed"); other closed streams'
	// get RST_STREAM STREAM_CLOSED.
	resets [16]uint32
	nreset int
}

// doh2Stream is one request and its response.
type doh2Stream struct {
	id uint32
	// The request, as read by the reader.
	method, path, contentType string
	contentLength             int64 // -1: none given
	xff                       []string
	body                      []byte
	received                  int64 // DATA bytes, against our stream window
	ended                     bool  // the client ended the stream
	dispatched                bool  // the request has gone to the request path
	handed                    bool  // and on to a goroutine: its answer is written at once
	opened                    time.Time
	// The response, under mu.
	window  int64     // what the client lets us send on the stream
	pending []byte    // body bytes not yet sent, for lack of credit
	blocked time.Time // since when it waits for credit (zero: it does not)
	reset   bool      // reset, by the client or here: nothing more is sent
}

// serveH2 serves an HTTP/2 connection whose handshake is done, until the
// client closes it, breaks the protocol or a bound, or the server stops;
// then it closes it once the queries it read are answered.
func (d *dohServer) serveH2(tc *tls.Conn) {
	c := &doh2Conn{d: d, conn: tc, br: tlsReaders.get(tc),
		window: 65535, initial: 65535, maxFrame: 16384, waits: newHandOffs(), wake: make(chan struct{}, 1)}
	if ap, err := netip.ParseAddrPort(tc.RemoteAddr().String()); err == nil {
		c.peer = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	c.rf = http2.NewFramer(nil, c)
	c.rf.SetMaxReadFrameSize(16384) // what we say in SETTINGS (the default)
	c.rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.rf.MaxHeaderListSize = dohMaxHeader
	c.wf = http2.NewFramer(&c.out, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.henc.SetMaxDynamicTableSizeLimit(dohHeaderTable)
	if !d.track(c) {
		tc.Close()
		return
	}
	limits := &c.d.gate.limits
	c.deadline(time.Now().Add(limits.Message))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil || string(preface) != http2.ClientPreface {
		c.end()
		return
	}
	c.mu.Lock()
	c.wf.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: tcpInFlight},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: dohStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: dohMaxHeader})
	c.flush()
	c.mu.Unlock()
	c.run()
}

// run reads the connection until it ends, then ends it; or, when the
// connection has gone idle, hands the wait to a goroutine of its own (see
// serve).
func (c *doh2Conn) run() {
	if !c.serve() {
		c.end()
	}
}

// end closes the connection once the queries it read are answered.
func (c *doh2Conn) end() {
	c.readerGone()
	c.waits.wait()
	c.writers.Wait()
	c.mu.Lock()
	c.flush()
	c.mu.Unlock()
	c.conn.Close() // leaves the gate
	c.d.untrack(c)
}

// readerGone is the end of the reader: what no longer has a way to finish
// is dropped (requests not all there, answers waiting for credit the
// client can no longer give), so that only the answers of queries handed
// off are still written, and the writer stops once it has written them.
func (c *doh2Conn) readerGone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readerDone = true
	for id, s := range c.streams {
		if !s.handed || s.pending != nil {
			s.reset, s.pending = true, nil
			delete(c.streams, id)
		}
	}
	clear(c.blocked)
	c.blocked = c.blocked[:0]
	if c.writing {
		c.wakeWriter()
	}
}

// writer writes what is queued whenever it is told to, as long as the
// connection has streams open and a reader; an idle connection has no
// writer. Answers are queued by the reader and by handed-off queries, and
// the writer gathers into one write all that were queued since it last
// ran: on a busy core, all that the reader answered before it waited for
// more to read.
func (c *doh2Conn) writer() {
	defer c.writers.Done()
	for {
		c.mu.Lock()
		c.flush()
		if len(c.streams) == 0 || c.readerDone {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		<-c.wake
	}
}

// wakeWriter has the writer write what is queued, starting it if the
// connection was idle. The caller holds mu.
func (c *doh2Conn) wakeWriter() {
	if !c.writing {
		c.writing = true
		c.writers.Add(1)
		go c.writer()
		return
	}
	select {
	case c.wake <- struct{}{}:
	default: // it has been told already
	}
}

// idleProbe is how long a reader that has read waits for more before it
// hands the wait to a fresh goroutine (doh2Conn.serve, tcpConn.loop):
// long enough that a busy connection never does, as nothing is read in
// between.
const idleProbe = 100 * time.Millisecond

// dohHeaderTable bounds the table our header compression (RFC 7541)
// keeps, at 1 KiB rather than HTTP/2's 4 KiB: room for the fields every
// answer repeats (the media type, a few lengths and max-ages), not for
// each max-age and length there is, which the encoder would index in
// turn; 3 KiB less on a busy connection. (The client's table is its own
// to size: one made smaller by SETTINGS would hold only from its
// acknowledgement, and only with clients that follow RFC 7541's size
// update.)
const dohHeaderTable = 1024

// dohWriteAt is how much may be queued before the writer is woken
// whatever the reader is doing.
const dohWriteAt = 32 << 10

// serve reads frames until the connection ends, and returns false; or
// returns true once it has started another goroutine to wait on (await).
// That is when the connection has been idle (nothing to read, no stream
// open) for idleProbe after this goroutine read frames: reading through
// TLS and answering grew its stack, twice what waiting takes, and a
// thousand idle connections would keep 4 MB of it.
func (c *doh2Conn) serve() (moved bool) {
	var partial time.Time // since when a frame has been coming in part
	why := tcpIdle        // what the read deadline bounds
	for n := 0; ; n++ {
		// About to wait for more to read (no whole frame buffered), or
		// now and then: have what was answered sent, and see to the
		// deadlines; wait for a frame's header here, byte by byte, so
		// that a frame in part is bounded from its first byte.
		for check := n%256 == 0; ; check = false {
			blocking := !c.frameBuffered()
			if !blocking && !check {
				break
			}
			now := time.Now()
			if c.br.Buffered() == 0 {
				partial = time.Time{}
			} else if partial.IsZero() {
				partial = now
			}
			c.mu.Lock()
			if blocking && c.out.Len() > 0 {
				c.wakeWriter()
			}
			if c.peerGone && len(c.streams) == 0 {
				c.mu.Unlock()
				return // the client said GOAWAY, and has its answers
			}
			// Idle after reading: wait a little here, then elsewhere.
			probe := blocking && n > 0 && len(c.streams) == 0 && c.br.Buffered() == 0
			var due time.Time
			due, why = c.due(now, partial)
			c.mu.Unlock()
			if !due.After(now) {
				c.readFailed(why)
				return
			}
			if probe && now.Add(idleProbe).Before(due) {
				c.deadline(now.Add(idleProbe))
			} else {
				probe = false
				c.deadline(due)
			}
			if !blocking || c.br.Buffered() >= 9 {
				break // a whole frame, or a header whose payload ReadFrame waits for
			}
			if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					if probe && !c.d.stopping.Load() {
						c.idle()
						c.deadline(due)
						c.d.wg.Add(1)
						go c.await(why)
						return true
					}
					c.readFailed(why)
				} else {
					c.connError(err)
				}
				return
			}
		}
		f, err := c.rf.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.mu.Lock()
				if se.StreamID%2 == 1 && se.StreamID > c.lastID {
					c.lastID = se.StreamID // a stream opened, and refused at once
				}
				c.mu.Unlock()
				c.resetStream(se.StreamID, se.Code)
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.readFailed(why)
				return
			}
			c.connError(err)
			return
		}
		partial = time.Time{}
		if err := c.frame(f); err != nil {
			c.connError(err)
			return
		}
	}
}

// idle gives back what an idle connection can do without until the
// client writes again (see await): the read buffer, empty, the streams'
// map, and the buffers frames and header blocks were encoded in once
// what they held is written.
func (c *doh2Conn) idle() {
	tlsReaders.put(c.br)
	c.br = nil
	c.mu.Lock()
	c.streams = nil // no stream open
	if !c.writing && c.out.Len() == 0 {
		c.out = bytes.Buffer{}
	}
	c.hbuf = bytes.Buffer{} // used whole under mu
	c.mu.Unlock()
}

// await is the reader of a connection gone idle after serve read
// frames: it waits for the next frame on a small stack (awaitReadable),
// to the deadline serve set, then reads on.
func (c *doh2Conn) await(why tcpClose) {
	defer c.d.wg.Done()
	err := awaitReadable(c.conn)
	if err == nil {
		c.br = tlsReaders.get(c.conn)
		c.run()
		return
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.readFailed(why)
	} else {
		c.connError(err)
	}
	c.end()
}

// Read is what the framer reads: the connection through the read buffer
// of the moment.
func (c *doh2Conn) Read(p []byte) (int, error) { return c.br.Read(p) }

// frameBuffered reports whether a whole frame is buffered, to be read
// without waiting.
func (c *doh2Conn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := c.br.Peek(9)
	return n >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// due is when the reader stops waiting, and what for: the message time
// after a request or a frame began to come, the write timeout after an
// answer began to wait for flow control credit, else the idle time of
// encrypted connections from now. The caller holds mu.
func (c *doh2Conn) due(now, partial time.Time) (time.Time, tcpClose) {
	limits := &c.d.gate.limits
	due, why := now.Add(limits.TLSIdle), tcpIdle
	if !partial.IsZero() {
		due, why = partial.Add(limits.Message), tcpSlow
	}
	for _, s := range c.streams {
		if !s.dispatched {
			if d := s.opened.Add(limits.Message); d.Before(due) {
				due, why = d, tcpSlow
			}
		}
		if !s.blocked.IsZero() {
			if d := s.blocked.Add(tcpWriteTimeout); d.Before(due) {
				due, why = d, tcpWrite
			}
		}
	}
	return due, why
}

// readFailed ends the connection when the reader's deadline passed: at
// shutdown with a GOAWAY; after the client's GOAWAY, when its last stream
// closed; else counted as the TCP bounds count theirs.
func (c *doh2Conn) readFailed(why tcpClose) {
	c.mu.Lock()
	peerGone := c.peerGone && len(c.streams) == 0
	c.mu.Unlock()
	switch {
	case c.d.stopping.Load():
		c.goAway(http2.ErrCodeNo)
	case !peerGone:
		c.d.gate.closed[why].Add(1)
	}
}

// connError ends the connection for a protocol error: GOAWAY with its
// code, when there is one to send.
func (c *doh2Conn) connError(err error) {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		c.goAway(http2.ErrCode(ce))
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.goAway(http2.ErrCodeFrameSize)
	case c.d.stopping.Load():
		c.goAway(http2.ErrCodeNo)
	}
}

func (c *doh2Conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.goingAway {
		c.goingAway = true
		c.wf.WriteGoAway(c.lastID, code, nil)
		c.flush()
	}
}

// deadline sets the read deadline at t; once the server is stopping, in
// the past (as tcpConn.deadline).
func (c *doh2Conn) deadline(t time.Time) {
	c.conn.SetReadDeadline(t)
	if c.d.stopping.Load() {
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// frame handles one frame; an error ends the connection.
func (c *doh2Conn) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.headers(f)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.settings(f)
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			c.wf.WritePing(true, f.Data)
			c.mu.Unlock()
		}
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if s := c.streams[f.StreamID]; s != nil {
			c.drop(s)
		} else if f.StreamID > c.lastID {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
		}
		c.mu.Unlock()
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.resetStream(f.StreamID, http2.ErrCodeProtocol) // RFC 7540, section 5.3.1
		}
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // a client never pushes
	case *http2.GoAwayFrame:
		// The client opens no more streams: the connection closes once
		// what it asked is answered.
		c.mu.Lock()
		c.peerGone = true
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			return io.EOF
		}
	}
	// Frames of unknown types are ignored.
	return nil
}

// closedStream takes a frame on a stream that has closed: ignored if
// the stream was reset here, else RST_STREAM STREAM_CLOSED. The caller
// holds mu.
func (c *doh2Conn) closedStream(id uint32) {
	if !c.wasReset(id) {
		c.writeReset(id, http2.ErrCodeStreamClosed)
	}
}

// wasReset reports whether stream id is one of the last reset here. The
// caller holds mu.
func (c *doh2Conn) wasReset(id uint32) bool {
	return slices.Contains(c.resets[:min(c.nreset, len(c.resets))], id)
}

// isTrailers reports whether a header block is a request's trailers: no
// pseudo-header, and the end of the stream.
func isTrailers(f *http2.MetaHeadersFrame) bool {
	return f.StreamEnded() && len(f.PseudoFields()) == 0
}

// headers opens a stream with a request's header block, or ends one
// with trailers.
func (c *doh2Conn) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if id <= c.lastID {
		// Trailers, on a stream still being sent; on any other, an error.
		s := c.streams[id]
		switch {
		case s == nil && c.wasReset(id) && isTrailers(f):
			c.mu.Unlock() // trailers of a stream reset here (RFC 9113, section 5.1)
		case s == nil:
			// A new stream below one opened (section 5.1.1).
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeProtocol)
		case s.ended:
			c.mu.Unlock()
			c.resetStream(id, http2.ErrCodeStreamClosed)
		case !f.StreamEnded():
			c.mu.Unlock()
			c.resetStream(id, http2.ErrCodeProtocol)
		default:
			s.ended = true
			c.mu.Unlock()
			c.requestEnded(s)
		}
		return nil
	}
	c.lastID = id
	if c.goingAway {
		c.mu.Unlock()
		return nil
	}
	if len(c.streams) >= tcpInFlight {
		c.writeReset(id, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		return nil
	}
	s := &doh2Stream{id: id, contentLength: -1, window: c.initial, ended: f.StreamEnded(), opened: time.Now()}
	if c.streams == nil {
		c.streams = make(map[uint32]*doh2Stream)
	}
	c.streams[id] = s
	c.mu.Unlock()

	if f.Truncated {
		c.reply(s, 431, "the request's header is too long")
		return nil
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.resetStream(id, http2.ErrCodeProtocol) // RFC 7540, section 5.3.1
		return nil
	}
	var scheme string
	for _, hf := range f.Fields {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			c.resetStream(id, http2.ErrCodeProtocol) // RFC 9113, section 8.2.2
			return nil
		case "te":
			if hf.Value != "trailers" {
				c.resetStream(id, http2.ErrCodeProtocol)
				return nil
			}
		case ":method":
			s.method = hf.Value
		case ":path":
			s.path = hf.Value
		case ":scheme":
			scheme = hf.Value
		case "content-type":
			s.contentType = hf.Value
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 {
				c.resetStream(id, http2.ErrCodeProtocol)
				return nil
			}
			s.contentLength = n
		case "x-forwarded-for":
			s.xff = append(s.xff, hf.Value)
		}
	}
	if s.method == "" || s.path == "" || scheme == "" {
		c.resetStream(id, http2.ErrCodeProtocol) // RFC 9113, section 8.3.1
		return nil
	}
	// A GET is answered on its header block, whatever its stream still
	// carries (dropped, as net/http would); a POST once its body is all
	// there, unless it cannot be a query; anything else at once.
	if s.method == "POST" && !s.ended {
		if status, why := dohPostHeaders(s.contentType, s.contentLength); status != 0 && c.isQueryPath(s) {
			c.reply(s, status, why)
		}
		return nil
	}
	c.dispatch(s)
	return nil
}

func (c *doh2Conn) isQueryPath(s *doh2Stream) bool {
	p, _, _ := strings.Cut(s.path, "?")
	return p == dohQueryPath
}

// data takes a DATA frame: a POST's body, up to a query's length; what
// else the stream carries is dropped. The connection's credit for it is
// given back at once, since nothing of it is kept beyond the query; the
// stream's never is, so a stream sends no more than its window.
func (c *doh2Conn) data(f *http2.DataFrame) error {
	n := int64(f.Header().Length)
	c.mu.Lock()
	if n > 0 {
		c.wf.WriteWindowUpdate(0, uint32(n))
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.lastID {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
		}
		c.closedStream(f.StreamID)
		c.mu.Unlock()
		return nil
	}
	if s.ended {
		c.mu.Unlock()
		c.resetStream(s.id, http2.ErrCodeStreamClosed)
		return nil
	}
	s.received += n
	if s.received > dohStreamWindow {
		c.mu.Unlock()
		c.resetStream(s.id, http2.ErrCodeFlowControl)
		return nil
	}
	s.ended = f.StreamEnded()
	c.mu.Unlock()
	if !s.dispatched {
		if len(s.body)+len(f.Data()) > tcpQuery {
			c.reply(s, 413, "the body is longer than a query")
			return nil
		}
		s.body = append(s.body, f.Data()...)
		if s.contentLength >= 0 && int64(len(s.body)) > s.contentLength {
			c.resetStream(s.id, http2.ErrCodeProtocol) // RFC 9113, section 8.1.1
			return nil
		}
	}
	if s.ended {
		c.requestEnded(s)
	}
	return nil
}

// requestEnded answers a POST whose body is all there.
func (c *doh2Conn) requestEnded(s *doh2Stream) {
	if s.dispatched {
		return
	}
	if s.contentLength >= 0 && int64(len(s.body)) != s.contentLength {
		c.resetStream(s.id, http2.ErrCodeProtocol) // RFC 9113, section 8.1.1
		return
	}
	c.dispatch(s)
}

// dispatch hands a whole request to dohServer's checks and the request
// path.
func (c *doh2Conn) dispatch(s *doh2Stream) {
	s.dispatched = true
	c.dispatched++
	if !c.isQueryPath(s) {
		c.reply(s, 404, "404 page not found")
		return
	}
	var b []byte
	switch s.method {
	case "GET":
		_, raw, _ := strings.Cut(s.path, "?")
		v, _ := url.ParseQuery(raw)
		var status int
		var why string
		if b, status, why = dohGetQuery(v); status != 0 {
			c.reply(s, status, why)
			return
		}
	case "POST":
		if status, why := dohPostHeaders(s.contentType, s.contentLength); status != 0 {
			c.reply(s, status, why)
			return
		}
		b, s.body = s.body, nil
	default:
		c.reply(s, 405, "GET or POST")
		return
	}
	c.d.serveQuery(&doh2Reply{c: c, s: s}, b, c.peer, s.xff, c.conn.LocalAddr())
}

// reply answers s with an HTTP error, as http.Error would.
func (c *doh2Conn) reply(s *doh2Stream, status int, why string) {
	s.dispatched = true
	(&doh2Reply{c: c, s: s}).fail(status, why)
}

// doh2Reply sends the response of one stream.
type doh2Reply struct {
	c *doh2Conn
	s *doh2Stream
}

func (r *doh2Reply) answer(b []byte, maxAge uint32) error {
	return r.c.respond(r.s, 200, dohMediaType, "private, max-age="+strconv.FormatUint(uint64(maxAge), 10), b)
}

func (r *doh2Reply) fail(status int, why string) {
	r.c.respond(r.s, status, "text/plain; charset=utf-8", "", []byte(why+"\n"))
}

// HandOff runs f, a query waiting for the upstreams, in a goroutine of its
// own, so that the reader goes on to the streams behind it.
func (r *doh2Reply) HandOff(f func()) {
	r.s.handed = true
	r.c.waits.run(f)
}

// errStreamGone is a response to a stream the client reset or a connection
// that broke.
var errStreamGone = errors.New("the client is gone")

// respond queues a response: its header block and as much of its body as
// flow control lets through. A handed-off query's answer is written at
// once; the reader writes the others when it has read what had come.
func (c *doh2Conn) respond(s *doh2Stream, status int, contentType, cacheControl string, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.reset || c.broken {
		return errStreamGone
	}
	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: contentType})
	c.henc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
	if cacheControl != "" {
		c.henc.WriteField(hpack.HeaderField{Name: "cache-control", Value: cacheControl})
	}
	if status == 405 {
		c.henc.WriteField(hpack.HeaderField{Name: "allow", Value: "GET, POST"})
	}
	c.wf.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: len(body) == 0})
	s.pending = body
	switch {
	case len(body) == 0:
		c.closeStream(s)
	case c.send(s):
	case c.readerDone:
		c.drop(s) // no credit can come any more
	default:
		s.pending = bytes.Clone(s.pending) // the caller's buffer is reused
		s.blocked = time.Now()
		c.blocked = append(c.blocked, s)
	}
	if s.handed || c.out.Len() >= dohWriteAt {
		c.wakeWriter()
	}
	return nil
}

// send writes as much of s's pending body as the windows allow, and
// reports whether it is all sent. The caller holds mu.
func (c *doh2Conn) send(s *doh2Stream) bool {
	for len(s.pending) > 0 {
		n := min(int64(len(s.pending)), c.window, s.window, int64(c.maxFrame))
		if n <= 0 {
			return false
		}
		c.wf.WriteData(s.id, n == int64(len(s.pending)), s.pending[:n])
		c.window -= n
		s.window -= n
		s.pending = s.pending[n:]
	}
	s.pending, s.blocked = nil, time.Time{}
	c.closeStream(s)
	return true
}

// closeStream forgets a stream whose response is sent or that the client
// reset; one whose request the client has not ended is asked to stop
// sending (RFC 9113, section 8.1). The caller holds mu.
func (c *doh2Conn) closeStream(s *doh2Stream) {
	if c.streams[s.id] != s {
		return
	}
	delete(c.streams, s.id)
	if !s.ended && !s.reset {
		c.writeReset(s.id, http2.ErrCodeNo)
	}
	c.lastClosed()
}

// lastClosed ends the wait of the reader of a connection the client said
// GOAWAY on once its last stream is closed. The caller holds mu.
func (c *doh2Conn) lastClosed() {
	if c.peerGone && len(c.streams) == 0 {
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// drop forgets a stream that is reset, with whatever it still had to
// send. The caller holds mu.
func (c *doh2Conn) drop(s *doh2Stream) {
	s.reset, s.dispatched = true, true
	if s.pending != nil {
		s.pending = nil
		if i := slices.Index(c.blocked, s); i >= 0 {
			c.blocked = slices.Delete(c.blocked, i, i+1)
		}
	}
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
		c.lastClosed()
	}
}

// resetStream ends a stream with an error code.
func (c *doh2Conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[id]; s != nil {
		c.drop(s)
	}
	c.writeReset(id, code)
}

// writeReset sends RST_STREAM, and remembers the stream as reset here.
// The caller holds mu.
func (c *doh2Conn) writeReset(id uint32, code http2.ErrCode) {
	c.wf.WriteRSTStream(id, code)
	c.resets[c.nreset%len(c.resets)] = id
	c.nreset++
}

// settings applies the client's settings and acknowledges them.
func (c *doh2Conn) settings(f *http2.SettingsFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - c.initial
			c.initial = int64(st.Val)
			for _, s := range c.streams {
				s.window += delta
				if s.window > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(st.Val)
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(st.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.wf.WriteSettingsAck()
	c.unblock()
	return nil
}

// windowUpdate takes credit the client gives, and sends what waited for it.
func (c *doh2Conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if c.window += inc; c.window > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else if s := c.streams[f.StreamID]; s != nil {
		if s.window += inc; s.window > 1<<31-1 {
			c.drop(s)
			c.writeReset(s.id, http2.ErrCodeFlowControl)
		}
	} else if f.StreamID > c.lastID {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.unblock()
	return nil
}

// unblock sends what flow control held back and now lets through. The
// caller holds mu.
func (c *doh2Conn) unblock() {
	kept := c.blocked[:0]
	for _, s := range c.blocked {
		if !s.reset && !c.send(s) {
			kept = append(kept, s)
		}
	}
	clear(c.blocked[len(kept):])
	c.blocked = kept
}

// flush writes what is queued, in one write. A client that does not take
// it within tcpWriteTimeout, or is gone, loses the connection, which also
// ends its reader. The caller holds mu.
func (c *doh2Conn) flush() {
	if c.out.Len() == 0 || c.broken {
		c.out.Reset()
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
	_, err := c.conn.Write(c.out.Bytes())
	c.out.Reset()
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.d.gate.closed[tcpWrite].Add(1)
		}
		c.broken = true
		c.conn.Close()
	}
}

package resolver

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// udpServer answers DNS over one UDP socket, many packets per system call
// (recvmmsg and sendmmsg through golang.org/x/net). A query that is answered
// without waiting — refused, sinkholed, from the cache — is answered with the
// batch it came in; a cache miss is handed to a worker (HandOff), and its
// answer goes out with the other misses' through the send queue. Under
// load this saves most of the system calls and goroutines a query costs
// with one read, one goroutine and one write each.
type udpServer struct {
	h    *Handler
	conn *net.UDPConn
	bc   batchConn
	// v6: conn is an IPv6 socket, dual-stack when bound to "::".
	v6 bool
	// pktinfo: conn is bound to a wildcard address, so each answer is sent
	// from the address its query came to, which the kernel reports.
	pktinfo bool

	stopping atomic.Bool
	read     atomic.Int64   // datagrams read (one add per batch), for tests
	loops    sync.WaitGroup // the read loops
	handed   sync.WaitGroup // queries handed off to goroutines

	// Cache misses run on workers (see HandOff) and send their answers
	// through sq, together.
	work    chan *udpMiss
	quit    chan struct{} // closed at shutdown: idle workers return
	workers atomic.Int32  // running, for tests
	sq      *sendQueue
}

const (
	udpBatch = 64   // packets read or written per system call at most
	udpQuery = 4096 // the longest query read; a longer one is dropped
	udpOOB   = 128  // room for the control message of a wildcard socket
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newUDPServer(h *Handler, c *net.UDPConn) (*udpServer, error) {
	la := c.LocalAddr().(*net.UDPAddr)
	s := &udpServer{h: h, conn: c, v6: la.IP.To4() == nil, pktinfo: la.IP.IsUnspecified(),
		work: make(chan *udpMiss), quit: make(chan struct{})}
	var err error
	if s.v6 {
		p := ipv6.NewPacketConn(c)
		if s.pktinfo {
			err = p.SetControlMessage(ipv6.FlagDst, true)
		}
		s.bc = p
	} else {
		p := ipv4.NewPacketConn(c)
		if s.pktinfo {
			err = p.SetControlMessage(ipv4.FlagDst, true)
		}
		s.bc = p
	}
	s.sq = &sendQueue{bc: s.bc}
	return s, err
}

// start runs n read loops; the kernel hands each waiting batch to one of
// them, so several cores can answer from one socket.
func (s *udpServer) start(n int) {
	for range n {
		s.loops.Add(1)
		go s.serve()
	}
}

// serve reads batches of queries and answers them until shutdown.
func (s *udpServer) serve() {
	defer s.loops.Done()
	in := make([]ipv4.Message, udpBatch)
	b := &batch{out: make([]ipv4.Message, udpBatch), answers: make([]Answer, 0, udpBatch)}
	ws := make([]batchWriter, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, udpQuery)}
		if s.pktinfo {
			in[i].OOB = make([]byte, udpOOB)
		}
		ws[i].buf = make([]byte, 0, maxUDP)
	}
	for {
		n, err := s.bc.ReadBatch(in, 0)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// An ICMP error left by an earlier answer, say. Pause a moment,
			// so that an error that persists does not spin a core.
			time.Sleep(time.Millisecond)
			continue
		}
		s.read.Add(int64(n))
		now := time.Now() // when the batch was read: the clock once for all its queries
		b.n = 0
		for i, p := range in[:n] {
			addr, ok := p.Addr.(*net.UDPAddr)
			if !ok {
				continue // no sender to answer
			}
			w := &ws[i]
			w.udpReply = udpReply{s: s, addr: addr}
			w.batch = b
			if s.pktinfo {
				w.oob, w.dst = s.answerOOB(p.OOB[:p.NN])
			}
			s.handle(w, p.Buffers[0][:p.N], now)
		}
		if len(b.answers) > 0 {
			s.h.doneBatch(b.answers, time.Now())
			clear(b.answers) // keeps no decision's policy alive
			b.answers = b.answers[:0]
		}
		for sent := 0; sent < b.n; {
			k, err := s.bc.WriteBatch(b.out[sent:b.n], 0)
			if err != nil {
				k = 1 // that client is gone; send the rest
			}
			sent += k
		}
	}
}

// handle unpacks one packet and hands it to the request path. A packet that
// does not parse, or is too long to be a query, is dropped and counted; a
// response is dropped, as answering it could start a loop between servers.
func (s *udpServer) handle(w *batchWriter, b []byte, now time.Time) {
	if len(b) == udpQuery || len(b) < 12 {
		s.h.counters.Malformed.Add(1)
		return
	}
	if b[2]&0x80 != 0 { // QR: a response
		return
	}
	if s.h.serveWire(w, b, now) != wireNotMine { // cache hits and sinkholed names, mostly (wire.go)
		return
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		s.h.counters.Malformed.Add(1)
		return
	}
	s.h.ServeDNS(w, req)
}

// answerOOB is the control message that sends an answer from the address
// its query came to (as received in oob), and that address; or nil.
func (s *udpServer) answerOOB(oob []byte) ([]byte, net.IP) {
	var dst net.IP
	if s.v6 {
		var cm ipv6.ControlMessage
		if cm.Parse(oob) != nil {
			return nil, nil
		}
		dst = cm.Dst
	} else {
		var cm ipv4.ControlMessage
		if cm.Parse(oob) != nil {
			return nil, nil
		}
		dst = cm.Dst
	}
	if dst == nil {
		return nil, nil
	}
	// An IPv4 query on a dual-stack socket arrives with a v4-mapped address;
	// the IPv6 control message cannot carry that, the IPv4 one can.
	if v4 := dst.To4(); v4 != nil {
		return (&ipv4.ControlMessage{Src: v4}).Marshal(), dst
	}
	// Only the source: the kernel routes the answer, so a host whose
	// routes are asymmetric still reaches the client.
	return (&ipv6.ControlMessage{Src: dst}).Marshal(), dst
}

// shutdown stops reading, waits until every handed-off query is answered or
// ctx ends, and closes the socket.
func (s *udpServer) shutdown(ctx context.Context) {
	s.stopping.Store(true)
	s.conn.SetReadDeadline(time.Unix(1, 0)) // wakes the read loops
	s.loops.Wait()
	done := make(chan struct{})
	go func() { s.handed.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	close(s.quit)
	s.conn.Close()
}

// batch is the answers a read loop sends with one system call, and what
// the observers are to be told of them (doneBatch).
type batch struct {
	out     []ipv4.Message
	n       int
	answers []Answer
}

// udpReply is what the two UDP writers share: where the answer goes.
type udpReply struct {
	s    *udpServer
	addr *net.UDPAddr
	oob  []byte // the answer's source address, on a wildcard socket
	dst  net.IP // and that address, which the query came to
}

// LocalAddr is the address the query came to: the socket's, or on a
// wildcard socket the one the kernel reported.
func (r *udpReply) LocalAddr() net.Addr {
	la := r.s.conn.LocalAddr()
	if r.dst == nil {
		return la
	}
	return &net.UDPAddr{IP: r.dst, Port: la.(*net.UDPAddr).Port}
}

func (r *udpReply) RemoteAddr() net.Addr { return r.addr }
func (r *udpReply) Close() error         { return nil }
func (r *udpReply) TsigStatus() error    { return nil }
func (r *udpReply) TsigTimersOnly(bool)  {}
func (r *udpReply) Hijack()              {}

// batchWriter queues an answer in its read loop's batch; HandOff moves a
// query that has to wait to a goroutine with a udpWriter.
type batchWriter struct {
	udpReply
	batch *batch
	buf   []byte // this query's answer, packed
}

func (w *batchWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.PackBuffer(w.buf[:cap(w.buf)])
	if err != nil {
		return err
	}
	w.buf = b[:0] // PackBuffer grew it if it had to: keep the larger one
	w.queue(b)
	return nil
}

func (w *batchWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf[:0], b...)
	w.queue(w.buf)
	return len(b), nil
}

func (w *batchWriter) keep(a Answer) { w.batch.answers = append(w.batch.answers, a) }

func (w *batchWriter) wireBuf() []byte { return w.buf }

func (w *batchWriter) wireSend(b []byte) {
	w.buf = b[:0] // grown if it had to: keep the larger one
	w.queue(b)
}

func (w *batchWriter) queue(b []byte) {
	if w.batch.n == len(w.batch.out) {
		return // more answers than queries: never from the Handler
	}
	m := &w.batch.out[w.batch.n]
	m.Buffers = append(m.Buffers[:0], b)
	m.Addr, m.OOB = w.addr, w.oob
	w.batch.n++
}

// HandOff runs the miss on a worker of the loop's: a goroutine kept from
// one miss to the next, idle for at most workerIdle, so that its stack has
// grown to what a miss needs (a goroutine per miss grew one anew each
// time, 6% of a miss's cost). A new worker starts when none is idle. The
// miss and its writer are one allocation.
func (w *batchWriter) HandOff(m miss) {
	s := w.s
	job := &udpMiss{miss: m, w: udpWriter{udpReply: udpReply{s: s, addr: w.addr, oob: bytes.Clone(w.oob), dst: w.dst}}}
	s.handed.Add(1)
	select {
	case s.work <- job:
	default:
		go s.worker(job)
	}
}

// A udpMiss is a miss of the loop's, and the writer its answer goes out
// through.
type udpMiss struct {
	miss
	w udpWriter
}

// run answers the miss. The observers are told of it before its answer
// is sent, as the loop tells them of its batch's: a client that has its
// answer finds it counted, logged and cached.
func (j *udpMiss) run() {
	defer j.w.s.handed.Done()
	j.w.kept = &j.a // the miss's answer so far: done's copy replaces it
	j.serve(&j.w)
	j.finish()
}

// finish tells the observers of the miss's answer and sends it. It is
// a call of its own, not inlined in run (the log call makes it too big
// for that): run's frame is under every frame of the miss, and the
// nearly 500 bytes finish needs (an Answer passed by value, the log
// call's arguments) there grew a worker's stack past 8 KB, and resident
// memory under load by 1.4 MB.
func (j *udpMiss) finish() {
	w := &j.w
	if w.told {
		j.h.tell(j.a, time.Now())
	}
	if w.out == nil {
		return
	}
	if err := w.s.sq.send(w.out, w.addr, w.oob); err != nil && j.h.log != nil {
		j.h.log.Debug("writing answer", "err", err)
	}
}

// workerIdle is how long a worker waits for another miss before it ends.
const workerIdle = 5 * time.Second

// worker runs job, then the jobs HandOff gives it, until it has had none
// for workerIdle or the server shuts down.
func (s *udpServer) worker(job *udpMiss) {
	s.workers.Add(1)
	defer s.workers.Add(-1)
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		job.run()
		job = nil // nothing of it kept while idle
		idle.Reset(workerIdle)
		select {
		case job = <-s.work:
		case <-idle.C:
			return
		case <-s.quit:
			return
		}
	}
}

// udpWriter is a miss's writer, off the read loop's batch. It holds the
// answer, and what done would tell the observers of it, for finish, which
// tells them and then sends it with the answers other misses send at the
// same time (see sendQueue).
type udpWriter struct {
	udpReply
	out  []byte  // the answer; it must not change after Write
	kept *Answer // where keep puts the answer's Answer
	told bool    // and whether it did
}

func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (w *udpWriter) Write(b []byte) (int, error) {
	if w.out != nil {
		return 0, errors.New("a second answer to one query")
	}
	w.out = b
	return len(b), nil
}

func (w *udpWriter) keep(a Answer) { *w.kept, w.told = a, true }

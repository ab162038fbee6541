// Command flood is the hostile client of phonehome's soak test
// (bench/soak.sh): for a while it sends garbage UDP datagrams and keeps a
// flood of TCP connections open at a DNS server, from several loopback
// source addresses, and then says what it saw.
//
//	flood -server 127.0.0.1:5301 -from 127.0.66.1 -sources 20 -duration 8s \
//	      [-udp-rate 2000] [-tcp-conns 400] [-tcp-rate 500]
//
// UDP: -udp-rate datagrams a second in all, spread over the sources, each
// one of the kinds in garbageKinds: random bytes, a header cut short, a
// response instead of a query, a name whose label runs past the end, a
// compression pointer that points at itself, a query without a question.
// The first four do not parse as queries and must be dropped; the others
// parse and get FORMERR. Whatever comes back is read and counted.
//
// TCP: -tcp-conns workers, spread over the sources, each opening one
// connection after another (all of them together at most -tcp-rate a
// second) and doing one of the things in tcpKinds with it: nothing (idle),
// the first byte of a length and no more (trickle), a message of garbage,
// a length past any query's, or ten queries whose answers it leaves unread
// for longer than phonehome's idle timeout.
// Each connection then waits for the server to close it. More workers than
// the server's bounds (256 connections in all, 16 per client address, for
// phonehome) mean that some connections are closed at once: that is what
// the flood is for.
//
// It refuses addresses other than loopback, and at the end prints one line
// of counts to stdout and exits 0; it exits 1 when it could not send at all.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"

	"github.com/phonehome/phonehome/bench/loopback"
)

func main() {
	var o options
	flag.StringVar(&o.server, "server", "127.0.0.1:5301", "the DNS server to flood (loopback only)")
	flag.StringVar(&o.from, "from", "127.0.66.1", "the first loopback source address")
	flag.IntVar(&o.sources, "sources", 20, "source addresses: -from and the ones after it")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "how long to flood")
	flag.IntVar(&o.udpRate, "udp-rate", 2000, "garbage UDP datagrams a second, in all (0: none)")
	flag.IntVar(&o.tcpConns, "tcp-conns", 400, "TCP workers, each keeping one connection open at a time (0: none)")
	flag.IntVar(&o.tcpRate, "tcp-rate", 500, "new TCP connections a second at most, in all")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	st, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
	fmt.Println(st)
}

// options are the flags.
type options struct {
	server            string
	from              string
	sources           int
	duration          time.Duration
	udpRate           int
	tcpConns, tcpRate int
}

// stats counts what the flood did and what came back.
type stats struct {
	udpSent, udpReplies   atomic.Int64
	tcpDials, tcpDialErrs atomic.Int64
	tcpClosedAtOnce       atomic.Int64 // closed unread by the server: within atOnce of the dial, or its queries unanswered
	tcpClosedLater        atomic.Int64 // closed by the server later
	tcpCut                atomic.Int64 // still open when the flood ended
	tcpAnswers            atomic.Int64 // DNS messages read back
}

// atOnce is how soon after its dial a connection closed by the server
// counts as refused at once rather than closed for a timeout.
const atOnce = 250 * time.Millisecond

func (s *stats) String() string {
	return fmt.Sprintf("udp_sent %d udp_replies %d tcp_dials %d tcp_dial_errors %d tcp_closed_at_once %d tcp_closed_later %d tcp_open_at_end %d tcp_answers %d",
		s.udpSent.Load(), s.udpReplies.Load(), s.tcpDials.Load(), s.tcpDialErrs.Load(),
		s.tcpClosedAtOnce.Load(), s.tcpClosedLater.Load(), s.tcpCut.Load(), s.tcpAnswers.Load())
}

// run floods until ctx ends and returns the counts; every socket is closed
// and every goroutine it started has returned when it returns.
func run(ctx context.Context, o options) (*stats, error) {
	server, err := netip.ParseAddrPort(o.server)
	if err != nil {
		return nil, fmt.Errorf("-server: %w", err)
	}
	if !server.Addr().IsLoopback() {
		return nil, fmt.Errorf("-server %s: only loopback addresses are flooded", o.server)
	}
	srcs, err := loopback.Sources(o.from, o.sources)
	if err != nil {
		return nil, err
	}
	st := new(stats)
	var wg sync.WaitGroup
	if o.udpRate > 0 {
		var conns []*net.UDPConn
		for _, a := range srcs {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return nil, err
			}
			conns = append(conns, c)
			wg.Go(func() { drain(c, st) })
		}
		wg.Go(func() {
			sendGarbage(ctx, conns, net.UDPAddrFromAddrPort(server), o.udpRate, st)
			for _, c := range conns {
				c.Close()
			}
		})
	}
	if o.tcpConns > 0 {
		lim := rate.NewLimiter(rate.Limit(max(o.tcpRate, 1)), max(o.tcpRate/10, 1))
		for i := range o.tcpConns {
			src := srcs[i%len(srcs)]
			wg.Go(func() { tcpWorker(ctx, i, src, server, lim, st) })
		}
	}
	wg.Wait()
	if st.udpSent.Load() == 0 && st.tcpDials.Load() == 0 {
		return st, errors.New("nothing sent")
	}
	return st, nil
}

// drain reads and counts replies until c is closed.
func drain(c *net.UDPConn, st *stats) {
	buf := make([]byte, 65536)
	for {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED from an ICMP error, say
		}
		st.udpReplies.Add(1)
	}
}

// sendGarbage sends perSecond datagrams a second, in ticks of 10 ms,
// round-robin over conns, until ctx ends.
func sendGarbage(ctx context.Context, conns []*net.UDPConn, to *net.UDPAddr, perSecond int, st *stats) {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	var sent, k int
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := int(now.Sub(start).Seconds() * float64(perSecond))
			for ; sent < due; sent++ {
				c := conns[sent%len(conns)]
				if _, err := c.WriteToUDP(garbage(garbageKinds[k%len(garbageKinds)]), to); err == nil {
					st.udpSent.Add(1)
				}
				k++
			}
		}
	}
}

// garbageKinds are the kinds of datagram the UDP flood sends, in turn.
var garbageKinds = []string{"random", "short", "response", "label-past-end", "pointer-loop", "no-question"}

// garbage makes one datagram of a kind of garbageKinds.
func garbage(kind string) []byte {
	q := new(dns.Msg).SetQuestion(fmt.Sprintf("g%d.flood.example.", rand.IntN(1000)), dns.TypeA)
	wire, _ := q.Pack()
	switch kind {
	case "random":
		b := make([]byte, 1+rand.IntN(512))
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		return b
	case "short":
		return wire[:rand.IntN(12)]
	case "response":
		wire[2] |= 0x80
		return wire
	case "label-past-end":
		// The header, then a label of 63 bytes with 3 bytes of it there.
		return append(wire[:12:12], 63, 'a', 'b', 'c')
	case "pointer-loop":
		// The question's name is a pointer to itself (offset 12).
		return append(wire[:12:12], 0xc0, 12, 0, 1, 0, 1)
	case "no-question":
		binary.BigEndian.PutUint16(wire[4:], 0)
		return wire[:12]
	}
	panic("garbage: unknown kind " + kind)
}

// unread is how long a connection that sent queries leaves their answers
// unread: longer than phonehome's 5 s idle and write timeouts.
var unread = 6 * time.Second

// tcpKinds are what a TCP worker does with a connection, in turn.
var tcpKinds = []string{"idle", "trickle", "garbage", "too-long", "unread-queries"}

// tcpWorker opens one connection after another from src until ctx ends.
func tcpWorker(ctx context.Context, id int, src netip.Addr, server netip.AddrPort, lim *rate.Limiter, st *stats) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	for n := id; ; n++ {
		if lim.Wait(ctx) != nil {
			return
		}
		began := time.Now()
		c, err := d.DialContext(ctx, "tcp", server.String())
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			st.tcpDialErrs.Add(1)
			continue
		}
		st.tcpDials.Add(1)
		// The flood's end closes the connection.
		stop := context.AfterFunc(ctx, func() { c.Close() })
		kind := tcpKinds[n%len(tcpKinds)]
		misbehave(c, kind)
		if kind == "unread-queries" {
			// Leave the answers unread past the server's idle timeout.
			select {
			case <-ctx.Done():
			case <-time.After(unread):
			}
		}
		answers := readUntilClosed(c)
		st.tcpAnswers.Add(int64(answers))
		switch {
		case !stop():
			st.tcpCut.Add(1)
		case answers == 0 && (time.Since(began) < atOnce || kind == "unread-queries"):
			// Closed unread: at once, or before its queries were answered.
			st.tcpClosedAtOnce.Add(1)
		default:
			st.tcpClosedLater.Add(1)
		}
		c.Close()
	}
}

// misbehave writes what a connection of kind sends; errors (a connection
// already closed by the server) are the server's business.
func misbehave(c net.Conn, kind string) {
	switch kind {
	case "idle":
	case "trickle":
		c.Write([]byte{0})
	case "garbage":
		b := make([]byte, 2+32)
		binary.BigEndian.PutUint16(b, 32)
		for i := 2; i < len(b); i++ {
			b[i] = byte(rand.Uint32())
		}
		c.Write(b)
	case "too-long":
		c.Write([]byte{0xff, 0xff, 0, 0, 0, 0})
	case "unread-queries":
		var b []byte
		for i := range 10 {
			q := new(dns.Msg).SetQuestion(fmt.Sprintf("t%d.flood.example.", i%5), dns.TypeA)
			w, _ := q.Pack()
			b = binary.BigEndian.AppendUint16(b, uint16(len(w)))
			b = append(b, w...)
		}
		c.Write(b)
	default:
		panic("misbehave: unknown kind " + kind)
	}
}

// readUntilClosed reads until the connection ends and returns how many
// whole DNS messages came, by their length prefixes.
func readUntilClosed(c net.Conn) int {
	var buf []byte
	chunk := make([]byte, 4096)
	n := 0
	for {
		k, err := c.Read(chunk)
		buf = append(buf, chunk[:k]...)
		for len(buf) >= 2 && len(buf) >= 2+int(binary.BigEndian.Uint16(buf)) {
			buf = buf[2+int(binary.BigEndian.Uint16(buf)):]
			n++
		}
		if err != nil { // EOF, reset by the server, or closed at the end
			return n
		}
	}
}

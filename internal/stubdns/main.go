// Command stubdns is the upstream of phonehome's load benchmark (bench/load.sh):
// a loopback-only DNS server that answers every A query with 192.0.2.1 and
// every AAAA query with ::, both with TTL 300, and every other type with
// NODATA. It holds no zone, no cache and no state, so what a benchmark
// measures is the resolver in front of it.
//
//	stubdns -listen 127.0.0.1:5300 [-sockets 1] [-batch 64]
//	        [-tls 127.0.0.1:8530 [-ca FILE | -cert FILE -key FILE]]
//	        [-fault slow -delay 1s | -fault drop | -fault servfail] [-fault-file FILE]
//
// It is built to cost far less per query than any resolver it feeds. Over UDP
// it never parses a message into structs: it reads the header and question
// straight from the wire and writes the answer after the copied question, and
// it reads and writes packets in batches (recvmmsg/sendmmsg through
// golang.org/x/net), so one system call serves many queries under load. With
// -sockets N it binds N UDP sockets to the port with SO_REUSEPORT, one
// goroutine each, for when it has more than one core. TCP, which benchmarks
// do not load, goes through a plain miekg/dns server and the same answer code.
//
// With -tls it also serves DNS over TLS on a second loopback address, through
// a miekg/dns server like TCP's, for benchmarks of tls:// upstreams. Its
// certificate comes from -cert and -key (PEM files), or else is made at
// start: self-signed, for the name stubdns.test and 127.0.0.1, and written
// (PEM) to -ca, by default a new file in the temporary directory, which it
// names. A client trusts it through that file: Go programs with
// SSL_CERT_FILE=FILE, unbound with tls-cert-bundle. Neither server closes a
// connection after a number of queries, as miekg/dns does by default.
//
// It answers each query from the question alone: a query with EDNS0 gets an
// OPT record (1232 bytes, the DO bit echoed) and nothing else of the client's
// options. A response, or a message that does not parse, is dropped; a
// non-QUERY opcode gets NOTIMP and a count of questions other than one
// FORMERR.
//
// With -fault it misbehaves, for the soak test (bench/soak.sh): slow (every
// answer sent -delay late, without holding up the queries behind it over
// UDP), drop (no answer at all) or servfail (SERVFAIL, with the question and
// nothing else). A fault applies to UDP, TCP and DNS over TLS alike; queries
// the stub would not answer anyway (responses, garbage) stay unanswered.
// With -fault-file, SIGHUP changes the fault without a restart (which would
// close its sockets): the file holds one line, "slow 1.5s", "drop",
// "servfail", or nothing for no fault. Each change is logged as
// "fault: ...".
//
// It prints "listening on ADDR" to stderr once it serves UDP and TCP (and
// "listening for DNS over TLS on ADDR, certificate in FILE" before it with
// -tls), the
// number of queries answered so far on SIGUSR1, and the total on SIGINT or
// SIGTERM, when it exits 0. It refuses addresses other than loopback: it is a
// fake that must never answer anyone else.
package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/phonehome/phonehome/internal/dnstest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to serve on, UDP and TCP")
	sockets := flag.Int("sockets", 1, "UDP sockets bound to the port with SO_REUSEPORT, each read by its own goroutine")
	batch := flag.Int("batch", 64, "UDP packets read or written per system call at most")
	var t tlsConfig
	flag.StringVar(&t.listen, "tls", "", "loopback address to also serve DNS over TLS on")
	flag.StringVar(&t.cert, "cert", "", "with -tls: the certificate to serve (PEM); without it one is made")
	flag.StringVar(&t.key, "key", "", "with -cert: its private key (PEM)")
	flag.StringVar(&t.ca, "ca", "", "with -tls and no -cert: where to write the certificate made (PEM); default a new file in the temporary directory")
	var f fault
	flag.StringVar(&f.mode, "fault", "", "misbehave: slow (answers -delay late), drop (never answer) or servfail (answer SERVFAIL)")
	flag.DurationVar(&f.delay, "delay", time.Second, "with -fault slow: how late each answer is sent")
	faultFile := flag.String("fault-file", "", "on SIGHUP, take the fault from this file: \"slow 1.5s\", \"drop\", \"servfail\" or empty (none)")
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	if err := run(*listen, *sockets, *batch, t, f, *faultFile, sigs, nil); err != nil {
		fmt.Fprintln(os.Stderr, "stubdns:", err)
		os.Exit(1)
	}
}

// udpBuffer is the receive and send buffer size asked for each UDP socket.
const udpBuffer = 4 << 20

// answered counts the queries answered over UDP and TCP.
var answered atomic.Uint64

// tlsConfig is what the -tls flags ask for.
type tlsConfig struct {
	listen        string // "" for no DNS over TLS
	cert, key, ca string
}

// fault is how the stub misbehaves (-fault and -delay).
type fault struct {
	mode  string        // "" (answer), "slow", "drop" or "servfail"
	delay time.Duration // with "slow": how late each answer is sent
}

// check reports a -fault or -delay the stub does not know.
func (f fault) check() error {
	switch f.mode {
	case "", "drop", "servfail":
		return nil
	case "slow":
		if f.delay <= 0 {
			return errors.New("-fault slow needs a -delay above 0")
		}
		return nil
	}
	return fmt.Errorf("-fault %q: want slow, drop or servfail", f.mode)
}

// String says what the fault does, for the log.
func (f fault) String() string {
	switch f.mode {
	case "slow":
		return fmt.Sprintf("every answer sent %v late", f.delay)
	case "drop":
		return "no query answered"
	case "servfail":
		return "every query answered SERVFAIL"
	}
	return "none"
}

// parseFault reads a fault as -fault-file holds it: "slow DURATION",
// "drop", "servfail", or nothing (no fault).
func parseFault(s string) (fault, error) {
	w := strings.Fields(s)
	var f fault
	switch {
	case len(w) == 0:
		return f, nil
	case w[0] == "slow" && len(w) == 2:
		d, err := time.ParseDuration(w[1])
		if err != nil {
			return f, err
		}
		f = fault{mode: "slow", delay: d}
	case len(w) == 1:
		f.mode = w[0]
	default:
		return f, fmt.Errorf("%q: want \"slow DURATION\", \"drop\", \"servfail\" or nothing", s)
	}
	return f, f.check()
}

// rcode is the rcode of the stub's answers: SERVFAIL under that fault.
func (f fault) rcode() byte {
	if f.mode == "servfail" {
		return rcodeServFail
	}
	return 0
}

// served is where run serves: UDP and TCP on addr, DNS over TLS on tls
// ("" without -tls) with the certificate in ca ("" when given by -cert).
type served struct {
	addr, tls, ca string
}

// loopback checks that addr is a loopback address and port.
func loopback(flag, addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return ap, fmt.Errorf("-%s: %w", flag, err)
	}
	if !ap.Addr().IsLoopback() {
		return ap, fmt.Errorf("-%s %s: only loopback addresses are served", flag, addr)
	}
	return ap, nil
}

// run serves until sigs delivers a signal other than SIGUSR1 or SIGHUP,
// after sending where it serves to ready, if not nil; with the fault f,
// and on SIGHUP the one in faultFile (if not "").
func run(listen string, sockets, batch int, tc tlsConfig, f fault, faultFile string, sigs <-chan os.Signal, ready chan<- served) error {
	ap, err := loopback("listen", listen)
	if err != nil {
		return err
	}
	if sockets < 1 || batch < 1 {
		return errors.New("-sockets and -batch must be at least 1")
	}
	if err := f.check(); err != nil {
		return err
	}
	cur := new(atomic.Pointer[fault])
	cur.Store(&f)
	var out served
	var tl net.Listener
	if tc.listen != "" {
		if _, err := loopback("tls", tc.listen); err != nil {
			return err
		}
		cert, ca, err := tc.certificate()
		if err != nil {
			return err
		}
		tl, err = tls.Listen("tcp", tc.listen, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return fmt.Errorf("listening on tls %s: %w", tc.listen, err)
		}
		defer tl.Close()
		out.tls, out.ca = tl.Addr().String(), ca
	}

	// The UDP sockets share a port; the first one picks it when it is 0.
	lc := net.ListenConfig{Control: reusePort}
	var conns []*net.UDPConn
	addr := listen
	for range sockets {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return fmt.Errorf("listening on udp %s: %w", addr, err)
		}
		c := pc.(*net.UDPConn)
		// Room for bursts of queries while the stub waits for its core;
		// the kernel caps this at net.core.rmem_max.
		c.SetReadBuffer(udpBuffer)
		c.SetWriteBuffer(udpBuffer)
		conns = append(conns, c)
		addr = pc.LocalAddr().String()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on tcp %s: %w", addr, err)
	}
	streams := []*dns.Server{{Listener: l, Handler: serveTCP(cur), MaxTCPQueries: -1}}
	if tl != nil {
		streams = append(streams, &dns.Server{Listener: tl, Net: "tcp-tls", Handler: serveTCP(cur), MaxTCPQueries: -1})
	}
	for _, srv := range streams {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				fmt.Fprintln(os.Stderr, "stubdns:", srv.Listener.Addr(), err)
			}
		}()
	}
	for _, c := range conns {
		go serveUDP(c, ap.Addr().Is4(), batch, cur)
	}
	if tl != nil {
		where := out.ca
		if where == "" {
			where = tc.cert
		}
		fmt.Fprintf(os.Stderr, "listening for DNS over TLS on %s, certificate in %s\n", out.tls, where)
	}
	if f.mode != "" {
		fmt.Fprintln(os.Stderr, "fault:", f)
	}
	fmt.Fprintln(os.Stderr, "listening on", addr)
	out.addr = addr
	if ready != nil {
		ready <- out
	}

	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if faultFile == "" {
				fmt.Fprintln(os.Stderr, "SIGHUP without -fault-file: the fault stays", *cur.Load())
				continue
			}
			b, err := os.ReadFile(faultFile)
			var next fault // a new variable each time: cur keeps a pointer to it
			if err == nil {
				next, err = parseFault(string(b))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "stubdns: -fault-file:", err)
				continue
			}
			cur.Store(&next)
			fmt.Fprintln(os.Stderr, "fault:", next)
			continue
		}
		fmt.Fprintln(os.Stderr, "answered", answered.Load())
		if sig != syscall.SIGUSR1 {
			break
		}
	}
	for _, srv := range streams {
		srv.Shutdown()
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// certificate returns the certificate to serve, from -cert and -key, or
// made now and written to -ca (or a new temporary file), whose name it
// returns.
func (tc tlsConfig) certificate() (tls.Certificate, string, error) {
	if tc.cert != "" || tc.key != "" {
		c, err := tls.LoadX509KeyPair(tc.cert, tc.key)
		if err != nil {
			return c, "", fmt.Errorf("-cert and -key: %w", err)
		}
		return c, "", nil
	}
	c, err := dnstest.NewCert("stubdns.test")
	if err != nil {
		return tls.Certificate{}, "", err
	}
	f, err := os.CreateTemp("", "stubdns-ca-*.pem")
	if tc.ca != "" {
		f, err = os.Create(tc.ca)
	}
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("writing the certificate: %w", err)
	}
	_, err = f.Write(c.PEM)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("writing the certificate: %w", err)
	}
	return c.TLS, f.Name(), nil
}

// reusePort sets SO_REUSEPORT so that several sockets can share one port and
// the kernel spreads the packets over them.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return errors.Join(err, serr)
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common: reads
// and writes of many packets per system call.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// serveUDP answers the packets arriving on c until c is closed, up to batch
// at a time, with the fault in cur.
func serveUDP(c *net.UDPConn, is4 bool, batch int, cur *atomic.Pointer[fault]) {
	var bc batchConn = ipv6.NewPacketConn(c)
	if is4 {
		bc = ipv4.NewPacketConn(c)
	}
	in := make([]ipv4.Message, batch)
	out := make([]ipv4.Message, batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 1500)}
		out[i].Buffers = [][]byte{make([]byte, 1500+maxExtra)}
	}
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error from an earlier send, say
		}
		k := 0
		f := *cur.Load()
		for _, m := range in[:n] {
			buf := out[k].Buffers[0][:cap(out[k].Buffers[0])]
			l := replyRcode(buf, m.Buffers[0][:m.N], f.rcode())
			switch {
			case l == 0 || f.mode == "drop":
				continue
			case f.mode == "slow":
				// Late, on a timer of its own: the queries behind it
				// are not held up, as a distant server would not.
				late, to := slices.Clone(buf[:l]), m.Addr
				time.AfterFunc(f.delay, func() {
					if _, err := c.WriteTo(late, to); err == nil {
						answered.Add(1)
					}
				})
				continue
			}
			out[k].Buffers[0] = buf[:l]
			out[k].Addr = m.Addr
			k++
		}
		answered.Add(uint64(k))
		for sent := 0; sent < k; {
			w, err := bc.WriteBatch(out[sent:k], 0)
			if err != nil {
				break // the client went away; drop the rest of the batch
			}
			sent += w
		}
	}
}

// serveTCP answers queries over TCP and DNS over TLS with the same code as
// UDP, and the fault in cur.
func serveTCP(cur *atomic.Pointer[fault]) dns.HandlerFunc {
	return func(w dns.ResponseWriter, req *dns.Msg) {
		f := *cur.Load()
		q, err := req.Pack()
		if err != nil {
			return
		}
		buf := make([]byte, len(q)+maxExtra)
		l := replyRcode(buf, q, f.rcode())
		if l == 0 || f.mode == "drop" {
			return
		}
		if f.mode == "slow" {
			time.Sleep(f.delay)
		}
		answered.Add(1)
		w.Write(buf[:l])
	}
}

// maxExtra is how much longer than its query an answer can be: an AAAA
// record (28 bytes with a compressed name) and an OPT record (11).
const maxExtra = 28 + 11

// DNS numbers used on the wire.
const (
	typeA    = 1
	typeAAAA = 28
	typeOPT  = 41
	classIN  = 1

	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNotImp   = 4
)

// reply writes into out (at least len(q)+maxExtra bytes) the answer to the
// query q and returns its length, or 0 when q gets no answer.
func reply(out, q []byte) int { return replyRcode(out, q, 0) }

// replyRcode is reply, but a query it would answer gets rcode (when not 0)
// and no answer record instead.
func replyRcode(out, q []byte, rcode byte) int {
	if len(q) < 12 || q[2]&0x80 != 0 { // too short for a header, or a response
		return 0
	}
	if opcode := q[2] >> 3 & 0xf; opcode != 0 {
		return header(out, q, rcodeNotImp)
	}
	if binary.BigEndian.Uint16(q[4:]) != 1 {
		return header(out, q, rcodeFormErr)
	}
	// The question: uncompressed labels, then type and class.
	off := 12
	for {
		if off >= len(q) {
			return header(out, q, rcodeFormErr)
		}
		l := int(q[off])
		if l == 0 {
			break
		}
		if l > 63 || off-12+l+1 > 254 {
			return header(out, q, rcodeFormErr)
		}
		off += 1 + l
	}
	qend := off + 1 + 4
	if qend > len(q) {
		return header(out, q, rcodeFormErr)
	}
	qtype := binary.BigEndian.Uint16(q[off+1:])
	qclass := binary.BigEndian.Uint16(q[off+3:])

	// EDNS0: an OPT record (root name, type 41) first in the additional
	// section of a query with nothing in answer and authority.
	edns, do := false, false
	if binary.BigEndian.Uint16(q[6:]) == 0 && binary.BigEndian.Uint16(q[8:]) == 0 &&
		binary.BigEndian.Uint16(q[10:]) > 0 && qend+11 <= len(q) &&
		q[qend] == 0 && binary.BigEndian.Uint16(q[qend+1:]) == typeOPT {
		edns, do = true, q[qend+7]&0x80 != 0
	}

	n := copy(out, q[:qend])
	out[2] = 0x80 | q[2]&0x01 // QR, opcode QUERY, RD as asked
	out[3] = 0x80 | rcode     // RA, NOERROR unless told otherwise
	var ancount uint16
	if rcode == 0 && qclass == classIN && (qtype == typeA || qtype == typeAAAA) {
		ancount = 1
		n += copy(out[n:], []byte{0xc0, 0x0c}) // the name: a pointer to the question
		binary.BigEndian.PutUint16(out[n:], qtype)
		binary.BigEndian.PutUint16(out[n+2:], classIN)
		binary.BigEndian.PutUint32(out[n+4:], 300)
		n += 8
		if qtype == typeA {
			n += copy(out[n:], []byte{0, 4, 192, 0, 2, 1})
		} else {
			out[n], out[n+1] = 0, 16
			clear(out[n+2 : n+18])
			n += 18
		}
	}
	binary.BigEndian.PutUint16(out[6:], ancount)
	binary.BigEndian.PutUint16(out[8:], 0)
	binary.BigEndian.PutUint16(out[10:], 0)
	if edns {
		binary.BigEndian.PutUint16(out[10:], 1)
		var flags byte
		if do {
			flags = 0x80
		}
		n += copy(out[n:], []byte{0, 0, typeOPT, 0x04, 0xd0, 0, 0, flags, 0, 0, 0})
	}
	return n
}

// header writes an answer carrying only q's ID, opcode and RD bit and the
// rcode, with no sections, and returns its length.
func header(out, q []byte, rcode byte) int {
	copy(out, q[:4])
	out[2] = 0x80 | q[2]&0x79 // QR, the opcode, RD as asked
	out[3] = 0x80 | rcode
	clear(out[4:12])
	return 12
}

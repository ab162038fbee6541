// Command stubdns is the upstream of phonehome's load benchmark (bench/load.sh):
// a loopback-only DNS server that answers every A query with 192.0.2.1 and
// every AAAA query with ::, both with TTL 300, and every other type with
// NODATA. It holds no zone, no cache and no state, so what a benchmark
// measures is the resolver in front of it.
//
//	stubdns -listen 127.0.0.1:5300 [-sockets 1] [-batch 64]
//	        [-tls 127.0.0.1:8530 [-ca FILE | -cert FILE -key FILE]]
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
	"sync/atomic"
	"syscall"

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
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	if err := run(*listen, *sockets, *batch, t, sigs, nil); err != nil {
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

// run serves until sigs delivers a signal other than SIGUSR1, after sending
// where it serves to ready, if not nil.
func run(listen string, sockets, batch int, tc tlsConfig, sigs <-chan os.Signal, ready chan<- served) error {
	ap, err := loopback("listen", listen)
	if err != nil {
		return err
	}
	if sockets < 1 || batch < 1 {
		return errors.New("-sockets and -batch must be at least 1")
	}
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
	streams := []*dns.Server{{Listener: l, Handler: dns.HandlerFunc(serveTCP), MaxTCPQueries: -1}}
	if tl != nil {
		streams = append(streams, &dns.Server{Listener: tl, Net: "tcp-tls", Handler: dns.HandlerFunc(serveTCP), MaxTCPQueries: -1})
	}
	for _, srv := range streams {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				fmt.Fprintln(os.Stderr, "stubdns:", srv.Listener.Addr(), err)
			}
		}()
	}
	for _, c := range conns {
		go serveUDP(c, ap.Addr().Is4(), batch)
	}
	if tl != nil {
		where := out.ca
		if where == "" {
			where = tc.cert
		}
		fmt.Fprintf(os.Stderr, "listening for DNS over TLS on %s, certificate in %s\n", out.tls, where)
	}
	fmt.Fprintln(os.Stderr, "listening on", addr)
	out.addr = addr
	if ready != nil {
		ready <- out
	}

	for sig := range sigs {
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
// at a time.
func serveUDP(c *net.UDPConn, is4 bool, batch int) {
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
		for _, m := range in[:n] {
			buf := out[k].Buffers[0][:cap(out[k].Buffers[0])]
			if l := reply(buf, m.Buffers[0][:m.N]); l > 0 {
				out[k].Buffers[0] = buf[:l]
				out[k].Addr = m.Addr
				k++
			}
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

// serveTCP answers one query over TCP with the same code as UDP.
func serveTCP(w dns.ResponseWriter, req *dns.Msg) {
	q, err := req.Pack()
	if err != nil {
		return
	}
	buf := make([]byte, len(q)+maxExtra)
	if l := reply(buf, q); l > 0 {
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

	rcodeFormErr = 1
	rcodeNotImp  = 4
)

// reply writes into out (at least len(q)+maxExtra bytes) the answer to the
// query q and returns its length, or 0 when q gets no answer.
func reply(out, q []byte) int {
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
	out[3] = 0x80             // RA, NOERROR
	var ancount uint16
	if qclass == classIN && (qtype == typeA || qtype == typeAAAA) {
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

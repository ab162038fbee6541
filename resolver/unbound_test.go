package resolver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestAnswersLikeUnbound puts phonehome beside Debian's unbound, both
// forwarding to a real authoritative server (knot) that serves zones the
// test writes, and asks both the same queries: phonehome's answers must
// carry the same header bits, echo the ID and question byte for byte, hold
// the same records and be no larger on the wire (but for the two cases that
// say why), so that phonehome hits the 1,232-byte UDP limit, and falls back
// to TCP, no more often than unbound.
//
// Everything listens on 127.0.0.1 ports the test picks; knot and unbound
// run from a temporary directory and are killed at cleanup. Without knotd or
// unbound the test is skipped, except in CI, where scripts/test.sh installs
// them.
func TestAnswersLikeUnbound(t *testing.T) {
	knotd := daemonTool(t, "knotd", "knot")
	unbound := daemonTool(t, "unbound", "unbound")
	dir := t.TempDir()
	writeZones(t, dir)
	knot := startKnot(t, knotd, dir)
	ub := startUnbound(t, unbound, dir, knot)
	ph := startPhonehome(t, knot)

	// Each query goes to both; the names are mixed-case so that the echo of
	// the question is checked byte for byte. The order matters where a
	// case relies on an earlier one's answer being cached.
	chain, medium, big := "WwW.Plain.TEST.", "MeDium.Plain.TEST.", "BiG.Plain.TEST."
	nx, signed, lone := "ZzZ.Signed.TEST.", "WwW.Signed.TEST.", "Ns.Plain.TEST."
	cases := []unboundCase{
		{name: "chain, UDP, no EDNS", qname: chain, qtype: dns.TypeA, network: "udp"},
		{name: "chain, UDP, EDNS", qname: chain, qtype: dns.TypeA, network: "udp", edns: true},
		{name: "chain AAAA, UDP, EDNS with DO", qname: chain, qtype: dns.TypeAAAA, network: "udp", edns: true, do: true},
		{name: "chain, UDP, CD", qname: chain, qtype: dns.TypeA, network: "udp", edns: true, cd: true},
		{name: "chain, TCP", qname: chain, qtype: dns.TypeA, network: "tcp", edns: true},
		// Asked with RD=1 above, so both answer from their caches.
		{name: "chain, UDP, RD=0", qname: chain, qtype: dns.TypeA, network: "udp", edns: true, norec: true},
		// Cached from a question spelt otherwise: unbound compresses names
		// regardless of case, so its first owner name points to the
		// question; miekg/dns compresses only names of the same case, so
		// phonehome writes that name out once (names after it point to it).
		{name: "chain, UDP, cached, other case", qname: "wWw.pLAIN.test.", qtype: dns.TypeA, network: "udp", edns: true, slack: len(chain) + 1 - 2},
		{name: "medium TXT, UDP, EDNS: fits only compressed", qname: medium, qtype: dns.TypeTXT, network: "udp", edns: true},
		{name: "medium TXT, TCP", qname: medium, qtype: dns.TypeTXT, network: "tcp"},
		{name: "medium TXT, UDP, no EDNS: truncated", qname: medium, qtype: dns.TypeTXT, network: "udp", tc: true},
		{name: "large TXT, UDP, EDNS: truncated", qname: big, qtype: dns.TypeTXT, network: "udp", edns: true, tc: true},
		{name: "large TXT, TCP", qname: big, qtype: dns.TypeTXT, network: "tcp", edns: true},
		{name: "signed NXDOMAIN, UDP, DO", qname: nx, qtype: dns.TypeA, network: "udp", edns: true, do: true, rcode: dns.RcodeNameError},
		{name: "signed NXDOMAIN, UDP, DO and CD", qname: nx, qtype: dns.TypeA, network: "udp", edns: true, do: true, cd: true, rcode: dns.RcodeNameError},
		{name: "signed NXDOMAIN, TCP, DO", qname: nx, qtype: dns.TypeA, network: "tcp", edns: true, do: true, rcode: dns.RcodeNameError},
		{name: "signed NXDOMAIN, UDP, no DO", qname: nx, qtype: dns.TypeA, network: "udp", edns: true, rcode: dns.RcodeNameError},
		{name: "signed A, UDP, DO", qname: signed, qtype: dns.TypeA, network: "udp", edns: true, do: true},
		// An answer of one record is sent uncompressed (see reply): its
		// owner name is written out, where unbound points to the question.
		{name: "one A, UDP, EDNS", qname: lone, qtype: dns.TypeA, network: "udp", edns: true, slack: len(lone) + 1 - 2},
	}
	for i, c := range cases {
		q := c.query(uint16(0x5a00 + i))
		want, err := exchangeWire(c.network, ub, q)
		if err != nil {
			t.Fatalf("%s: unbound: %v", c.name, err)
		}
		got, err := exchangeWire(c.network, ph, q)
		if err != nil {
			t.Fatalf("%s: phonehome: %v", c.name, err)
		}
		t.Logf("%-45s phonehome %4d bytes, unbound %4d", c.name, len(got), len(want))
		for _, p := range c.compare(q, got, want) {
			t.Errorf("%s: %s", c.name, p)
		}
	}
}

// sizeAllowance is how many bytes larger than unbound's phonehome's answer
// may be. Both answer these queries with a bare OPT record (11 bytes, no
// options): phonehome adds an Extended DNS Error only to answers it makes
// itself (sinkholed, failed, stale), none of which is asked here, and
// unbound's own EDE is off by default (ede: no). So the names and records,
// compressed as unbound compresses them, are all there is, and the
// allowance is nothing.
const sizeAllowance = 0

// unboundCase is one query to phonehome and unbound.
type unboundCase struct {
	name         string
	qname        string
	qtype        uint16
	network      string
	edns, do, cd bool
	norec        bool // RD=0
	tc           bool // the answer does not fit and is truncated
	rcode        int
	slack        int // bytes phonehome's answer may have beyond sizeAllowance
}

// query is the case's query in wire format, with the given ID.
func (c unboundCase) query(id uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(c.qname, c.qtype)
	m.Id = id
	m.RecursionDesired = !c.norec
	m.CheckingDisabled = c.cd
	if c.edns {
		m.SetEdns0(maxUDP, c.do)
	}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// compare checks phonehome's answer got against unbound's want to the
// query q and returns what differs.
func (c unboundCase) compare(q, got, want []byte) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	g, w := new(dns.Msg), new(dns.Msg)
	if err := g.Unpack(got); err != nil {
		return []string{"phonehome's answer does not unpack: " + err.Error()}
	}
	if err := w.Unpack(want); err != nil {
		return []string{"unbound's answer does not unpack: " + err.Error()}
	}
	// The ID and the question, as the client sent them: the question is
	// the first name in both, so never compressed, and must be the same
	// bytes, case and all.
	qlen := 12 + len(questionWire(q))
	if len(got) < qlen || !bytes.Equal(got[:2], q[:2]) || !bytes.Equal(got[12:qlen], q[12:qlen]) {
		fail("ID and question not echoed byte for byte: sent % x, got % x", q[:qlen], got[:min(len(got), qlen)])
	}
	for _, m := range []struct {
		who string
		m   *dns.Msg
	}{{"phonehome", g}, {"unbound", w}} {
		if m.m.Rcode != c.rcode {
			fail("%s: rcode %s, want %s", m.who, dns.RcodeToString[m.m.Rcode], dns.RcodeToString[c.rcode])
		}
		if m.m.Truncated != c.tc {
			fail("%s: TC %v, want %v", m.who, m.m.Truncated, c.tc)
		}
		// Neither is authoritative for what it forwards or caches; both
		// offer recursion and echo the client's RD and CD. (All but
		// unbound's RD to an RD=0 query: answering it from its cache,
		// unbound 1.17 sends the cached answer's RD=1, where RFC 1035 has
		// RD copied from the query, as phonehome copies it.)
		rd := m.m.RecursionDesired
		if c.norec && m.who == "unbound" {
			rd = false
		}
		if m.m.Authoritative || !m.m.RecursionAvailable || rd != !c.norec || m.m.CheckingDisabled != c.cd {
			fail("%s: AA %v RA %v RD %v CD %v, want AA false, RA true, RD %v, CD %v", m.who,
				m.m.Authoritative, m.m.RecursionAvailable, m.m.RecursionDesired, m.m.CheckingDisabled, !c.norec, c.cd)
		}
		// EDNS only if the client spoke it, with its DO bit.
		if o := m.m.IsEdns0(); (o != nil) != c.edns || o != nil && o.Do() != c.do {
			fail("%s: OPT %v, want EDNS %v with DO %v", m.who, o, c.edns, c.do)
		}
	}
	if g.AuthenticatedData != w.AuthenticatedData {
		fail("AD %v, unbound's %v", g.AuthenticatedData, w.AuthenticatedData)
	}
	// The same records in each section (the denial of existence, signed
	// or not, is in the authority section), and none in a truncated
	// answer, which the client throws away to ask again over TCP.
	for _, sec := range []struct {
		name string
		g, w []dns.RR
	}{{"answer", g.Answer, w.Answer}, {"authority", g.Ns, w.Ns}, {"additional", g.Extra, w.Extra}} {
		if a, b := records(sec.g), records(sec.w); !slices.Equal(a, b) {
			fail("%s section\n\t%s\nunbound's\n\t%s", sec.name, strings.Join(a, "\n\t"), strings.Join(b, "\n\t"))
		}
	}
	if len(got) > len(want)+sizeAllowance+c.slack {
		fail("%d bytes on the wire, unbound's %d (allowance %d)", len(got), len(want), sizeAllowance+c.slack)
	}
	return problems
}

// questionWire is the question section of a packed query of one question.
func questionWire(q []byte) []byte {
	off := 12
	for off < len(q) && q[off] != 0 {
		off += int(q[off]) + 1
	}
	return q[12:min(len(q), off+1+4)]
}

// records is a section as sorted lines without TTLs (unbound and
// phonehome count them down each in their own way), names lower-cased,
// the OPT record left out (compared on its own).
func records(rrs []dns.RR) []string {
	var s []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		rr = dns.Copy(rr)
		rr.Header().Ttl = 0
		s = append(s, strings.ToLower(rr.String()))
	}
	slices.Sort(s)
	return s
}

// exchangeWire sends the packed query q to addr over network ("udp" or
// "tcp") and returns the answer as it came, so that its size is the size
// on the wire.
func exchangeWire(network, addr string, q []byte) ([]byte, error) {
	c, err := net.DialTimeout(network, addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if network == "udp" {
		if _, err := c.Write(q); err != nil {
			return nil, err
		}
		buf := make([]byte, dns.MaxMsgSize)
		n, err := c.Read(buf)
		return buf[:n], err
	}
	if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(q)))); err != nil {
		return nil, err
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(n[:]))
	_, err = io.ReadFull(c, buf)
	return buf, err
}

// daemonTool finds a daemon the test runs. Without it the test is skipped,
// except in CI (CI set), where scripts/test.sh installs the Debian package
// pkg and a missing daemon is a failure. (deploy's tool, which also looks
// in the sbin directories a user's PATH may leave out.)
func daemonTool(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p, err := exec.LookPath(filepath.Join(d, name)); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found; scripts/test.sh installs it (Debian package %s)", name, pkg)
	}
	t.Skipf("%s not found (Debian package %s); skipping", name, pkg)
	return ""
}

// The zones knot serves. plain.test has a chain of three CNAMEs ending in
// two A records and an AAAA, a medium TXT set that fits in 1,232 bytes only
// with its owner names compressed (about 1,160 bytes compressed, 1,670 not)
// and a large one that fits in no UDP answer (about 2,600 bytes).
// signed.test is signed by knot at load; a name after www.signed.test is
// denied by two NSEC records, each with its RRSIG.
const (
	plainZone = `$ORIGIN plain.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 300
@ NS ns
ns A 127.0.0.1
www CNAME step1.cdn
step1.cdn CNAME step2.cdn
step2.cdn CNAME edge.cdn
edge.cdn A 192.0.2.10
edge.cdn A 192.0.2.11
edge.cdn AAAA 2001:db8::10
`
	signedZone = `$ORIGIN signed.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 300
@ NS ns
ns A 127.0.0.1
www A 192.0.2.20
`
	mediumRecords, mediumLen = 30, 24
	bigRecords, bigLen       = 12, 200
)

// writeZones writes the zone files into dir.
func writeZones(t *testing.T, dir string) {
	t.Helper()
	var plain strings.Builder
	plain.WriteString(plainZone)
	for _, set := range []struct {
		owner  string
		n, len int
	}{{"medium", mediumRecords, mediumLen}, {"big", bigRecords, bigLen}} {
		for i := range set.n {
			txt := fmt.Sprintf("%s-%02d-", set.owner, i)
			fmt.Fprintf(&plain, "%s TXT \"%s%s\"\n", set.owner, txt, strings.Repeat("x", set.len-len(txt)))
		}
	}
	for name, text := range map[string]string{"plain.test.zone": plain.String(), "signed.test.zone": signedZone} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// knotConf is knot's config: one worker of each kind, everything in the
// temporary directory, signed.test signed at load with one ECDSA key and
// NSEC, no zone file written back.
const knotConf = `server:
    rundir: "{dir}"
    pidfile: "{dir}/knot.pid"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{dir}/knot.sock"
database:
    storage: "{dir}"
log:
  - target: stderr
    any: warning
policy:
  - id: test
    algorithm: ecdsap256sha256
    single-type-signing: on
    nsec3: off
template:
  - id: default
    storage: "{dir}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: plain.test
  - domain: signed.test
    dnssec-signing: on
    dnssec-policy: test
`

// startKnot runs knotd on a free port and returns its address once it
// serves both zones, signed.test signed.
func startKnot(t *testing.T, knotd, dir string) string {
	t.Helper()
	return startDaemon(t, "knot", func(port int) (*exec.Cmd, error) {
		conf := filepath.Join(dir, "knot.conf")
		text := strings.NewReplacer("{dir}", dir, "{port}", strconv.Itoa(port)).Replace(knotConf)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		return exec.Command(knotd, "-c", conf), nil
	})
}

// unboundConf forwards everything to knot on loopback, with the iterator
// alone (no validator, so neither sets AD and no trust anchor is read),
// one thread, no chroot, no remote control, its files in the temporary
// directory. allow_snoop lets RD=0 queries be answered from the cache, as
// phonehome answers them. test. is one of unbound's default local zones
// (RFC 6761), hence nodefault.
const unboundConf = `server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    access-control: 127.0.0.0/8 allow_snoop
    do-not-query-localhost: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    module-config: "iterator"
    num-threads: 1
    local-zone: "test." nodefault
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: {upstream}
`

// startUnbound runs unbound on a free port, forwarding to knot, and returns
// its address once it answers.
func startUnbound(t *testing.T, unbound, dir, knot string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(knot)
	return startDaemon(t, "unbound", func(p int) (*exec.Cmd, error) {
		conf := filepath.Join(dir, "unbound.conf")
		text := strings.NewReplacer("{dir}", dir, "{port}", strconv.Itoa(p), "{upstream}", host+"@"+port).Replace(unboundConf)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		return exec.Command(unbound, "-d", "-p", "-c", conf), nil
	})
}

// startPhonehome runs phonehome's resolver through New on a port of its
// own, forwarding to knot, and returns its address.
func startPhonehome(t *testing.T, knot string) string {
	t.Helper()
	cfg := parseConfig(t, "access: {rate_limit: 0}\n")
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.Upstreams = []string{knot}
	srv, err := New(cfg, Options{ResolvConf: "/nonexistent", TryTimeout: time.Second, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return srv.Addrs()[0]
}

// startDaemon starts the command made for a free port and waits until it
// answers a signed.test DNSKEY query over UDP and TCP with the key signed
// (knot signs the zone after it starts; through unbound the same query
// shows unbound forwards to it). A port taken between picking and binding
// gets another try. The process is killed at cleanup.
func startDaemon(t *testing.T, name string, command func(port int) (*exec.Cmd, error)) string {
	t.Helper()
	var errs []error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		cmd, err := command(port)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = time.Second
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
			}
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = waitServing(addr, exited)
		if err == nil {
			t.Cleanup(stop)
			return addr
		}
		stop()
		errs = append(errs, fmt.Errorf("%s on port %d: %w\n%s", name, port, err, out.String()))
	}
	t.Fatal(errors.Join(errs...))
	return ""
}

// waitServing waits up to 10 s for a signed DNSKEY answer from addr over
// UDP and TCP, or for the process to exit.
func waitServing(addr string, exited <-chan struct{}) error {
	q := new(dns.Msg).SetQuestion("signed.test.", dns.TypeDNSKEY)
	q.SetEdns0(maxUDP, true)
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited")
		default:
		}
		last = nil
		for _, network := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: network, Timeout: 500 * time.Millisecond}
			r, _, err := c.Exchange(q, addr)
			if err == nil && (r.Rcode != dns.RcodeSuccess || len(r.Answer) < 2) {
				err = fmt.Errorf("answer not signed yet: %s, %d records", dns.RcodeToString[r.Rcode], len(r.Answer))
			}
			if err != nil {
				last = err
				break
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not serving after 10 s: %v", last)
}

// freePort is a loopback port free for both UDP and TCP just now.
func freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both UDP and TCP")
}

package resolver

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/policy"
)

// newState builds everything a config makes for the request path: the
// policy, the upstreams (from opts.ResolvConf when the config names none), the
// cache (kept from prev when its bounds are unchanged), access and
// sinkhole. Nothing is swapped in here; an error leaves the running state
// alone. cfg has been checked and given its defaults.
func newState(cfg *Config, prev *State, opts *Options) (*State, []string, error) {
	p, warns, err := policy.Compile(&cfg.Policy, cfg.Source)
	if err != nil {
		return nil, warns, err
	}
	names, err := cfg.upstreamNames(opts.ResolvConf)
	if err != nil {
		return nil, warns, err
	}
	if err := checkLoop(cfg.Listen, names); err != nil {
		return nil, warns, err
	}
	roots, ca, err := cfg.upstreamRoots()
	if err != nil {
		return nil, warns, err
	}
	cert, err := cfg.serverCert()
	if err != nil {
		return nil, warns, err
	}
	warns = append(warns, certWarnings(cfg, cert, time.Now())...)
	if cert == nil && prev != nil {
		// tls_listen and https_listen are gone from the file, and the
		// listeners wait for a restart: they keep their certificate.
		cert = prev.Cert
	}
	// An upstream the running state has already keeps its health and its
	// open connections, unless it verifies certificates and
	// upstream_tls_ca changed.
	kept := map[string]*Upstream{}
	if prev != nil {
		for _, u := range prev.Forwarder.Upstreams {
			kept[u.Name] = u
		}
	}
	var ups []*Upstream
	for _, n := range names {
		u, ok := kept[n]
		if ok && u.verifies() && u.ca != ca {
			ok = false
		}
		if !ok {
			if u, err = parseUpstream(n, roots); err != nil {
				return nil, warns, err
			}
			u.ca = ca
		}
		ups = append(ups, u)
	}
	st := &State{
		Policy:    p,
		Sinkhole:  Sinkhole{Mode: cfg.Sinkhole.Mode, TTL: cfg.Sinkhole.TTL, IPv4: cfg.Sinkhole.IPv4, IPv6: cfg.Sinkhole.IPv6},
		Forwarder: NewForwarder(ups, 2048, opts.Log),
		RateLimit: *cfg.Access.RateLimit,
		Canary:    *cfg.Canary,

		InspectCNAME: *cfg.CNAME.Inspect,
		MaxChain:     cfg.CNAME.MaxChain,
	}
	for _, a := range cfg.Access.Allow {
		st.Allow = append(st.Allow, a.Prefix)
	}
	st.Cert = cert
	for _, p := range cfg.TrustedProxies {
		st.TrustedProxies = append(st.TrustedProxies, p.Prefix)
	}
	st.Forwarder.TryTimeout = cmp.Or(opts.TryTimeout, st.Forwarder.TryTimeout)
	st.Forwarder.Timeout = cmp.Or(opts.Timeout, st.Forwarder.Timeout)
	if prev != nil && prev.Cache != nil && prev.Cache.size == *cfg.Cache.Size && prev.Cache.minTTL == cfg.Cache.MinTTL && prev.Cache.maxTTL == cfg.Cache.MaxTTL {
		st.Cache = prev.Cache
		st.Cache.forgetDecisions() // decided by the old policy
	} else {
		st.Cache = NewCache(*cfg.Cache.Size, cfg.Cache.MinTTL, cfg.Cache.MaxTTL, opts.Clock)
	}
	return st, warns, nil
}

// Options are what a Server needs besides its config.
type Options struct {
	Log *slog.Logger
	// ResolvConf is where to find upstreams when the config names none
	// (default /etc/resolv.conf).
	ResolvConf string
	// Registry, if set, gets the resolver's metrics; Version is the
	// build's, for phonehome_build_info.
	Registry prometheus.Registerer
	Version  string
	// Observers watch every answered query, after the metrics.
	Observers []Observer
	// TryTimeout bounds one upstream's answer, Timeout a query's over all
	// upstreams (defaults 2 s and 5 s).
	TryTimeout, Timeout time.Duration
	// Clock is the cache's clock (default time.Now).
	Clock func() time.Time
	// TCP bounds the TCP connections and how long each may idle or take
	// to send a query; zero fields get the defaults (see TCPLimits).
	TCP TCPLimits
	// UDPSockets is how many UDP sockets each listen address gets (see
	// listenOn); 0 is one per core phonehome may use (GOMAXPROCS), at
	// most maxUDPSockets.
	UDPSockets int
}

// maxUDPSockets bounds the UDP sockets of one address.
const maxUDPSockets = 64

// withDefaults returns opts with what was left out filled in.
func (opts Options) withDefaults() Options {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	opts.ResolvConf = cmp.Or(opts.ResolvConf, "/etc/resolv.conf")
	return opts
}

// Server is a running resolver: the request path, its listeners, and the
// state a reload replaces.
type Server struct {
	handler *Handler
	opts    Options
	log     *slog.Logger

	reloading sync.Mutex
	// retired are forwarders replaced by a reload, still finishing the
	// queries they had; each closes retireAfter later, or at Close.
	retired map[*Forwarder]*time.Timer

	udp     []*udpServer
	tcp     []*tcpServer
	dot     []*tcpServer // DNS over TLS: the TCP loop on TLS listeners
	doh     []*dohServer
	tcpGate *tcpGate // the connections of every TCP, TLS and HTTPS listener
	closed  atomic.Bool
}

// retireAfter is how long a forwarder replaced by a reload lives on, so
// that queries it had sent finish on its sockets (each gives up within
// five seconds).
const retireAfter = 10 * time.Second

// New checks cfg, builds the state it describes and listens on its
// addresses. A config that does not check is refused with every error,
// each at its place in the file. Warnings (rows and list lines skipped,
// overrides that sinkhole protected endpoints) are logged.
func New(cfg *Config, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	s := &Server{opts: opts, log: opts.Log, retired: map[*Forwarder]*time.Timer{}, tcpGate: newTCPGate(cfg.TCPLimits(opts.TCP))}
	st, err := s.build(cfg, nil)
	if err != nil {
		return nil, err
	}
	h := newHandler(st, s.log)
	if opts.Registry != nil {
		h.metrics = newMetrics(opts.Registry, opts.Version, h, s.tcpGate)
		h.observers = append(h.observers, h.metrics)
	}
	h.observers = append(h.observers, opts.Observers...)
	s.handler = h
	h.metrics.setState(st)
	// The encrypted listeners are bound first, so that DDR can name them
	// from the first query on.
	if err := s.listenEncrypted(cfg); err != nil {
		st.Forwarder.Close()
		return nil, err
	}
	if err := s.listenOn(cfg.Listen); err != nil {
		s.closeEncrypted()
		st.Forwarder.Close()
		return nil, err
	}
	for _, t := range s.dot {
		t.start()
	}
	for _, d := range s.doh {
		d.start()
	}
	h.metrics.reloaded(nil)
	return s, nil
}

// build checks cfg and builds its state, logging warnings.
func (s *Server) build(cfg *Config, prev *State) (*State, error) {
	st, warns, err := prepare(cfg, prev, &s.opts)
	for _, w := range warns {
		s.log.Warn(w)
	}
	return st, err
}

// prepare checks cfg, gives it its defaults and builds its state: the one
// validation of New, Reload and Validate.
func prepare(cfg *Config, prev *State, opts *Options) (*State, []string, error) {
	r := config.NewReport(cfg.Source)
	cfg.Check(r)
	if err := r.Err(); err != nil {
		return nil, nil, err
	}
	cfg.SetDefaults()
	return newState(cfg, prev, opts)
}

// Validate checks cfg as New and Reload would, the documents, lists and
// upstreams it names included, without listening or sending anything:
// what "phonehome validate" runs. It returns the compiled policy and the
// warnings.
func Validate(cfg *Config, resolvConf string) (*policy.Policy, []string, error) {
	opts := Options{ResolvConf: resolvConf}.withDefaults()
	st, warns, err := prepare(cfg, nil, &opts)
	if err != nil {
		return nil, warns, err
	}
	st.Forwarder.Close()
	return st.Policy, warns, nil
}

// Reload builds the state cfg describes and swaps it in with one atomic
// store: a query sees the old state or the new one, never half of each.
// The cache is kept when its bounds are unchanged. A config that does not
// check, or whose documents or lists cannot be read, keeps the running
// state; every error is logged and returned. Listen addresses are bound at
// start: Reload leaves the listeners as they are.
func (s *Server) Reload(cfg *Config) error {
	s.reloading.Lock()
	defer s.reloading.Unlock()
	st, err := s.build(cfg, s.handler.State())
	if err != nil {
		s.ReloadFailed(err)
		return err
	}
	s.handler.metrics.setState(st)
	s.handler.metrics.reloaded(nil)
	// Queries already forwarded by the old state finish on its sockets.
	// (The timer holds the forwarder alone: the old state's policy can go.)
	f := s.handler.swap(st).Forwarder
	s.retired[f] = time.AfterFunc(retireAfter, func() {
		s.reloading.Lock()
		defer s.reloading.Unlock()
		if _, ok := s.retired[f]; ok {
			delete(s.retired, f)
			f.Close()
		}
	})
	s.log.Info("reloaded", "groups", len(st.Policy.Groups)+1, "endpoints", len(st.Policy.Catalog.Entries))
	return nil
}

// ReloadFailed counts and logs a reload that failed before Reload could be
// called: a config file that could not be read or parsed.
func (s *Server) ReloadFailed(err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		s.log.Error("reload failed; the running config stays", "err", line)
	}
	s.handler.metrics.reloaded(err)
}

// State returns the state in use.
func (s *Server) State() *State { return s.handler.State() }

// Ready reports whether at least one upstream is answering.
func (s *Server) Ready() bool { return s.State().Forwarder.Healthy() > 0 }

// SetPause pauses sinkholing; nil resumes it.
func (s *Server) SetPause(p *Pause) { s.handler.pause.Store(p) }

// Paused returns the pause in force, or nil.
func (s *Server) Paused() *Pause { return s.handler.Paused() }

// Close stops listening, lets queries in flight finish until ctx ends, and
// closes the upstream connections, retired forwarders' included.
func (s *Server) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	err := s.shutdown(ctx)
	s.reloading.Lock()
	defer s.reloading.Unlock()
	for f, t := range s.retired {
		t.Stop()
		f.Close()
	}
	clear(s.retired)
	s.State().Forwarder.Close()
	return err
}

// listenOn binds every address over UDP and TCP, or binds none and says
// which address failed (a port that is taken, say). UDP goes through
// phonehome's own batching loop (udp.go), TCP through its own connection
// loop (tcp.go), with the connections of every address bounded together.
//
// On Linux each address gets a UDP socket per core phonehome may use
// (GOMAXPROCS, which follows the CPUs it is allowed), all bound to it with
// SO_REUSEPORT, each read by one loop: the kernel spreads the clients over
// them, and no two cores wait for one socket's queue. Elsewhere, or on one
// core, one socket is read by up to 8 loops.
func (s *Server) listenOn(addrs []string) error {
	closeAll := func() {
		for _, u := range s.udp {
			u.conn.Close()
		}
		for _, t := range s.tcp {
			t.ln.Close()
		}
		s.udp, s.tcp = nil, nil
	}
	sockets, loops := s.opts.UDPSockets, 1
	if sockets == 0 {
		sockets = min(runtime.GOMAXPROCS(0), maxUDPSockets)
	}
	if !canReusePort || sockets == 1 {
		sockets, loops = 1, min(runtime.GOMAXPROCS(0), 8)
	}
	for _, a := range addrs {
		pcs, ln, err := listenPair(a, sockets)
		if err != nil {
			closeAll()
			return err
		}
		s.tcp = append(s.tcp, newTCPServer(s.handler, ln, s.tcpGate, TransportTCP))
		for _, pc := range pcs {
			u, err := newUDPServer(s.handler, pc)
			s.udp = append(s.udp, u)
			if err != nil {
				closeAll()
				return fmt.Errorf("listening on %s/udp: %w", a, err)
			}
		}
	}
	for _, u := range s.udp {
		u.start(loops)
	}
	for _, t := range s.tcp {
		t.start()
	}
	return nil
}

// listenEncrypted binds the encrypted listeners, DNS over HTTPS
// (https_listen) and DNS over TLS (tls_listen), without serving yet, or
// binds none and says which address failed. Each hands its queries to the
// same Handler.ServeDNS as UDP and TCP, its connections bounded by the same
// gate: DNS over TLS is the TCP loop on a tls.Listener (tcp.go), DNS over
// HTTPS an http.Server (dohlisten.go). Their certificate is the state's,
// read at every handshake, so a reload changes it. DDR names them
// (ddr.go).
func (s *Server) listenEncrypted(cfg *Config) error {
	ddr := &designated{}
	bind := func(a, key string) (net.Listener, error) {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			s.closeEncrypted()
			_, port, _ := net.SplitHostPort(a)
			return nil, fmt.Errorf("listening on %s/tcp (%s): %w%s", a, key, err, BindHint(port, err, key+":"))
		}
		return ln, nil
	}
	for _, a := range cfg.HTTPSListen {
		ln, err := bind(a, "https_listen")
		if err != nil {
			return err
		}
		s.doh = append(s.doh, newDoHServer(s.handler, ln, s.tcpGate, s.State().Forwarder.Timeout, s.log))
		ddr.add(true, ln.Addr())
	}
	for _, a := range cfg.TLSListen {
		ln, err := bind(a, "tls_listen")
		if err != nil {
			return err
		}
		s.dot = append(s.dot, newTCPServer(s.handler, tls.NewListener(ln, s.handler.tlsConfig("dot")), s.tcpGate, TransportDoT))
		ddr.add(false, ln.Addr())
	}
	if len(ddr.endpoints) > 0 {
		s.handler.ddr = ddr
	}
	return nil
}

// closeEncrypted closes the encrypted listeners bound but not serving.
func (s *Server) closeEncrypted() {
	for _, t := range s.dot {
		t.ln.Close()
	}
	for _, d := range s.doh {
		d.ln.Close()
	}
	s.dot, s.doh = nil, nil
}

// listenPair binds a over UDP, then TCP on the same port, then (with
// sockets > 1) more UDP sockets on that address and port, all with
// SO_REUSEPORT. When the kernel chose the UDP port (":0", as tests ask),
// that port may be taken over TCP by some other socket: another port is
// tried then, a few times. TCP never shares its port: a second phonehome
// on the same address fails to start, as it should, though its UDP
// sockets could have joined the first one's.
func listenPair(a string, sockets int) ([]*net.UDPConn, net.Listener, error) {
	host, port, _ := net.SplitHostPort(a)
	var lc net.ListenConfig
	if sockets > 1 {
		lc.Control = reusePort
	}
	ctx := context.Background()
	for try := 0; ; try++ {
		pc, err := lc.ListenPacket(ctx, "udp", a)
		if err != nil {
			return nil, nil, fmt.Errorf("listening on %s/udp: %w%s", a, err, BindHint(port, err, "-listen or listen:"))
		}
		bound := pc.LocalAddr().(*net.UDPAddr)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(bound.Port)))
		if err != nil {
			pc.Close()
			if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
				return nil, nil, fmt.Errorf("listening on %s/tcp: %w%s", a, err, BindHint(port, err, "-listen or listen:"))
			}
			continue
		}
		pcs := []*net.UDPConn{pc.(*net.UDPConn)}
		for len(pcs) < sockets {
			more, err := lc.ListenPacket(ctx, "udp", bound.String())
			if err != nil {
				for _, pc := range pcs {
					pc.Close()
				}
				ln.Close()
				return nil, nil, fmt.Errorf("listening on %s/udp (socket %d of %d, SO_REUSEPORT): %w", a, len(pcs)+1, sockets, err)
			}
			pcs = append(pcs, more.(*net.UDPConn))
		}
		return pcs, ln, nil
	}
}

// CheckListen tries to bind each address, as serve would, and says for
// each that cannot be bound now why (a port taken, a low port without the
// right): what "phonehome validate" can tell before serve finds out. The
// sockets are closed at once.
func CheckListen(addrs []string) []string {
	var warns []string
	for _, a := range addrs {
		pcs, ln, err := listenPair(a, 1)
		if err != nil {
			warns = append(warns, err.Error())
			continue
		}
		pcs[0].Close()
		ln.Close()
	}
	return warns
}

// CheckEncryptedListen is CheckListen for the encrypted listeners'
// addresses (tls_listen, https_listen), over TCP.
func CheckEncryptedListen(tlsAddrs, httpsAddrs []string) []string {
	var warns []string
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"tls_listen", tlsAddrs}, {"https_listen", httpsAddrs}} {
		for _, a := range l.addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				_, port, _ := net.SplitHostPort(a)
				warns = append(warns, fmt.Sprintf("listening on %s/tcp (%s): %v%s", a, l.key, err, BindHint(port, err, l.key+":")))
				continue
			}
			ln.Close()
		}
	}
	return warns
}

// BindHint says, for an error binding port, who usually holds the port or
// what a low port needs, and which flag or key (choose) picks another; ""
// for other errors.
func BindHint(port string, err error, choose string) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		holder := "another program, or a phonehome already running"
		switch port {
		case "53":
			holder = "another DNS server (systemd-resolved, dnsmasq, unbound, named) or a phonehome already running"
		case "5353":
			holder = "the mDNS responder (avahi-daemon)"
		case "5355":
			holder = "systemd-resolved's LLMNR"
		}
		return fmt.Sprintf(" (usually %s; `ss -lntup 'sport = :%s'` names it); choose another address with %s", holder, port, choose)
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf(" (ports below 1024 need root or CAP_NET_BIND_SERVICE, which the systemd unit and the container image give); or choose a port above 1023 with %s", choose)
	}
	return ""
}

// Addrs returns the bound UDP addresses, in the order given to Listen.
func (s *Server) Addrs() []string {
	var out []string
	for _, u := range s.udp {
		if a := u.conn.LocalAddr().String(); !slices.Contains(out, a) { // an address's sockets come together
			out = append(out, a)
		}
	}
	return out
}

// TLSAddrs returns the bound DNS-over-TLS addresses, in the order of
// tls_listen.
func (s *Server) TLSAddrs() []string {
	var out []string
	for _, t := range s.dot {
		out = append(out, t.ln.Addr().String())
	}
	return out
}

// HTTPSAddrs returns the bound DNS-over-HTTPS addresses, in the order of
// https_listen.
func (s *Server) HTTPSAddrs() []string {
	var out []string
	for _, d := range s.doh {
		out = append(out, d.addr().String())
	}
	return out
}

// shutdown stops listening and lets queries in flight finish until ctx
// ends; then every TCP, TLS and HTTPS connection is closed.
func (s *Server) shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, u := range s.udp {
		wg.Go(func() { u.shutdown(ctx) })
	}
	streams := slices.Concat(s.tcp, s.dot)
	errs := make([]error, len(streams)+len(s.doh))
	for i, t := range streams {
		wg.Go(func() { errs[i] = t.shutdown(ctx) })
	}
	for i, d := range s.doh {
		wg.Go(func() { errs[len(streams)+i] = d.shutdown(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // ctx ended first
		}
	}
	return nil
}

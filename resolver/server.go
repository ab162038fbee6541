package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/policy"
)

// NewState builds everything a config makes for the request path: the
// policy, the upstreams (from resolvConf when the config names none), the
// cache (kept from prev when its size is unchanged), access and sinkhole.
// Nothing is swapped in here; an error leaves the running state alone.
func NewState(cfg *policy.Config, prev *State, resolvConf string, log *slog.Logger) (*State, []string, error) {
	p, warns, err := policy.Compile(cfg)
	if err != nil {
		return nil, warns, err
	}
	names := cfg.Upstreams
	if len(names) == 0 {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, warns, fmt.Errorf("no upstreams in the config, and reading %s: %w", resolvConf, err)
		}
		for _, s := range cc.Servers {
			names = append(names, net.JoinHostPort(s, cc.Port))
		}
		if len(names) == 0 {
			return nil, warns, fmt.Errorf("no upstreams in the config nor in %s", resolvConf)
		}
	}
	if err := checkLoop(cfg.Listen, names); err != nil {
		return nil, warns, err
	}
	var ups []*Upstream
	for _, n := range names {
		u, err := ParseUpstream(n)
		if err != nil {
			return nil, warns, err
		}
		ups = append(ups, u)
	}
	st := &State{
		Policy:    p,
		Sinkhole:  Sinkhole{Mode: cfg.Sinkhole.Mode, TTL: cfg.Sinkhole.TTL, IPv4: cfg.Sinkhole.IPv4, IPv6: cfg.Sinkhole.IPv6},
		Forwarder: NewForwarder(ups, 2048, log),
		RateLimit: *cfg.Access.RateLimit,
	}
	for _, a := range cfg.Access.Allow {
		st.Allow = append(st.Allow, a.Prefix)
	}
	if prev != nil && prev.Cache != nil && prev.Cache.size == *cfg.Cache.Size && prev.Cache.minTTL == cfg.Cache.MinTTL && prev.Cache.maxTTL == cfg.Cache.MaxTTL {
		st.Cache = prev.Cache
	} else {
		st.Cache = NewCache(*cfg.Cache.Size, cfg.Cache.MinTTL, cfg.Cache.MaxTTL)
	}
	return st, warns, nil
}

// checkLoop refuses an upstream that is one of phonehome's own listen
// addresses: every query would go round until it timed out.
func checkLoop(listen, upstreams []string) error {
	for _, l := range listen {
		lh, lp, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		la, _ := netip.ParseAddr(lh)
		for _, u := range upstreams {
			pu, err := ParseUpstream(u)
			if err != nil || pu.net == "tcp-tls" {
				continue
			}
			uh, up, _ := net.SplitHostPort(pu.addr)
			ua, err := netip.ParseAddr(uh)
			if err != nil || up != lp {
				continue
			}
			if ua == la || (lh == "" || la.IsUnspecified()) && (ua.IsLoopback() || ua.IsUnspecified()) {
				return fmt.Errorf("upstream %s is phonehome's own listen address %s: queries would loop", u, l)
			}
		}
	}
	return nil
}

// Server listens on UDP and TCP on each address and hands queries to the
// Handler: UDP through phonehome's own batching loop (udp.go), TCP through
// miekg/dns.
type Server struct {
	Handler *Handler
	udp     []*udpServer
	tcp     []*dns.Server
	wg      sync.WaitGroup
}

// Listen binds every address over UDP and TCP, or binds none and says which
// address failed (a port that is taken, say).
func (s *Server) Listen(addrs []string) error {
	closeAll := func() {
		for _, u := range s.udp {
			u.conn.Close()
		}
		for _, srv := range s.tcp {
			srv.Listener.Close()
		}
		s.udp, s.tcp = nil, nil
	}
	invalid := func([]byte, error) { s.Handler.Counters.Malformed.Add(1) }
	for _, a := range addrs {
		pc, ln, err := listenPair(a)
		if err != nil {
			closeAll()
			return err
		}
		u, err := newUDPServer(s.Handler, pc)
		s.udp = append(s.udp, u)
		if err != nil {
			ln.Close()
			closeAll()
			return fmt.Errorf("listening on %s/udp: %w", a, err)
		}
		s.tcp = append(s.tcp, &dns.Server{Listener: ln, Handler: s.Handler, MsgInvalidFunc: invalid,
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }})
	}
	for _, u := range s.udp {
		u.start(min(runtime.GOMAXPROCS(0), 8))
	}
	// Wait until miekg/dns has started each TCP server: its Shutdown
	// refuses a server that has not started yet, which would then start
	// and run on.
	var started sync.WaitGroup
	for _, srv := range s.tcp {
		started.Add(1)
		ready := sync.OnceFunc(started.Done) // also when it fails to start
		srv.NotifyStartedFunc = ready
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer ready()
			srv.ActivateAndServe()
		}()
	}
	started.Wait()
	return nil
}

// listenPair binds a over UDP, then TCP on the same port. When the kernel
// chose the UDP port (":0", as tests ask), that port may be taken over TCP
// by some other socket: another port is tried then, a few times.
func listenPair(a string) (*net.UDPConn, net.Listener, error) {
	host, port, _ := net.SplitHostPort(a)
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return nil, nil, fmt.Errorf("listening on %s/udp: %w", a, err)
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return pc.(*net.UDPConn), ln, nil
		}
		pc.Close()
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			return nil, nil, fmt.Errorf("listening on %s/tcp: %w", a, err)
		}
	}
}

// Addrs returns the bound UDP addresses, in the order given to Listen.
func (s *Server) Addrs() []string {
	var out []string
	for _, u := range s.udp {
		out = append(out, u.conn.LocalAddr().String())
	}
	return out
}

// Shutdown stops listening and lets queries in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, u := range s.udp {
		wg.Go(func() { u.shutdown(ctx) })
	}
	var first error
	for _, srv := range s.tcp {
		if err := srv.ShutdownContext(ctx); err != nil && first == nil {
			first = err
		}
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return first
}

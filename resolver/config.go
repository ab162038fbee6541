package resolver

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/policy"
)

// Config is what the resolver reads from the config file: where it
// listens, where it forwards, who may ask, how sinkholed names are
// answered, the cache, and the policy it decides with. Every key is
// optional; SetDefaults fills in what was left out.
type Config struct {
	Listen    []string       `yaml:"listen"`
	Upstreams []string       `yaml:"upstreams"`
	Access    AccessConfig   `yaml:"access"`
	Sinkhole  SinkholeConfig `yaml:"sinkhole"`
	Cache     CacheConfig    `yaml:"cache"`
	CNAME     CNAMEConfig    `yaml:"cname"`
	// UpstreamTLSCA is a PEM file of CA certificates that tls:// and
	// https:// upstreams' certificates may also chain to, besides the
	// system's roots: a private resolver's CA.
	UpstreamTLSCA string `yaml:"upstream_tls_ca"`
	// Canary answers Firefox's use-application-dns.net with NXDOMAIN, so
	// that Firefox keeps using the network's resolver instead of its own
	// DNS over HTTPS (default true).
	Canary *bool `yaml:"canary"`
	// TLSListen and HTTPSListen are where clients get DNS over TLS (RFC
	// 7858) and DNS over HTTPS (RFC 8484, on /dns-query): host:port, or an
	// address alone for the usual port (853, 443). Both need TLSCert and
	// TLSKey. Bound at start, as Listen is.
	TLSListen   []string `yaml:"tls_listen"`
	HTTPSListen []string `yaml:"https_listen"`
	// TLSCert and TLSKey are the PEM files of the listeners' certificate
	// (with its chain after it) and its private key, read at start and on
	// every reload.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TrustedProxies are the addresses whose X-Forwarded-For header names
	// the client of a DNS-over-HTTPS request: reverse proxies in front of
	// https_listen. From anyone else the header is ignored.
	TrustedProxies []policy.Prefix `yaml:"trusted_proxies"`
	Policy         policy.Config   `yaml:",inline"`

	// Source is where the config was read from: the file, for relative
	// paths, and the place of each key, for errors. nil for a config
	// built in code.
	Source *config.Source `yaml:"-"`
}

// AccessConfig says who may use the resolver.
type AccessConfig struct {
	Allow []policy.Prefix `yaml:"allow"`
	// RateLimit is queries per second per client address; 0 turns it off.
	RateLimit *int `yaml:"rate_limit"`
	// MaxConnections bounds the TCP, DNS-over-TLS and DNS-over-HTTPS
	// connections open at once, over every listener (default 256, fewer
	// under a low open-file limit); MaxConnectionsPerClient those from
	// one client address (default 16). Read at start.
	MaxConnections          int `yaml:"max_connections"`
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
}

// TCPLimits are the connection bounds the config sets over opts (zero:
// the defaults; see TCPLimits).
func (c *Config) TCPLimits(opts TCPLimits) TCPLimits {
	if c.Access.MaxConnections > 0 {
		opts.Conns = c.Access.MaxConnections
	}
	if c.Access.MaxConnectionsPerClient > 0 {
		opts.PerClient = c.Access.MaxConnectionsPerClient
	}
	return opts
}

// SinkholeConfig says how sinkholed names are answered.
type SinkholeConfig struct {
	Mode SinkholeMode  `yaml:"mode"`
	TTL  time.Duration `yaml:"ttl"`
	IPv4 netip.Addr    `yaml:"ipv4"`
	IPv6 netip.Addr    `yaml:"ipv6"`
}

// CacheConfig bounds the answer cache.
type CacheConfig struct {
	Size   *int          `yaml:"size"`
	MinTTL time.Duration `yaml:"min_ttl"`
	MaxTTL time.Duration `yaml:"max_ttl"`
}

// CNAMEConfig says whether the names an answer's CNAME chain leads to are
// decided too, and how many of them at most.
type CNAMEConfig struct {
	Inspect  *bool `yaml:"inspect"`   // default true
	MaxChain int   `yaml:"max_chain"` // default 16
}

// SinkholeMode is how sinkholed names are answered.
type SinkholeMode string

// The sinkhole modes.
const (
	SinkholeNullIP   SinkholeMode = "null_ip"  // 0.0.0.0 and ::
	SinkholeNXDomain SinkholeMode = "nxdomain" // NXDOMAIN with a SOA
	SinkholeNoData   SinkholeMode = "nodata"   // NOERROR, no answer, a SOA
	SinkholeRefused  SinkholeMode = "refused"  // REFUSED
	SinkholeIP       SinkholeMode = "ip"       // the addresses sinkhole.ipv4 and ipv6 give
)

// SinkholeModes lists the modes.
var SinkholeModes = []SinkholeMode{SinkholeNullIP, SinkholeNXDomain, SinkholeNoData, SinkholeRefused, SinkholeIP}

// UnmarshalText accepts one of SinkholeModes.
func (m *SinkholeMode) UnmarshalText(b []byte) error {
	s := SinkholeMode(strings.ToLower(string(b)))
	if !slices.Contains(SinkholeModes, s) {
		return fmt.Errorf("unknown sinkhole mode %q (valid: null_ip, nxdomain, nodata, refused, ip)", b)
	}
	*m = s
	return nil
}

// Defaults of the resolver's keys. They are constants, or lists that
// SetDefaults copies, so that no config shares memory with another.
const (
	DefaultRateLimit = 200
	DefaultCacheSize = 20000
	DefaultMaxChain  = 16
	// The ports of tls_listen and https_listen addresses written without
	// one: DNS over TLS's (RFC 7858) and HTTPS's.
	DefaultTLSPort   = "853"
	DefaultHTTPSPort = "443"
)

var (
	defaultListen = []string{"127.0.0.1:5300", "[::1]:5300"}
	defaultAllow  = []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10"}
)

// DefaultListen is where phonehome listens when nothing says otherwise.
func DefaultListen() []string { return slices.Clone(defaultListen) }

// DefaultConfig is the configuration with no file.
func DefaultConfig() *Config {
	c := &Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills in what the file left out, the policy's included.
func (c *Config) SetDefaults() {
	if len(c.Listen) == 0 {
		c.Listen = DefaultListen()
	}
	if c.Access.Allow == nil {
		for _, s := range defaultAllow {
			c.Access.Allow = append(c.Access.Allow, policy.Prefix{Prefix: netip.MustParsePrefix(s)})
		}
	}
	if c.Access.RateLimit == nil {
		rl := DefaultRateLimit
		c.Access.RateLimit = &rl
	}
	if c.Sinkhole.Mode == "" {
		c.Sinkhole.Mode = SinkholeNullIP
	}
	if c.Sinkhole.TTL == 0 {
		c.Sinkhole.TTL = 60 * time.Second
	}
	if c.Cache.Size == nil {
		n := DefaultCacheSize
		c.Cache.Size = &n
	}
	if c.Cache.MaxTTL == 0 {
		c.Cache.MaxTTL = 24 * time.Hour
	}
	if c.CNAME.Inspect == nil {
		on := true
		c.CNAME.Inspect = &on
	}
	if c.CNAME.MaxChain == 0 {
		c.CNAME.MaxChain = DefaultMaxChain
	}
	if c.Canary == nil {
		on := true
		c.Canary = &on
	}
	for i, a := range c.TLSListen {
		c.TLSListen[i] = withPort(a, DefaultTLSPort)
	}
	for i, a := range c.HTTPSListen {
		c.HTTPSListen[i] = withPort(a, DefaultHTTPSPort)
	}
	c.Policy.SetDefaults()
}

// Check reports every problem of the resolver's sections and the policy's
// that needs more than one key to see. It runs before SetDefaults, so that
// it sees what was written.
func (c *Config) Check(r *config.Report) {
	src := r.Source()
	if c.Sinkhole.Mode == SinkholeIP && !src.Has("sinkhole.ipv4") && !src.Has("sinkhole.ipv6") && !c.Sinkhole.IPv4.IsValid() && !c.Sinkhole.IPv6.IsValid() {
		r.Value("sinkhole", "sinkhole mode ip needs ipv4:, ipv6: or both")
	}
	for i, a := range c.Listen {
		if err := config.CheckHostPort(a); err != nil {
			r.Value(fmt.Sprintf("listen[%d]", i), "listen: %v", err)
		}
	}
	for i, u := range c.Upstreams {
		if _, err := ParseUpstreamAddr(u); err != nil {
			r.Value(fmt.Sprintf("upstreams[%d]", i), "upstreams: %v", err)
		}
	}
	if i, err := checkLookup(c.Upstreams); err != nil {
		r.Value(fmt.Sprintf("upstreams[%d]", i), "upstreams: %v", err)
	}
	if err := checkLoop(c.listen(), c.Upstreams); err != nil {
		r.Key("upstreams", "%v", err)
	} else if err := c.checkEncryptedLoop(); err != nil {
		r.Key("upstreams", "%v", err)
	}
	if c.Cache.MaxTTL != 0 && c.Cache.MinTTL > c.Cache.MaxTTL {
		r.Value("cache", "cache min_ttl is more than max_ttl")
	}
	if c.Cache.Size != nil && *c.Cache.Size < 0 {
		r.Value("cache", "cache size is negative")
	}
	c.checkConnections(r)
	if c.CNAME.MaxChain < 0 || c.CNAME.MaxChain > 64 {
		r.Value("cname.max_chain", "cname max_chain is %d: want 1 to 64 names", c.CNAME.MaxChain)
	}
	c.checkEncrypted(r)
	c.Policy.Check(r)
}

// checkConnections checks the connection bounds: each connection costs a
// file descriptor, and one past the open-file limit would cost the upstream
// sockets theirs (the starvation the bounds are there to prevent).
func (c *Config) checkConnections(r *config.Report) {
	a := c.Access
	if a.MaxConnections < 0 || a.MaxConnections > maxTCPConns {
		r.Value("access.max_connections", "access.max_connections is %d: want 1 to %d", a.MaxConnections, maxTCPConns)
	} else if nofile, ok := openFileLimit(); ok && a.MaxConnections > tcpConnsFor(nofile) && a.MaxConnections > defaultTCPConns() {
		r.Value("access.max_connections", "access.max_connections is %d, but the open-file limit (%d) leaves room for %d: raise it (LimitNOFILE=%d in the systemd unit, ulimit -n) or lower this",
			a.MaxConnections, nofile, tcpConnsFor(nofile), 128+2*a.MaxConnections)
	}
	if a.MaxConnectionsPerClient < 0 || a.MaxConnectionsPerClient > maxTCPConns {
		r.Value("access.max_connections_per_client", "access.max_connections_per_client is %d: want 1 to %d", a.MaxConnectionsPerClient, maxTCPConns)
	}
}

// checkEncrypted checks the encrypted listeners' keys: their addresses,
// and a certificate for them. Whether the files can be read and the key
// matches the certificate is seen when they are loaded (serverCert).
func (c *Config) checkEncrypted(r *config.Report) {
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"tls_listen", c.TLSListen}, {"https_listen", c.HTTPSListen}} {
		for i, a := range l.addrs {
			if err := config.CheckHostPort(withPort(a, "0")); err != nil {
				r.Value(fmt.Sprintf("%s[%d]", l.key, i), "%s: %v", l.key, err)
			}
		}
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		r.Key("tls_cert", "tls_cert needs tls_key: the certificate's private key (PEM)")
	case c.TLSKey != "" && c.TLSCert == "":
		r.Key("tls_key", "tls_key needs tls_cert: the certificate (PEM)")
	case c.TLSCert == "" && len(c.TLSListen) > 0:
		r.Key("tls_listen", "tls_listen needs a certificate: tls_cert and tls_key (PEM files)")
	case c.TLSCert == "" && len(c.HTTPSListen) > 0:
		r.Key("https_listen", "https_listen needs a certificate: tls_cert and tls_key (PEM files)")
	}
}

// withPort gives an address written without a port (192.168.1.2, ::) the
// port port; host:port is returned as it is.
func withPort(a, port string) string {
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")); err == nil {
		return net.JoinHostPort(ip.String(), port)
	}
	return a
}

// listen returns the listen addresses, the default ones when none is set.
func (c *Config) listen() []string {
	if len(c.Listen) == 0 {
		return defaultListen
	}
	return c.Listen
}

// upstreamNames returns the configured upstreams, or the name servers of
// resolvConf when there are none.
func (c *Config) upstreamNames(resolvConf string) ([]string, error) {
	if len(c.Upstreams) > 0 {
		return c.Upstreams, nil
	}
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("no upstreams in the config, and reading %s: %w", resolvConf, err)
	}
	var names []string
	for _, s := range cc.Servers {
		names = append(names, net.JoinHostPort(s, cc.Port))
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no upstreams in the config nor in %s", resolvConf)
	}
	return names, nil
}

// UpstreamAddr is an upstream as written, read: the one reading of the
// syntax, which the config check and the forwarder share.
type UpstreamAddr struct {
	Scheme string // "udp", "tcp", "tls" or "https"
	// Addr is the IP:port to connect to. For https:// it is the #address,
	// or the URL's host when that is an IP address, else "": the host is
	// a name, looked up through the other upstreams.
	Addr string
	// ServerName is the name the certificate is checked against: for
	// tls://, after '#', else the address's host; for https://, the URL's
	// host.
	ServerName string
	URL        string // https:// only: the URL without #address, its path /dns-query when none was written
}

// LookedUp reports whether the upstream's address is found by looking its
// host name up through the other upstreams: an https:// URL whose host is a
// name, with no #address.
func (a UpstreamAddr) LookedUp() bool { return a.Scheme == "https" && a.Addr == "" }

// ParseUpstreamAddr reads an upstream as written: "host:port" (UDP, with
// TCP when an answer is truncated), "udp://host:port", "tcp://host:port",
// "tls://host:port#servername" for DNS over TLS, or
// "https://host[:port][/path]#address" for DNS over HTTPS (RFC 8484; path
// /dns-query when none is written). The host of the first four is an IP
// address: phonehome resolves no names to reach its upstreams, except the
// host of an https:// URL with no #address, which it looks up once through
// the other upstreams.
func ParseUpstreamAddr(u string) (UpstreamAddr, error) {
	a := UpstreamAddr{Scheme: "udp", Addr: u}
	if s, r, ok := strings.Cut(u, "://"); ok {
		a.Scheme, a.Addr = s, r
	}
	switch a.Scheme {
	case "udp", "tcp":
		if strings.Contains(a.Addr, "#") {
			return UpstreamAddr{}, fmt.Errorf("%q: #servername is for tls:// upstreams", u)
		}
	case "tls":
		a.Addr, a.ServerName, _ = strings.Cut(a.Addr, "#")
	case "https":
		return parseDoHAddr(u)
	case "http":
		return UpstreamAddr{}, fmt.Errorf("%q: DNS over plain HTTP is not supported: write https://", u)
	default:
		return UpstreamAddr{}, fmt.Errorf("%q: unknown scheme %q (valid: host:port, tcp://host:port, tls://host:port#servername, https://host/path#address)", u, a.Scheme)
	}
	if err := config.CheckHostPort(a.Addr); err != nil {
		return UpstreamAddr{}, fmt.Errorf("upstream %v", err)
	}
	if a.Scheme == "tls" && a.ServerName == "" {
		a.ServerName, _, _ = net.SplitHostPort(a.Addr)
	}
	return a, nil
}

// dohPath is the path of a DNS-over-HTTPS URL written without one: the
// path RFC 8484's examples and nearly every public resolver use.
const dohPath = "/dns-query"

// parseDoHAddr reads "https://host[:port][/path][?query][#address]".
func parseDoHAddr(u string) (UpstreamAddr, error) {
	const example = "https://dns.quad9.net/dns-query#9.9.9.9"
	rest, at, hasAt := strings.Cut(u, "#")
	// Resolvers publish a URI template for GET (RFC 8484, section 4.1);
	// phonehome sends POST, to the URL without the variable.
	rest = strings.TrimSuffix(rest, "{?dns}")
	p, err := url.Parse(rest)
	if err != nil {
		return UpstreamAddr{}, fmt.Errorf("%q is not a URL (like %s): %v", u, example, errors.Unwrap(err))
	}
	switch {
	case p.User != nil:
		return UpstreamAddr{}, fmt.Errorf("%q: a user name or password in a DNS-over-HTTPS URL is not supported", u)
	case p.Hostname() == "":
		return UpstreamAddr{}, fmt.Errorf("%q: no host (like %s)", u, example)
	case strings.ContainsAny(p.Path, "{}"):
		return UpstreamAddr{}, fmt.Errorf("%q: a URI template other than {?dns} at the end is not supported", u)
	}
	host, port := p.Hostname(), p.Port()
	if port == "" {
		port = "443"
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return UpstreamAddr{}, fmt.Errorf("%q: %q is not a port", u, port)
	}
	a := UpstreamAddr{Scheme: "https", ServerName: host}
	if ip, err := netip.ParseAddr(host); err == nil {
		a.Addr = netip.AddrPortFrom(ip, mustPort(port)).String()
	} else if err := checkHostName(host); err != nil {
		return UpstreamAddr{}, fmt.Errorf("%q: %v", u, err)
	}
	if hasAt {
		if a.Addr, err = dialAddr(at, port); err != nil {
			return UpstreamAddr{}, fmt.Errorf("%q: %v", u, err)
		}
	}
	if p.Path == "" {
		p.Path = dohPath
	}
	p.Fragment, p.RawFragment = "", ""
	a.URL = p.String()
	return a, nil
}

// dialAddr reads the #address of a DoH URL: an IP address, with a port or
// without (then the URL's).
func dialAddr(s, port string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
		return ap.String(), nil
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return netip.AddrPortFrom(ip, mustPort(port)).String(), nil
	}
	return "", fmt.Errorf("#%s is not an IP address: after '#' goes the server's address, with or without a port (#9.9.9.9, #9.9.9.9:443, #[2620:fe::fe]:443)", s)
}

// mustPort is a port number already checked.
func mustPort(s string) uint16 {
	n, _ := strconv.Atoi(s)
	return uint16(n)
}

// checkHostName accepts a DNS host name: letters, digits, hyphens and
// underscores between dots, at most 63 bytes a label and 253 in all.
func checkHostName(s string) error {
	name := strings.TrimSuffix(s, ".")
	ok := name != "" && len(name) <= 253
	for _, l := range strings.Split(name, ".") {
		ok = ok && l != "" && len(l) <= 63 && l[0] != '-' && l[len(l)-1] != '-' &&
			strings.IndexFunc(l, func(c rune) bool {
				return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_')
			}) < 0
	}
	if !ok {
		return fmt.Errorf("%q is not a host name or an IP address", s)
	}
	return nil
}

// checkLookup refuses an https:// upstream whose host must be looked up
// (a name, no #address) when no other upstream can look it up: one that is
// not itself looked up. It returns the index of the first such upstream.
func checkLookup(upstreams []string) (int, error) {
	first, helper := -1, false
	for i, u := range upstreams {
		a, err := ParseUpstreamAddr(u)
		switch {
		case err != nil:
		case a.LookedUp():
			if first < 0 {
				first = i
			}
		default:
			helper = true
		}
	}
	if first < 0 || helper {
		return 0, nil
	}
	a, _ := ParseUpstreamAddr(upstreams[first])
	return first, fmt.Errorf("%s: the host %s is a name, and no other upstream can look it up; write its IP address after '#' (%s#ADDRESS), or add an upstream that needs no lookup (host:port, tcp://, tls://, or https:// with #address) before or after it",
		upstreams[first], a.ServerName, a.URL)
}

// upstreamRoots returns what tls:// and https:// upstreams verify
// certificates with: nil (the system's roots) without upstream_tls_ca, else
// the system's roots and the file's certificates, with a digest of the
// file: a reload keeps such an upstream, with its connections, only while
// the file is unchanged.
func (c *Config) upstreamRoots() (*x509.CertPool, [sha256.Size]byte, error) {
	if c.UpstreamTLSCA == "" {
		return nil, [sha256.Size]byte{}, nil
	}
	path := c.Source.Resolve(c.UpstreamTLSCA)
	r := config.NewReport(c.Source)
	b, err := os.ReadFile(path)
	if err != nil {
		r.Value("upstream_tls_ca", "upstream_tls_ca: %v", err)
		return nil, [sha256.Size]byte{}, r.Err()
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system roots: the file's alone
	}
	if !pool.AppendCertsFromPEM(b) {
		r.Value("upstream_tls_ca", "upstream_tls_ca: %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path)
		return nil, [sha256.Size]byte{}, r.Err()
	}
	return pool, sha256.Sum256(b), nil
}

// checkLoop refuses an upstream that is one of phonehome's own listen
// addresses: every query would go round until it timed out.
func checkLoop(listen, upstreams []string) error {
	return checkLoopOver(listen, upstreams, "udp", "tcp")
}

// checkEncryptedLoop is checkLoop for the encrypted listeners: a tls://
// upstream that is a tls_listen address, an https:// one whose address is
// an https_listen one.
func (c *Config) checkEncryptedLoop() error {
	var tlsAddrs, httpsAddrs []string
	for _, a := range c.TLSListen {
		tlsAddrs = append(tlsAddrs, withPort(a, DefaultTLSPort))
	}
	for _, a := range c.HTTPSListen {
		httpsAddrs = append(httpsAddrs, withPort(a, DefaultHTTPSPort))
	}
	if err := checkLoopOver(tlsAddrs, c.Upstreams, "tls"); err != nil {
		return err
	}
	return checkLoopOver(httpsAddrs, c.Upstreams, "https")
}

// checkLoopOver is checkLoop for the upstreams of the given schemes.
func checkLoopOver(listen, upstreams []string, schemes ...string) error {
	for _, l := range listen {
		lh, lp, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		la, _ := netip.ParseAddr(lh)
		for _, u := range upstreams {
			pu, err := ParseUpstreamAddr(u)
			if err != nil || pu.Addr == "" || !slices.Contains(schemes, pu.Scheme) {
				continue
			}
			uh, up, _ := net.SplitHostPort(pu.Addr)
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

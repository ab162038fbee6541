package resolver

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
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
	// Canary answers Firefox's use-application-dns.net with NXDOMAIN, so
	// that Firefox keeps using the network's resolver instead of its own
	// DNS over HTTPS (default true).
	Canary *bool         `yaml:"canary"`
	Policy policy.Config `yaml:",inline"`

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
	if err := checkLoop(c.listen(), c.Upstreams); err != nil {
		r.Key("upstreams", "%v", err)
	}
	if c.Cache.MaxTTL != 0 && c.Cache.MinTTL > c.Cache.MaxTTL {
		r.Value("cache", "cache min_ttl is more than max_ttl")
	}
	if c.Cache.Size != nil && *c.Cache.Size < 0 {
		r.Value("cache", "cache size is negative")
	}
	if c.CNAME.MaxChain < 0 || c.CNAME.MaxChain > 64 {
		r.Value("cname.max_chain", "cname max_chain is %d: want 1 to 64 names", c.CNAME.MaxChain)
	}
	c.Policy.Check(r)
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
	Scheme     string // "udp", "tcp" or "tls"
	Addr       string // IP:port
	ServerName string // tls:// only: after '#', else the address's host
}

// ParseUpstreamAddr reads an upstream as written: "host:port" (UDP, with
// TCP when an answer is truncated), "udp://host:port", "tcp://host:port",
// or "tls://host:port#servername" for DNS over TLS. The host is an IP
// address: phonehome resolves no names to reach its upstreams.
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
	default:
		return UpstreamAddr{}, fmt.Errorf("%q: unknown scheme %q (valid: host:port, tcp://host:port, tls://host:port#servername)", u, a.Scheme)
	}
	if err := config.CheckHostPort(a.Addr); err != nil {
		return UpstreamAddr{}, fmt.Errorf("upstream %v", err)
	}
	if a.Scheme == "tls" && a.ServerName == "" {
		a.ServerName, _, _ = net.SplitHostPort(a.Addr)
	}
	return a, nil
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
			pu, err := ParseUpstreamAddr(u)
			if err != nil || pu.Scheme == "tls" {
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

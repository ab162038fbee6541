package policy

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/phonehome/phonehome/endpoints"
)

// Config is phonehome's configuration file. Every key is optional: the zero
// file (or no file) makes a working home resolver. Relative paths in it are
// relative to the file. See the README for every key.
type Config struct {
	Listen    []string `yaml:"listen"`
	Upstreams []string `yaml:"upstreams"`
	// HTTP is the address of the metrics, web page and API; "" turns it off.
	HTTP      *string        `yaml:"http"`
	HTTPToken string         `yaml:"http_token"`
	Access    AccessConfig   `yaml:"access"`
	Sinkhole  SinkholeConfig `yaml:"sinkhole"`
	Cache     CacheConfig    `yaml:"cache"`
	Catalog   CatalogConfig  `yaml:"catalog"`
	Policy    PolicyConfig   `yaml:"policy"`
	QueryLog  QueryLogConfig `yaml:"querylog"`

	// File is where the config was read from, "" for the defaults.
	File string `yaml:"-"`
	// KeyPos is where each top-level key was written.
	KeyPos map[string]Pos `yaml:"-"`
}

// AccessConfig says who may use the resolver.
type AccessConfig struct {
	Allow []Prefix `yaml:"allow"`
	// RateLimit is queries per second per client address; 0 turns it off.
	RateLimit *int `yaml:"rate_limit"`
}

// SinkholeConfig says how sinkholed names are answered.
type SinkholeConfig struct {
	Mode SinkholeMode  `yaml:"mode"`
	TTL  time.Duration `yaml:"ttl"`
	IPv4 netip.Addr    `yaml:"ipv4"`
	IPv6 netip.Addr    `yaml:"ipv6"`
	Pos  Pos           `yaml:"-"`
	// KeyPos is where each key was written.
	KeyPos map[string]Pos `yaml:"-"`
}

// CacheConfig bounds the answer cache.
type CacheConfig struct {
	Size   *int          `yaml:"size"`
	MinTTL time.Duration `yaml:"min_ttl"`
	MaxTTL time.Duration `yaml:"max_ttl"`
	Pos    Pos           `yaml:"-"`
}

// CatalogConfig says which endpoint documents make the catalog.
type CatalogConfig struct {
	Builtin *bool    `yaml:"builtin"`
	Docs    []string `yaml:"docs"`
	Pos     Pos      `yaml:"-"`
}

// PolicyConfig is the default group and the client groups.
type PolicyConfig struct {
	Default GroupConfig   `yaml:"default"`
	Groups  []GroupConfig `yaml:"groups"`
}

// GroupConfig is one client group as written. The default group has no
// name and no clients.
type GroupConfig struct {
	Name    string             `yaml:"name"`
	Clients []Prefix           `yaml:"clients"`
	Edition *endpoints.Edition `yaml:"edition"`
	// Windows are the Windows versions of the group's machines: one
	// ("11"), a list, or a range ("10-1909..11"); all when not given.
	Windows   *endpoints.Version `yaml:"windows"`
	Actions   Actions            `yaml:"actions"`
	Unlisted  *Action            `yaml:"unlisted"`
	Overrides Overrides          `yaml:"overrides"`
	Lists     []ListConfig       `yaml:"lists"`
	Pos       Pos                `yaml:"-"`
	KeyPos    map[string]Pos     `yaml:"-"`
}

// ListConfig adds user patterns under a category, from a file or inline.
type ListConfig struct {
	Category string         `yaml:"category"`
	File     string         `yaml:"file"`
	Patterns []string       `yaml:"patterns"`
	Pos      Pos            `yaml:"-"`
	KeyPos   map[string]Pos `yaml:"-"`
}

// QueryLogConfig says where the query log goes and what it records.
type QueryLogConfig struct {
	Output           string `yaml:"output"`
	AllQueries       bool   `yaml:"all_queries"`
	AnonymizeClients bool   `yaml:"anonymize_clients"`
}

// Pos is a place in the config file.
type Pos struct{ Line, Col int }

// Actions maps categories ("*" for the rest) to actions, remembering where
// each key was written.
type Actions struct {
	Map map[endpoints.Category]Action
	Pos map[endpoints.Category]Pos
}

// Overrides lists patterns per action; they win over every category action.
type Overrides struct {
	Map map[Action][]string
	Pos map[string]Pos // of each pattern as written
}

// Prefix is a client address or network: "192.168.1.23" or "192.168.1.64/28".
type Prefix struct{ netip.Prefix }

// UnmarshalText takes an address or a CIDR.
func (p *Prefix) UnmarshalText(b []byte) error {
	s := string(b)
	if strings.Contains(s, "/") {
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("bad client network %q: want an address or CIDR such as 192.168.1.0/24", s)
		}
		if pr.Masked() != pr {
			return fmt.Errorf("bad client network %q: host bits are set; did you mean %s?", s, pr.Masked())
		}
		p.Prefix = pr
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("bad client address %q: want an address or CIDR such as 192.168.1.0/24", s)
	}
	a = a.WithZone("").Unmap()
	p.Prefix = netip.PrefixFrom(a, a.BitLen())
	return nil
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

// UnmarshalText reads an action.
func (a *Action) UnmarshalText(b []byte) error {
	v, err := ParseAction(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// ConfigError is one problem of a config file, at a place in it.
type ConfigError struct {
	File      string
	Line, Col int
	Msg       string
}

func (e ConfigError) Error() string {
	switch {
	case e.Line == 0:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	case e.Col == 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// ConfigErrors is every problem found in a config file, in file order.
type ConfigErrors []ConfigError

func (es ConfigErrors) Error() string {
	var s []string
	for _, e := range es {
		s = append(s, e.Error())
	}
	return strings.Join(s, "\n")
}

// Defaults of the keys the daemon uses. They are constants, or lists that
// applyDefaults copies, so that no config shares memory with another.
const (
	DefaultHTTP      = "127.0.0.1:8053"
	DefaultRateLimit = 200
	DefaultCacheSize = 20000
)

var (
	defaultListen = []string{"127.0.0.1:5353", "[::1]:5353"}
	defaultAllow  = []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10"}
)

// ptr returns a pointer to a fresh copy of v.
func ptr[T any](v T) *T { return &v }

// DefaultConfig is the configuration with no file: every catalog endpoint is
// logged, telemetry is sinkholed (protected endpoints never are), everything
// else is forwarded and not logged.
func DefaultConfig() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	if len(c.Listen) == 0 {
		c.Listen = slices.Clone(defaultListen)
	}
	if c.HTTP == nil {
		c.HTTP = ptr(DefaultHTTP)
	}
	if c.Access.Allow == nil {
		for _, s := range defaultAllow {
			c.Access.Allow = append(c.Access.Allow, Prefix{netip.MustParsePrefix(s)})
		}
	}
	if c.Access.RateLimit == nil {
		c.Access.RateLimit = ptr(DefaultRateLimit)
	}
	if c.Sinkhole.Mode == "" {
		c.Sinkhole.Mode = SinkholeNullIP
	}
	if c.Sinkhole.TTL == 0 {
		c.Sinkhole.TTL = 60 * time.Second
	}
	if c.Cache.Size == nil {
		c.Cache.Size = ptr(DefaultCacheSize)
	}
	if c.Cache.MaxTTL == 0 {
		c.Cache.MaxTTL = 24 * time.Hour
	}
	if c.Catalog.Builtin == nil {
		t := true
		c.Catalog.Builtin = &t
	}
	if c.QueryLog.Output == "" {
		c.QueryLog.Output = "stdout"
	}
	d := &c.Policy.Default
	if d.Actions.Map == nil {
		d.Actions.Map = map[endpoints.Category]Action{"telemetry": Sinkhole, "*": Log}
	}
	if _, ok := d.Actions.Map["*"]; !ok {
		d.Actions.Map["*"] = Log
	}
	// Undocumented Microsoft hosts are logged unless the config says
	// otherwise: "*" does not reach them, since sinkholing every
	// unexplained Microsoft host would break Windows in ways no document
	// warns of. Groups inherit this as any other action.
	if _, ok := d.Actions.Map[endpoints.Undocumented]; !ok {
		d.Actions.Map[endpoints.Undocumented] = Log
	}
	if d.Unlisted == nil {
		allow := Allow
		d.Unlisted = &allow
	}
	for _, g := range append([]*GroupConfig{d}, c.groupPtrs()...) {
		if g.Edition == nil {
			all := endpoints.AllEditions
			g.Edition = &all
		}
		if g.Windows == nil {
			all := endpoints.AllVersions
			g.Windows = &all
		}
		if g == d {
			continue
		}
		// A group inherits what it does not say from the default group:
		// each category's action (its own keys winning, "*" included) and
		// the action for unlisted names. A group written only to give some
		// machines another edition keeps sinkholing telemetry.
		own := g.Actions.Map
		g.Actions.Map = maps.Clone(d.Actions.Map)
		maps.Copy(g.Actions.Map, own)
		if g.Unlisted == nil {
			g.Unlisted = d.Unlisted
		}
	}
}

func (c *Config) groupPtrs() []*GroupConfig {
	var gs []*GroupConfig
	for i := range c.Policy.Groups {
		gs = append(gs, &c.Policy.Groups[i])
	}
	return gs
}

// LoadConfig reads and checks a config file. It reports every error it
// finds, each with file, line and column, as ConfigErrors. It does not read
// the documents and lists the file names: Compile does.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig is LoadConfig for a file's contents.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{File: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, ConfigErrors{yamlSyntaxError(path, err)}
	}
	d := &decoder{file: path, badItems: map[string]bool{}}
	if len(doc.Content) > 0 {
		d.decode(doc.Content[0], c, "")
	}
	c.check(d)
	if len(d.errs) > 0 {
		slices.SortStableFunc(d.errs, func(a, b ConfigError) int {
			if a.Line != b.Line {
				return a.Line - b.Line
			}
			return a.Col - b.Col
		})
		return nil, d.errs
	}
	c.applyDefaults()
	return c, nil
}

// yamlSyntaxError turns "yaml: line 3: mapping values are not allowed" into a
// ConfigError at line 3.
func yamlSyntaxError(file string, err error) ConfigError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return ConfigError{File: file, Line: line, Msg: "not valid YAML: " + msg}
}

// check finds the errors that need more than one key to see.
func (c *Config) check(d *decoder) {
	names := map[string]Pos{}
	for i, g := range c.groupPtrs() {
		np, ok := g.KeyPos["name"]
		if !ok {
			np = g.Pos
		}
		switch {
		case g.Name == "":
			d.errAt(np, "group without a name")
		case g.Name == "default":
			d.errAt(np, `group name "default" is taken by policy.default`)
		default:
			if first, dup := names[g.Name]; dup {
				d.errAt(np, fmt.Sprintf("duplicate group name %q (first at line %d)", g.Name, first.Line))
			} else {
				names[g.Name] = np
			}
		}
		// An empty clients list is an error of its own, unless its items
		// were each reported already.
		if _, ok := g.KeyPos["clients"]; !ok || len(g.Clients) == 0 && !d.badItems[fmt.Sprintf("policy.groups[%d].clients", i)] {
			d.errAt(g.Pos, fmt.Sprintf("group %q has no clients", g.Name))
		}
	}
	if p, ok := c.Policy.Default.KeyPos["clients"]; ok {
		d.errAt(p, "policy.default takes no clients: it is for every client no group names")
	}
	if p, ok := c.Policy.Default.KeyPos["name"]; ok {
		d.errAt(p, "policy.default takes no name")
	}
	for _, g := range append([]*GroupConfig{&c.Policy.Default}, c.groupPtrs()...) {
		g.check(d)
	}
	_, v4 := c.Sinkhole.KeyPos["ipv4"]
	_, v6 := c.Sinkhole.KeyPos["ipv6"]
	if c.Sinkhole.Mode == SinkholeIP && !v4 && !v6 {
		d.errAt(c.Sinkhole.Pos, "sinkhole mode ip needs ipv4:, ipv6: or both")
	}
	for i, a := range c.Listen {
		if err := checkHostPort(a); err != nil {
			d.errAt(d.items[fmt.Sprintf("listen[%d]", i)], fmt.Sprintf("listen: %v", err))
		}
	}
	for i, u := range c.Upstreams {
		if err := CheckUpstream(u); err != nil {
			d.errAt(d.items[fmt.Sprintf("upstreams[%d]", i)], fmt.Sprintf("upstreams: %v", err))
		}
	}
	if c.HTTP != nil && *c.HTTP != "" {
		if err := checkHostPort(*c.HTTP); err != nil {
			d.errAt(c.KeyPos["http"], fmt.Sprintf("http: %v", err))
		}
	}
	if c.Cache.MaxTTL != 0 && c.Cache.MinTTL > c.Cache.MaxTTL {
		d.errAt(c.Cache.Pos, "cache min_ttl is more than max_ttl")
	}
	if c.Cache.Size != nil && *c.Cache.Size < 0 {
		d.errAt(c.Cache.Pos, "cache size is negative")
	}
}

// check validates a group's categories and patterns.
func (g *GroupConfig) check(d *decoder) {
	own := map[endpoints.Category]bool{}
	for i := range g.Lists {
		l := &g.Lists[i]
		if l.Category == "" {
			d.errAt(l.Pos, "list without a category")
		} else {
			own[endpoints.Category(strings.ToLower(l.Category))] = true
		}
		if (l.File == "") == (len(l.Patterns) == 0) {
			d.errAt(l.Pos, "a list takes either file: or patterns:")
		}
	}
	for c, p := range g.Actions.Pos {
		if c == "*" || own[c] {
			continue
		}
		if _, ok := c.Info(); !ok {
			d.errAt(p, fmt.Sprintf("unknown category %q (valid: %s, or a category of this group's lists, or \"*\")", c, endpoints.CategoryNames()))
		}
	}
}

// decoder walks the YAML tree into the config types, collecting every error
// with its place: unknown keys (with the valid ones), values of the wrong
// kind, bad words.
type decoder struct {
	file string
	errs ConfigErrors
	// badItems names the lists (by place, "policy.groups[1].clients") with
	// an item that was reported as an error.
	badItems map[string]bool
	// items is where each item of a list of strings was written, by
	// path: "upstreams[1]".
	items map[string]Pos
}

func (d *decoder) errAt(p Pos, msg string) {
	d.errs = append(d.errs, ConfigError{File: d.file, Line: p.Line, Col: p.Col, Msg: msg})
}

func (d *decoder) err(n *yaml.Node, format string, args ...any) {
	d.errAt(Pos{n.Line, n.Column}, fmt.Sprintf(format, args...))
}

func pos(n *yaml.Node) Pos { return Pos{n.Line, n.Column} }

// keys returns a mapping's key and value nodes, reporting duplicate keys.
func (d *decoder) keys(n *yaml.Node, where string) [][2]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		d.err(n, "%s: want a mapping of keys to values", where)
		return nil
	}
	seen := map[string]bool{}
	var kv [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			d.err(k, "%s: key %q given twice", where, k.Value)
			continue
		}
		seen[k.Value] = true
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		kv = append(kv, [2]*yaml.Node{k, v})
	}
	return kv
}

// decode reads n into v, one of the config types.
func (d *decoder) decode(n *yaml.Node, v any, where string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch v := v.(type) {
	case *Config:
		v.KeyPos = map[string]Pos{}
		d.fields(n, where, map[string]any{
			"listen": &v.Listen, "upstreams": &v.Upstreams, "http": &v.HTTP, "http_token": &v.HTTPToken,
			"access": &v.Access, "sinkhole": &v.Sinkhole, "cache": &v.Cache, "catalog": &v.Catalog,
			"policy": &v.Policy, "querylog": &v.QueryLog,
		}, v.KeyPos)
	case *AccessConfig:
		d.fields(n, where, map[string]any{"allow": &v.Allow, "rate_limit": &v.RateLimit}, nil)
	case *SinkholeConfig:
		v.Pos, v.KeyPos = pos(n), map[string]Pos{}
		d.fields(n, where, map[string]any{"mode": &v.Mode, "ttl": &v.TTL, "ipv4": &v.IPv4, "ipv6": &v.IPv6}, v.KeyPos)
	case *CacheConfig:
		v.Pos = pos(n)
		d.fields(n, where, map[string]any{"size": &v.Size, "min_ttl": &v.MinTTL, "max_ttl": &v.MaxTTL}, nil)
	case *CatalogConfig:
		v.Pos = pos(n)
		d.fields(n, where, map[string]any{"builtin": &v.Builtin, "docs": &v.Docs}, nil)
	case *PolicyConfig:
		d.fields(n, where, map[string]any{"default": &v.Default, "groups": &v.Groups}, nil)
	case *GroupConfig:
		v.Pos, v.KeyPos = pos(n), map[string]Pos{}
		d.fields(n, where, map[string]any{
			"name": &v.Name, "clients": &v.Clients, "edition": &v.Edition, "windows": &v.Windows, "actions": &v.Actions,
			"unlisted": &v.Unlisted, "overrides": &v.Overrides, "lists": &v.Lists,
		}, v.KeyPos)
	case *ListConfig:
		v.Pos, v.KeyPos = pos(n), map[string]Pos{}
		d.fields(n, where, map[string]any{"category": &v.Category, "file": &v.File, "patterns": &v.Patterns}, v.KeyPos)
	case *QueryLogConfig:
		d.fields(n, where, map[string]any{"output": &v.Output, "all_queries": &v.AllQueries, "anonymize_clients": &v.AnonymizeClients}, nil)
	case *Actions:
		v.Map, v.Pos = map[endpoints.Category]Action{}, map[endpoints.Category]Pos{}
		for _, kv := range d.keys(n, where) {
			c := endpoints.Category(strings.ToLower(kv[0].Value))
			var a Action
			if d.scalar(kv[1], &a, where+"."+kv[0].Value) {
				v.Map[c], v.Pos[c] = a, pos(kv[0])
			}
		}
	case *Overrides:
		v.Map, v.Pos = map[Action][]string{}, map[string]Pos{}
		for _, kv := range d.keys(n, where) {
			var a Action
			if !d.scalar(kv[0], &a, where) {
				continue
			}
			var pats []string
			d.decode(kv[1], &pats, where+"."+kv[0].Value)
			for i, p := range pats {
				np, err := endpoints.NormalizePattern(p)
				at := kv[1]
				if kv[1].Kind == yaml.SequenceNode && i < len(kv[1].Content) {
					at = kv[1].Content[i]
				}
				if err != nil {
					d.err(at, "%s: %v", where+"."+kv[0].Value, err)
					continue
				}
				v.Map[a] = append(v.Map[a], np)
				v.Pos[np] = pos(at)
			}
		}
	case *[]GroupConfig:
		d.seq(n, where, func(item *yaml.Node, i int) {
			var g GroupConfig
			d.decode(item, &g, fmt.Sprintf("%s[%d]", where, i))
			*v = append(*v, g)
		})
	case *[]ListConfig:
		d.seq(n, where, func(item *yaml.Node, i int) {
			var l ListConfig
			d.decode(item, &l, fmt.Sprintf("%s[%d]", where, i))
			*v = append(*v, l)
		})
	case *[]Prefix:
		*v = []Prefix{}
		d.seq(n, where, func(item *yaml.Node, _ int) {
			var p Prefix
			if d.scalar(item, &p, where) {
				*v = append(*v, p)
			} else {
				d.badItems[where] = true
			}
		})
	case *[]string:
		d.seq(n, where, func(item *yaml.Node, i int) {
			var s string
			if d.scalar(item, &s, where) {
				*v = append(*v, s)
				if d.items == nil {
					d.items = map[string]Pos{}
				}
				d.items[fmt.Sprintf("%s[%d]", where, i)] = pos(item)
			}
		})
	case **string:
		var s string
		if d.scalar(n, &s, where) {
			*v = &s
		}
	case **int:
		var i int
		if d.scalar(n, &i, where) {
			*v = &i
		}
	case **bool:
		var b bool
		if d.scalar(n, &b, where) {
			*v = &b
		}
	case **Action:
		var a Action
		if d.scalar(n, &a, where) {
			*v = &a
		}
	case **endpoints.Edition:
		var e endpoints.Edition
		if d.scalar(n, &e, where) {
			*v = &e
		}
	case **endpoints.Version:
		// One version, a range or a list; a bare 11 is read as the
		// word it is, not as a number.
		var all endpoints.Version
		ok := true
		d.seq(n, where, func(item *yaml.Node, _ int) {
			if item.Kind != yaml.ScalarNode {
				d.err(item, "%s: want a Windows version", where)
				ok = false
				return
			}
			ver, err := endpoints.ParseVersion(item.Value)
			if err != nil {
				d.err(item, "%s: %v", where, err)
				ok = false
				return
			}
			all |= ver
		})
		switch {
		case ok && all == 0:
			d.err(n, "%s: no Windows version given (valid: %s)", where, endpoints.VersionWords())
		case ok:
			*v = &all
		}
	default:
		d.scalar(n, v, where)
	}
}

// fields decodes a mapping into the struct fields named by key, and reports
// unknown keys with the valid ones.
func (d *decoder) fields(n *yaml.Node, where string, fields map[string]any, keyPos map[string]Pos) {
	var valid []string
	for k := range fields {
		valid = append(valid, k)
	}
	slices.Sort(valid)
	for _, kv := range d.keys(n, sectionName(where)) {
		k, v := kv[0], kv[1]
		f, ok := fields[k.Value]
		if !ok {
			d.err(k, "unknown key %q in %s (valid: %s)", k.Value, sectionName(where), strings.Join(valid, ", "))
			continue
		}
		if keyPos != nil {
			keyPos[k.Value] = pos(k)
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue // "key:" with no value keeps the default
		}
		d.decode(v, f, join(where, k.Value))
	}
}

func sectionName(where string) string {
	if where == "" {
		return "the top level"
	}
	return where
}

func join(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}

// seq decodes a sequence item by item; a single scalar counts as a list of one.
func (d *decoder) seq(n *yaml.Node, where string, item func(*yaml.Node, int)) {
	switch n.Kind {
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if c.Kind == yaml.AliasNode {
				c = c.Alias
			}
			item(c, i)
		}
	case yaml.ScalarNode:
		item(n, 0)
	default:
		d.err(n, "%s: want a list", where)
	}
}

// scalar decodes a scalar node with yaml's own rules (numbers, booleans,
// durations such as 60s, and types with UnmarshalText), reporting a bad value
// at its place.
func (d *decoder) scalar(n *yaml.Node, v any, where string) bool {
	if n.Kind != yaml.ScalarNode {
		d.err(n, "%s: want a single value", where)
		return false
	}
	if err := n.Decode(v); err != nil {
		msg := err.Error()
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			msg = te.Errors[0]
			if i := strings.Index(msg, ": "); strings.HasPrefix(msg, "line ") && i > 0 {
				msg = msg[i+2:]
			}
		}
		d.err(n, "%s: %s", where, msg)
		return false
	}
	return true
}

// resolve makes a path from the config file relative to its directory.
func (c *Config) resolve(path string) string {
	if path == "" || filepath.IsAbs(path) || c.File == "" {
		return path
	}
	return filepath.Join(filepath.Dir(c.File), path)
}

// checkHostPort accepts "host:port" with an IP address or empty host.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (like 127.0.0.1:53 or [::1]:53)", s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: %q is not an IP address", s, host)
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: %q is not a port", s, port)
	}
	return nil
}

// UpstreamAddr is an upstream as written, read: the one reading of the
// syntax, which the config check and the resolver share.
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
	if err := checkHostPort(a.Addr); err != nil {
		return UpstreamAddr{}, fmt.Errorf("upstream %v", err)
	}
	if a.Scheme == "tls" && a.ServerName == "" {
		a.ServerName, _, _ = net.SplitHostPort(a.Addr)
	}
	return a, nil
}

// CheckUpstream reports whether u is an upstream as ParseUpstreamAddr reads
// them.
func CheckUpstream(u string) error {
	_, err := ParseUpstreamAddr(u)
	return err
}

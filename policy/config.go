package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/config"
)

// Config is the policy's part of the config file: the catalog: section
// (which documents make the catalog) and the policy: section (the default
// group and the client groups). The file's other sections belong to the
// packages that use them; internal/configfile puts them together.
type Config struct {
	Catalog CatalogConfig `yaml:"catalog"`
	Rules   Rules         `yaml:"policy"`
}

// CatalogConfig says which endpoint documents make the catalog.
type CatalogConfig struct {
	Builtin *bool    `yaml:"builtin"`
	Docs    []string `yaml:"docs"`
}

// Rules are the default group and the client groups.
type Rules struct {
	Default GroupConfig   `yaml:"default"`
	Groups  []GroupConfig `yaml:"groups"`
}

// GroupConfig is one client group as written. The default group has no
// name and no clients.
type GroupConfig struct {
	Name    string             `yaml:"name"`
	Clients []Client           `yaml:"clients"`
	Edition *endpoints.Edition `yaml:"edition"`
	// Windows are the Windows versions of the group's machines: one
	// ("11"), a list, or a range ("10-1909..11"); all when not given.
	Windows   *Versions    `yaml:"windows"`
	Actions   Actions      `yaml:"actions"`
	Unlisted  *Action      `yaml:"unlisted"`
	Overrides Overrides    `yaml:"overrides"`
	Lists     []ListConfig `yaml:"lists"`
}

// ListConfig adds user patterns under a category, from a file or inline.
type ListConfig struct {
	Category string   `yaml:"category"`
	File     string   `yaml:"file"`
	Patterns []string `yaml:"patterns"`
}

// Actions maps categories ("*" for the rest) to actions.
type Actions map[endpoints.Category]Action

// Overrides lists patterns per action; they win over every category action.
type Overrides map[Action][]string

// Versions are the Windows versions a group's machines run.
type Versions endpoints.Version

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

// Client is one entry of a group's clients: an address or a network, as
// Prefix reads it ("192.168.1.23", "192.168.1.64/28"), or a mapping that
// also names one machine ({client: 192.168.1.20, name: kids-pc}). The name
// is shown beside the address in the query log, on the page, in the API and
// in the history (internal/clientnames); it decides nothing.
type Client struct {
	netip.Prefix
	Name string
}

// clientEntry is the mapping form of a Client, as written.
type clientEntry struct {
	Client *Prefix `yaml:"client"`
	Name   string  `yaml:"name"`
}

// UnmarshalConfig reads an address or network, or a mapping of client:
// and name:. The name is checked with the rest of the policy (Check).
func (c *Client) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.MappingNode {
		var p Prefix
		if d.Scalar(n, &p, path) {
			c.Prefix = p.Prefix
		}
		return
	}
	var e clientEntry
	d.Decode(n, &e, path)
	switch {
	case e.Client != nil:
		c.Prefix = e.Client.Prefix
	case !hasValue(n, "client"): // a bad value was reported as it was read
		d.Errorf(n, "%s: an entry with a name needs client: (its address), such as {client: 192.168.1.20, name: kids-pc}", path)
	}
	c.Name = strings.TrimSuffix(e.Name, ".")
}

// hasValue reports whether the mapping n gives the key k a value.
func hasValue(n *yaml.Node, k string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == k {
			return n.Content[i+1].Tag != "!!null"
		}
	}
	return false
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

// UnmarshalConfig reads categories to actions; each category's key is
// kept at path.category (lower case) for the check of unknown categories.
func (as *Actions) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	*as = Actions{}
	for _, kv := range d.Keys(n, path) {
		c := endpoints.Category(strings.ToLower(kv[0].Value))
		var a Action
		if d.Scalar(kv[1], &a, path+"."+kv[0].Value) {
			(*as)[c] = a
			d.MarkKey(path+"."+string(c), kv[0])
		}
	}
}

// UnmarshalConfig reads actions to lists of patterns, normalized; each
// pattern's place is kept at path.pattern.
func (o *Overrides) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	*o = Overrides{}
	for _, kv := range d.Keys(n, path) {
		var a Action
		if !d.Scalar(kv[0], &a, path) {
			continue
		}
		where := path + "." + kv[0].Value
		d.Seq(kv[1], where, func(item *yaml.Node, _ int) {
			var p string
			if !d.Scalar(item, &p, where) {
				return
			}
			np, err := endpoints.NormalizePattern(p)
			if err != nil {
				d.Errorf(item, "%s: %v", where, err)
				return
			}
			(*o)[a] = append((*o)[a], np)
			d.MarkValue(path+"."+np, item)
		})
	}
}

// UnmarshalConfig reads one version, a range or a list; a bare 11 is read
// as the word it is, not as a number.
func (v *Versions) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	var all endpoints.Version
	ok := true
	d.Seq(n, path, func(item *yaml.Node, _ int) {
		if item.Kind != yaml.ScalarNode {
			d.Errorf(item, "%s: want a Windows version", path)
			ok = false
			return
		}
		ver, err := endpoints.ParseVersion(item.Value)
		if err != nil {
			d.Errorf(item, "%s: %v", path, err)
			ok = false
			return
		}
		all |= ver
	})
	if ok && all == 0 {
		d.Errorf(n, "%s: no Windows version given (valid: %s)", path, endpoints.VersionWords())
	}
	*v = Versions(all)
}

// DefaultConfig is the policy with no file: every catalog endpoint is
// logged, telemetry is sinkholed (protected endpoints never are),
// everything else is forwarded and not logged.
func DefaultConfig() *Config {
	c := &Config{}
	c.SetDefaults()
	return c
}

// SetDefaults fills in what the file left out. A group inherits what it
// does not say from the default group.
func (c *Config) SetDefaults() {
	if c.Catalog.Builtin == nil {
		t := true
		c.Catalog.Builtin = &t
	}
	d := &c.Rules.Default
	if d.Actions == nil {
		d.Actions = Actions{"telemetry": Sinkhole, "*": Log}
	}
	if _, ok := d.Actions["*"]; !ok {
		d.Actions["*"] = Log
	}
	// Undocumented Microsoft hosts are logged unless the config says
	// otherwise: "*" does not reach them, since sinkholing every
	// unexplained Microsoft host would break Windows in ways no document
	// warns of. Groups inherit this as any other action.
	if _, ok := d.Actions[endpoints.Undocumented]; !ok {
		d.Actions[endpoints.Undocumented] = Log
	}
	if d.Unlisted == nil {
		allow := Allow
		d.Unlisted = &allow
	}
	for _, g := range c.groups() {
		if g.Edition == nil {
			all := endpoints.AllEditions
			g.Edition = &all
		}
		if g.Windows == nil {
			all := Versions(endpoints.AllVersions)
			g.Windows = &all
		}
		if g == d {
			continue
		}
		// A group inherits what it does not say from the default group:
		// each category's action (its own keys winning, "*" included) and
		// the action for unlisted names. A group written only to give some
		// machines another edition keeps sinkholing telemetry.
		own := g.Actions
		g.Actions = maps.Clone(d.Actions)
		maps.Copy(g.Actions, own)
		if g.Unlisted == nil {
			g.Unlisted = d.Unlisted
		}
	}
}

// groups returns the default group and then the client groups.
func (c *Config) groups() []*GroupConfig {
	gs := []*GroupConfig{&c.Rules.Default}
	for i := range c.Rules.Groups {
		gs = append(gs, &c.Rules.Groups[i])
	}
	return gs
}

// groupPath is where group i of groups() sits in the file.
func groupPath(i int) string {
	if i == 0 {
		return "policy.default"
	}
	return fmt.Sprintf("policy.groups[%d]", i-1)
}

// Check reports every problem of the policy that needs more than one key
// to see (each key's own value was checked as it was read). It is run
// before SetDefaults.
func (c *Config) Check(r *config.Report) {
	src := r.Source()
	names := map[string]config.Pos{}
	named := map[netip.Addr]namedAt{}
	for i, g := range c.groups() {
		gp := groupPath(i)
		if i == 0 {
			if src.Has(gp + ".clients") {
				r.Key(gp+".clients", "policy.default takes no clients: it is for every client no group names")
			}
			if src.Has(gp + ".name") {
				r.Key(gp+".name", "policy.default takes no name")
			}
			g.check(r, gp)
			continue
		}
		np := src.KeyOr(gp+".name", gp)
		switch {
		case g.Name == "":
			r.At(np, "group without a name")
		case g.Name == "default":
			r.At(np, `group name "default" is taken by policy.default`)
		default:
			if first, dup := names[g.Name]; dup {
				r.At(np, "duplicate group name %q (first at line %d)", g.Name, first.Line)
			} else {
				names[g.Name] = np
			}
		}
		// An empty clients list is an error of its own, unless its items
		// were each reported already.
		if len(g.Clients) == 0 && !src.Failed(gp+".clients") {
			r.Value(gp, "group %q has no clients", g.Name)
		}
		g.check(r, gp)
		g.checkNames(r, gp, named)
	}
}

// namedAt is where a client's name was first written.
type namedAt struct {
	name string
	pos  config.Pos
}

// checkNames reports a machine name that is not a host name, one given to
// a network rather than to one address, and an address named twice with
// different names (named holds the names of the groups before).
func (g *GroupConfig) checkNames(r *config.Report, gp string, named map[netip.Addr]namedAt) {
	src := r.Source()
	for i, c := range g.Clients {
		if c.Name == "" {
			continue
		}
		cp := fmt.Sprintf("%s.clients[%d]", gp, i)
		if err := config.CheckHostName(c.Name); err != nil {
			r.Value(cp+".name", "%s: %v", cp, err)
			continue
		}
		if !c.IsValid() {
			continue // reported as it was read
		}
		if !c.IsSingleIP() {
			r.Value(cp+".client", "%s: a name is for one machine, and %s is a network: name its machines one by one", cp, c.Prefix)
			continue
		}
		a := c.Addr()
		if first, ok := named[a]; ok && first.name != c.Name {
			r.Value(cp+".name", "%s is named %q here and %q at line %d: one name per address", a, c.Name, first.name, first.pos.Line)
			continue
		} else if !ok {
			named[a] = namedAt{c.Name, src.Value(cp + ".name")}
		}
	}
}

// ClientNames are the machine names the config gives, by address.
func (c *Config) ClientNames() map[netip.Addr]string {
	names := map[netip.Addr]string{}
	for _, g := range c.Rules.Groups {
		for _, cl := range g.Clients {
			if cl.Name != "" && cl.IsValid() && cl.IsSingleIP() {
				if _, ok := names[cl.Addr()]; !ok {
					names[cl.Addr()] = cl.Name
				}
			}
		}
	}
	return names
}

// check validates a group's categories and lists.
func (g *GroupConfig) check(r *config.Report, gp string) {
	own := map[endpoints.Category]bool{}
	for i, l := range g.Lists {
		lp := fmt.Sprintf("%s.lists[%d]", gp, i)
		if l.Category == "" {
			r.Value(lp, "list without a category")
		} else {
			own[endpoints.Category(strings.ToLower(l.Category))] = true
		}
		if (l.File == "") == (len(l.Patterns) == 0) {
			r.Value(lp, "a list takes either file: or patterns:")
		}
	}
	for c := range g.Actions {
		if c == "*" || own[c] {
			continue
		}
		if _, ok := c.Info(); !ok {
			r.Key(gp+".actions."+string(c), "unknown category %q (valid: %s, or a category of this group's lists, or \"*\")", c, endpoints.CategoryNames())
		}
	}
}

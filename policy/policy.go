package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/phonehome/phonehome/endpoints"
)

// Policy answers, for one client and one name, what to do and why. It is
// built whole by Compile and never changed, so the resolver can swap a new
// one in with one atomic store on reload; it is safe for concurrent use.
type Policy struct {
	Default *Group
	Groups  []*Group // in config order
	Catalog *endpoints.Catalog
	clients clientTable
}

// Group is a compiled client group.
type Group struct {
	Name     string
	Edition  endpoints.Edition
	Windows  endpoints.Version
	Clients  []netip.Prefix
	Unlisted Action
	// Patterns counts what the group's matcher holds.
	Patterns int

	actions   map[endpoints.Category]Action // with "*"
	matcher   *Matcher                      // the catalog for Edition, and the group's lists
	overrides *Matcher
}

// Action returns what the group does with endpoints of category c.
func (g *Group) Action(c endpoints.Category) Action {
	if a, ok := g.actions[c]; ok {
		return a
	}
	return g.actions["*"]
}

// ActionsString spells the group's effective actions, inherited ones
// included, as validate prints them: "telemetry=sinkhole *=log", the
// categories sorted and "*" last.
func (g *Group) ActionsString() string {
	var cats []string
	for c := range g.actions {
		if c != "*" {
			cats = append(cats, string(c))
		}
	}
	slices.Sort(cats)
	var parts []string
	for _, c := range append(cats, "*") {
		parts = append(parts, c+"="+g.actions[endpoints.Category(c)].String())
	}
	return strings.Join(parts, " ")
}

// Decision is what to do with one query, and why.
type Decision struct {
	Action Action
	Group  *Group
	// Match is the most specific catalog or list pattern for the name; its
	// Rule is nil for a name outside the catalog and the group's lists.
	Match Match
	// Override is the override pattern that decided, if one did.
	Override Match
	// Protected is set when the category said sinkhole and protection made
	// it log instead.
	Protected bool
	// CNAME is the name of the answer's CNAME chain whose pattern decided
	// (see DecideChain); "" when the question name decided.
	CNAME string
	// Shield is the rule of the protected endpoint, the question's or one
	// along the chain, that kept a chain name from sinkholing the answer
	// (Action log), or that a pattern the user wrote sinkholed through
	// (Action sinkhole).
	Shield *Rule
}

// Category is the matched pattern's category, or "unlisted".
func (d Decision) Category() endpoints.Category {
	if d.Match.Rule == nil {
		return "unlisted"
	}
	return d.Match.Rule.Category
}

// Decide decides for a query of name from client. It does not allocate.
func (p *Policy) Decide(client netip.Addr, name string) Decision {
	g := p.clients.lookup(client)
	if g == nil {
		g = p.Default
	}
	// The rule's action was resolved for this group when it was compiled.
	return g.decide(name)
}

// BlockedText is the Extended DNS Error text of a sinkhole answer:
// "phonehome: telemetry v10.events.data.microsoft.com (Windows 10-1809..11)".
// A catalog entry's was spelled when the policy was compiled; a list
// line's or an override's is spelled here.
func (d Decision) BlockedText() string {
	switch {
	case d.Match.Rule != nil && d.Match.Rule.Answer != "":
		return d.Match.Rule.Answer + d.chainPhrase()
	case d.Override.Rule != nil && d.Match.Rule == nil:
		return "phonehome: override " + d.Override.Pattern() + d.chainPhrase()
	}
	return "phonehome: " + string(d.Category()) + " " + d.Match.Pattern() + d.chainPhrase()
}

// Reason says in one sentence why the decision was taken, as `phonehome
// check` prints it.
func (d Decision) Reason() string {
	verb := map[Action]string{Allow: "allowed", Log: "logged", Sinkhole: "sinkholed"}[d.Action]
	m := d.Match
	what := ""
	if m.Rule != nil {
		what = fmt.Sprintf("%s endpoint %s", m.Rule.Category, m.Pattern())
		if e := m.Rule.Entry; e != nil {
			switch e.Kind {
			case endpoints.Family:
				what = fmt.Sprintf("%s endpoint %s, a family of documented names (%s)", m.Rule.Category, m.Pattern(), strings.Join(e.Members, ", "))
			case endpoints.FirstParty:
				what = fmt.Sprintf("undocumented Microsoft host: under Microsoft's domain %s, and no Microsoft document lists it", strings.TrimPrefix(e.Pattern, "*."))
			default:
				what += ", documented for " + strings.Join(e.Editions.Names(), "/") + " on " + versionsPhrase(m.Rule.Versions)
			}
		} else if m.Rule.Source != "" {
			what += ", from " + m.Rule.Source
		}
	}
	if d.CNAME != "" && d.Override.Rule == nil {
		what += ", reached through CNAME " + trimDot(d.CNAME)
	}
	switch {
	case d.CNAME != "" && d.Shield != nil && d.Action != Sinkhole:
		return fmt.Sprintf("logged, not sinkholed: the answer's CNAME chain reaches %s (%s), but %s is protected — %s",
			trimDot(d.CNAME), what, d.Shield.Entry.Pattern, d.Shield.Entry.Reason)
	case d.CNAME != "" && d.Shield != nil:
		if d.Override.Rule != nil {
			what = fmt.Sprintf("group %s overrides %s to sinkhole, reached through CNAME %s", d.Group.Name, d.Override.Pattern(), trimDot(d.CNAME))
		}
		return fmt.Sprintf("sinkholed: %s, a pattern of your own, which wins over the protection of %s along the chain; this breaks Windows: %s",
			what, d.Shield.Entry.Pattern, d.Shield.Entry.Reason)
	case d.Override.Rule != nil:
		s := fmt.Sprintf("%s: group %s overrides %s to %s", verb, d.Group.Name, d.Override.Pattern(), d.Action)
		if d.CNAME != "" {
			s += ", reached through CNAME " + trimDot(d.CNAME)
		}
		if m.Rule != nil {
			s += " (" + what + ")"
		}
		if m.Rule != nil && m.Rule.Protected() && d.Action == Sinkhole {
			s += "; this breaks Windows: " + m.Rule.Entry.Reason
		}
		return s
	case d.Protected:
		return fmt.Sprintf("logged, not sinkholed: %s is protected — %s", m.Pattern(), m.Rule.Entry.Reason)
	case m.Rule == nil:
		return fmt.Sprintf("%s: not a documented Windows endpoint nor in group %s's lists, and the group's action for unlisted names is %s", verb, d.Group.Name, d.Action)
	}
	return fmt.Sprintf("%s: %s", verb, what)
}

// clientTable finds a client's group by the longest matching prefix.
type clientTable struct {
	lens4, lens6 []int // prefix lengths in use, longest first
	groups       map[netip.Prefix]*Group
}

func (t *clientTable) add(p netip.Prefix, g *Group) {
	if t.groups == nil {
		t.groups = map[netip.Prefix]*Group{}
	}
	t.groups[p] = g
	lens := &t.lens6
	if p.Addr().Is4() {
		lens = &t.lens4
	}
	if !slices.Contains(*lens, p.Bits()) {
		*lens = append(*lens, p.Bits())
		slices.Sort(*lens)
		slices.Reverse(*lens)
	}
}

func (t *clientTable) lookup(a netip.Addr) *Group {
	a = a.WithZone("").Unmap()
	lens := t.lens6
	if a.Is4() {
		lens = t.lens4
	}
	for _, l := range lens {
		p, err := a.Prefix(l)
		if err != nil {
			continue
		}
		if g, ok := t.groups[p]; ok {
			return g
		}
	}
	return nil
}

// versionsPhrase says which Windows versions a rule's Versions names.
func versionsPhrase(v string) string {
	if v == "all" {
		return "every Windows version (10-1709 to 11)"
	}
	return "Windows " + v
}

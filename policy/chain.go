package policy

import (
	"fmt"
	"net/netip"
)

// DecideChain decides a query again once its answer is known, for the
// names the answer's CNAME chain leads to (chain, in order, without the
// question name): Windows endpoints are often aliases of each other, and of
// cloud hosts. q is the question name's own decision for client. It
// returns q when the chain changes nothing; otherwise a decision whose
// CNAME names the chain name that decided and whose Match is that name's:
//
//   - a chain name sinkholed by its category, a list or an override
//     sinkholes the answer, unless the question name or any name of the
//     chain is a protected endpoint: then the answer is logged, and
//     Shield says which endpoint protected it. Only a pattern the user
//     wrote (an override, a list line) sinkholes through protection,
//     wherever it stands in the chain;
//   - an unlisted question whose chain passes through a catalog entry is
//     counted and logged under that entry, as an alias of it;
//   - a chain name that no pattern matches decides nothing (the group's
//     action for unlisted names is for questions, not for the CDN hosts
//     documented endpoints resolve to).
//
// An override of the question name is the user's word for that name, and
// a sinkholed question has no answer to inspect: both return q. It does
// not allocate.
func (p *Policy) DecideChain(client netip.Addr, q Decision, chain []string) Decision {
	if len(chain) == 0 || q.Action == Sinkhole || q.Override.Rule != nil {
		return q
	}
	g := q.Group
	var sink, user, alias Decision
	var shield *Rule
	if q.Match.Rule != nil && q.Match.Rule.Protected() {
		shield = q.Match.Rule
	}
	for _, name := range chain {
		d := g.decide(name)
		if d.Match.Rule == nil && d.Override.Rule == nil {
			continue // unlisted: decides nothing along a chain
		}
		d.CNAME = name
		if shield == nil && d.Match.Rule != nil && d.Match.Rule.Protected() {
			shield = d.Match.Rule
		}
		if sink.Group == nil && (d.Action == Sinkhole || d.Protected) {
			sink = d
		}
		// A pattern the user wrote sinkholes through protection wherever it
		// stands in the chain, even after a name only its category sinkholes.
		if user.Group == nil && d.Action == Sinkhole && d.userWritten() {
			user = d
		}
		if alias.Group == nil && q.Match.Rule == nil && d.Match.Rule != nil && d.Match.Rule.Entry != nil {
			alias = d
		}
	}
	switch {
	case sink.Group != nil && sink.Action == Sinkhole && shield == nil:
		return sink
	case user.Group != nil:
		// Sinkholed through protection: Shield says what it breaks, so
		// that the resolver can say so.
		user.Shield = shield
		return user
	case sink.Group != nil:
		// Protected along the chain: logged, and the reason says why.
		sink.Action, sink.Protected, sink.Shield = Log, true, shield
		return sink
	case alias.Group != nil:
		return alias
	}
	return q
}

// decide is Decide for a client already known to be in g.
func (g *Group) decide(name string) Decision {
	d := Decision{Group: g, Match: g.matcher.Lookup(name)}
	if g.overrides != nil {
		if o := g.overrides.Lookup(name); o.Rule != nil {
			d.Override, d.Action = o, o.Rule.Action
			return d
		}
	}
	if d.Match.Rule == nil {
		d.Action = g.Unlisted
		return d
	}
	d.Action, d.Protected = d.Match.Rule.Action, d.Match.Rule.demoted
	return d
}

// userWritten reports whether the decision comes from a pattern the user
// wrote: an override, or a line of one of the group's lists.
func (d Decision) userWritten() bool {
	return d.Override.Rule != nil || d.Match.Rule != nil && d.Match.Rule.Entry == nil
}

// chainPhrase is what a reason or an answer text adds for a decision that
// came through the CNAME chain.
func (d Decision) chainPhrase() string {
	if d.CNAME == "" {
		return ""
	}
	return fmt.Sprintf(" (through CNAME %s)", trimDot(d.CNAME))
}

func trimDot(s string) string {
	if n := len(s); n > 0 && s[n-1] == '.' {
		return s[:n-1]
	}
	return s
}

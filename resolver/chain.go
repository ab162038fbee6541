package resolver

import (
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/policy"
)

// Chain is the alias chain of a cached answer: the names the question's
// CNAMEs lead to, in order, read once when the answer enters the cache.
// The policy's decision for it is kept per group until a reload brings a
// new policy, so a cache hit on an alias decides nothing again. An answer
// without a CNAME has no Chain and costs nothing.
type Chain struct {
	Names []string
	memo  atomic.Pointer[chainMemo]
}

// chainMemo is what a policy decided for a chain, per group. It is
// replaced, never changed, so readers need no lock.
type chainMemo struct {
	policy    *policy.Policy
	decisions map[*policy.Group]policy.Decision
}

// aliasChain returns the chain of an answer, or nil: from the question
// name, each CNAME's target in turn, at most max names. A CNAME for a name
// off the chain is not followed, and a loop ends the chain; a DNAME counts
// through the CNAME synthesised beside it (RFC 6672).
func aliasChain(m *dns.Msg, max int) *Chain {
	if len(m.Question) != 1 || max <= 0 {
		return nil
	}
	var names []string
	name := m.Question[0].Name
	for len(names) < max {
		next := ""
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = strings.ToLower(dns.Fqdn(c.Target))
				break
			}
		}
		if next == "" || strings.EqualFold(next, m.Question[0].Name) || containsFold(names, next) {
			break
		}
		names = append(names, next)
		name = next
	}
	if len(names) == 0 {
		return nil
	}
	return &Chain{Names: names}
}

func containsFold(names []string, s string) bool {
	for _, n := range names {
		if strings.EqualFold(n, s) {
			return true
		}
	}
	return false
}

// decide returns p's decision for an answer whose question decided q,
// deciding the chain, at most max names of it, only the first time a group
// asks under p. (A reload that changes max brings a new p.)
func (c *Chain) decide(p *policy.Policy, client netip.Addr, q policy.Decision, max int) policy.Decision {
	m := c.memo.Load()
	if m != nil && m.policy == p {
		if d, ok := m.decisions[q.Group]; ok {
			return d
		}
	}
	d := p.DecideChain(client, q, c.Names[:min(len(c.Names), max)])
	next := &chainMemo{policy: p, decisions: map[*policy.Group]policy.Decision{q.Group: d}}
	if m != nil && m.policy == p {
		for g, old := range m.decisions {
			next.decisions[g] = old
		}
	}
	c.memo.Store(next) // a racing store may drop a group's entry: it is decided again
	return d
}

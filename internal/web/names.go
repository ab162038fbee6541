package web

import (
	"context"
	"net/netip"

	"github.com/phonehome/phonehome/internal/clientnames"
)

// WithNames shows machines' names beside their addresses: in /api/clients,
// /api/events and /api/undocumented from names (the config's and the PTR
// lookups'), in the history's answers from the names the history keeps.
func WithNames(n *clientnames.Names) Option {
	return func(a *API) { a.names = n }
}

// naming reports whether names may be shown: not with anonymize_clients,
// whatever names says.
func (a *API) naming() bool {
	return a.names != nil && !a.activity.anonymize.Load()
}

// nameClients fills in the clients' names.
func (a *API) nameClients(cs []ClientCount) []ClientCount {
	if a.naming() {
		for i := range cs {
			cs[i].ClientName = a.names.Name(cs[i].addr)
		}
	}
	return cs
}

// nameEvents fills in the events' clients' names, as they are now.
func (a *API) nameEvents(es []Event) []Event {
	if a.naming() {
		for i := range es {
			if addr := es[i].ClientAddr(); addr.IsValid() {
				es[i].ClientName = a.names.Name(addr)
			}
		}
	}
	return es
}

// nameUndocumented names the machines that asked for undocumented names.
// They are kept as the query log spells them; an anonymized one has the
// shape that is never named (clientnames.Anonymized).
func (a *API) nameUndocumented(u Undocumented) Undocumented {
	if !a.naming() {
		return u
	}
	for i := range u.Hosts {
		h := &u.Hosts[i]
		for _, c := range h.Clients {
			addr, err := netip.ParseAddr(c)
			if err != nil {
				continue
			}
			if name := a.names.Name(addr); name != "" {
				if h.ClientNames == nil {
					h.ClientNames = map[string]string{}
				}
				h.ClientNames[c] = name
			}
		}
	}
	return u
}

// historyNames are the names the history keeps, by client as it spells
// them; none when names are off or clients anonymized (the history then
// empties its table at its next flush), or when they cannot be read: an
// answer without names is better than none.
func (a *API) historyNames(ctx context.Context) map[string]string {
	if !a.naming() || !a.names.On() {
		return nil
	}
	names, err := a.history.Names(ctx)
	if err != nil {
		return nil
	}
	return names
}

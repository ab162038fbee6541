package resolver

import (
	"context"
	"errors"

	"github.com/miekg/dns"
)

// Lookup asks the upstreams a question of phonehome's own, such as the PTR
// lookup that names a client (internal/clientnames): through the running
// forwarder, with its bounds (its per-try and overall timeouts, its limit
// on queries waiting, its backoff), but past the access list, the rate
// limit, the policy, the cache and the observers, since no client asked.
// q's first question is sent as a client's would be (RD, an EDNS0 size of
// 1232, no options). Identical queries in flight, a client's included, go
// upstream once. The answer's ID is q's. Lookup gives up when ctx ends or
// the forwarder is retired or closed.
func (s *Server) Lookup(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if len(q.Question) != 1 {
		return nil, errors.New("lookup: want one question")
	}
	if s.closed.Load() {
		return nil, errors.New("lookup: the server is closed")
	}
	f := s.State().Forwarder
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(f.ctx, cancel)
	defer stop()
	r, err := f.Forward(ctx, upstreamQuery(q))
	if err != nil {
		return nil, err
	}
	r.Id = q.Id
	return r, nil
}

package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Forwarder asks the upstreams in order. One that fails is skipped for a
// backoff period and tried again after it; a query fails only when every
// upstream has failed, within a bounded time.
type Forwarder struct {
	Upstreams           []*Upstream
	TryTimeout, Timeout time.Duration
	Backoff             time.Duration
	Log                 *slog.Logger

	inflight chan struct{} // bounds the queries waiting on upstreams

	// ctx bounds every exchange of the request path; Close cancels it, so
	// queries still waiting when the forwarder is retired or the server
	// shuts down give up at once.
	ctx       context.Context
	stop      context.CancelFunc
	closeOnce sync.Once

	mu      sync.Mutex
	pending map[string]*call // identical queries in flight go upstream once
}

// call is one upstream exchange that several identical queries wait for.
type call struct {
	done chan struct{}
	r    *dns.Msg
	err  error
}

// ErrOverload is returned at once when too many queries wait on upstreams.
var ErrOverload = errors.New("too many queries waiting for upstreams")

// errNoUpstream wraps the last failure when every upstream failed.
type errNoUpstream struct {
	timeout bool
	last    error
}

func (e *errNoUpstream) Error() string { return "every upstream failed: " + e.last.Error() }

// reason is the metrics' word for the failure: timeout, protocol (the
// upstream answered, but not with a DNS answer to the query: an HTTP
// error, say) or network.
func (e *errNoUpstream) reason() string {
	var pe protocolError
	switch {
	case e.timeout:
		return "timeout"
	case errors.As(e.last, &pe):
		return "protocol"
	}
	return "network"
}

// NewForwarder makes a forwarder with the usual bounds: 2 s per try, 5 s in
// all, 30 s of backoff, at most max queries waiting.
func NewForwarder(ups []*Upstream, max int, log *slog.Logger) *Forwarder {
	ctx, stop := context.WithCancel(context.Background())
	for _, u := range ups {
		u.refs.Add(1)
	}
	f := &Forwarder{
		Upstreams: ups, TryTimeout: 2 * time.Second, Timeout: 5 * time.Second, Backoff: 30 * time.Second,
		Log: log, inflight: make(chan struct{}, max), pending: map[string]*call{},
		ctx: ctx, stop: stop,
	}
	f.lookups()
	return f
}

// Forward answers q from the upstreams. key identifies identical queries.
func (f *Forwarder) Forward(ctx context.Context, key string, q *dns.Msg) (*dns.Msg, error) {
	f.mu.Lock()
	if c, ok := f.pending[key]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			if c.r == nil {
				return nil, c.err
			}
			return c.r.Copy(), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case f.inflight <- struct{}{}:
	default:
		f.mu.Unlock()
		return nil, ErrOverload
	}
	c := &call{done: make(chan struct{})}
	f.pending[key] = c
	f.mu.Unlock()

	c.r, c.err = f.try(ctx, q, f.Upstreams)

	f.mu.Lock()
	delete(f.pending, key)
	f.mu.Unlock()
	<-f.inflight
	close(c.done)
	if c.r == nil {
		return nil, c.err
	}
	return c.r.Copy(), nil
}

// try asks each usable upstream of ups (the forwarder's, or those a DoH
// upstream's host is looked up through) in turn; when all are backing off
// it asks them all anyway, since a stale backoff is better than no answer.
func (f *Forwarder) try(ctx context.Context, q *dns.Msg, ups []*Upstream) (*dns.Msg, error) {
	now := time.Now()
	deadline := now.Add(f.Timeout)
	order := make([]*Upstream, 0, len(ups))
	for _, u := range ups {
		if u.healthy(now) {
			order = append(order, u)
		}
	}
	if len(order) == 0 {
		order = ups
	}
	last := &errNoUpstream{last: errors.New("no upstreams")}
	for _, u := range order {
		began := time.Now()
		end := began.Add(f.TryTimeout)
		if end.After(deadline) {
			end = deadline
		}
		r, err := u.exchange(ctx, end, q.Copy())
		if err == nil {
			u.metrics.upstreamAnswered(u, r, time.Since(began))
		}
		if err == nil && (r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused) {
			// The upstream is up but cannot answer this name: try the
			// next one, without backing off from this one.
			last = &errNoUpstream{last: fmt.Errorf("%s answered %s", u.Name, dns.RcodeToString[r.Rcode])}
			continue
		}
		if err == nil {
			f.markUp(u)
			r.Id = q.Id
			return r, nil
		}
		if ctx.Err() != nil {
			// Given up by the caller (or at shutdown): the upstream is
			// not to blame.
			last = &errNoUpstream{last: err}
			break
		}
		var ne net.Error
		last = &errNoUpstream{timeout: errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout(), last: err}
		u.metrics.upstreamFailed(u, last.reason())
		f.markDown(u, err)
		if !time.Now().Before(deadline) {
			break
		}
	}
	return nil, last
}

func (f *Forwarder) markDown(u *Upstream, err error) {
	if u.downUntil.Swap(time.Now().Add(f.Backoff).UnixNano()) != 0 {
		return
	}
	u.metrics.upstreamHealth(u, false)
	if f.Log != nil {
		f.Log.Warn("upstream down", "upstream", u.Name, "err", err, "retry_in", f.Backoff)
	}
}

func (f *Forwarder) markUp(u *Upstream) {
	if u.downUntil.Swap(0) == 0 {
		return
	}
	u.metrics.upstreamHealth(u, true)
	if f.Log != nil {
		f.Log.Info("upstream up", "upstream", u.Name)
	}
}

// Close ends the exchanges still waiting and releases the upstream sockets
// and connections.
func (f *Forwarder) Close() {
	f.closeOnce.Do(func() {
		f.stop()
		for _, u := range f.Upstreams {
			u.release()
		}
	})
}

// Healthy counts the upstreams not backing off.
func (f *Forwarder) Healthy() int {
	n := 0
	now := time.Now()
	for _, u := range f.Upstreams {
		if u.healthy(now) {
			n++
		}
	}
	return n
}

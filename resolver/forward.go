package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Forwarder asks the upstreams in order, the next one as well whenever one
// is slow to answer (a hedge: see try). One that fails, or times out
// downAfter times in a row, is skipped for a backoff period, after which
// one query probes it; a query fails only when every upstream has failed,
// within a bounded time.
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
	pending map[uint64]*call // identical queries in flight go upstream once, by flight.key
	seed    maphash.Seed

	draining atomic.Int32 // races waiting for their slower attempts (race.leave)
}

// call is one upstream exchange that several identical queries wait for.
type call struct {
	flight flight // what it asks
	done   chan struct{}
	ans    upstreamAnswer
	err    error
	shared bool // another query waits for it too (under Forwarder.mu)
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
		Log: log, inflight: make(chan struct{}, max), pending: map[uint64]*call{}, seed: maphash.MakeSeed(),
		ctx: ctx, stop: stop,
	}
	f.lookups()
	return f
}

// Forward answers q from the upstreams. Identical queries in flight (the
// same question, the name in any case, and the same DO and CD bits) go
// upstream once.
func (f *Forwarder) Forward(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	ans, err := f.forward(ctx, q)
	if err != nil {
		return nil, err
	}
	return ans.msg()
}

// forward is Forward that also returns the answer as the upstream sent it,
// when it came over plain UDP, and leaves a plain answer unpacked (see
// upstreamAnswer). An answer's r is the caller's own, and so is a plain
// answer's wire; any other wire is shared.
func (f *Forwarder) forward(ctx context.Context, q *dns.Msg) (upstreamAnswer, error) {
	fl := flightOf(q)
	key := fl.key(f.seed)
	f.mu.Lock()
	c, ok := f.pending[key]
	if ok && c.flight.same(fl) {
		c.shared = true
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.ans.own(c.err, true)
		case <-ctx.Done():
			return upstreamAnswer{}, ctx.Err()
		}
	}
	select {
	case f.inflight <- struct{}{}:
	default:
		f.mu.Unlock()
		return upstreamAnswer{}, ErrOverload
	}
	c = &call{flight: fl, done: make(chan struct{})}
	if !ok { // else another question of the same hash waits: this one goes alone
		f.pending[key] = c
	}
	f.mu.Unlock()

	c.ans, c.err = f.ask(ctx, q, f.Upstreams)

	f.mu.Lock()
	if f.pending[key] == c {
		delete(f.pending, key)
	}
	shared := c.shared // no query joins once the call is out of pending
	f.mu.Unlock()
	<-f.inflight
	close(c.done)
	return c.ans.own(c.err, shared)
}

// own returns the answer for one of the queries that waited for it: a
// copy of r, or of a plain answer's bytes, when another has it too, since
// each may change its own.
func (a upstreamAnswer) own(err error, shared bool) (upstreamAnswer, error) {
	if err != nil {
		return upstreamAnswer{}, err
	}
	switch {
	case shared && a.r != nil:
		a.r = a.r.Copy()
	case shared:
		a.wire = withoutOPT(a.wire) // a copy: the cache writes after it
	}
	return a, nil
}

// A flight is what makes queries identical for the upstreams: the
// question, its name in any case, and the DO and CD bits (keyFlags).
type flight struct {
	q     dns.Question
	flags uint8
	ok    bool // one question
}

func flightOf(q *dns.Msg) flight {
	if len(q.Question) != 1 {
		return flight{}
	}
	return flight{q: q.Question[0], flags: msgFlags(q), ok: true}
}

// key is the flight's hash, its name lower-cased.
func (fl flight) key(seed maphash.Seed) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for i := range len(fl.q.Name) {
		c := fl.q.Name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h.WriteByte(c)
	}
	var b [5]byte
	binary.BigEndian.PutUint16(b[:], fl.q.Qtype)
	binary.BigEndian.PutUint16(b[2:], fl.q.Qclass)
	b[4] = fl.flags
	h.Write(b[:])
	return h.Sum64()
}

func (fl flight) same(o flight) bool {
	return fl.ok && o.ok && fl.flags == o.flags && fl.q.Qtype == o.q.Qtype && fl.q.Qclass == o.q.Qclass &&
		strings.EqualFold(fl.q.Name, o.q.Name)
}

// try asks the upstreams of ups (the forwarder's, or those a DoH
// upstream's host is looked up through) in order, each while the one
// before it is still asked: an upstream that has not answered within its
// hedge delay (a multiple of its recent round-trip time) or has failed
// gets the query's next upstream asked too, and the first good answer
// wins. The healthy upstreams come first, then those backing off, since a
// stale backoff is better than no answer.
func (f *Forwarder) try(ctx context.Context, q *dns.Msg, ups []*Upstream) (*dns.Msg, []byte, error) {
	ans, err := f.ask(ctx, q, ups)
	if err != nil {
		return nil, nil, err
	}
	r, err := ans.msg()
	return r, ans.wire, err
}

// An upstreamAnswer is an upstream's answer to a query: r, or only the
// bytes received for a plain answer over UDP (plainAnswer), which the
// request path answers and caches from without a dns.Msg; msg unpacks
// them when one is wanted after all.
type upstreamAnswer struct {
	r *dns.Msg
	// wire is r as received over UDP, shared: read it only; or nil. A
	// plain answer's is the caller's own, without its OPT record and with
	// room for the cache's TTL offsets after it (withoutOPT), for
	// entryOf.
	wire []byte
	id   uint16 // the query's ID, which msg gives the answer
}

// msg is the answer as a dns.Msg: r, or the wire unpacked anew.
func (a upstreamAnswer) msg() (*dns.Msg, error) {
	if a.r != nil {
		return a.r, nil
	}
	r := new(dns.Msg)
	if err := r.Unpack(a.wire); err != nil {
		return nil, err
	}
	r.Id = a.id
	return r, nil
}

// ask is try, its answer left as received when it is a plain one.
func (f *Forwarder) ask(ctx context.Context, q *dns.Msg, ups []*Upstream) (upstreamAnswer, error) {
	now := time.Now()
	id := q.Id // the attempts give q IDs of their own
	x := &race{f: f, q: q, deadline: now.Add(f.Timeout), last: errNoneAsked}
	x.live = x.liveBuf[:0]
	var probe *Upstream
	x.order, probe = f.choose(x.orderBuf[:0], now, ups)
	x.results = make(chan result, len(ups))
	x.launch(now)
	if probe != nil {
		x.add(probe, now)
	} else if len(x.order) == 1 && x.order[0].net == "udp" {
		// One upstream: no hedge can cover a datagram lost on the way,
		// so the query is sent to it once more if no answer comes.
		x.resendAt = now.Add(resendDelay(x.order[0]))
	}
	t := timers.Get().(*time.Timer)
	t.Reset(x.wake())
	defer func() {
		t.Stop() // since Go 1.23, no stale tick is left for the next user
		timers.Put(t)
	}()
	for len(x.live) > 0 {
		select {
		case res := <-x.results:
			if x.answered(res) {
				if res.r != nil {
					res.r.Id = id
				}
				x.leave()
				return upstreamAnswer{r: res.r, wire: res.wire, id: id}, nil
			}
		case now := <-t.C:
			x.expire(now)
		case <-ctx.Done():
			// Given up by the caller (or at shutdown): the upstreams
			// are not to blame.
			x.abandon()
			return upstreamAnswer{}, &errNoUpstream{last: ctx.Err()}
		}
		if len(x.live) == 0 || x.hedgeDue(time.Now()) {
			x.launch(time.Now())
		}
		x.resendIfDue(time.Now())
		t.Reset(x.wake())
	}
	return upstreamAnswer{}, x.last
}

// choose orders ups for one query: the healthy ones, then those backing
// off. One upstream whose backoff is over is this query's probe, asked at
// once beside the first (if it answers, it is up again); the other
// queries skip it while the probe has its time.
func (f *Forwarder) choose(order []*Upstream, now time.Time, ups []*Upstream) ([]*Upstream, *Upstream) {
	var probe *Upstream
	n := 0 // healthy ones first
	for _, u := range ups {
		d := u.downUntil.Load()
		switch {
		case d == 0:
			order = slices.Insert(order, n, u)
			n++
		case probe == nil && now.UnixNano() >= d && u.downUntil.CompareAndSwap(d, now.Add(f.TryTimeout).UnixNano()):
			probe = u
		default:
			order = append(order, u)
		}
	}
	return order, probe
}

// timers are the races' timers, kept between misses: making one was 4%
// of a miss.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// errNoneAsked is a race's failure until an upstream has failed.
var errNoneAsked = &errNoUpstream{last: errors.New("no upstreams")}

// A race is one query's upstream exchanges, each an attempt.
type race struct {
	f        *Forwarder
	q        *dns.Msg
	order    []*Upstream // to ask, in turn
	next     int         // order[next] is the next to ask
	live     []*attempt  // asked and not yet answered or failed
	results  chan result // every attempt's answer or failure, once
	deadline time.Time   // the query's: no attempt outlives it
	hedgeAt  time.Time   // when the next upstream is asked if none has answered
	resendAt time.Time   // when the only upstream is asked again (zero: never)
	sent     bool        // q has gone out with an attempt: the others copy it
	// Room for the commonest case, saving allocations: the order of up to
	// four upstreams, the first attempt, and two live at once.
	orderBuf [4]*Upstream
	first    attempt
	liveBuf  [2]*attempt
	last     *errNoUpstream
}

// An attempt is one upstream asked once.
type attempt struct {
	u     *Upstream
	q     *dns.Msg // the copy sent, with its own ID
	began time.Time
	end   time.Time // its own deadline: the per-try timeout, within the query's
	// UDP attempts are read by the upstream socket's reader, which
	// delivers to the race's results through w; the others run in a
	// goroutine of their own.
	sock *udpSock
	w    *waiter
	wait waiter // what w points to
}

// result is one attempt's answer, or why there is none.
type result struct {
	a    *attempt
	r    *dns.Msg // nil for a plain answer (plainAnswer), in wire alone
	wire []byte   // r as received over UDP (the reader's copy; a plain answer's without OPT), or nil
	err  error
}

// launch asks the next upstream, and the one after it at once when that
// fails to send. Asked while another is still awaited, it is a hedge.
func (x *race) launch(now time.Time) {
	for x.next < len(x.order) {
		u := x.order[x.next]
		x.next++
		hedge := len(x.live) > 0
		if x.add(u, now) {
			if hedge {
				u.metrics.upstreamHedged(u)
			}
			x.hedgeAt = now.Add(u.hedgeDelay())
			return
		}
	}
}

// add asks u, and reports whether the query went out.
func (x *race) add(u *Upstream, now time.Time) bool {
	end := now.Add(x.f.TryTimeout)
	if end.After(x.deadline) {
		end = x.deadline
	}
	// Each attempt sends its own copy (its own ID), but the first, which
	// is most often the only one, sends the race's when it is a UDP one:
	// that sets the ID here, on this goroutine, while the others' run in
	// goroutines of their own, which must not share what later attempts
	// copy.
	q := x.q
	if x.sent || u.net != "udp" {
		q = q.Copy()
	}
	var a *attempt
	if x.sent {
		a = new(attempt)
	} else {
		a = &x.first
	}
	x.sent = true
	*a = attempt{u: u, q: q, began: now, end: end}
	if err := x.start(a); err != nil {
		x.failed(a, err)
		return false
	}
	x.live = append(x.live, a)
	return true
}

// start sends a's query. A plain upstream's query is written here and its
// answer delivered by the socket's reader; the other kinds exchange in a
// goroutine.
func (x *race) start(a *attempt) error {
	if a.u.net == "udp" {
		a.wait = waiter{q: a.q, a: a, ch: x.results}
		a.w = &a.wait
		s, err := a.u.pool.send(a.w)
		a.sock = s
		return err
	}
	go x.exchange(a, a.u.exchange)
	return nil
}

// exchange runs one exchange of a in its own goroutine. It is bounded by
// the forwarder's context and a's deadline, not by the caller's: an
// attempt that outlives its query still tells whether the upstream
// answers.
func (x *race) exchange(a *attempt, ask func(context.Context, time.Time, *dns.Msg) (*dns.Msg, error)) {
	r, err := ask(x.f.ctx, a.end, a.q)
	x.results <- result{a: a, r: r, err: err} // buffered: one per attempt
}

// hedgeDue reports whether the next upstream is to be asked now.
func (x *race) hedgeDue(now time.Time) bool {
	return x.next < len(x.order) && !now.Before(x.hedgeAt)
}

// resendDelay is how long a query waits for its only upstream before it
// is sent to it again: twice its hedge delay, at least resendMin (a
// datagram lost on the way, not a slow upstream, is what it covers).
func resendDelay(u *Upstream) time.Duration { return max(2*u.hedgeDelay(), resendMin) }

const resendMin = 250 * time.Millisecond

// resendIfDue sends the query to its only upstream once more when it is
// time (see try), counted as a hedge.
func (x *race) resendIfDue(now time.Time) {
	if x.resendAt.IsZero() || now.Before(x.resendAt) || len(x.live) == 0 {
		return
	}
	x.resendAt = time.Time{}
	if u := x.order[0]; x.add(u, now) {
		u.metrics.upstreamHedged(u)
	}
}

// wake is how long until something is due: the next hedge, a resend, or
// the end of an attempt the race times out itself.
func (x *race) wake() time.Duration {
	at := x.deadline
	if x.next < len(x.order) && x.hedgeAt.Before(at) {
		at = x.hedgeAt
	}
	if !x.resendAt.IsZero() && x.resendAt.Before(at) {
		at = x.resendAt
	}
	for _, a := range x.live {
		if a.w != nil && a.end.Before(at) {
			at = a.end
		}
	}
	return time.Until(at)
}

// answered takes one result, and reports whether its answer is the one.
func (x *race) answered(res result) bool {
	a := res.a
	if res.err != nil {
		x.drop(a)
		x.failed(a, res.err)
		return false
	}
	r := res.r
	if a.w != nil && r != nil && r.Truncated {
		// Truncated: ask again over TCP, on the plain upstream's own
		// pooled connections (rarely more than one).
		a.sock.forget(a.w)
		a.sock, a.w = nil, nil
		a.q = a.q.Copy() // the goroutine's own (the race's may be copied meanwhile)
		go x.exchange(a, a.u.conns.exchange)
		return false
	}
	x.drop(a)
	now := time.Now()
	took := now.Sub(a.began)
	a.u.answeredAt.Store(now.UnixNano())
	rcode := dns.RcodeSuccess // a plain answer's (plainAnswer)
	if r != nil {
		rcode = r.Rcode
	}
	a.u.metrics.upstreamAnswered(a.u, rcode, took)
	a.u.sampleRTT(took)
	if rcode == dns.RcodeServerFailure || rcode == dns.RcodeRefused {
		// The upstream is up but cannot answer this name: ask the
		// next one, without backing off from this one.
		x.last = &errNoUpstream{last: fmt.Errorf("%s answered %s", a.u.Name, dns.RcodeToString[rcode])}
		x.hedgeAt = time.Time{}
		return false
	}
	x.f.markUp(a.u)
	return true
}

// expire fails the UDP attempts whose time is up (the others time out on
// their own).
func (x *race) expire(now time.Time) {
	for i := 0; i < len(x.live); i++ {
		if a := x.live[i]; a.w != nil && !now.Before(a.end) {
			x.drop(a)
			i--
			x.failed(a, context.DeadlineExceeded)
		}
	}
}

// drop removes a from the live attempts, and its waiter from its socket.
func (x *race) drop(a *attempt) {
	if a.w != nil {
		a.sock.forget(a.w)
	}
	for i, b := range x.live {
		if b == a {
			x.live = append(x.live[:i], x.live[i+1:]...)
			return
		}
	}
}

// failed counts a's failure: a timeout adds to its upstream's timeouts in
// a row, any other failure backs the upstream off at once. A timeout of a
// query sent before the upstream's latest answer adds nothing: when a
// fault ends, the queries sent during it time out after the upstream is
// answering again, and must not back it off anew.
func (x *race) failed(a *attempt, err error) {
	var ne net.Error
	x.last = &errNoUpstream{timeout: errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout(), last: err}
	x.hedgeAt = time.Time{} // the next upstream is due at once
	if x.f.ctx.Err() != nil {
		return // the forwarder is closing: not the upstream's fault
	}
	a.u.metrics.upstreamFailed(a.u, x.last.reason())
	if !x.last.timeout {
		x.f.markDown(a.u, err)
	} else if a.began.UnixNano() < a.u.answeredAt.Load() {
		return
	} else if n := a.u.timeouts.Add(1); n >= downAfter || a.u.downUntil.Load() != 0 {
		x.f.markDown(a.u, fmt.Errorf("%d queries in a row timed out", n))
	}
}

// leave hands the attempts still live, once the query has its answer, to a
// goroutine that waits for them, so that a slow upstream's late answers
// and a silent one's timeouts still count for its health and round-trip
// time; when too many already wait, they are abandoned.
func (x *race) leave() {
	if len(x.live) == 0 {
		return
	}
	if x.f.draining.Add(1) > maxDraining {
		x.f.draining.Add(-1)
		x.abandon()
		return
	}
	go func() {
		defer x.f.draining.Add(-1)
		t := time.NewTimer(x.wake())
		defer t.Stop()
		for len(x.live) > 0 {
			select {
			case res := <-x.results:
				x.answered(res)
			case now := <-t.C:
				x.expire(now)
			case <-x.f.ctx.Done():
				x.abandon()
				return
			}
			t.Reset(x.wake())
		}
	}()
}

// abandon stops waiting for the live attempts: UDP waiters leave their
// sockets, and the goroutines of the others end by their deadlines into the
// buffered results.
func (x *race) abandon() {
	for _, a := range x.live {
		if a.w != nil {
			a.sock.forget(a.w)
		}
	}
	x.live = nil
}

// downAfter is how many timeouts in a row back a healthy upstream off;
// maxDraining bounds the queries whose slower attempts are still awaited
// after their answer (see race.leave).
const (
	downAfter   = 3
	maxDraining = 4096
)

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
	u.timeouts.Store(0)
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

package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// streamUpstream starts a stub that answers pipelined queries out of order,
// over DNS over TLS (tls) or plain TCP, and an Upstream that asks it and
// trusts its certificate; the Upstream is closed before the stub stops.
func streamUpstream(t *testing.T, tls bool) (*dnstest.Upstream, *Upstream) {
	t.Helper()
	opts := []dnstest.Option{dnstest.WithPipelining()}
	name := "tcp://"
	if tls {
		opts = append(opts, dnstest.WithTLS())
		name = "tls://"
	}
	stub := dnstest.Start(t, opts...)
	name += stub.Addr()
	if tls {
		name += "#" + dnstest.TLSServerName
	}
	u, err := ParseUpstream(name)
	if err != nil {
		t.Fatal(err)
	}
	if tls {
		u.tls.RootCAs = stub.RootCAs()
	}
	t.Cleanup(u.close)
	return stub, u
}

// ask sends one A query for name and checks that the answer is its own; it
// returns an error instead of failing, for use off the test goroutine.
func ask(u *Upstream, name string, timeout time.Duration) error {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	r, err := u.exchange(context.Background(), time.Now().Add(timeout), q)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(r.Answer) != 1 || r.Question[0].Name != name || r.Answer[0].Header().Name != name {
		return fmt.Errorf("%s: answer for another question: %v", name, r)
	}
	return nil
}

// blocker is a stub handler that holds the queries for names it was told
// to hold until they are released, and answers the others at once.
type blocker struct {
	mu   sync.Mutex
	held map[string]chan struct{}
	stop chan struct{} // closed when the test ends: every query is let go
}

func newBlocker(t *testing.T, stub *dnstest.Upstream, names ...string) *blocker {
	b := &blocker{held: map[string]chan struct{}{}, stop: make(chan struct{})}
	for _, n := range names {
		b.held[n] = make(chan struct{})
	}
	// Registered after the stub's cleanup, so it runs before: the stub's
	// handlers return before it stops.
	t.Cleanup(func() { close(b.stop) })
	stub.SetHandler(b.serve)
	return b
}

func (b *blocker) serve(w dns.ResponseWriter, q *dns.Msg) {
	b.mu.Lock()
	ch := b.held[q.Question[0].Name]
	b.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-b.stop:
			return
		}
	}
	r := new(dns.Msg).SetReply(q)
	rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.53")
	r.Answer = []dns.RR{rr}
	w.WriteMsg(r)
}

func (b *blocker) release(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.held[name])
	delete(b.held, name)
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}

// openConns is how many connections the pool holds.
func openConns(u *Upstream) int {
	u.conns.mu.Lock()
	defer u.conns.mu.Unlock()
	return len(u.conns.conns)
}

// TestConnReuse: queries share a few connections, over TCP and over TLS:
// one after another all go over one, many at once over no more than
// poolConns.
func TestConnReuse(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcp", true: "tls"}[tls], func(t *testing.T) {
			stub, u := streamUpstream(t, tls)
			for i := range 50 {
				if err := ask(u, fmt.Sprintf("seq%d.example.", i), 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if n := stub.Conns(); n != 1 {
				t.Errorf("50 queries one after another opened %d connections, want 1", n)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 16*25)
			for g := range 16 {
				wg.Go(func() {
					for i := range 25 {
						if err := ask(u, fmt.Sprintf("par%d-%d.example.", g, i), 5*time.Second); err != nil {
							errs <- err
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := stub.Conns(); n > poolConns {
				t.Errorf("400 queries from 16 goroutines opened %d connections, want at most %d", n, poolConns)
			}
			if got := stub.Queries(); got != 450 {
				t.Errorf("the stub saw %d queries, want 450 (none sent twice)", got)
			}
		})
	}
}

// TestConnPipelining: queries wait on one connection together, and each
// gets its own answer whatever order the answers come in.
func TestConnPipelining(t *testing.T) {
	stub, u := streamUpstream(t, true)
	slow := []string{"slow1.example.", "slow2.example.", "slow3.example."}
	b := newBlocker(t, stub, slow...)
	results := make(map[string]chan error)
	for _, n := range slow {
		ch := make(chan error, 1)
		results[n] = ch
		go func() { ch <- ask(u, n, 10*time.Second) }()
	}
	waitFor(t, "the slow queries to arrive", func() bool {
		return stub.Seen(slow[0]) == 1 && stub.Seen(slow[1]) == 1 && stub.Seen(slow[2]) == 1
	})
	// Answered while the three before them on the connection still wait.
	for i := range 3 {
		if err := ask(u, fmt.Sprintf("fast%d.example.", i), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The answers to the slow ones come in the reverse order of the queries.
	for i := len(slow) - 1; i >= 0; i-- {
		b.release(slow[i])
		if err := <-results[slow[i]]; err != nil {
			t.Error(err)
		}
	}
	if n := stub.Conns(); n != 1 {
		t.Errorf("%d connections, want all six queries pipelined on one", n)
	}
}

// TestConnReconnect: a connection the server closes is replaced, and a
// query whose connection dies is sent once more on a new one.
func TestConnReconnect(t *testing.T) {
	stub, u := streamUpstream(t, true)
	if err := ask(u, "one.example.", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	stub.CloseConns() // as at the server's idle timeout, or a restart
	if err := ask(u, "two.example.", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := stub.Conns(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}

	// The server closes the connection instead of answering: the first
	// time only (answered on the retry), then every time (one retry, then
	// an error for the forwarder to try the next upstream).
	var mu sync.Mutex
	closes := 1
	stub.SetHandler(func(w dns.ResponseWriter, q *dns.Msg) {
		mu.Lock()
		c := closes > 0 || q.Question[0].Name == "always.example."
		closes--
		mu.Unlock()
		if c {
			w.Close()
			return
		}
		r := new(dns.Msg).SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.53")
		r.Answer = []dns.RR{rr}
		w.WriteMsg(r)
	})
	if err := ask(u, "dies.example.", 5*time.Second); err != nil {
		t.Errorf("a query whose connection died was not answered on a new one: %v", err)
	}
	if n := stub.Seen("dies.example."); n != 2 {
		t.Errorf("dies.example was sent %d times, want 2", n)
	}
	err := ask(u, "always.example.", 5*time.Second)
	if !errors.Is(err, errConnLost) {
		t.Errorf("every connection closed under it: got %v, want errConnLost", err)
	}
	if n := stub.Seen("always.example."); n != 2 {
		t.Errorf("always.example was sent %d times, want 2 (one retry)", n)
	}
}

// TestConnIdle: a connection is closed after the idle time without a
// query, and not while a query waits on it, however long.
func TestConnIdle(t *testing.T) {
	stub, u := streamUpstream(t, true)
	u.conns.idle = 5 * time.Millisecond
	if err := ask(u, "one.example.", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the idle connection to close", func() bool { return openConns(u) == 0 && stub.OpenConns() == 0 })
	if err := ask(u, "two.example.", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := stub.Conns(); n != 2 {
		t.Errorf("%d connections, want a new one after the idle close", n)
	}
	waitFor(t, "the idle connection to close", func() bool { return openConns(u) == 0 && stub.OpenConns() == 0 })

	b := newBlocker(t, stub, "slow.example.")
	done := make(chan error, 1)
	go func() { done <- ask(u, "slow.example.", 10*time.Second) }()
	waitFor(t, "the slow query to arrive", func() bool { return stub.Seen("slow.example.") == 1 })
	time.Sleep(20 * u.conns.idle) // many idle times: the connection must stay
	b.release("slow.example.")
	if err := <-done; err != nil {
		t.Error(err)
	}
	if n, seen := stub.Conns(), stub.Seen("slow.example."); n != 3 || seen != 1 {
		t.Errorf("%d connections, slow.example sent %d times: the connection was closed while a query waited", n, seen)
	}
}

// TestConnStalled: a connection on which a query times out with nothing
// read since it was sent is closed; one that keeps answering others stays.
func TestConnStalled(t *testing.T) {
	stub, u := streamUpstream(t, true)
	b := newBlocker(t, stub, "lost.example.", "late.example.")
	if err := ask(u, "lost.example.", 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a timeout", err)
	}
	waitFor(t, "the stalled connection to close", func() bool { return stub.OpenConns() == 0 })
	b.release("lost.example.")

	done := make(chan error, 1)
	go func() { done <- ask(u, "late.example.", time.Second) }()
	waitFor(t, "the late query to arrive", func() bool { return stub.Seen("late.example.") == 1 })
	for i := 0; ; i++ { // answers keep coming on the connection meanwhile
		if err := ask(u, fmt.Sprintf("q%d.example.", i), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("late.example: got %v, want a timeout", err)
			}
		default:
			continue
		}
		break
	}
	if err := ask(u, "after.example.", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := stub.Conns(); n != 2 {
		t.Errorf("%d connections, want 2: one closed as stalled, one kept", n)
	}
}

// TestConnClose: close ends every query waiting and every goroutine of the
// pool, with poolConns connections open; later queries fail at once.
func TestConnClose(t *testing.T) {
	stub, u := streamUpstream(t, true)
	newBlocker(t, stub, func() []string {
		var names []string
		for i := range 5 * pipelineDepth {
			names = append(names, fmt.Sprintf("held%d.example.", i))
		}
		return names
	}()...)
	// One at a time, so that each connection fills to pipelineDepth before
	// the next is opened: the pool's largest size, then more queries than
	// it takes without piling them deeper.
	errs := make(chan error, 5*pipelineDepth)
	for i := range 5 * pipelineDepth {
		go func() { errs <- ask(u, fmt.Sprintf("held%d.example.", i), time.Minute) }()
		waitFor(t, "the query to arrive", func() bool { return stub.Queries() == i+1 })
	}
	if n := stub.Conns(); n != poolConns {
		t.Errorf("%d queries waiting opened %d connections, want %d", 5*pipelineDepth, n, poolConns)
	}
	u.close()
	for range 5 * pipelineDepth {
		if err := <-errs; err == nil {
			t.Error("a query waiting at close was answered")
		}
	}
	if err := dnstest.LeftRunning(time.Second, "/resolver.(*streamConn)", "/resolver.(*connPool)"); err != nil {
		t.Error(err)
	}
	if err := ask(u, "later.example.", 5*time.Second); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after close: got %v, want net.ErrClosed", err)
	}
}

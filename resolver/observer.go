package resolver

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/policy"
)

// An Observer watches the request path: the metrics, the query log, the
// web page's activity and, next, the history store. Answered is called
// once for every query answered (not for those the rate limit drops), on
// the goroutine that answered it: over UDP just before the answer is
// sent, over TCP, TLS and HTTPS just after. It must not block: an
// observer that writes somewhere slow queues and drops.
//
// Adding an observer touches nothing of the request path: pass it in
// Options.Observers.
type Observer interface {
	Answered(a Answer)
}

// A BatchObserver also takes answers in bulk. The UDP loop tells the
// observers of the answers it sends with one system call at once, just
// before it sends them, so that an observer that locks or looks counters
// up does so once a batch rather than once a query; a BatchObserver gets
// them in one call, the others one Answered each. The slice is the
// loop's: read it during the call only.
type BatchObserver interface {
	Observer
	AnsweredBatch(as []Answer)
}

// Answer is one answered query, as observers see it.
type Answer struct {
	Start    time.Time
	Client   netip.Addr
	Question dns.Question
	// Decision is what the policy decided; its Group is nil for queries
	// answered before the policy was asked (refused, malformed, ANY).
	Decision policy.Decision
	Rcode    int
	Source   AnswerSource
	// Transport is what the query came over: UDP, TCP, DNS over TLS or
	// DNS over HTTPS.
	Transport Transport
	Duration  time.Duration // from Start until the answer was sent (over UDP, just before)
}

// Decided reports whether the policy decided the query.
func (a *Answer) Decided() bool { return a.Decision.Group != nil }

// Match reports whether the query matched a catalog entry or a list and
// was logged or sinkholed: what the query log records by default.
func (a *Answer) Match() bool {
	return a.Decision.Match.Rule != nil && a.Decision.Action != policy.Allow
}

// AnswerSource is where an answer came from.
type AnswerSource uint8

// The sources of answers.
const (
	SourceCache AnswerSource = iota
	SourceUpstream
	SourceSinkhole
	SourceStale
	SourceLocal // refused, malformed, ANY, or SERVFAIL when no upstream answered
	numSources
)

var sourceNames = [numSources]string{"cache", "upstream", "sinkhole", "stale", "local"}

func (s AnswerSource) String() string { return sourceNames[s] }

// Transport is what a query came over.
type Transport uint8

// The transports, the values of the metrics' transport label.
const (
	TransportUDP Transport = iota
	TransportTCP
	TransportDoT // DNS over TLS (RFC 7858): tls_listen
	TransportDoH // DNS over HTTPS (RFC 8484): https_listen
	numTransports
)

var transportNames = [numTransports]string{"udp", "tcp", "dot", "doh"}

func (t Transport) String() string { return transportNames[t] }

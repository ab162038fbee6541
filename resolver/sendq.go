package resolver

import (
	"net"
	"runtime"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// A sendQueue sends the datagrams that goroutines write on one UDP socket
// at about the same time with one sendmmsg. Cache misses come in batches
// (a batch of queries read together holds several), their goroutines
// become runnable together, and each used to send its upstream query and
// then its answer with a system call of its own; on loopback a send also
// pays for waking the receiver, which made sends a third of a miss's
// cost.
//
// The first sender of a round yields once (runtime.Gosched), so that the
// goroutines already runnable add theirs, and then sends what has
// gathered, again until nothing is left; the others only add theirs and
// return. Alone, a sender yields to nobody and sends at once.
type sendQueue struct {
	bc batchConn

	mu       sync.Mutex
	pending  []ipv4.Message
	flushing bool
	spare    []ipv4.Message // the flusher's, between rounds
}

func newSendQueue(c *net.UDPConn) *sendQueue {
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		return &sendQueue{bc: ipv6.NewPacketConn(c)}
	}
	return &sendQueue{bc: ipv4.NewPacketConn(c)}
}

// send sends b to addr (nil on a connected socket) with the control
// message oob. b must not change until it is sent. An error is reported
// only to the sender that sends the round: a datagram the kernel refuses
// is lost, as one lost on the way would be.
func (q *sendQueue) send(b []byte, addr net.Addr, oob []byte) error {
	q.mu.Lock()
	// The messages' Buffers slices are kept from round to round: one
	// allocation less a datagram.
	if n := len(q.pending); n < cap(q.pending) {
		q.pending = q.pending[:n+1]
		m := &q.pending[n]
		m.Buffers, m.Addr, m.OOB = append(m.Buffers[:0], b), addr, oob
	} else {
		q.pending = append(q.pending, ipv4.Message{Buffers: [][]byte{b}, Addr: addr, OOB: oob})
	}
	if q.flushing {
		q.mu.Unlock()
		return nil
	}
	q.flushing = true
	q.mu.Unlock()
	runtime.Gosched()
	var first error
	for {
		q.mu.Lock()
		out := q.pending
		q.pending, q.spare = q.spare[:0], nil
		if len(out) == 0 {
			q.flushing = false
			q.spare = out
			q.mu.Unlock()
			return first
		}
		q.mu.Unlock()
		for sent := 0; sent < len(out); {
			k, err := q.bc.WriteBatch(out[sent:], 0)
			if err != nil {
				if first == nil {
					first = err
				}
				k = 1 // that one is lost; send the rest
			}
			sent += k
		}
		for i := range out { // drop what was sent, keep the Buffers slices
			m := &out[i]
			clear(m.Buffers)
			m.Addr, m.OOB, m.N, m.NN, m.Flags = nil, nil, 0, 0, 0
		}
		q.mu.Lock()
		q.spare = out[:0]
		q.mu.Unlock()
	}
}

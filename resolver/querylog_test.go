package resolver

import (
	"bytes"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// stalled is a writer that blocks until released, like a full pipe.
type stalled struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (s *stalled) Write(p []byte) (int, error) {
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func TestQueryLogDropsWhenBehind(t *testing.T) {
	w := &stalled{release: make(chan struct{})}
	l := NewQueryLogWriter(w, true, false, 8)
	for range 100 {
		l.Add(Record{Name: "x.example."}) // never blocks
	}
	if d := l.Dropped.Load(); d < 100-8-1 {
		t.Errorf("%d dropped of 100 with a queue of 8 and a stalled writer", d)
	}
	close(w.release)
	l.Close()
	n := strings.Count(w.buf.String(), "\n")
	if n+int(l.Dropped.Load()) != 100 {
		t.Errorf("%d written + %d dropped != 100", n, l.Dropped.Load())
	}
}

func TestAnonymize(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.23":           "192.168.1.0",
		"2001:db8:1:2:3:4:5:6":   "2001:db8:1::",
		"fd00:1234:5678:9abc::1": "fd00:1234:5678::",
	} {
		if got := anonymize(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("anonymize(%s) = %s, want %s", in, got, want)
		}
	}
}

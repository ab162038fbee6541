package resolver

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
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

// TestRecordJSON: the query log's own encoder says what encoding/json
// would: every field decodes back to the record, whatever its strings hold.
func TestRecordJSON(t *testing.T) {
	base := Record{Time: time.Date(2026, 11, 27, 5, 6, 7, 891011121, time.UTC), Client: "192.168.1.0", Group: "kids-pc",
		Name: "v10.events.data.microsoft.com.", Type: "AAAA", Action: "sinkhole", Category: "telemetry",
		Pattern: "v10.events.data.microsoft.com", Edition: "home", Rcode: "NOERROR", Source: "sinkhole", Duration: 0.000888113}
	odd := []string{"", `a"b`, `back\slash`, "tab\there", "\x00\x1f", "<script>&", "grüße", "日本", "bad\xffutf8", `x\(y\).example.`}
	records := []Record{base, {Time: time.Unix(0, 0).In(time.FixedZone("x", 3600)), Duration: 12345.5}}
	for _, s := range odd {
		r := base
		r.Group, r.Name, r.Pattern, r.Category = s, s, s, s
		records = append(records, r)
	}
	for _, r := range records {
		out := r.appendJSON(nil)
		want, _ := json.Marshal(r)
		var got, exp map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		json.Unmarshal(want, &exp)
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("appendJSON\n %s\nencoding/json\n %s", out, want)
		}
	}
}

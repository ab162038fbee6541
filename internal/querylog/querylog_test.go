package querylog

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
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

// TestQueryLogDropsWhenBehind: with the output stalled, the log takes what
// its 64 KB buffer and its queue hold and drops and counts the rest; Add
// never blocks.
func TestQueryLogDropsWhenBehind(t *testing.T) {
	w := &stalled{release: make(chan struct{})}
	l := NewWriter(w, true, false, 8)
	r := Record{Name: "x.example."}
	const n = 2000
	held := 64<<10/(len(r.appendJSON(nil))+1) + 1 + 8 // buffer, the record in hand, queue
	for range n {
		l.Add(r)
	}
	if d := l.Dropped.Load(); d < uint64(n-held) {
		t.Errorf("%d dropped of %d with room for %d and a stalled writer", d, n, held)
	}
	close(w.release)
	l.Close()
	written := strings.Count(w.buf.String(), "\n")
	if written+int(l.Dropped.Load()) != n {
		t.Errorf("%d written + %d dropped != %d", written, l.Dropped.Load(), n)
	}
}

func TestAnonymize(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.23":           "192.168.1.0",
		"2001:db8:1:2:3:4:5:6":   "2001:db8:1::",
		"fd00:1234:5678:9abc::1": "fd00:1234:5678::",
	} {
		if got := Anonymize(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("anonymize(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestRecordJSON: the query log's own encoder says what encoding/json
// would: every field decodes back to the record, whatever its strings hold.
func TestRecordJSON(t *testing.T) {
	base := Record{Time: time.Date(2026, 11, 27, 5, 6, 7, 891011121, time.UTC), Client: "192.168.1.0", Group: "kids-pc",
		Name: "v10.events.data.microsoft.com.", Type: "AAAA", Action: "sinkhole", Category: "telemetry",
		Pattern: "v10.events.data.microsoft.com", Edition: "home", Rcode: "NOERROR", Source: "sinkhole", Transport: "doh", Duration: 0.000888113, Instance: "dns1"}
	odd := []string{"", `a"b`, `back\slash`, "tab\there", "\x00\x1f", "<script>&", "grüße", "日本", "bad\xffutf8", `x\(y\).example.`}
	records := []Record{base, {Time: time.Unix(0, 0).In(time.FixedZone("x", 3600)), Duration: 12345.5}}
	for _, s := range odd {
		r := base
		r.Group, r.Name, r.Pattern, r.Category, r.ClientName = s, s, s, s, s
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

// TestQueryLogReopen: rotating a file output (rename, then Reopen, as
// logrotate and SIGUSR1 do) loses no record, also those still buffered
// for the old file.
func TestQueryLogReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.log")
	l, err := Open(Config{Output: path, AllQueries: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		l.Add(Record{Name: "before.example."})
	}
	time.Sleep(20 * time.Millisecond) // written to the buffer, not yet flushed
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		l.Add(Record{Name: "after.example."})
	}
	l.Close()
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	lines := strings.Count(string(old), "\n") + strings.Count(string(cur), "\n")
	if lines+int(l.Dropped.Load()) != 400 || l.Dropped.Load() != 0 {
		t.Errorf("%d lines in the rotated file, %d in the new one, %d dropped; want 400 written", strings.Count(string(old), "\n"), strings.Count(string(cur), "\n"), l.Dropped.Load())
	}
	if strings.Contains(string(old), "after.example") {
		t.Error("a record added after Reopen went to the rotated file")
	}
}

// TestQueryLogAddAfterClose: an answer that finishes after shutdown closed
// the log is dropped and counted, not a panic.
func TestQueryLogAddAfterClose(t *testing.T) {
	l := NewWriter(io.Discard, true, false, 8)
	l.Close()
	l.Add(Record{Name: "late.example."})
	l.Close()
	if l.Dropped.Load() != 1 {
		t.Errorf("dropped %d, want 1", l.Dropped.Load())
	}
}

// TestQueryLogClientName: a line carries the machine's name beside its
// address, and none when clients are anonymized, not even the config's.
func TestQueryLogClientName(t *testing.T) {
	names := clientnames.New(clientnames.Config{}, clientnames.Options{
		ConfigNames: map[netip.Addr]string{netip.MustParseAddr("192.168.1.20"): "kids-pc", netip.MustParseAddr("192.168.1.0"): "net"}})
	defer names.Close()
	for _, anonymize := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "q.log")
		l, err := Open(Config{Output: path, AllQueries: true, AnonymizeClients: anonymize}, names)
		if err != nil {
			t.Fatal(err)
		}
		g := &policy.Group{Name: "kids"}
		for _, from := range []string{"192.168.1.20", "192.168.1.21"} {
			l.Answered(resolver.Answer{Start: time.Now(), Client: netip.MustParseAddr(from), Question: dns.Question{Name: "example.com.", Qtype: dns.TypeA},
				Decision: policy.Decision{Group: g}})
		}
		l.Close()
		b, _ := os.ReadFile(path)
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var r Record
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			got = append(got, r.Client+" "+r.ClientName)
		}
		want := []string{"192.168.1.20 kids-pc", "192.168.1.21 "}
		if anonymize {
			want = []string{"192.168.1.0 ", "192.168.1.0 "}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("anonymize %v: %q, want %q", anonymize, got, want)
		}
		if strings.Contains(string(b), `"client_name":""`) {
			t.Errorf("an empty client_name is written:\n%s", b)
		}
	}
}

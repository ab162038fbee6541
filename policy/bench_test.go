package policy

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syntheticList writes the benchmark's user list: n distinct names of 2–4
// labels under about n/5 registrable domains, 10% of them wildcards, one a
// line as a plain list. It returns the file and some names it lists.
func syntheticList(tb testing.TB, dir string, n int) (string, []string) {
	tb.Helper()
	path := filepath.Join(dir, "list.txt")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	rng := rand.New(rand.NewPCG(7, 7))
	tlds := []string{"com", "net", "org", "io", "de", "co.uk", "info", "xyz"}
	domains := n / 5
	var sample []string
	for i := range n {
		d := fmt.Sprintf("d%dx%d.%s", i%domains, rng.IntN(1000), tlds[i%len(tlds)])
		var name string
		switch rng.IntN(3) {
		case 0:
			name = d
		case 1:
			name = fmt.Sprintf("t%d.%s", i, d)
		default:
			name = fmt.Sprintf("a%d.b%d.%s", i, rng.IntN(100), d)
		}
		if i%10 == 0 {
			fmt.Fprintf(w, "*.%s\n", name)
			name = "x." + name
		} else {
			fmt.Fprintln(w, name)
		}
		if i%1000 == 0 {
			sample = append(sample, name)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	f.Close()
	return path, sample
}

var (
	millionOnce sync.Once
	millionPath string
	millionHits []string
)

// million makes the million-pattern list once per test binary; TestMain
// removes it.
func million(b *testing.B) (string, []string) {
	millionOnce.Do(func() {
		dir, err := os.MkdirTemp("", "phonehome-bench")
		if err != nil {
			b.Fatal(err)
		}
		benchDir = dir
		millionPath, millionHits = syntheticList(b, dir, 1_000_000)
	})
	return millionPath, millionHits
}

var benchDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// heapPeak samples the heap in use while f runs and returns the highest figure.
func heapPeak(f func()) uint64 {
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	f()
	close(done)
	return peak.Load()
}

// BenchmarkCompileMillion reads, parses and builds a million user patterns:
// ns/op is the compile time; heap-MiB what the matcher keeps, peak-MiB the
// most the heap held while compiling.
func BenchmarkCompileMillion(b *testing.B) {
	path, _ := million(b)
	rule := &Rule{Category: "telemetry", Source: path}
	var m *Matcher
	var peak uint64
	for b.Loop() {
		m = nil // the last round's matcher is not part of this round's peak
		runtime.GC()
		peak = heapPeak(func() {
			var mb matcherBuilder
			if _, warns, err := mb.listFile(path, rule); err != nil || len(warns) > 0 {
				b.Fatal(err, warns)
			}
			m = mb.build()
		})
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
	runtime.KeepAlive(m)
}

// BenchmarkLookupMillion looks up names of a million-pattern list: listed
// names (hits) and names that are not (misses).
func BenchmarkLookupMillion(b *testing.B) {
	path, hits := million(b)
	var mb matcherBuilder
	if _, _, err := mb.listFile(path, &Rule{Category: "telemetry"}); err != nil {
		b.Fatal(err)
	}
	m := mb.build()
	misses := make([]string, len(hits))
	for i, h := range hits {
		misses[i] = "nope" + h
		if m.Lookup(h).Rule == nil {
			b.Fatalf("%s: not found", h)
		}
	}
	for _, c := range []struct {
		name  string
		names []string
	}{{"hit", hits}, {"miss", misses}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				m.Lookup(c.names[i%len(c.names)])
				i++
			}
		})
	}
}

// decideMix is a realistic query mix: 60% names outside the catalog, 40%
// catalog names of every pattern shape, mixed case, some with the trailing dot.
func decideMix() []string {
	names := []string{
		// catalog: exact, *.x, *x, protected, mixed case, trailing dot
		"v10.events.data.microsoft.com", "ARC.msn.com.", "sls.update.microsoft.com", "tlu.dl.delivery.mp.microsoft.com",
		"ctldl.windowsupdate.com.", "Watson.Telemetry.Microsoft.com", "xdl.delivery.mp.microsoft.com", "foo.blob.core.windows.net",
		// outside
		"www.google.com", "WWW.Example.COM.", "i.ytimg.com", "graph.facebook.com", "api.github.com.", "a.b.c.cdn.example.net",
		"time.cloudflare.com", "en.wikipedia.org", "login.microsoftonline.com", "outlook.office.com", "www.microsoft.com.edgekey.net",
		"static.xx.fbcdn.net", "news.ycombinator.com",
	}
	return names
}

func BenchmarkDecideBuiltin(b *testing.B) {
	p, _, err := Compile(DefaultConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	names := decideMix()
	client := netip.MustParseAddr("192.168.1.20")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Decide(client, names[i%len(names)])
		i++
	}
}

// BenchmarkClientGroup finds the group of a client among 1,000 groups.
func BenchmarkClientGroup(b *testing.B) {
	var t clientTable
	for i := range 1000 {
		g := &Group{Name: fmt.Sprint(i)}
		switch i % 4 {
		case 0:
			t.add(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 7}), 32), g)
		case 1:
			t.add(netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 100+i>>8, i&255)), g)
		case 2:
			t.add(netip.MustParsePrefix(fmt.Sprintf("fd00:%x::/64", i)), g)
		default:
			t.add(netip.MustParsePrefix(fmt.Sprintf("172.16.%d.%d/28", i>>4&255, i&15<<4)), g)
		}
	}
	clients := []netip.Addr{netip.MustParseAddr("10.0.4.7"), netip.MustParseAddr("10.100.5.9"), netip.MustParseAddr("fd00:2::1"), netip.MustParseAddr("192.168.9.9")}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t.lookup(clients[i%len(clients)])
		i++
	}
}

package endpoints

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds the parser mutations of the real documents: it must never
// panic, and whatever it accepts must be clean patterns on real lines.
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 5m ./endpoints
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("docs/*.md")
	files = append(files, seedPath)
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("|Destination|\n|-|\n|a.b|c||d.e|\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse("fuzz.md", bytes.NewReader(b))
		if err != nil {
			return
		}
		lines := bytes.Count(b, []byte("\n")) + 1
		for _, s := range d.Sections {
			if s.Edition == 0 {
				t.Fatalf("section %q without edition", s.Heading)
			}
			for _, r := range s.Rows {
				if r.Line < 1 || r.Line > lines || len(r.Patterns) == 0 {
					t.Fatalf("row %+v of %d lines", r, lines)
				}
				for _, p := range r.Patterns {
					if err := checkPattern(p); err != nil || strings.ToLower(p) != p {
						t.Fatalf("pattern %q: %v", p, err)
					}
					if again, err := NormalizePattern(p); err != nil || again != p {
						t.Fatalf("pattern %q normalises again to %q, %v", p, again, err)
					}
				}
			}
		}
		for _, e := range Build(d).Entries {
			if e.Editions == 0 || e.Category == "" {
				t.Fatalf("entry %+v", e)
			}
		}
	})
}

// hostile builds inputs of n units that would expose work more than linear
// in the input: long rows of pipes, blank lines inside a table, many hosts
// in one cell, many stars.
var hostile = map[string]func(n int) string{
	"pipes": func(n int) string {
		return "## Windows 10 Pro\n|Destination|Protocol|Description|\n|-|-|-|\n|a.example.com" + strings.Repeat("||x.example.com|HTTP|d", n) + "\n"
	},
	"blank lines": func(n int) string {
		return "## Windows 10 Pro\n|Destination|Protocol|Description|\n|-|-|-|\n" + strings.Repeat("|a.example.com|HTTP|d|\n\n\n", n)
	},
	"hosts in a cell": func(n int) string {
		return "## Windows 10 Pro\n|Destination|Protocol|Description|\n|-|-|-|\n|" + strings.Repeat("a.example.com</br>", n) + "|HTTP|d|\n"
	},
	"stars": func(n int) string {
		return "## Windows 10 Pro\n|Destination|Protocol|Description|\n|-|-|-|\n|" + strings.Repeat("*a", n) + ".example.com|HTTP|d|\n"
	},
	"one pattern, many rows": func(n int) string {
		var b strings.Builder
		b.WriteString("## Windows 10 Pro\n|Destination|Protocol|Description|\n|-|-|-|\n")
		for i := range n {
			fmt.Fprintf(&b, "|a.example.com|P%d|description %d|\n", i, i)
		}
		return b.String()
	},
	"headings": func(n int) string {
		return strings.Repeat("## Windows 10 Pro\n|Destination|\n|-|\n|a.example.com|\n", n)
	},
}

// TestParseLinearAllocs checks that the allocations of parsing and building
// grow linearly with hostile input (BenchmarkParseHostile measures the time).
func TestParseLinearAllocs(t *testing.T) {
	for name, gen := range hostile {
		small, large := gen(200), gen(1600)
		allocs := func(s string) float64 {
			return testing.AllocsPerRun(3, func() {
				if d, err := Parse("x.md", strings.NewReader(s)); err == nil {
					Build(d)
				}
			})
		}
		a, b := allocs(small), allocs(large)
		if b > 10*a+50 {
			t.Errorf("%s: %.0f allocations for 200 units, %.0f for 1600", name, a, b)
		}
	}
}

// BenchmarkParseHostile reports time per input byte at two sizes: for a
// linear parser ns/byte stays flat as the input grows eightfold.
func BenchmarkParseHostile(b *testing.B) {
	for name, gen := range hostile {
		for _, n := range []int{500, 4000, 32000} {
			s := gen(n)
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				b.SetBytes(int64(len(s)))
				for b.Loop() {
					if d, err := Parse("x.md", strings.NewReader(s)); err == nil {
						Build(d)
					}
				}
			})
		}
	}
}

func BenchmarkBuiltin(b *testing.B) {
	raw, err := os.ReadFile(seedPath)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		d, _ := Parse(SeedDocument, bytes.NewReader(raw))
		Build(d)
	}
}

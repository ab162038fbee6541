package policy

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/endpoints"
)

// testCatalog is the built-in catalog plus every testdata document.
func testCatalog(t testing.TB) *endpoints.Catalog {
	t.Helper()
	files, _ := filepath.Glob("../endpoints/docs/*.md")
	cat, _, err := endpoints.Load(true, files...)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func buildMatcher(cat *endpoints.Catalog, user map[string]*Rule) *Matcher {
	var b matcherBuilder
	for _, e := range cat.Entries {
		b.add(e.Pattern, &Rule{Category: e.Category, Entry: e})
	}
	for p, r := range user {
		b.add(p, r)
	}
	return b.build()
}

func TestMatcherMostSpecific(t *testing.T) {
	list := &Rule{Category: "telemetry", Source: "list.txt"}
	m := buildMatcher(testCatalog(t), map[string]*Rule{
		"*.microsoft.com":    list,
		"*.blob.example.net": list,
		"ads.example.net":    list,
	})
	for _, c := range []struct{ name, want string }{
		{"fe2cr.update.microsoft.com", "fe2cr.update.microsoft.com"}, // exact beats *.update…
		{"FE2CR.Update.Microsoft.COM.", "fe2cr.update.microsoft.com"},
		{"sls3.update.microsoft.com", "*.update.microsoft.com"}, // beats *.microsoft.com
		{"a.b.update.microsoft.com", "*.update.microsoft.com"},
		{"foo.microsoft.com", "*.microsoft.com"},
		{"microsoft.com", ""},
		{"dl.delivery.mp.microsoft.com", "dl.delivery.mp.microsoft.com"}, // exact, listed in 1709
		{"2dl.delivery.mp.microsoft.com", "*dl.delivery.mp.microsoft.com"},
		{"xdl.delivery.mp.microsoft.com", "*dl.delivery.mp.microsoft.com"},
		{"a.dl.delivery.mp.microsoft.com", "*.dl.delivery.mp.microsoft.com"}, // one more literal character
		{"x.delivery.mp.microsoft.com", "*.delivery.mp.microsoft.com"},
		{"watson.telemetry.microsoft.com", "watson.telemetry.microsoft.com"},
		{"watson.events.microsoft.com", "watson.*.microsoft.com"}, // a glob beats the shorter *.microsoft.com
		{"wdcp.microsoft.example", "wdcp.microsoft.*"},
		{"msnbot-1-2-3-4.search.msn.com", "msnbot-*.search.msn.com"},
		{"x.y.akamai.net", "*.*.akamai.net"},
		{"x.g.akamai.net", "*.g.akamai.net"},
		{"ads.example.net", "ads.example.net"},
		{"www.example.com", ""},
		{"", ""},
		{".", ""},
		{strings.Repeat("a", 300) + ".microsoft.com", ""},
	} {
		got := m.Lookup(c.name)
		if got.Pattern() != c.want && !(c.want == "" && got.Rule == nil) {
			t.Errorf("Lookup(%q) = %q, want %q", c.name, got.Pattern(), c.want)
		}
	}
	if got := m.Lookup("foo.microsoft.com"); got.Rule != list {
		t.Errorf("user pattern's rule: %+v", got.Rule)
	}
	if got := m.Lookup("ctldl.windowsupdate.com"); got.Rule == nil || got.Rule.Entry == nil || !got.Rule.Protected() {
		t.Errorf("catalog entry: %+v", got.Rule)
	}
}

// specificity of a pattern as Match counts it.
func patternSpecificity(p string) int {
	shape, lit := endpoints.PatternShape(p)
	if shape == endpoints.Glob {
		lit = p
	}
	return Match{Rule: &Rule{}, Shape: shape, Literal: lit}.specificity()
}

// TestMatcherAgainstReference compares Lookup with a brute-force scan of
// every pattern through endpoints.Match, on names made from the patterns.
func TestMatcherAgainstReference(t *testing.T) {
	cat := testCatalog(t)
	user := map[string]*Rule{}
	r := &Rule{Category: "telemetry"}
	for _, p := range []string{"*.microsoft.com", "*soft.com", "*.com", "*t.com", "a.*.b.com", "*.net", "*l.live.com",
		"q*.example.*", "*.k.*.example.com", "*x.*dl.delivery.mp.microsoft.com", "a*b.net", "*.b.*.net"} {
		user[p] = r
	}
	m := buildMatcher(cat, user)
	var patterns []string
	for _, e := range cat.Entries {
		patterns = append(patterns, e.Pattern)
	}
	for p := range user {
		patterns = append(patterns, p)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var names []string
	for _, p := range patterns {
		for range 4 {
			var b strings.Builder
			for _, c := range p {
				if c == '*' {
					b.WriteString([]string{"", "x", "a.b", "dl", "-"}[rng.IntN(5)])
				} else {
					b.WriteRune(c)
				}
			}
			names = append(names, b.String(), "q."+b.String(), b.String()[rng.IntN(len(b.String())):])
		}
	}
	for _, name := range names {
		best := -1
		for _, p := range patterns {
			if endpoints.Match(p, name) && patternSpecificity(p) > best {
				best = patternSpecificity(p)
			}
		}
		got := m.Lookup(name)
		if got.specificity() != best {
			t.Errorf("Lookup(%q) = %q (specificity %d), reference specificity %d", name, got.Pattern(), got.specificity(), best)
		}
		if got.Rule != nil && !endpoints.Match(got.Pattern(), name) {
			t.Errorf("Lookup(%q) = %q, which does not match", name, got.Pattern())
		}
	}
}

func TestMatcherFirstWins(t *testing.T) {
	a, b := &Rule{Source: "a"}, &Rule{Source: "b"}
	var mb matcherBuilder
	mb.add("x.example.com", a)
	mb.add("x.example.com", b)
	mb.add("*.example.com", b)
	mb.add("*.example.com", a)
	m := mb.build()
	if m.Lookup("x.example.com").Rule != a || m.Lookup("y.example.com").Rule != b {
		t.Error("the first rule added for a pattern must win")
	}
}

func TestMatcherNoAllocs(t *testing.T) {
	m := buildMatcher(testCatalog(t), nil)
	names := []string{"FE2CR.update.microsoft.com.", "www.example.com", "tlu.dl.delivery.mp.microsoft.com", "watson.x.microsoft.com"}
	if n := testing.AllocsPerRun(100, func() {
		for _, name := range names {
			m.Lookup(name)
		}
	}); n != 0 {
		t.Errorf("%v allocations per lookup", n)
	}
	_ = fmt.Sprint
}

// TestMatcherGrows adds patterns one by one, as overrides and inline lists
// are, so the table grows from nothing many times.
func TestMatcherGrows(t *testing.T) {
	var b matcherBuilder
	r := &Rule{}
	for i := range 1000 {
		b.add(fmt.Sprintf("n%d.example.com", i), r)
	}
	m := b.build()
	for i := range 1000 {
		if m.Lookup(fmt.Sprintf("n%d.example.com", i)).Rule != r {
			t.Fatalf("n%d lost", i)
		}
	}
	if m.Lookup("n1000.example.com").Rule != nil || m.Len() != 1000 {
		t.Error("miss or size wrong")
	}
}

// TestMatcherTailsWithoutGlobs: "*x.domain" patterns alone, with no glob to
// file, as an override or a list may hold.
func TestMatcherTailsWithoutGlobs(t *testing.T) {
	r := &Rule{}
	var b matcherBuilder
	b.add("*ads.example.com", r)
	b.add("*update.microsoft.com", r)
	m := b.build()
	for name, want := range map[string]bool{"xads.example.com": true, "ads.example.com": true, "x.example.com": false, "fe3update.microsoft.com": true} {
		if got := m.Lookup(name).Rule == r; got != want {
			t.Errorf("Lookup(%q) matched %v, want %v", name, got, want)
		}
	}
}

// TestMatcherBigTable runs the reference comparison on a table too big to
// file globs under every key, with a name under more anchors than the
// walk keeps, and with more globs than 16-bit indexes hold.
func TestMatcherBigTable(t *testing.T) {
	defer func(n int) { smallTable = n }(smallTable)
	smallTable = 0 // every table is big
	TestMatcherAgainstReference(t)

	r := &Rule{}
	var b matcherBuilder
	globs := []string{"z1*.a.b.c.d.example.com", "z2*.b.c.d.example.com", "z3*.c.d.example.com", "z4*.d.example.com", "x*.example.com"}
	for _, g := range globs {
		b.add(g, r)
	}
	for i := range 70000 {
		b.add(fmt.Sprintf("g%d*.example.net", i), r)
	}
	m := b.build()
	if m.propagated {
		t.Fatal("a big table files its globs under every key")
	}
	for name, want := range map[string]string{
		"x.a.b.c.d.example.com":   "x*.example.com",
		"z1q.a.b.c.d.example.com": "z1*.a.b.c.d.example.com",
		"g5x.example.net":         "g5*.example.net",
		"g69999.example.net":      "g69999*.example.net",
	} {
		if got := m.Lookup(name); got.Pattern() != want {
			t.Errorf("Lookup(%q) = %q, want %q", name, got.Pattern(), want)
		}
	}
}

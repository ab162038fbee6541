package endpoints

import (
	_ "embed"
	"fmt"
	"strings"
	"sync"
)

// Undocumented is the category of a name under one of Microsoft's own
// domains that no documented pattern or family matches.
const Undocumented Category = "undocumented"

// familiesTSV is the reviewed table of domain families: patterns that
// generalise documented names differing in one label, each with the
// documented members that justify it.
//
//go:embed families.tsv
var familiesTSV string

// firstPartyTSV is the reviewed table of Microsoft's first-party domains,
// each with documented names that show it is Microsoft's, and of the shared
// domains on which Microsoft hosts other people's content, each with the
// reason it is left out.
//
//go:embed firstparty.tsv
var firstPartyTSV string

// FamilyRow is one reviewed line of families.tsv.
type FamilyRow struct {
	Line     int
	Pattern  string
	Category Category
	Members  []string
	Evidence string
}

// DomainRow is one reviewed line of firstparty.tsv.
type DomainRow struct {
	Line   int
	Domain string
	// Shared domains host other people's content: they are not first-party.
	Shared   bool
	Evidence []string // documented names under the domain
	Note     string   // why it is Microsoft's, or why it is shared
	// Protect is a reason to protect undocumented names under the domain,
	// one sentence starting "blocking it", or "".
	Protect string
}

// Families returns the rows of families.tsv.
func Families() []FamilyRow { return families() }

// Domains returns the rows of firstparty.tsv, first-party and shared.
func Domains() []DomainRow { return domains() }

var families = sync.OnceValue(func() []FamilyRow {
	rs, err := parseFamilies(familiesTSV)
	if err != nil {
		panic(err) // embedded and checked by the tests
	}
	return rs
})

var domains = sync.OnceValue(func() []DomainRow {
	rs, err := parseDomains(firstPartyTSV)
	if err != nil {
		panic(err)
	}
	return rs
})

// tsvLines calls f with the fields of each line that is not blank or a
// comment, and stops at the first error.
func tsvLines(name, tsv string, fields int, f func(line int, fs []string) error) error {
	for i, line := range strings.Split(tsv, "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, "\t")
		if len(fs) != fields {
			return fmt.Errorf("%s:%d: want %d tab-separated fields, have %d", name, i+1, fields, len(fs))
		}
		if err := f(i+1, fs); err != nil {
			return fmt.Errorf("%s:%d: %w", name, i+1, err)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, m := range strings.Split(s, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// parseFamilies reads families.tsv: pattern, category, members
// (comma-separated documented names), evidence.
func parseFamilies(tsv string) ([]FamilyRow, error) {
	var rs []FamilyRow
	seen := map[string]bool{}
	err := tsvLines("families.tsv", tsv, 4, func(line int, f []string) error {
		p, err := NormalizePattern(f[0])
		if err != nil || p != f[0] {
			return fmt.Errorf("family %q is not a normalised pattern", f[0])
		}
		c, err := ParseCategory(f[1])
		if err != nil {
			return err
		}
		if seen[p] {
			return fmt.Errorf("%s listed twice", p)
		}
		seen[p] = true
		ms := splitList(f[2])
		if len(ms) < 2 {
			return fmt.Errorf("family %s needs at least two documented members", p)
		}
		rs = append(rs, FamilyRow{Line: line, Pattern: p, Category: c, Members: ms, Evidence: strings.TrimSpace(f[3])})
		return nil
	})
	return rs, err
}

// parseDomains reads firstparty.tsv: domain, status ("microsoft" or
// "shared"), evidence (comma-separated documented names, or "-"), note,
// protection ("-" or a sentence).
func parseDomains(tsv string) ([]DomainRow, error) {
	var rs []DomainRow
	seen := map[string]bool{}
	err := tsvLines("firstparty.tsv", tsv, 5, func(line int, f []string) error {
		d := f[0]
		if !ValidHostname(d) {
			return fmt.Errorf("%q is not a domain name", d)
		}
		if seen[d] {
			return fmt.Errorf("%s listed twice", d)
		}
		seen[d] = true
		r := DomainRow{Line: line, Domain: d, Evidence: splitList(dash(f[2])), Note: strings.TrimSpace(f[3]), Protect: dash(f[4])}
		switch f[1] {
		case "microsoft":
		case "shared":
			r.Shared = true
		default:
			return fmt.Errorf("status %q: want microsoft or shared", f[1])
		}
		if r.Note == "" || r.Note == "-" {
			return fmt.Errorf("%s: say why", d)
		}
		rs = append(rs, r)
		return nil
	})
	return rs, err
}

// addDerived adds the reviewed families and first-party domains to a
// catalog built from the built-in documents.
func (c *Catalog) addDerived() {
	for _, f := range families() {
		e := &Entry{Pattern: f.Pattern, Kind: Family, Category: f.Category, Members: f.Members,
			Evidence: f.Evidence, Editions: AllEditions, Versions: AllVersions}
		if info, _ := f.Category.Info(); info.Protected {
			e.Protected, e.Reason = true, info.Breaks
		}
		for _, m := range f.Members {
			if me := c.Lookup(m); me != nil && me.Protected && !e.Protected {
				e.Protected, e.Reason = true, me.Reason
			}
		}
		c.Families = append(c.Families, e)
	}
	for _, d := range domains() {
		if d.Shared {
			continue
		}
		e := &Entry{Pattern: "*." + d.Domain, Kind: FirstParty, Category: Undocumented, Members: d.Evidence,
			Evidence: d.Note, Editions: AllEditions, Versions: AllVersions}
		if d.Protect != "" {
			e.Protected, e.Reason = true, d.Protect
		}
		c.Domains = append(c.Domains, e)
	}
}

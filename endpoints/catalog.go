package endpoints

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Entry is one pattern of the catalog with everything the documents say
// about it, merged over every row and edition that lists it.
type Entry struct {
	Pattern  string
	Editions Edition
	Category Category
	// CategoryNote says why Category was chosen where the documents' own
	// words would suggest another, or which rule chose it.
	CategoryNote string
	// Protected entries break Windows when sinkholed; Reason says how, in one
	// sentence that starts "blocking it".
	Protected bool
	Reason    string
	Uses      []Use // one per edition, in canonical edition order
}

// Use is what the documents say about an entry for one edition.
type Use struct {
	Edition      Edition
	Protocols    []string // normalised: "HTTP", "HTTPS", "TLSv1.2"
	Descriptions []string // distinct, in document order
	Areas        []string // the Area column of 4-column tables
	Sources      []string // "file:line" of each row
}

// Description is the entry's first description, for one-line displays.
func (e *Entry) Description() string {
	for _, u := range e.Uses {
		if len(u.Descriptions) > 0 {
			return u.Descriptions[0]
		}
	}
	return ""
}

// Protocols is the union of the protocols of every edition, sorted.
func (e *Entry) Protocols() []string {
	var ps []string
	for _, u := range e.Uses {
		ps = append(ps, u.Protocols...)
	}
	slices.Sort(ps)
	return slices.Compact(ps)
}

// Use returns the entry's use for edition ed, or nil.
func (e *Entry) Use(ed Edition) *Use {
	for i := range e.Uses {
		if e.Uses[i].Edition == ed {
			return &e.Uses[i]
		}
	}
	return nil
}

// Catalog is the set of documented endpoints, one Entry per pattern, sorted
// by pattern. It is immutable once built and safe for concurrent use.
type Catalog struct {
	Entries []*Entry
	Sources []string // the documents it was built from
	index   map[string]*Entry
}

// Lookup returns the entry for exactly this pattern, or nil.
func (c *Catalog) Lookup(pattern string) *Entry { return c.index[pattern] }

// Select returns the entries documented for any edition in eds and, when cats
// is not empty, in one of those categories.
func (c *Catalog) Select(eds Edition, cats []Category) []*Entry {
	var out []*Entry
	for _, e := range c.Entries {
		if e.Editions&eds != 0 && (len(cats) == 0 || slices.Contains(cats, e.Category)) {
			out = append(out, e)
		}
	}
	return out
}

// Count returns how many entries are documented for each single edition.
func (c *Catalog) Count() map[Edition]int {
	n := map[Edition]int{}
	for _, e := range c.Entries {
		for _, ed := range e.Editions.Each() {
			n[ed]++
		}
	}
	return n
}

// Build merges the rows of the documents into a catalog: rows that name the
// same pattern, in any edition or document, become one entry. Each entry is
// then given its category and protection.
func Build(docs ...*Document) *Catalog {
	b := builder{Catalog: &Catalog{index: map[string]*Entry{}}, seen: map[string]bool{}}
	for _, d := range docs {
		b.Sources = append(b.Sources, d.Name)
		for _, s := range d.Sections {
			for _, r := range s.Rows {
				for _, p := range r.Patterns {
					b.add(p, s.Edition, d.Name, r)
				}
			}
		}
	}
	c := b.Catalog
	slices.SortFunc(c.Entries, func(a, b *Entry) int { return cmp.Compare(a.Pattern, b.Pattern) })
	for _, e := range c.Entries {
		slices.SortFunc(e.Uses, func(a, b Use) int { return cmp.Compare(a.Edition, b.Edition) })
		classify(e)
	}
	return c
}

// builder merges rows into a catalog, remembering what each use already
// holds so that merging stays linear however many rows repeat a pattern.
type builder struct {
	*Catalog
	seen map[string]bool // pattern, edition, field and value, NUL-separated
}

// addOnce appends v to *list unless this use already has it.
func (b *builder) addOnce(list *[]string, pattern string, ed Edition, field, v string) {
	key := pattern + "\x00" + ed.String() + "\x00" + field + "\x00" + v
	if v == "" || b.seen[key] {
		return
	}
	b.seen[key] = true
	*list = append(*list, v)
}

func (b *builder) add(pattern string, eds Edition, file string, r Row) {
	e := b.index[pattern]
	if e == nil {
		e = &Entry{Pattern: pattern}
		b.index[pattern] = e
		b.Entries = append(b.Entries, e)
	}
	e.Editions |= eds
	for _, ed := range eds.Each() {
		u := e.Use(ed)
		if u == nil {
			e.Uses = append(e.Uses, Use{Edition: ed})
			u = &e.Uses[len(e.Uses)-1]
		}
		for _, p := range protocols(r.Protocol) {
			b.addOnce(&u.Protocols, pattern, ed, "protocol", p)
		}
		b.addOnce(&u.Descriptions, pattern, ed, "description", r.Description)
		b.addOnce(&u.Areas, pattern, ed, "area", r.Area)
		u.Sources = append(u.Sources, fmt.Sprintf("%s:%d", file, r.Line))
	}
}

// protocols splits a Protocol cell ("HTTP/TLSv1.2", "TLS v1.2", "TLSV1.2")
// into normalised names.
func protocols(cell string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(cell, func(r rune) bool { return r == '/' || r == ',' || r == ';' }) {
		p = strings.ToUpper(strings.Join(strings.Fields(p), ""))
		if p == "" {
			continue
		}
		if v, ok := strings.CutPrefix(p, "TLSV"); ok {
			p = "TLSv" + v
		}
		out = append(out, p)
	}
	return out
}

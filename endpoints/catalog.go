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
	// Versions are the Windows versions whose documents list the pattern,
	// for any edition; Uses say which for each edition.
	Versions Version
	// Kind says whether a document lists the pattern or it is derived from
	// documented names: a family or a first-party domain.
	Kind     Kind
	Category Category
	// CategoryNote says why Category was chosen where the documents' own
	// words would suggest another, or which rule chose it.
	CategoryNote string
	// Protected entries break Windows when sinkholed; Reason says how, in one
	// sentence that starts "blocking it".
	Protected bool
	Reason    string
	Uses      []Use // one per edition, in canonical edition order
	// Mentions are the document rows behind the entry, one per row and
	// edition, newest document first: what a diff between versions reads.
	Mentions []Mention
	// Members are, for a derived entry, the documented names that justify
	// it; Evidence says in words why it holds.
	Members  []string
	Evidence string
}

// Kind is where an entry comes from.
type Kind uint8

const (
	// Documented entries are listed by one of Microsoft's documents.
	Documented Kind = iota
	// Family entries generalise documented names that differ in one
	// label ("*.events.data.microsoft.com"); see families.tsv.
	Family
	// FirstParty entries are Microsoft's own domains: a name under one
	// that nothing else matches is "undocumented"; see firstparty.tsv.
	FirstParty
)

// Mention is one document row that lists an entry's pattern for an edition.
type Mention struct {
	Edition     Edition
	Versions    Version
	Protocols   []string
	Description string
	Area        string
	Process     string
	Source      string // "file:line"
}

// Use is what the documents say about an entry for one edition.
type Use struct {
	Edition      Edition
	Versions     Version  // the versions whose documents list it for Edition
	Protocols    []string // normalised: "HTTP", "HTTPS", "TLSv1.2"
	Descriptions []string // distinct, in document order
	Areas        []string // the Area column, or the area heading above the table
	Processes    []string // the Source process column: the program that connects
	Sources      []string // "file:line" of each row
}

// Description is the first sentence of the entry's first description, for
// one-line displays: the newest document's words, after the source process
// where a document names one ("svchost: Used by…"). A family says whose
// family it is. Uses hold every description whole.
func (e *Entry) Description() string {
	switch e.Kind {
	case Family:
		return "family of " + strings.Join(e.Members, ", ") + ": " + e.Evidence
	case FirstParty:
		return "a Microsoft host that no Microsoft document lists, under " + strings.TrimPrefix(e.Pattern, "*.")
	}
	desc := ""
	for _, u := range e.Uses {
		if len(u.Descriptions) > 0 {
			desc = firstSentence(u.Descriptions[0])
			break
		}
	}
	if ps := e.Processes(); len(ps) > 0 {
		return strings.Join(ps, ", ") + ": " + desc
	}
	return desc
}

// Processes is the union of the source processes of every edition.
func (e *Entry) Processes() []string {
	var ps []string
	for _, u := range e.Uses {
		for _, p := range u.Processes {
			if !slices.Contains(ps, p) {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// VersionsFor returns the versions whose documents list the entry for any
// edition in eds.
func (e *Entry) VersionsFor(eds Edition) Version {
	var v Version
	for _, u := range e.Uses {
		if u.Edition&eds != 0 {
			v |= u.Versions
		}
	}
	return v
}

// AppliesTo reports whether some version in vers documents the entry for
// some edition in eds: whether a group of those editions and versions
// should know it.
func (e *Entry) AppliesTo(eds Edition, vers Version) bool {
	return e.VersionsFor(eds)&vers != 0
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
	// Families and Domains are derived from documented names by the
	// reviewed tables families.tsv and firstparty.tsv (built-in catalog
	// only); a group's matcher holds them behind every documented pattern.
	Families []*Entry
	Domains  []*Entry
	index    map[string]*Entry
}

// Lookup returns the entry for exactly this pattern, or nil.
func (c *Catalog) Lookup(pattern string) *Entry { return c.index[pattern] }

// Select returns the entries documented for any edition in eds by any
// version in vers and, when cats is not empty, in one of those categories.
func (c *Catalog) Select(eds Edition, vers Version, cats []Category) []*Entry {
	var out []*Entry
	for _, e := range c.Entries {
		if e.AppliesTo(eds, vers) && (len(cats) == 0 || slices.Contains(cats, e.Category)) {
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
	e.Versions |= r.Versions
	source := fmt.Sprintf("%s:%d", file, r.Line)
	protos := protocols(r.Protocol)
	for _, ed := range eds.Each() {
		u := e.Use(ed)
		if u == nil {
			e.Uses = append(e.Uses, Use{Edition: ed})
			u = &e.Uses[len(e.Uses)-1]
		}
		u.Versions |= r.Versions
		for _, p := range protos {
			b.addOnce(&u.Protocols, pattern, ed, "protocol", p)
		}
		b.addOnce(&u.Descriptions, pattern, ed, "description", r.Description)
		b.addOnce(&u.Areas, pattern, ed, "area", r.Area)
		for _, p := range strings.Split(r.Process, ", ") {
			b.addOnce(&u.Processes, pattern, ed, "process", p)
		}
		u.Sources = append(u.Sources, source)
		e.Mentions = append(e.Mentions, Mention{Edition: ed, Versions: r.Versions, Protocols: protos,
			Description: r.Description, Area: r.Area, Process: r.Process, Source: source})
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

package endpoints

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// View is what the documents of one Windows version say about an entry.
type View struct {
	Editions     Edition
	Category     Category
	Protocols    []string // sorted
	Descriptions []string // distinct, in document order
}

// ViewAt returns what the documents of version v say about e for the
// editions in eds, and false when none of them lists it.
func (e *Entry) ViewAt(v Version, eds Edition) (View, bool) {
	var w View
	var areas []string
	for _, m := range e.Mentions {
		if m.Versions&v == 0 || m.Edition&eds == 0 {
			continue
		}
		w.Editions |= m.Edition
		for _, p := range m.Protocols {
			if !slices.Contains(w.Protocols, p) {
				w.Protocols = append(w.Protocols, p)
			}
		}
		if m.Description != "" && !slices.Contains(w.Descriptions, m.Description) {
			w.Descriptions = append(w.Descriptions, m.Description)
		}
		if m.Area != "" {
			areas = append(areas, m.Area)
		}
	}
	if w.Editions == 0 {
		return View{}, false
	}
	slices.Sort(w.Protocols)
	w.Category = e.Category
	if _, reviewed := knownPatterns()[e.Pattern]; !reviewed {
		// A user's document: the keyword rules read this version's words.
		w.Category, _ = ruleCategory(&Entry{Pattern: e.Pattern, Uses: []Use{{Areas: areas, Descriptions: w.Descriptions}}})
	}
	return w, true
}

// EditionsAt returns the editions that some document of version v lists
// endpoints for: a diff against a version without a document for an
// edition reports all of that edition's patterns as dropped or added.
func (c *Catalog) EditionsAt(v Version) Edition {
	var eds Edition
	for _, e := range c.Entries {
		for _, m := range e.Mentions {
			if m.Versions&v != 0 {
				eds |= m.Edition
			}
		}
	}
	return eds
}

// Change is one pattern that differs between two versions.
type Change struct {
	Pattern string
	Kind    string // "added", "dropped" or "changed"
	Entry   *Entry
	From    View // zero when added
	To      View // zero when dropped
	// What lists, for a changed pattern, each difference in words:
	// "protocols HTTP → HTTPS".
	What []string
}

// Diff compares what the documents of version from and of version to list
// for the editions in eds: the patterns to added, from dropped, and those
// whose editions, category, protocols or descriptions changed. Both
// versions must be single versions.
func (c *Catalog) Diff(from, to Version, eds Edition) []Change {
	var out []Change
	for _, e := range c.Entries {
		a, inFrom := e.ViewAt(from, eds)
		b, inTo := e.ViewAt(to, eds)
		switch {
		case inTo && !inFrom:
			out = append(out, Change{Pattern: e.Pattern, Kind: "added", Entry: e, To: b})
		case inFrom && !inTo:
			out = append(out, Change{Pattern: e.Pattern, Kind: "dropped", Entry: e, From: a})
		case inFrom && inTo:
			var what []string
			if a.Editions != b.Editions {
				what = append(what, fmt.Sprintf("editions %s → %s", a.Editions, b.Editions))
			}
			if a.Category != b.Category {
				what = append(what, fmt.Sprintf("category %s → %s", a.Category, b.Category))
			}
			if !slices.Equal(a.Protocols, b.Protocols) {
				what = append(what, fmt.Sprintf("protocols %s → %s", orNone(a.Protocols), orNone(b.Protocols)))
			}
			if !sameWords(a.Descriptions, b.Descriptions) {
				what = append(what, "description")
			}
			if len(what) > 0 {
				out = append(out, Change{Pattern: e.Pattern, Kind: "changed", Entry: e, From: a, To: b, What: what})
			}
		}
	}
	return out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// sameWords reports whether two description lists say the same words,
// ignoring case, punctuation, markup and white space: a full stop added,
// bold removed or a curly apostrophe is no change.
func sameWords(a, b []string) bool {
	norm := func(ds []string) []string {
		var out []string
		for _, d := range ds {
			d = strings.Join(strings.FieldsFunc(strings.ToLower(d), func(r rune) bool {
				return !unicode.IsLetter(r) && !unicode.IsDigit(r)
			}), " ")
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(a), norm(b))
}

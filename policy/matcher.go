package policy

import (
	"hash/maphash"
	"math/bits"
	"slices"
	"strings"

	"github.com/phonehome/phonehome/endpoints"
)

// Rule is what a pattern stands for: a catalog entry, a line of a user's
// list, or an override. Many patterns share one Rule (every line of a list
// has its list's), so a million user patterns cost a million table slots, not
// a million Rules.
type Rule struct {
	Category endpoints.Category
	// Entry is the catalog entry, or nil for a user's pattern.
	Entry *endpoints.Entry
	// Source names where a user pattern came from: a list file, or
	// "config" for patterns written in the config file.
	Source string
	// Action is what the rule's group does with it: the override's action,
	// or the category's, already turned from sinkhole to log for a
	// protected entry (demoted is then set).
	Action  Action
	demoted bool
	// Versions names the Windows versions whose documents list the entry
	// for the group's editions ("10-1709..10-21H2,11"), spelled once when
	// the group is compiled so the query path need not.
	Versions string
	// Answer is the extended DNS error text of a sinkhole answer for an
	// entry's rule, spelled at compile time; "" for a user's pattern.
	Answer string
}

// Protected reports whether blocking the rule's endpoint breaks Windows.
func (r *Rule) Protected() bool { return r.Entry != nil && r.Entry.Protected }

// Match is the most specific pattern that matched a name. Its zero value
// means no pattern matched.
type Match struct {
	Rule *Rule
	// Literal and Shape spell the pattern without allocating: Shape
	// Subdomains with Literal "update.microsoft.com" is
	// "*.update.microsoft.com". Globs keep the whole pattern in Literal.
	Literal string
	Shape   endpoints.Shape
}

// Pattern spells the matched pattern; it allocates, so it is for logs and
// answers to people, not for the query path.
func (m Match) Pattern() string {
	switch m.Shape {
	case endpoints.Subdomains:
		return "*." + m.Literal
	case endpoints.Suffix:
		return "*" + m.Literal
	}
	return m.Literal
}

// specificity orders matches: an exact name beats every glob, and among
// globs the one with more literal characters wins.
func (m Match) specificity() int {
	switch {
	case m.Rule == nil:
		return -1
	case m.Shape == endpoints.Exact:
		return 1 << 20
	case m.Shape == endpoints.Subdomains:
		return len(m.Literal) + 1 // the dot after '*'
	case m.Shape == endpoints.Suffix:
		return len(m.Literal)
	}
	return len(m.Literal) - strings.Count(m.Literal, "*")
}

// Matcher finds the most specific pattern for a name. It is immutable once
// built and safe for concurrent use; Lookup does not allocate.
//
// Exact names and the literal parts of "*.x" and "*x" patterns are keys of one
// open-addressing hash table over full domain suffixes, so a lookup hashes the
// name and each of its parent domains once, longest first. The keys live in
// one string (the arena) and a slot holds 16 bytes, which keeps a million
// patterns in about 40 MB. Globs with a '*' anywhere else are rare and are
// tried one by one, only when they could beat what the table found.
type Matcher struct {
	seed  maphash.Seed
	arena string
	slots []slot
	tails map[uint32][]tail // per slot: the "*x" patterns whose x starts inside a label
	globs []glob            // by literal length, longest first
	rules []*Rule
	size  int
}

// slot is one key of the table. A zero length marks an empty slot.
type slot struct {
	off   uint32 // of the key in the arena
	exact uint32 // rule index+1 of the exact name; 0 for none
	sub   uint32 // rule index+1 of "*.key"; 0 for none
	n     uint8  // key length
	tag   uint8  // hash bits, to skip most key comparisons
	tails bool   // "*x.key" patterns exist: see Matcher.tails
}

// tail is a "*t.key" pattern: it matches when the label before key ends in t.
type tail struct {
	t, literal string // literal is t + "." + key
	rule       uint32
}

type glob struct {
	pattern string // lower case
	fixed   string // what follows the last '*': every match ends in it
	lit     int    // literal characters, for specificity
	rule    uint32
}

// Len is the number of patterns in the matcher.
func (m *Matcher) Len() int { return m.size }

// maxName is the longest name looked up; longer names match nothing.
const maxName = 254

// Lookup returns the most specific pattern matching name, which may be in
// any case and end in a dot. It does not allocate.
func (m *Matcher) Lookup(name string) Match {
	var buf [maxName]byte
	n := len(name)
	if n > 0 && name[n-1] == '.' {
		n--
	}
	if n == 0 || n > len(buf) {
		return Match{}
	}
	for i := 0; i < n; i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return m.lookup(buf[:n])
}

func (m *Matcher) lookup(name []byte) Match {
	var best Match
	if len(m.slots) > 0 {
		if i := m.find(name); i >= 0 && m.slots[i].exact != 0 {
			s := &m.slots[i]
			return Match{Rule: m.rules[s.exact-1], Literal: m.key(s), Shape: endpoints.Exact}
		}
		// Parent domains, longest first: the first that has a pattern for
		// this name is the most specific the table holds.
		label := 0 // start of the label before the suffix
		for i := 0; i < len(name) && best.Rule == nil; i++ {
			if name[i] != '.' {
				continue
			}
			j := m.find(name[i+1:])
			if j < 0 {
				label = i + 1
				continue
			}
			s := &m.slots[j]
			if s.tails {
				lbl := name[label:i]
				for _, t := range m.tails[uint32(j)] { // longest first
					if len(t.t) <= len(lbl) && string(lbl[len(lbl)-len(t.t):]) == t.t {
						best = Match{Rule: m.rules[t.rule], Literal: t.literal, Shape: endpoints.Suffix}
						break
					}
				}
			}
			if best.Rule == nil && s.sub != 0 {
				best = Match{Rule: m.rules[s.sub-1], Literal: m.key(s), Shape: endpoints.Subdomains}
			}
			label = i + 1
		}
	}
	for i := range m.globs {
		g := &m.globs[i]
		if g.lit <= best.specificity() {
			break
		}
		if len(name) >= len(g.fixed) && string(name[len(name)-len(g.fixed):]) == g.fixed && endpoints.GlobMatch(g.pattern, name) {
			return Match{Rule: m.rules[g.rule], Literal: g.pattern, Shape: endpoints.Glob}
		}
	}
	return best
}

func (m *Matcher) key(s *slot) string { return m.arena[s.off : s.off+uint32(s.n)] }

// home maps a hash to a slot index without a power-of-two table size.
func (m *Matcher) home(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(m.slots)))
	return int(hi)
}

// find returns the index of key's slot, or -1.
func (m *Matcher) find(key []byte) int {
	if len(key) > 255 {
		return -1
	}
	h := maphash.Bytes(m.seed, key)
	tag := uint8(h >> 56)
	for i := m.home(h); ; i++ {
		if i == len(m.slots) {
			i = 0
		}
		s := &m.slots[i]
		if s.n == 0 {
			return -1
		}
		if s.tag == tag && int(s.n) == len(key) && m.arena[s.off:s.off+uint32(s.n)] == string(key) {
			return i
		}
	}
}

// sortGlobs orders globs longest literal first, the order Lookup tries them.
func sortGlobs(gs []glob) {
	slices.SortStableFunc(gs, func(a, b glob) int { return b.lit - a.lit })
}

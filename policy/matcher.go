package policy

import (
	"bytes"
	"encoding/binary"
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
// patterns in about 40 MB. Globs with a '*' anywhere else are few; each is
// filed under its anchor, the longest whole domain every name it matches
// ends in ("microsoft.com" for watson.*.microsoft.com), which is a key of
// the table too, so the walk over the parent domains finds the globs worth
// trying. Only those that could beat what the table found are tried.
type Matcher struct {
	seed  maphash.Seed
	arena string
	slots []slot
	// tails are, per slot, the "*x" patterns whose x starts inside a
	// label: the builder keeps them in a map, the Matcher in tailSlots
	// (ascending) and tailLists, which a binary search reads faster.
	tails     map[uint32][]tail
	tailSlots []uint32
	tailLists [][]tail
	globs     []glob // by literal length, longest first
	// globSlots (ascending) are the slots that globs are filed under and
	// globLists, for each, the globs anchored at its key: indexes into
	// globs, ascending. In a small table (propagated) a slot's list also
	// holds the globs anchored at every parent of its key, so the first
	// such slot the walk meets names every glob worth trying; a big
	// table, where that would cost a list per key, has the walk go on
	// over the parents it skipped.
	globSlots  []uint32
	globLists  [][]uint32
	propagated bool
	// anyGlobs have no anchor ("wdcp.microsoft.*"); anyMask holds a bit
	// for the first four bytes of each one's prefix, so most names skip
	// them with one test.
	anyGlobs []uint32
	anyMask  uint64
	rules    []*Rule
	size     int
}

// slot is one key of the table. A zero length marks an empty slot.
type slot struct {
	off   uint32 // of the key in the arena
	exact uint32 // rule index+1 of the exact name; 0 for none
	sub   uint32 // rule index+1 of "*.key"; 0 for none
	n     uint8  // key length
	tag   uint8  // hash bits, to skip most key comparisons
	tails bool   // "*x.key" patterns exist: see Matcher.tails
	globs bool   // globs are filed here: see Matcher.globSlots
}

// tail is a "*t.key" pattern: it matches when the label before key ends in t.
type tail struct {
	t, literal string // literal is t + "." + key
	rule       uint32
}

type glob struct {
	pattern string // lower case
	prefix  string // what comes before the first '*': every match starts with it
	fixed   string // what follows the last '*': every match ends in it
	inner   string // the longest literal between two '*'s: every match holds it
	// end and endMask are the last (up to) eight bytes of fixed, as
	// tailWord reads them: one comparison turns most names away.
	end, endMask uint64
	lit          int // literal characters, for specificity
	rule         uint32
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
	var at [4]int32 // slots with globs that the walk meets
	nat := 0        // how many; past len(at), every glob is tried
	if len(m.slots) > 0 {
		if s := &m.slots[m.probe(name, m.hash(name))]; s.exact != 0 {
			return Match{Rule: m.rules[s.exact-1], Literal: m.key(s), Shape: endpoints.Exact}
		}
		// Parent domains, longest first: the first that has a pattern for
		// this name is the most specific the table holds. The slots passed
		// on the way name the globs to try.
		label := 0 // start of the label before the suffix
		i := 0
		for ; i < len(name) && best.Rule == nil; i++ {
			if name[i] != '.' {
				continue
			}
			j := m.probe(name[i+1:], m.hash(name[i+1:]))
			s := &m.slots[j]
			if s.n == 0 {
				label = i + 1
				continue
			}
			if s.globs && (nat == 0 || !m.propagated) {
				if nat < len(at) {
					at[nat] = int32(j)
				}
				nat++
			}
			if s.tails {
				lbl := name[label:i]
				for _, t := range m.tailLists[slotIndex(m.tailSlots, uint32(j))] { // longest first
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
		// Anchors above where the walk stopped, in a table that did not
		// file them under every key.
		for ; !m.propagated && len(m.globSlots) > 0 && i < len(name) && nat <= len(at); i++ {
			if name[i] == '.' {
				if j := m.probe(name[i+1:], m.hash(name[i+1:])); m.slots[j].globs {
					if nat < len(at) {
						at[nat] = int32(j)
					}
					nat++
				}
			}
		}
	}
	// The first glob in glob order that matches wins, if it is more
	// specific than the table's match. Each list is in glob order.
	spec, won := best.specificity(), len(m.globs)
	end := tailWord(name)
	if len(m.anyGlobs) > 0 && m.anyMask&prefixBit(name) != 0 {
		won = m.tryGlobs(m.anyGlobs, name, end, spec, won)
	}
	if nat > len(at) { // a name under more anchors than at holds
		for i := range m.globs {
			won = m.tryGlobs([]uint32{uint32(i)}, name, end, spec, won)
		}
	} else {
		for _, j := range at[:nat] {
			won = m.tryGlobs(m.globLists[slotIndex(m.globSlots, uint32(j))], name, end, spec, won)
		}
	}
	if won < len(m.globs) {
		g := &m.globs[won]
		return Match{Rule: m.rules[g.rule], Literal: g.pattern, Shape: endpoints.Glob}
	}
	return best
}

// slotIndex finds slot j in slots, ascending, where it must be.
func slotIndex(slots []uint32, j uint32) int {
	lo, hi := 0, len(slots)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if slots[mid] < j {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// prefixBit maps the first four bytes of a name (or glob prefix) to one
// of 64 bits; shorter ones map to every bit.
func prefixBit[T string | []byte](s T) uint64 {
	if len(s) < 4 {
		return ^uint64(0)
	}
	h := (uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24) * 0x9E3779B1
	h ^= h >> 16
	return 1 << ((h * 0x85EBCA6B) >> 26)
}

// tailWord packs the last eight bytes of s, the last byte lowest, into a
// word; a shorter s leaves the high bytes zero.
func tailWord(s []byte) uint64 {
	if len(s) >= 8 {
		return binary.BigEndian.Uint64(s[len(s)-8:])
	}
	var w uint64
	for i := range s {
		w = w<<8 | uint64(s[i])
	}
	return w
}

// tryGlobs returns the index of the first glob of list that matches name,
// is more specific than spec and comes before won in glob order; else won.
// end is the name's tailWord.
func (m *Matcher) tryGlobs(list []uint32, name []byte, end uint64, spec, won int) int {
	for _, gi := range list {
		g := &m.globs[gi]
		if int(gi) >= won || g.lit <= spec {
			break
		}
		if end&g.endMask != g.end {
			continue
		}
		// Most names fail the cheap tests of the glob's two ends, or of
		// the literal it has inside.
		if len(name) < len(g.prefix)+len(g.fixed) || len(g.fixed) > 8 && string(name[len(name)-len(g.fixed):]) != g.fixed ||
			string(name[:len(g.prefix)]) != g.prefix {
			continue
		}
		if g.inner != "" && !bytes.Contains(name, []byte(g.inner)) {
			continue
		}
		if endpoints.GlobMatch(g.pattern, name) {
			return int(gi)
		}
	}
	return won
}

func (m *Matcher) key(s *slot) string { return m.arena[s.off : s.off+uint32(s.n)] }

// home maps a hash to a slot index without a power-of-two table size.
func (m *Matcher) home(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(m.slots)))
	return int(hi)
}

// hash is key's hash, for probe.
func (m *Matcher) hash(key []byte) uint64 { return maphash.Bytes(m.seed, key) }

// probe is the table's one walk, for looking keys up and adding them alike:
// from the home slot of h, key's hash, it returns the index of key's slot
// or, where key is not in the table, of the empty slot that ends the walk,
// the slot key goes in. An empty slot has no patterns, so a lookup may read
// it as it reads any slot. A nil key matches no slot, so a table being
// rebuilt from distinct keys is given each one's empty slot. The table must
// have an empty slot (see reserve).
func (m *Matcher) probe(key []byte, h uint64) int {
	tag := tagOf(h)
	for i := m.home(h); ; i++ {
		if i == len(m.slots) {
			i = 0
		}
		s := &m.slots[i]
		if s.n == 0 || s.tag == tag && int(s.n) == len(key) && m.arena[s.off:s.off+uint32(s.n)] == string(key) {
			return i
		}
	}
}

// tagOf is the tag a slot keeps of its key's hash.
func tagOf(h uint64) uint8 { return uint8(h >> 56) }

// sortGlobs orders globs longest literal first, the order Lookup tries them.
func sortGlobs(gs []glob) {
	slices.SortStableFunc(gs, func(a, b glob) int { return b.lit - a.lit })
}

package policy

import (
	"cmp"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/phonehome/phonehome/endpoints"
)

// matcherBuilder collects patterns straight into the Matcher's table, so a
// million-line list costs the table and the arena and little else while it
// compiles. The first pattern added for a name and shape wins: the catalog
// goes in before user lists, so a list that repeats a documented endpoint
// keeps Microsoft's description.
type matcherBuilder struct {
	m     Matcher
	arena strings.Builder
	used  int // slots in use
	index map[*Rule]uint32
}

// maxLoad is how full the table may get, in percent.
const maxLoad = 80

// smallTable is the most keys a table may have to be kept sparser and to
// have its globs filed under every key (a variable for the tests).
var smallTable = 1 << 16

func (b *matcherBuilder) ruleID(r *Rule) uint32 {
	if b.index == nil {
		b.index = map[*Rule]uint32{}
	}
	id, ok := b.index[r]
	if !ok {
		id = uint32(len(b.m.rules))
		b.m.rules = append(b.m.rules, r)
		b.index[r] = id
	}
	return id
}

// reserve makes room for n more keys and bytes more arena, so that a big list
// is added without the table or the arena growing step by step.
func (b *matcherBuilder) reserve(n, bytes int) {
	b.arena.Grow(bytes)
	if len(b.m.slots) == 0 {
		b.m.seed = maphash.MakeSeed()
	}
	// Keep the table at most maxLoad full, and so never full: find stops at
	// an empty slot.
	if (b.used+n)*100 >= len(b.m.slots)*maxLoad {
		b.rehash(max((b.used+n)*100/maxLoad+1, 2*len(b.m.slots)))
	}
}

// rehash moves the table to size slots.
func (b *matcherBuilder) rehash(size int) {
	old := b.m.slots
	oldTails := b.m.tails
	b.m.slots = make([]slot, size)
	b.m.tails = nil
	for i := range old {
		s := &old[i]
		if s.n == 0 {
			continue
		}
		// The keys are distinct: probe gives each its empty slot, and
		// the seed, so the tag, is the same.
		j := b.m.probe(nil, maphash.String(b.m.seed, b.m.key(s)))
		b.m.slots[j] = *s
		if s.tails {
			if b.m.tails == nil {
				b.m.tails = map[uint32][]tail{}
			}
			b.m.tails[uint32(j)] = oldTails[uint32(i)]
		}
	}
}

// add adds a pattern (lower case, as endpoints.NormalizePattern makes it).
func (b *matcherBuilder) add(pattern string, r *Rule) {
	shape, lit := endpoints.PatternShape(pattern)
	if shape == endpoints.Glob {
		i := strings.LastIndexByte(pattern, '*')
		b.m.globs = append(b.m.globs, glob{
			pattern: pattern,
			prefix:  pattern[:strings.IndexByte(pattern, '*')],
			fixed:   pattern[i+1:],
			inner:   innerLiteral(pattern),
			end:     tailWord([]byte(pattern[i+1:])),
			endMask: 1<<(8*min(8, len(pattern)-i-1)) - 1,
			lit:     len(pattern) - strings.Count(pattern, "*"),
			rule:    b.ruleID(r),
		})
		b.m.size++
		return
	}
	b.addLiteral(shape, lit, r)
}

// addLiteral adds a pattern of a shape other than Glob by its literal part.
func (b *matcherBuilder) addLiteral(shape endpoints.Shape, lit string, r *Rule) {
	b.addLiteralBytes(shape, []byte(lit), r)
}

// addLiteralBytes is addLiteral for a list line, without making a string of
// it. Literals longer than a DNS name are ignored: no query can match them.
func (b *matcherBuilder) addLiteralBytes(shape endpoints.Shape, lit []byte, r *Rule) {
	if len(lit) == 0 || len(lit) > 253 {
		return
	}
	var t []byte
	key := lit
	if shape == endpoints.Suffix {
		dot := slices.Index(lit, '.')
		if dot < 0 {
			return
		}
		t, key = lit[:dot], lit[dot+1:]
	}
	rule := b.ruleID(r)
	b.reserve(1, 0)
	i := b.slotFor(key)
	s := &b.m.slots[i]
	switch shape {
	case endpoints.Exact:
		if s.exact == 0 {
			s.exact = rule + 1
			b.m.size++
		}
	case endpoints.Subdomains:
		if s.sub == 0 {
			s.sub = rule + 1
			b.m.size++
		}
	case endpoints.Suffix:
		if b.m.tails == nil {
			b.m.tails = map[uint32][]tail{}
		}
		ts := b.m.tails[uint32(i)]
		if !slices.ContainsFunc(ts, func(x tail) bool { return x.t == string(t) }) {
			ts = append(ts, tail{t: string(t), literal: string(lit), rule: rule})
			slices.SortStableFunc(ts, func(a, b tail) int { return cmp.Compare(len(b.t), len(a.t)) })
			b.m.tails[uint32(i)] = ts
			s.tails = true
			b.m.size++
		}
	}
}

// build files the globs under their anchors and returns the Matcher; the
// builder is spent.
func (b *matcherBuilder) build() *Matcher {
	sortGlobs(b.m.globs)
	// Every anchor becomes a key first: inserting may move the slots.
	for _, g := range b.m.globs {
		if a := anchorOf(g.fixed); a != "" {
			b.key([]byte(a))
		}
	}
	// A small table (the catalog's, a few hundred names) is kept at most
	// a third full: a name it does not hold, most queries, then meets an
	// empty slot within a probe or two. Big lists keep maxLoad and their
	// memory.
	if b.used > 0 && b.used < smallTable && b.used*3 > len(b.m.slots) {
		b.rehash(b.used*3 + 1)
	}
	b.m.arena = b.arena.String()
	own := map[uint32][]uint32{} // slot → globs anchored at its key
	for gi, g := range b.m.globs {
		a := anchorOf(g.fixed)
		if a == "" {
			b.m.anyGlobs = append(b.m.anyGlobs, uint32(gi))
			b.m.anyMask |= prefixBit(g.prefix)
			continue
		}
		j := uint32(b.m.find([]byte(a)))
		own[j] = append(own[j], uint32(gi))
	}
	// In a small table each slot takes its parents' globs too: the walk
	// reads the list of the first slot with globs it meets, and may stop
	// there. A big table files each glob under its anchor alone.
	b.m.propagated = b.used < smallTable
	for j := range b.m.slots {
		s := &b.m.slots[j]
		if s.n == 0 {
			continue
		}
		if s.tails {
			b.m.tailSlots = append(b.m.tailSlots, uint32(j))
			b.m.tailLists = append(b.m.tailLists, b.m.tails[uint32(j)])
		}
		if len(own) == 0 {
			continue
		}
		list := slices.Clone(own[uint32(j)])
		if b.m.propagated {
			key := b.m.key(s)
			for k := 0; k < len(key); k++ {
				if key[k] == '.' {
					if p := b.m.find([]byte(key[k+1:])); p >= 0 {
						list = append(list, own[uint32(p)]...)
					}
				}
			}
		}
		if len(list) > 0 {
			slices.Sort(list)
			b.m.globSlots = append(b.m.globSlots, uint32(j))
			b.m.globLists = append(b.m.globLists, slices.Compact(list))
			s.globs = true
		}
	}
	b.m.tails = nil
	m := b.m
	return &m
}

// innerLiteral returns the longest run of a glob between two '*'s:
// ".login.msa." in "*.login.msa.*.net".
func innerLiteral(pattern string) string {
	parts := strings.Split(pattern, "*")
	inner := ""
	for _, p := range parts[1 : len(parts)-1] {
		if len(p) > len(inner) {
			inner = p
		}
	}
	return inner
}

// anchorOf returns a glob's anchor: the longest whole domain that its fixed
// end (what follows its last '*') ends in, or "" when it has none
// (".microsoft.com" → "microsoft.com", "windows.com" → "com", "" → "").
func anchorOf(fixed string) string {
	if a, ok := strings.CutPrefix(fixed, "."); ok {
		return a
	}
	if i := strings.IndexByte(fixed, '.'); i >= 0 {
		return fixed[i+1:]
	}
	return ""
}

// find returns the index of key's slot, or -1.
func (m *Matcher) find(key []byte) int {
	if i := m.probe(key, m.hash(key)); m.slots[i].n != 0 {
		return i
	}
	return -1
}

// key makes k a key of the table, with no pattern of its own.
func (b *matcherBuilder) key(k []byte) {
	b.reserve(1, len(k))
	b.slotFor(k)
}

// slotFor returns the slot of key, adding key to the table and the arena
// if it is new: a repeated key costs no arena. The table must have room.
func (b *matcherBuilder) slotFor(key []byte) int {
	h := b.m.hash(key)
	i := b.m.probe(key, h)
	if s := &b.m.slots[i]; s.n == 0 {
		off := b.arena.Len()
		b.arena.Write(key)
		b.m.arena = b.arena.String() // no copy: the builder's own bytes
		*s = slot{off: uint32(off), n: uint8(len(key)), tag: tagOf(h)}
		b.used++
	}
	return i
}

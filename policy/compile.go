package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/config"
)

// Compile builds the Policy of a checked config: it reads the endpoint
// documents and list files the config names and compiles each group's
// matchers. Warnings are worth showing (rows and list lines skipped, and
// overrides and lists that sinkhole protected endpoints, naming what will
// break); an error means nothing was built, and the running policy should
// stay.
func Compile(cfg *Config, src *config.Source) (*Policy, []string, error) {
	var docs []string
	for _, d := range cfg.Catalog.Docs {
		docs = append(docs, src.Resolve(d))
	}
	cat, docWarns, err := endpoints.Load(*cfg.Catalog.Builtin, docs...)
	if err != nil {
		r := config.NewReport(src)
		r.Value("catalog", "%v", err)
		return nil, nil, r.Err()
	}
	var warns []string
	for _, w := range docWarns {
		warns = append(warns, w.String())
	}
	p := &Policy{Catalog: cat}
	errs := config.NewReport(src)
	for i, gc := range cfg.groups() {
		name := gc.Name
		if i == 0 {
			name = "default"
		}
		g, w := compileGroup(gc, name, groupPath(i), cat, errs)
		warns = append(warns, w...)
		if i == 0 {
			p.Default = g
			continue
		}
		p.Groups = append(p.Groups, g)
		for _, c := range g.Clients {
			p.clients.add(c, g)
		}
	}
	if err := errs.Err(); err != nil {
		return nil, warns, err
	}
	return p, warns, nil
}

// compileGroup builds one group's matchers; gp is where the group sits in
// the file, for errors (reported to errs) and warnings.
func compileGroup(gc *GroupConfig, name, gp string, cat *endpoints.Catalog, errs *config.Report) (*Group, []string) {
	src := errs.Source()
	g := &Group{Name: name, Edition: *gc.Edition, Windows: endpoints.Version(*gc.Windows), Unlisted: *gc.Unlisted, actions: gc.Actions}
	for _, c := range gc.Clients {
		g.Clients = append(g.Clients, c.Prefix)
	}
	var warns []string
	warn := func(p config.Pos, format string, args ...any) {
		warns = append(warns, config.Error{File: src.FileName(), Line: p.Line, Col: p.Col, Msg: fmt.Sprintf(format, args...)}.Error())
	}

	// The catalog first, so that a list repeating a documented endpoint
	// keeps Microsoft's description: the entries documented for the
	// group's editions and versions, then the families derived from them.
	// A more specific pattern still wins whatever the order.
	var b matcherBuilder
	entryRule := func(e *endpoints.Entry) *Rule {
		r := &Rule{Category: e.Category, Entry: e, Action: g.Action(e.Category), Versions: e.VersionsFor(g.Edition).String()}
		if r.Action == Sinkhole && e.Protected {
			r.Action, r.demoted = Log, true
		}
		switch e.Kind {
		case endpoints.Family:
			r.Answer = fmt.Sprintf("phonehome: %s %s (family of %s)", e.Category, e.Pattern, e.Members[0])
		case endpoints.FirstParty:
			r.Answer = fmt.Sprintf("phonehome: %s %s (no Microsoft document lists it)", e.Category, e.Pattern)
		default:
			r.Answer = fmt.Sprintf("phonehome: %s %s (Windows %s)", e.Category, e.Pattern, r.Versions)
		}
		return r
	}
	documented := 0
	var forEdition endpoints.Version // the versions documented for the group's editions
	for _, e := range cat.Entries {
		forEdition |= e.VersionsFor(g.Edition)
		if e.AppliesTo(g.Edition, g.Windows) {
			b.add(e.Pattern, entryRule(e))
			documented++
		}
	}
	if documented == 0 && len(cat.Entries) > 0 {
		warn(src.KeyOr(gp+".windows", gp), "group %s: no document lists endpoints for edition %s on Windows %s; documents for that edition cover %s",
			name, g.Edition, g.Windows, forEdition)
	}
	for _, e := range cat.Families {
		b.add(e.Pattern, entryRule(e))
	}
	lists := map[*Rule]int{} // each list's rule → its index in the group's lists
	for i, l := range gc.Lists {
		lp := fmt.Sprintf("%s.lists[%d]", gp, i)
		c := endpoints.Category(strings.ToLower(l.Category))
		if l.File != "" {
			path := src.Resolve(l.File)
			r := &Rule{Category: c, Source: path, Action: g.Action(c)}
			lists[r] = i
			_, w, err := b.listFile(path, r)
			if err != nil {
				errs.Key(lp+".file", "%v", err)
			}
			warns = append(warns, w...)
			continue
		}
		r := &Rule{Category: c, Source: "config", Action: g.Action(c)}
		lists[r] = i
		for _, pat := range l.Patterns {
			np, err := endpoints.NormalizePattern(pat)
			if err != nil {
				errs.Value(lp, "%v", err)
				continue
			}
			b.add(np, r)
		}
	}
	// Microsoft's own domains last: a name under one that nothing above
	// matched is undocumented. A documented "*.domain" takes the same
	// slot first and keeps it; every other documented pattern for such a
	// name is more specific (a test checks both).
	for _, e := range cat.Domains {
		b.add(e.Pattern, entryRule(e))
	}
	g.matcher = b.build()
	g.Patterns = g.matcher.Len()

	if len(gc.Overrides) > 0 {
		var ob matcherBuilder
		for _, a := range []Action{Allow, Log, Sinkhole} {
			for _, pat := range gc.Overrides[a] {
				ob.add(pat, &Rule{Action: a, Source: "override"})
			}
		}
		g.overrides = ob.build()
		// Name what an override will break.
		for _, e := range cat.Entries {
			if !e.Protected || !e.AppliesTo(g.Edition, g.Windows) {
				continue
			}
			if o := g.overrides.Lookup(representative(e.Pattern)); o.Rule != nil && o.Rule.Action == Sinkhole {
				warn(src.Value(gp+".overrides."+o.Pattern()), "group %s: override sinkhole %s sinkholes protected endpoint %s, "+
					"also where an answer's CNAME chain reaches it: %s", name, o.Pattern(), e.Pattern, e.Reason)
			}
		}
	}
	for _, lw := range listsOverProtected(g, lists) {
		more := ""
		if lw.n > 1 {
			more = fmt.Sprintf(" and %d more", lw.n-1)
		}
		i := lists[lw.list]
		lp, list, at := fmt.Sprintf("%s.lists[%d]", gp, i), lw.list.Source, ""
		if list == "config" {
			list = "in the config"
			for j, pat := range gc.Lists[i].Patterns {
				if np, _ := endpoints.NormalizePattern(pat); np == lw.example {
					at = fmt.Sprintf("%s.patterns[%d]", lp, j)
					break
				}
			}
		}
		warn(src.KeyOr(lp+".file", cmp.Or(at, lp)),
			"group %s: list %s (category %s: sinkhole) sinkholes protected endpoint %s (%s%s), also where an answer's CNAME chain reaches it: %s",
			name, list, lw.list.Category, lw.entry.Pattern, lw.example, more, lw.entry.Reason)
	}
	return g, warns
}

// listWarning is a sinkholing list's patterns under one protected entry.
type listWarning struct {
	list    *Rule
	entry   *endpoints.Entry
	example string // the list's first such pattern, alphabetically
	n       int    // how many
}

// listsOverProtected finds the patterns of g's sinkholing lists (lists,
// by rule) that decide for names of a protected endpoint: being more
// specific than the protected pattern, each wins over it, for a question
// as for a name along an answer's CNAME chain. A list line that repeats a
// protected pattern or a wider one loses to it and is not named. The
// lists' patterns are read back from the matcher: one lookup in a table of
// the group's few protected patterns for each pattern of a sinkholing list.
func listsOverProtected(g *Group, lists map[*Rule]int) []listWarning {
	m := g.matcher
	sinks := make([]bool, len(m.rules)) // by rule index
	var pb matcherBuilder               // the group's protected entries
	sinking, protected := false, false
	for i, r := range m.rules {
		if _, ok := lists[r]; ok && r.Action == Sinkhole {
			sinks[i], sinking = true, true
		}
		if r.Protected() {
			pb.add(r.Entry.Pattern, r)
			protected = true
		}
	}
	if !sinking || !protected {
		return nil
	}
	pm := pb.build()
	type key struct {
		list  *Rule
		entry *endpoints.Entry
	}
	found := map[key]*listWarning{}
	// check looks at one pattern of rule (its index+1); an exact name
	// always decides for itself, a wildcard when nothing more specific does.
	check := func(pattern string, rule uint32, exact bool) {
		if rule == 0 || !sinks[rule-1] {
			return
		}
		name := representative(pattern)
		p := pm.Lookup(name)
		if p.Rule == nil || !exact && m.Lookup(name).Rule != m.rules[rule-1] {
			return // not a protected name, or another pattern decides it
		}
		if g.overrides != nil && g.overrides.Lookup(name).Rule != nil {
			return // an override decides it
		}
		k := key{m.rules[rule-1], p.Rule.Entry}
		w := found[k]
		if w == nil {
			w = &listWarning{list: k.list, entry: k.entry, example: pattern}
			found[k] = w
		}
		w.n++
		w.example = min(w.example, pattern)
	}
	for _, s := range arenaOrder(m, func(s *slot) bool {
		return s.exact != 0 && sinks[s.exact-1] || s.sub != 0 && sinks[s.sub-1]
	}) {
		check(m.key(&s), s.exact, true)
		if s.sub != 0 && sinks[s.sub-1] {
			check("*."+m.key(&s), s.sub, false)
		}
	}
	for _, ts := range m.tailLists {
		for _, t := range ts {
			check("*"+t.literal, t.rule+1, false)
		}
	}
	for _, gl := range m.globs {
		check(gl.pattern, gl.rule+1, false)
	}
	out := make([]listWarning, 0, len(found))
	for _, w := range found {
		out = append(out, *w)
	}
	// The lists in the order written, each one's entries by pattern.
	slices.SortFunc(out, func(a, b listWarning) int {
		return cmp.Or(cmp.Compare(lists[a.list], lists[b.list]), cmp.Compare(a.entry.Pattern, b.entry.Pattern))
	})
	return out
}

// representative is a name a pattern matches: its '*'s filled in.
func representative(pattern string) string {
	if strings.HasPrefix(pattern, "*.") {
		return "x" + pattern[1:]
	}
	return strings.ReplaceAll(pattern, "*", "x")
}

// arenaOrder returns copies of the slots of m that keep says to keep,
// nearly in the order of their keys in the arena, which is the order the
// lists were read in: a walk of a big table in its own order would miss
// the cache on nearly every key it reads. Slots are sorted by the 4 KiB
// page of the arena their key starts on, by counting.
func arenaOrder(m *Matcher, keep func(*slot) bool) []slot {
	const page = 12
	counts := make([]uint32, len(m.arena)>>page+2)
	n := 0
	for i := range m.slots {
		if s := &m.slots[i]; s.n != 0 && keep(s) {
			counts[s.off>>page+1]++
			n++
		}
	}
	for i := 1; i < len(counts); i++ {
		counts[i] += counts[i-1]
	}
	order := make([]slot, n)
	for i := range m.slots {
		if s := &m.slots[i]; s.n != 0 && keep(s) {
			order[counts[s.off>>page]] = *s
			counts[s.off>>page]++
		}
	}
	return order
}

package policy

import (
	"fmt"
	"strings"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/config"
)

// Compile builds the Policy of a checked config: it reads the endpoint
// documents and list files the config names and compiles each group's
// matchers. Warnings are worth showing (rows and list lines skipped, and
// overrides that sinkhole protected endpoints, naming what will break); an
// error means nothing was built, and the running policy should stay.
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
	for i, l := range gc.Lists {
		lp := fmt.Sprintf("%s.lists[%d]", gp, i)
		c := endpoints.Category(strings.ToLower(l.Category))
		if l.File != "" {
			path := src.Resolve(l.File)
			r := &Rule{Category: c, Source: path, Action: g.Action(c)}
			_, w, err := b.listFile(path, r)
			if err != nil {
				errs.Key(lp+".file", "%v", err)
			}
			warns = append(warns, w...)
			continue
		}
		r := &Rule{Category: c, Source: "config", Action: g.Action(c)}
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
				warn(src.Value(gp+".overrides."+o.Pattern()), "group %s: override sinkhole %s sinkholes protected endpoint %s: %s",
					name, o.Pattern(), e.Pattern, e.Reason)
			}
		}
	}
	return g, warns
}

// representative is a name a pattern matches: its '*'s filled in.
func representative(pattern string) string {
	if strings.HasPrefix(pattern, "*.") {
		return "x" + pattern[1:]
	}
	return strings.ReplaceAll(pattern, "*", "x")
}

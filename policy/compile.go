package policy

import (
	"fmt"
	"strings"

	"github.com/phonehome/phonehome/endpoints"
)

// Compile builds the Policy of a checked config: it reads the endpoint
// documents and list files the config names and compiles each group's
// matchers. Warnings are worth showing (rows and list lines skipped, and
// overrides that sinkhole protected endpoints, naming what will break); an
// error means nothing was built, and the running policy should stay.
func Compile(cfg *Config) (*Policy, []string, error) {
	var docs []string
	for _, d := range cfg.Catalog.Docs {
		docs = append(docs, cfg.resolve(d))
	}
	cat, docWarns, err := endpoints.Load(*cfg.Catalog.Builtin, docs...)
	if err != nil {
		return nil, nil, ConfigErrors{{File: cfg.File, Line: cfg.Catalog.Pos.Line, Col: cfg.Catalog.Pos.Col, Msg: err.Error()}}
	}
	var warns []string
	for _, w := range docWarns {
		warns = append(warns, w.String())
	}
	p := &Policy{Catalog: cat}
	var errs ConfigErrors
	for i, gc := range append([]*GroupConfig{&cfg.Policy.Default}, cfg.groupPtrs()...) {
		name := gc.Name
		if i == 0 {
			name = "default"
		}
		g, w, e := compileGroup(cfg, gc, name, cat)
		warns = append(warns, w...)
		errs = append(errs, e...)
		if i == 0 {
			p.Default = g
			continue
		}
		p.Groups = append(p.Groups, g)
		for _, c := range g.Clients {
			p.clients.add(c, g)
		}
	}
	if len(errs) > 0 {
		return nil, warns, errs
	}
	return p, warns, nil
}

func compileGroup(cfg *Config, gc *GroupConfig, name string, cat *endpoints.Catalog) (*Group, []string, ConfigErrors) {
	g := &Group{Name: name, Edition: *gc.Edition, Windows: *gc.Windows, Unlisted: *gc.Unlisted, actions: gc.Actions.Map}
	for _, c := range gc.Clients {
		g.Clients = append(g.Clients, c.Prefix)
	}
	var warns []string
	var errs ConfigErrors

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
		p, ok := gc.KeyPos["windows"]
		if !ok {
			p = gc.Pos
		}
		warns = append(warns, fmt.Sprintf("%s:%d:%d: group %s: no document lists endpoints for edition %s on Windows %s; documents for that edition cover %s",
			cfg.File, p.Line, p.Col, name, g.Edition, g.Windows, forEdition))
	}
	for _, e := range cat.Families {
		b.add(e.Pattern, entryRule(e))
	}
	for _, l := range gc.Lists {
		c := endpoints.Category(strings.ToLower(l.Category))
		if l.File != "" {
			path := cfg.resolve(l.File)
			r := &Rule{Category: c, Source: path, Action: g.Action(c)}
			_, w, err := b.listFile(path, r)
			if err != nil {
				p := l.KeyPos["file"]
				errs = append(errs, ConfigError{File: cfg.File, Line: p.Line, Col: p.Col, Msg: err.Error()})
			}
			warns = append(warns, w...)
			continue
		}
		r := &Rule{Category: c, Source: "config", Action: g.Action(c)}
		for _, pat := range l.Patterns {
			np, err := endpoints.NormalizePattern(pat)
			if err != nil {
				errs = append(errs, ConfigError{File: cfg.File, Line: l.Pos.Line, Col: l.Pos.Col, Msg: err.Error()})
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

	if len(gc.Overrides.Map) > 0 {
		var ob matcherBuilder
		for _, a := range []Action{Allow, Log, Sinkhole} {
			for _, pat := range gc.Overrides.Map[a] {
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
				p := gc.Overrides.Pos[o.Pattern()]
				warns = append(warns, fmt.Sprintf("%s:%d:%d: group %s: override sinkhole %s sinkholes protected endpoint %s: %s",
					cfg.File, p.Line, p.Col, name, o.Pattern(), e.Pattern, e.Reason))
			}
		}
	}
	return g, warns, errs
}

// representative is a name a pattern matches: its '*'s filled in.
func representative(pattern string) string {
	if strings.HasPrefix(pattern, "*.") {
		return "x" + pattern[1:]
	}
	return strings.ReplaceAll(pattern, "*", "x")
}

package endpoints

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ExportOptions changes what Export writes.
type ExportOptions struct {
	// Protected lists protected entries as rules too. By default they are
	// left out, each with a comment saying what blocking it would break.
	Protected bool
}

// Formats lists the export formats Export takes.
var Formats = []string{"hosts", "dnsmasq", "unbound", "rpz", "adguard"}

// Export writes entries as a block list in the given format, with a header
// comment naming phonehome, the sources and the count. Each entry gets a
// comment line with its category and description, then its rules, in the
// order given; a rule already written for an earlier entry is not repeated.
//
// Not every format can say what every pattern says. Where a format cannot
// express a pattern exactly, a comment at the entry says how it errs:
//
//	| format  | Exact       | Subdomains  | Suffix       | Glob       |
//	|---------|-------------|-------------|--------------|------------|
//	| hosts   | exact       | not listed  | under-blocks | not listed |
//	| dnsmasq | over-blocks | exact       | exact        | not listed |
//	| unbound | exact       | over-blocks | under-blocks | not listed |
//	| rpz     | exact       | exact       | under-blocks | not listed |
//	| adguard | exact       | exact       | exact        | exact      |
//
// Over-blocks means the rules also block the rest of the literal's domain:
// dnsmasq blocks every name under fe2cr.update.microsoft.com, and unbound
// blocks update.microsoft.com itself for *.update.microsoft.com. Under-blocks
// means the literal name and the names under it are blocked but not other
// names that end in it (xdl.delivery.mp.microsoft.com for
// *dl.delivery.mp.microsoft.com); a hosts file lists only the literal name.
// Not listed means no rule at all, only the comment.
//
// hosts is for /etc/hosts and Pi-hole (0.0.0.0 name). dnsmasq is a
// configuration file (address= and local=, so that other query types than A
// and AAAA get NODATA rather than being forwarded), tested with dnsmasq 2.90;
// its '*' forms need the domain matching of 2.86 or later. unbound is a
// server: clause of local-zone and local-data to include. rpz is a complete
// response policy zone whose owner names are relative, so it loads under any
// zone name, such as rpz.phonehome. adguard uses AdGuard Home's filter syntax.
func Export(w io.Writer, format string, entries []*Entry, opts ExportOptions) error {
	var listed, held []*Entry
	for _, e := range entries {
		if e.Protected && !opts.Protected {
			held = append(held, e)
		} else {
			listed = append(listed, e)
		}
	}
	x, err := newExporter(format, listed)
	if err != nil {
		return err
	}
	var body, all []string
	seen := map[string]bool{}
	for _, e := range listed {
		p := OneLine(e.Pattern)
		body = append(body, x.comment+" "+describe(e))
		s, lit := PatternShape(e.Pattern)
		var rules, notes []string
		if ValidHostname(strings.ReplaceAll(e.Pattern, "*", "x")) {
			rules, notes = x.rules(e.Pattern, s, lit)
		} else {
			notes = []string{"not a valid host name; not listed"}
		}
		for _, n := range notes {
			body = append(body, x.comment+" "+p+": "+n)
		}
		fresh := 0
		for _, r := range rules {
			if !seen[r] {
				seen[r] = true
				body = append(body, r)
				all = append(all, r)
				fresh++
			}
		}
		if len(rules) > 0 && fresh == 0 {
			body = append(body, x.comment+" "+p+": already listed above")
		}
	}
	if x.extra != nil {
		if note, more := x.extra(all); len(more) > 0 {
			body = append(body, x.comment+" "+note)
			body = append(body, more...)
			all = append(all, more...)
		}
	}
	if len(held) > 0 {
		body = append(body, x.comment+" Protected endpoints, not listed because blocking them breaks Windows (ExportOptions.Protected, or phonehome endpoints -protected, lists them):")
		for _, e := range held {
			body = append(body, x.comment+" "+OneLine(e.Pattern)+": "+OneLine(e.Reason))
		}
	}

	bw := bufio.NewWriter(w)
	for _, l := range header(x.comment, format, listed, len(all)) {
		fmt.Fprintln(bw, l)
	}
	for _, l := range x.preamble {
		fmt.Fprintln(bw, l)
	}
	for _, l := range body {
		fmt.Fprintln(bw, x.indent+l)
	}
	return bw.Flush()
}

// fidelity says how the rules a format writes for a pattern compare with
// Match on it.
type fidelity int

const (
	faithful    fidelity = iota // blocks exactly the names the pattern matches
	overBlocks                  // also the literal and every name under it
	underBlocks                 // only some of the names the pattern matches
	unlisted                    // none: only a comment
)

// String returns the words of the table in Export's doc comment.
func (f fidelity) String() string {
	return [...]string{"exact", "over-blocks", "under-blocks", "not listed"}[f]
}

// fidelities is the table in Export's doc comment, indexed by Shape. The
// tests hold each format's output to it.
var fidelities = map[string][4]fidelity{
	"hosts":   {faithful, unlisted, underBlocks, unlisted},
	"dnsmasq": {overBlocks, faithful, faithful, unlisted},
	"unbound": {faithful, overBlocks, underBlocks, unlisted},
	"rpz":     {faithful, faithful, underBlocks, unlisted},
	"adguard": {faithful, faithful, faithful, faithful},
}

// exporter is one format: what a comment looks like, what comes before the
// rules, and the rules for one pattern.
type exporter struct {
	comment  string
	preamble []string
	indent   string
	// rules returns the rule lines for one valid pattern, and notes on how
	// they differ from it.
	rules func(pattern string, s Shape, lit string) (rules, notes []string)
	// extra, if set, returns the rules the whole list needs beyond each
	// pattern's own, with a comment saying why.
	extra func(rules []string) (note string, more []string)
}

func newExporter(format string, entries []*Entry) (*exporter, error) {
	switch format {
	case "hosts":
		return &exporter{comment: "#", rules: hostsRules}, nil
	case "dnsmasq":
		return &exporter{comment: "#", rules: dnsmasqRules}, nil
	case "unbound":
		return &exporter{comment: "#", preamble: []string{"server:"}, indent: "\t", rules: unboundRules(entries)}, nil
	case "rpz":
		return &exporter{
			comment: ";",
			preamble: []string{
				"$TTL 300",
				"@ SOA localhost. hostmaster.localhost. 1 3600 600 86400 300",
				"@ NS localhost.",
			},
			rules: rpzRules,
			extra: rpzShadowed,
		}, nil
	case "adguard":
		return &exporter{
			comment:  "!",
			preamble: []string{"! Title: phonehome Windows connection endpoints"},
			rules: func(p string, _ Shape, _ string) ([]string, []string) {
				return []string{"|" + p + "^"}, nil
			},
		}, nil
	}
	return nil, fmt.Errorf("unknown export format %q (valid: %s)", format, strings.Join(Formats, ", "))
}

func hostsRules(_ string, s Shape, lit string) ([]string, []string) {
	switch s {
	case Exact:
		return []string{"0.0.0.0 " + lit}, nil
	case Suffix:
		return []string{"0.0.0.0 " + lit}, []string{"hosts files have no wildcards; only " + lit + " itself is listed, not other names ending in it"}
	}
	return nil, []string{"hosts files have no wildcards; not listed"}
}

// dnsmasqRules writes the pattern itself as the domain: dnsmasq matches
// /name/ as the name and every name under it, /*.name/ as the names under it
// only, and /*name/ as every name ending in name. The local= line makes
// dnsmasq answer other query types with NODATA instead of forwarding them,
// which it does for address= alone since 2.86.
func dnsmasqRules(p string, s Shape, lit string) ([]string, []string) {
	if s == Glob {
		return nil, []string{"dnsmasq takes '*' only at the start of a name; not listed"}
	}
	rules := []string{"address=/" + p + "/#", "local=/" + p + "/"}
	if s == Exact {
		return rules, []string{"dnsmasq matches whole domains; every name under " + lit + " is blocked too"}
	}
	return rules, nil
}

// unboundRules returns the rules function for entries: an exact name is a
// transparent zone with null addresses, so that names under it still resolve,
// unless an always_null zone of another entry already holds it, because the
// innermost zone decides and a transparent zone there would let the names
// under it through.
func unboundRules(entries []*Entry) func(string, Shape, string) ([]string, []string) {
	nulls := map[string]bool{}
	for _, e := range entries {
		if s, lit := PatternShape(e.Pattern); (s == Subdomains || s == Suffix) && ValidHostname(lit) {
			nulls[lit] = true
		}
	}
	return func(_ string, s Shape, lit string) ([]string, []string) {
		switch s {
		case Exact:
			for z := lit; z != ""; z = parent(z) {
				if nulls[z] {
					return nil, []string{fmt.Sprintf("blocked by local-zone %q always_null", z+".")}
				}
			}
			return []string{
				fmt.Sprintf("local-zone: %q transparent", lit+"."),
				fmt.Sprintf("local-data: %q", lit+". A 0.0.0.0"),
				fmt.Sprintf("local-data: %q", lit+". AAAA ::"),
			}, nil
		case Subdomains:
			return []string{fmt.Sprintf("local-zone: %q always_null", lit+".")},
				[]string{"a local-zone holds its own name; " + lit + " itself is blocked too"}
		case Suffix:
			return []string{fmt.Sprintf("local-zone: %q always_null", lit+".")},
				[]string{"a local-zone holds whole names; other names ending in " + lit + " are not blocked"}
		}
		return nil, []string{"unbound local-zones have no wildcards; not listed"}
	}
}

// rpzRules writes owner names relative to the zone. "CNAME ." answers
// NXDOMAIN; "*.name" matches the names under name, not name itself.
func rpzRules(_ string, s Shape, lit string) ([]string, []string) {
	switch s {
	case Exact:
		return []string{lit + " CNAME ."}, nil
	case Subdomains:
		return []string{"*." + lit + " CNAME ."}, nil
	case Suffix:
		return []string{lit + " CNAME .", "*." + lit + " CNAME ."},
			[]string{"RPZ wildcards stand for whole labels; other names ending in " + lit + " are not blocked"}
	}
	return nil, []string{"RPZ wildcards stand only for whole leading labels; not listed"}
}

// rpzShadowed returns the rules a policy zone needs because a wildcard does
// not cover a name that exists in the zone, nor the names under it (RFC
// 4592): a name listed under *.update.microsoft.com, or the parent of a
// wildcard listed there, would otherwise let its own subdomains through. Each
// such name gets a rule for itself and its subdomains, which the wildcard
// above it blocks anyway.
func rpzShadowed(rules []string) (string, []string) {
	have := map[string]bool{}
	wild := map[string]bool{}
	exists := map[string]bool{}
	for _, r := range rules {
		owner := strings.TrimSuffix(r, " CNAME .")
		have[owner] = true
		name, isWild := strings.CutPrefix(owner, "*.")
		wild[name] = wild[name] || isWild
		for n := name; n != "" && !exists[n]; n = parent(n) {
			exists[n] = true
		}
	}
	var names []string
	for n := range exists {
		for p := parent(n); p != ""; p = parent(p) {
			if wild[p] {
				names = append(names, n)
				break
			}
		}
	}
	slices.Sort(names)
	var more []string
	for _, n := range names {
		for _, owner := range []string{n, "*." + n} {
			if !have[owner] {
				more = append(more, owner+" CNAME .")
			}
		}
	}
	return "names under a wildcard above that exist in this zone, listed again: a wildcard covers neither them nor the names under them (RFC 4592)", more
}

// parent returns name without its first label, or "".
func parent(name string) string {
	_, p, _ := strings.Cut(name, ".")
	return p
}

func header(c, format string, entries []*Entry, rules int) []string {
	src := "none recorded"
	if s := sources(entries); len(s) > 0 {
		src = strings.Join(s, ", ")
	}
	lines := []string{
		c + " phonehome block list (" + format + " format): Windows connection endpoints",
		c + " Sources: " + src + " (descriptions: Microsoft, CC BY 4.0)",
		fmt.Sprintf("%s %d patterns, %d rules. Where this format cannot express a pattern exactly, a comment there says how it errs.", c, len(entries), rules),
	}
	if slices.ContainsFunc(entries, func(e *Entry) bool { return e.Protected }) {
		lines = append(lines, c+" Patterns marked protected break a Windows feature when blocked.")
	}
	return lines
}

// sources returns the file names of the documents the entries come from.
func sources(entries []*Entry) []string {
	var out []string
	for _, e := range entries {
		for _, u := range e.Uses {
			for _, s := range u.Sources {
				if i := strings.LastIndexByte(s, ':'); i >= 0 {
					s = s[:i]
				}
				out = append(out, filepath.Base(s))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// maxDescription keeps comment lines well inside the line lengths the tools
// read: dnsmasq reads at most about a thousand bytes a line.
const maxDescription = 120

// describe returns the comment text for an entry: its pattern, category,
// protection and description, on one line.
func describe(e *Entry) string {
	var tags []string
	if e.Category != "" {
		tags = append(tags, OneLine(string(e.Category)))
	}
	if e.Protected {
		tags = append(tags, "protected")
	}
	s := OneLine(e.Pattern)
	if len(tags) > 0 {
		s += " (" + strings.Join(tags, ", ") + ")"
	}
	d := OneLine(e.Description())
	if len(d) > maxDescription {
		cut := maxDescription
		for cut > 0 && !utf8.RuneStart(d[cut]) {
			cut--
		}
		d = strings.TrimSpace(d[:cut]) + "..."
	}
	if d != "" {
		s += ": " + d
	}
	return s
}

// OneLine folds runs of white space and control characters into one space,
// so that text stays on its line: a comment line, a table cell, a TSV field.
func OneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
}

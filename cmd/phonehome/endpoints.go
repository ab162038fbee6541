package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/phonehome/phonehome/endpoints"
)

// listFormats are the formats "phonehome endpoints" writes itself; the
// block-list formats come from endpoints.Formats.
var listFormats = []string{"table", "tsv", "json"}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func runEndpoints(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("phonehome endpoints", flag.ContinueOnError)
	fs.SetOutput(stderr)
	formats := append(slices.Clone(listFormats), endpoints.Formats...)
	var (
		edition  = fs.String("edition", "all", "only endpoints documented for this edition: "+endpoints.EditionWords)
		windows  = fs.String("windows", "all", "only endpoints documented for these Windows versions: "+endpoints.VersionWords())
		category = fs.String("category", "", "only these categories, comma-separated (valid: "+endpoints.CategoryNames()+")")
		builtin  = fs.Bool("builtin", true, "include the built-in documents (Windows 10 1709 to Windows 11, every edition)")
		prot     = fs.Bool("protected", false, "block-list formats: list protected endpoints too (blocking them breaks Windows)")
		format   = fs.String("format", "table", "output format: "+strings.Join(formats, "|"))
		docs     multiFlag
	)
	fs.Var(&docs, "doc", "also read this Microsoft endpoint document (markdown); repeatable")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: phonehome endpoints [-edition E] [-windows V] [-category a,b] [-doc FILE]... [-builtin=false] [-format F] [-protected]")
		fmt.Fprintln(stderr, "       phonehome endpoints diff FROM TO [-edition E] [-format table|json]")
		fmt.Fprintln(stderr, "\nLists the Windows connection endpoints Microsoft documents, or exports them as a block list;")
		fmt.Fprintln(stderr, "diff lists what a later Windows version added, dropped or changed.")
		fs.PrintDefaults()
	}
	if len(args) > 0 && args[0] == "diff" {
		return runDiff(args[1:], stdout, stderr)
	}
	if err := fs.Parse(args); err != nil {
		return helpCode(err)
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "phonehome endpoints: "+format+"\n", a...)
		return code
	}
	if fs.NArg() > 0 {
		return fail(2, "unexpected argument %q", fs.Arg(0))
	}
	ed, err := endpoints.ParseEdition(*edition)
	if err != nil {
		return fail(2, "-edition: %v", err)
	}
	vers, err := endpoints.ParseVersion(*windows)
	if err != nil {
		return fail(2, "-windows: %v", err)
	}
	var cats []endpoints.Category
	for _, name := range strings.Split(*category, ",") {
		if strings.TrimSpace(name) == "" {
			continue
		}
		c, err := endpoints.ParseCategory(name)
		if err != nil {
			return fail(2, "-category: %v", err)
		}
		cats = append(cats, c)
	}
	if !slices.Contains(formats, *format) {
		return fail(2, "-format: unknown format %q (valid: %s)", *format, strings.Join(formats, ", "))
	}

	cat, warns, err := endpoints.Load(*builtin, docs...)
	if err != nil {
		return fail(1, "%v", err)
	}
	for _, w := range warns {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	entries := cat.Select(ed, vers, cats)

	switch *format {
	case "table":
		err = writeTable(stdout, entries)
	case "tsv":
		err = writeTSV(stdout, entries)
	case "json":
		err = writeJSON(stdout, entries)
	default:
		err = endpoints.Export(stdout, *format, entries, endpoints.ExportOptions{Protected: *prot})
	}
	if err != nil {
		return fail(1, "writing %s: %v", *format, err)
	}
	return 0
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func writeTable(w io.Writer, entries []*endpoints.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PATTERN\tEDITIONS\tWINDOWS\tCATEGORY\tPROTECTED\tDESCRIPTION")
	for _, e := range entries {
		d := endpoints.OneLine(e.Description())
		if r := []rune(d); len(r) > 70 {
			d = string(r[:69]) + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Pattern, e.Editions, e.Versions, e.Category, yesNo(e.Protected), d)
	}
	return tw.Flush()
}

// writeTSV writes exactly the columns the README documents.
func writeTSV(w io.Writer, entries []*endpoints.Entry) error {
	fmt.Fprintln(w, "pattern\teditions\twindows\tcategory\tprotected\tprotocols\tdescription")
	for _, e := range entries {
		_, err := fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Pattern, strings.Join(e.Editions.Names(), ","),
			strings.Join(e.Versions.Names(), ","), e.Category, yesNo(e.Protected), strings.Join(e.Protocols(), ","), endpoints.OneLine(e.Description()))
		if err != nil {
			return err
		}
	}
	return nil
}

// jsonEntry is the JSON form of an entry; see the README.
type jsonEntry struct {
	Pattern      string    `json:"pattern"`
	Editions     []string  `json:"editions"`
	Windows      []string  `json:"windows"`
	Category     string    `json:"category"`
	CategoryNote string    `json:"category_note,omitempty"`
	Protected    bool      `json:"protected"`
	Reason       string    `json:"protected_reason,omitempty"`
	Uses         []jsonUse `json:"uses"`
}

type jsonUse struct {
	Edition      string   `json:"edition"`
	Windows      []string `json:"windows"`
	Protocols    []string `json:"protocols"`
	Descriptions []string `json:"descriptions"`
	Areas        []string `json:"areas,omitempty"`
	Processes    []string `json:"processes,omitempty"`
	Sources      []string `json:"sources"`
}

func writeJSON(w io.Writer, entries []*endpoints.Entry) error {
	out := make([]jsonEntry, 0, len(entries))
	for _, e := range entries {
		je := jsonEntry{Pattern: e.Pattern, Editions: e.Editions.Names(), Windows: e.Versions.Names(), Category: string(e.Category),
			CategoryNote: e.CategoryNote, Protected: e.Protected, Reason: e.Reason}
		for _, u := range e.Uses {
			je.Uses = append(je.Uses, jsonUse{Edition: u.Edition.String(), Windows: u.Versions.Names(), Protocols: nonNil(u.Protocols),
				Descriptions: nonNil(u.Descriptions), Areas: u.Areas, Processes: u.Processes, Sources: u.Sources})
		}
		out = append(out, je)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// runDiff is "phonehome endpoints diff FROM TO": what a Windows upgrade
// from FROM to TO started or stopped contacting, by Microsoft's documents.
func runDiff(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("phonehome endpoints diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	edition := fs.String("edition", "all", "compare what is documented for this edition: "+endpoints.EditionWords)
	format := fs.String("format", "table", "output format: table|json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: phonehome endpoints diff FROM TO [-edition E] [-format table|json]")
		fmt.Fprintln(stderr, "\nLists the patterns Windows version TO added, dropped or changed (category, editions,")
		fmt.Fprintln(stderr, "protocols, description) against FROM, by Microsoft's documents. Versions: "+endpoints.VersionWords())
		fs.PrintDefaults()
	}
	// Flags may come before or after the two versions.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return helpCode(err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "phonehome endpoints diff: "+format+"\n", a...)
		return code
	}
	if len(pos) != 2 {
		fs.Usage()
		return 2
	}
	var vs [2]endpoints.Version
	for i, p := range pos {
		v, err := endpoints.ParseVersion(p)
		if err != nil {
			return fail(2, "%v", err)
		}
		if len(v.Each()) != 1 {
			return fail(2, "%q: give one version, not a range or a list", p)
		}
		vs[i] = v
	}
	ed, err := endpoints.ParseEdition(*edition)
	if err != nil {
		return fail(2, "-edition: %v", err)
	}
	if *format != "table" && *format != "json" {
		return fail(2, "-format: unknown format %q (valid: table, json)", *format)
	}
	cat := endpoints.Builtin()
	changes := cat.Diff(vs[0], vs[1], ed)
	// Say when a version has no document for an edition asked about:
	// its patterns then all look dropped or added.
	for _, v := range vs {
		if missing := ed &^ cat.EditionsAt(v); missing != 0 {
			fmt.Fprintf(stderr, "note: no document lists endpoints for %s on Windows %s\n", strings.Join(missing.Names(), ", "), v)
		}
	}
	if *format == "json" {
		err = writeDiffJSON(stdout, vs[0], vs[1], changes)
	} else {
		err = writeDiffTable(stdout, vs[0], vs[1], changes)
	}
	if err != nil {
		return fail(1, "writing %s: %v", *format, err)
	}
	return 0
}

func writeDiffTable(w io.Writer, from, to endpoints.Version, changes []endpoints.Change) error {
	n := map[string]int{}
	for _, c := range changes {
		n[c.Kind]++
	}
	fmt.Fprintf(w, "Windows %s → %s: %d added, %d dropped, %d changed\n", from, to, n["added"], n["dropped"], n["changed"])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANGE\tPATTERN\tCATEGORY\tEDITIONS\tWHAT")
	for _, kind := range []string{"added", "dropped", "changed"} {
		for _, c := range changes {
			if c.Kind != kind {
				continue
			}
			v, what := c.To, endpoints.OneLine(first(c.To.Descriptions))
			switch kind {
			case "dropped":
				v, what = c.From, endpoints.OneLine(first(c.From.Descriptions))
			case "changed":
				what = strings.Join(c.What, "; ")
			}
			if r := []rune(what); len(r) > 70 {
				what = string(r[:69]) + "…"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", kind, c.Pattern, v.Category, v.Editions, what)
		}
	}
	return tw.Flush()
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// jsonChange is the JSON form of a diff line; see the README.
type jsonChange struct {
	Change  string    `json:"change"`
	Pattern string    `json:"pattern"`
	What    []string  `json:"what,omitempty"`
	From    *jsonView `json:"from,omitempty"`
	To      *jsonView `json:"to,omitempty"`
}

type jsonView struct {
	Editions     []string `json:"editions"`
	Category     string   `json:"category"`
	Protocols    []string `json:"protocols"`
	Descriptions []string `json:"descriptions"`
}

func viewJSON(v endpoints.View, ok bool) *jsonView {
	if !ok {
		return nil
	}
	return &jsonView{Editions: v.Editions.Names(), Category: string(v.Category), Protocols: nonNil(v.Protocols), Descriptions: nonNil(v.Descriptions)}
}

func writeDiffJSON(w io.Writer, from, to endpoints.Version, changes []endpoints.Change) error {
	out := struct {
		From    string       `json:"from"`
		To      string       `json:"to"`
		Changes []jsonChange `json:"changes"`
	}{From: from.String(), To: to.String(), Changes: []jsonChange{}}
	for _, c := range changes {
		out.Changes = append(out.Changes, jsonChange{Change: c.Kind, Pattern: c.Pattern, What: c.What,
			From: viewJSON(c.From, c.Kind != "added"), To: viewJSON(c.To, c.Kind != "dropped")})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

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
		category = fs.String("category", "", "only these categories, comma-separated (valid: "+endpoints.CategoryNames()+")")
		builtin  = fs.Bool("builtin", true, "include the built-in document (Windows 10 1909, non-Enterprise editions)")
		prot     = fs.Bool("protected", false, "block-list formats: list protected endpoints too (blocking them breaks Windows)")
		format   = fs.String("format", "table", "output format: "+strings.Join(formats, "|"))
		docs     multiFlag
	)
	fs.Var(&docs, "doc", "also read this Microsoft endpoint document (markdown); repeatable")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: phonehome endpoints [-edition E] [-category a,b] [-doc FILE]... [-builtin=false] [-format F] [-protected]")
		fmt.Fprintln(stderr, "\nLists the Windows connection endpoints Microsoft documents, or exports them as a block list.")
		fs.PrintDefaults()
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
	entries := cat.Select(ed, cats)

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

// oneLine keeps a cell on one line of a table or TSV.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func writeTable(w io.Writer, entries []*endpoints.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PATTERN\tEDITIONS\tCATEGORY\tPROTECTED\tDESCRIPTION")
	for _, e := range entries {
		d := oneLine(e.Description())
		if r := []rune(d); len(r) > 70 {
			d = string(r[:69]) + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Pattern, e.Editions, e.Category, yesNo(e.Protected), d)
	}
	return tw.Flush()
}

// writeTSV writes exactly the columns the README documents.
func writeTSV(w io.Writer, entries []*endpoints.Entry) error {
	fmt.Fprintln(w, "pattern\teditions\tcategory\tprotected\tprotocols\tdescription")
	for _, e := range entries {
		_, err := fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Pattern, strings.Join(e.Editions.Names(), ","),
			e.Category, yesNo(e.Protected), strings.Join(e.Protocols(), ","), oneLine(e.Description()))
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
	Category     string    `json:"category"`
	CategoryNote string    `json:"category_note,omitempty"`
	Protected    bool      `json:"protected"`
	Reason       string    `json:"protected_reason,omitempty"`
	Uses         []jsonUse `json:"uses"`
}

type jsonUse struct {
	Edition      string   `json:"edition"`
	Protocols    []string `json:"protocols"`
	Descriptions []string `json:"descriptions"`
	Areas        []string `json:"areas,omitempty"`
	Sources      []string `json:"sources"`
}

func writeJSON(w io.Writer, entries []*endpoints.Entry) error {
	out := make([]jsonEntry, 0, len(entries))
	for _, e := range entries {
		je := jsonEntry{Pattern: e.Pattern, Editions: e.Editions.Names(), Category: string(e.Category),
			CategoryNote: e.CategoryNote, Protected: e.Protected, Reason: e.Reason}
		for _, u := range e.Uses {
			je.Uses = append(je.Uses, jsonUse{Edition: u.Edition.String(), Protocols: nonNil(u.Protocols),
				Descriptions: nonNil(u.Descriptions), Areas: u.Areas, Sources: u.Sources})
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

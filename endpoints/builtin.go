package endpoints

import (
	"cmp"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// SeedDocument is the first document phonehome was built from: the oldest
// known revision of Microsoft's "Windows 10, version 1909, connection
// endpoints for non-Enterprise editions" (ms.date 7/15/2020). It is built in
// beside that document's later revisions.
const SeedDocument = "windows-endpoints-1909-non-enterprise-editions.seed.md"

// docs holds every Microsoft endpoint document phonehome has, unchanged
// (CC BY 4.0, see NOTICE); docs/MANIFEST.tsv says where each comes from.
//
//go:embed docs/*.md
var docs embed.FS

// parseBuiltin parses the embedded documents, newest Windows version
// first, so that an entry's first description is the newest wording. The
// catalog keeps what it needs of them; the documents themselves are not
// kept, which saves the daemon a few megabytes of table cells.
func parseBuiltin() []*Document {
	names, err := fs.Glob(docs, "docs/*.md")
	if err != nil {
		panic(err)
	}
	var ds []*Document
	for _, n := range names {
		f, err := docs.Open(n)
		if err != nil {
			panic(err)
		}
		d, err := Parse(path.Base(n), f)
		f.Close()
		if err != nil {
			panic(fmt.Sprintf("built-in document: %v", err)) // the tests parse each one
		}
		ds = append(ds, d)
	}
	slices.SortStableFunc(ds, newestFirst)
	return ds
}

// newestFirst orders documents by the newest version they document, then by
// date, newest first.
func newestFirst(a, b *Document) int {
	return cmp.Or(
		cmp.Compare(b.Versions.Newest(), a.Versions.Newest()),
		b.date().Compare(a.date()),
		strings.Compare(a.Name, b.Name),
	)
}

// date is the front matter's ms.date ("7/15/2020", "08/18/2020"), or the
// zero time.
func (d *Document) date() time.Time {
	t, err := time.Parse("1/2/2006", d.Date)
	if err != nil {
		return time.Time{}
	}
	return t
}

// BuiltinDocs parses and returns the built-in documents, newest first.
func BuiltinDocs() []*Document { return parseBuiltin() }

// BuiltinCount is the number of built-in documents.
func BuiltinCount() int {
	names, _ := fs.Glob(docs, "docs/*.md")
	return len(names)
}

// BuiltinDoc parses and returns the built-in document named name, or nil.
func BuiltinDoc(name string) *Document {
	for _, d := range parseBuiltin() {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// Builtin returns the catalog of every built-in document, with the reviewed
// families and first-party domains, built once.
func Builtin() *Catalog { return builtinCatalog() }

var builtinCatalog = sync.OnceValue(func() *Catalog { return buildBuiltin() })

func buildBuiltin(extra ...*Document) *Catalog {
	c := Build(append(parseBuiltin(), extra...)...)
	c.addDerived()
	return c
}

// Load builds a catalog from the built-in documents (when builtin is true)
// and the documents at paths. A file that cannot be read or has no endpoint
// table is an error naming it; rows that cannot be understood are returned
// as warnings and the rest still load.
func Load(builtin bool, paths ...string) (*Catalog, []Warning, error) {
	var ds []*Document
	var warns []Warning
	for _, p := range paths {
		d, err := ParseFile(p)
		if err != nil {
			return nil, nil, err
		}
		ds = append(ds, d)
		warns = append(warns, d.Warnings...)
	}
	switch {
	case builtin && len(ds) == 0:
		return Builtin(), nil, nil
	case builtin:
		return buildBuiltin(ds...), warns, nil
	case len(ds) == 0:
		return nil, nil, fmt.Errorf("no endpoint documents: the built-in ones are left out and none was given")
	}
	return Build(ds...), warns, nil
}

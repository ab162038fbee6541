package endpoints

import (
	"embed"
	"fmt"
	"sync"
)

// BuiltinDocument is the name of the document the built-in catalog comes
// from: Microsoft's "Windows 10, version 1909, connection endpoints for
// non-Enterprise editions", kept unchanged (CC BY 4.0, see NOTICE).
const BuiltinDocument = "windows-endpoints-1909-non-enterprise-editions.md"

//go:embed docs/windows-endpoints-1909-non-enterprise-editions.md
var docs embed.FS

// builtinDoc parses the embedded document once.
var builtinDoc = sync.OnceValue(func() *Document {
	f, err := docs.Open("docs/" + BuiltinDocument)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	d, err := Parse(BuiltinDocument, f)
	if err != nil {
		panic(fmt.Sprintf("built-in document: %v", err)) // the tests parse it
	}
	return d
})

// BuiltinDoc returns the parsed built-in document.
func BuiltinDoc() *Document { return builtinDoc() }

// Builtin returns the catalog of the built-in document alone, built once.
func Builtin() *Catalog { return builtinCatalog() }

var builtinCatalog = sync.OnceValue(func() *Catalog { return Build(builtinDoc()) })

// Load builds a catalog from the built-in document (when builtin is true)
// and the documents at paths. A file that cannot be read or has no endpoint
// table is an error naming it; rows that cannot be understood are returned
// as warnings and the rest still load.
func Load(builtin bool, paths ...string) (*Catalog, []Warning, error) {
	var ds []*Document
	if builtin {
		ds = append(ds, builtinDoc())
	}
	var warns []Warning
	for _, p := range paths {
		d, err := ParseFile(p)
		if err != nil {
			return nil, nil, err
		}
		ds = append(ds, d)
		warns = append(warns, d.Warnings...)
	}
	if len(ds) == 0 {
		return nil, nil, fmt.Errorf("no endpoint documents: the built-in one is left out and none was given")
	}
	return Build(ds...), warns, nil
}

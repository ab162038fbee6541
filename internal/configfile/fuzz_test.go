package configfile

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/internal/config"
)

// FuzzParse feeds the config loader mutations of real configs (the README's
// examples, the deploy samples, the error table's): it must never panic,
// and what it refuses it refuses with errors at places inside the file;
// what it accepts has every default filled in.
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 5m ./internal/configfile
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../../README.md"); err == nil {
		for _, blk := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(b, -1) {
			f.Add(blk[1])
		}
	}
	for _, p := range []string{"../../deploy/docker/phonehome.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{"", "policy:\n", "listen: [a\n", "access: {allow: [127.0.0.1/32, ::1/128]}\n",
		"cache: {size: 1, size: 2}\n", "a: &x {b: *x}\n", "policy:\n  groups:\n    - {name: a, clients: [10.0.0.1], windows: [11, 10-1909..10-21H2]}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			var es config.Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("not config.Errors: %v", err)
			}
			// YAML breaks lines at \n, \r\n and a lone \r.
			lines := strings.Count(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") + strings.Count(strings.ReplaceAll(string(data), "\r\n", ""), "\r") + 1
			for _, e := range es {
				if e.File != "fuzz.yaml" || e.Line < 0 || e.Line > lines || e.Msg == "" {
					t.Fatalf("error outside the file: %+v (of %d lines)", e, lines)
				}
			}
			return
		}
		if len(c.Listen) == 0 || c.Web.HTTP == nil || c.Access.RateLimit == nil || c.Cache.Size == nil || c.Policy.Catalog.Builtin == nil ||
			c.Policy.Rules.Default.Unlisted == nil || c.QueryLog.Output == "" {
			t.Fatalf("accepted without its defaults: %+v", c)
		}
	})
}

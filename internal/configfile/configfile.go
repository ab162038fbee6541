// Package configfile is phonehome's config file: the sections of the
// packages that own them, put together in one YAML document. Each package
// reads and checks its own section; this package decodes the file once,
// runs every package's check, and fills in the defaults.
package configfile

import (
	"fmt"
	"os"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/internal/querylog"
	"github.com/phonehome/phonehome/internal/web"
	"github.com/phonehome/phonehome/resolver"
)

// File is the config file. Every key is optional: the zero file (or no
// file) makes a working home resolver. Relative paths in it are relative to
// the file. The README lists every key.
type File struct {
	// listen, upstreams, access, sinkhole, cache, and the policy's
	// catalog and policy.
	resolver.Config `yaml:",inline"`
	// http, http_token.
	Web      web.Config      `yaml:",inline"`
	QueryLog querylog.Config `yaml:"querylog"`
}

// Default is the configuration with no file.
func Default() *File {
	f := &File{}
	f.setDefaults()
	return f
}

// Load reads and checks a config file. It reports every error it finds,
// each with file, line and column, as config.Errors. It does not read the
// documents and lists the file names: the resolver does, when it builds
// the policy.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, b)
}

// Parse is Load for a file's contents.
func Parse(path string, data []byte) (*File, error) {
	f := &File{}
	src, err := config.Decode(path, data, f)
	r := config.NewReport(src)
	r.Add(err)
	f.Source = src
	f.Check(r)
	if err := r.Err(); err != nil {
		return nil, err
	}
	f.setDefaults()
	return f, nil
}

// Check runs every section's check.
func (f *File) Check(r *config.Report) {
	f.Config.Check(r)
	f.Web.Check(r)
}

func (f *File) setDefaults() {
	f.Config.SetDefaults()
	f.Web.SetDefaults()
	f.QueryLog.SetDefaults()
}

// Package config reads phonehome's YAML config file into the config types
// of the packages that own each section, and reports every problem with
// its file, line and column.
//
// Key names come from the types' yaml tags, read here by reflection; where
// each key and value was written is kept in a Source beside the decoded
// values, not in them. A package checks its own section with a Report,
// which turns a path such as "policy.groups[1].clients" into a place in
// the file.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Pos is a place in the config file; the zero Pos is "nowhere in
// particular" (a config built in code, or a key not written).
type Pos struct{ Line, Col int }

// Error is one problem of a config file, at a place in it.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e Error) Error() string {
	file := e.File
	if file == "" {
		file = "config"
	}
	switch {
	case e.Line == 0:
		return fmt.Sprintf("%s: %s", file, e.Msg)
	case e.Col == 0:
		return fmt.Sprintf("%s:%d: %s", file, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", file, e.Line, e.Col, e.Msg)
}

// Errors is every problem found in a config file, in file order.
type Errors []Error

func (es Errors) Error() string {
	var s []string
	for _, e := range es {
		s = append(s, e.Error())
	}
	return strings.Join(s, "\n")
}

// Source is where a config came from: its file, and where each key and
// value was written, by path ("listen[1]", "policy.groups[0].name"). A nil
// Source is a config built in code: every place is the zero Pos.
type Source struct {
	File   string
	keys   map[string]Pos // where a key was written
	values map[string]Pos // where a value (a mapping, a list item, a scalar) was written
	failed map[string]bool
}

// Key reports where the key at path was written, and whether it was.
func (s *Source) Key(path string) (Pos, bool) {
	if s == nil {
		return Pos{}, false
	}
	p, ok := s.keys[path]
	return p, ok
}

// Has reports whether the key at path was written.
func (s *Source) Has(path string) bool {
	_, ok := s.Key(path)
	return ok
}

// Value returns where the value at path was written: the value itself, or
// the nearest enclosing value written ("cache" for "cache.size" when size
// was left out).
func (s *Source) Value(path string) Pos {
	if s == nil {
		return Pos{}
	}
	for {
		if p, ok := s.values[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return Pos{}
		}
		path = path[:i]
	}
}

// KeyOr returns where the key at path was written, or else where the value
// at or around alt was.
func (s *Source) KeyOr(path, alt string) Pos {
	if p, ok := s.Key(path); ok {
		return p
	}
	return s.Value(alt)
}

// Failed reports whether an item of the list at path was reported as an
// error and left out.
func (s *Source) Failed(path string) bool { return s != nil && s.failed[path] }

// FileName returns the config file's name, "" for a config built in code.
func (s *Source) FileName() string {
	if s == nil {
		return ""
	}
	return s.File
}

// Resolve makes a path written in the config file relative to its
// directory.
func (s *Source) Resolve(path string) string {
	if path == "" || filepath.IsAbs(path) || s.FileName() == "" {
		return path
	}
	return filepath.Join(filepath.Dir(s.File), path)
}

// Report collects the problems of a config, each at its place.
type Report struct {
	src  *Source
	errs Errors
}

// NewReport starts a report on a config read from src (nil for a config
// built in code).
func NewReport(src *Source) *Report { return &Report{src: src} }

// Source returns the source the report places errors in.
func (r *Report) Source() *Source { return r.src }

// At reports a problem at p.
func (r *Report) At(p Pos, format string, args ...any) {
	r.errs = append(r.errs, Error{File: r.src.FileName(), Line: p.Line, Col: p.Col, Msg: fmt.Sprintf(format, args...)})
}

// Key reports a problem at the key at path, or at the enclosing value when
// the key was not written.
func (r *Report) Key(path string, format string, args ...any) {
	r.At(r.src.KeyOr(path, path), format, args...)
}

// Value reports a problem at the value at path.
func (r *Report) Value(path string, format string, args ...any) {
	r.At(r.src.Value(path), format, args...)
}

// Add takes the errors of another report (or of a decode).
func (r *Report) Add(err error) {
	switch e := err.(type) {
	case nil:
	case Errors:
		r.errs = append(r.errs, e...)
	case Error:
		r.errs = append(r.errs, e)
	default:
		r.At(Pos{}, "%v", err)
	}
}

// Err returns every problem reported, in file order, or nil.
func (r *Report) Err() error {
	if len(r.errs) == 0 {
		return nil
	}
	es := slices.Clone(r.errs)
	slices.SortStableFunc(es, func(a, b Error) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	})
	return es
}

// CheckHostPort accepts "host:port" with an IP address or an empty host:
// the one syntax of listen addresses, the HTTP address and upstreams.
func CheckHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (like 127.0.0.1:53 or [::1]:53)", s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: %q is not an IP address", s, host)
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: %q is not a port", s, port)
	}
	return nil
}

// CheckHostName accepts a host name as DHCP and reverse DNS give them:
// letters, digits, hyphens and underscores between dots, at most 63 bytes
// a label and 253 in all, a trailing dot allowed (kids-pc, kids-pc.lan).
// It is the syntax of a machine's name in the config and in PTR answers,
// and of the names in http_hosts.
func CheckHostName(s string) error {
	name := strings.TrimSuffix(s, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%q is not a host name", s)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.IndexFunc(label, func(c rune) bool {
				return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_')
			}) >= 0 {
			return fmt.Errorf("%q is not a host name (letters, digits and hyphens between dots, such as kids-pc.lan)", s)
		}
	}
	return nil
}

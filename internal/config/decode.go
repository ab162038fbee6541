package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Unmarshaler is a config type that reads its own YAML, reporting through
// the Decoder (a map whose keys are data, such as actions per category).
type Unmarshaler interface {
	UnmarshalConfig(d *Decoder, n *yaml.Node, path string)
}

// Decode reads YAML data into v, a pointer to a struct whose fields carry
// yaml tags (",inline" for a struct whose keys sit beside the others). It
// goes on past every problem, so that one run reports them all, each at its
// place: unknown keys (with the valid ones), keys given twice, values of the
// wrong kind. A key written with no value ("cache:") leaves the field as it
// was.
func Decode(file string, data []byte, v any) (*Source, error) {
	d := &Decoder{src: &Source{File: file, keys: map[string]Pos{}, values: map[string]Pos{}, failed: map[string]bool{}}}
	// YAML breaks lines at \n, \r\n and a lone \r.
	d.lines = 1 + bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n"))
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return d.src, Errors{yamlSyntaxError(file, data, err)}
	}
	// An empty file, or one of comments or a lone "---", is a config of
	// defaults.
	if len(doc.Content) > 0 && doc.Content[0].ShortTag() != "!!null" {
		d.Decode(doc.Content[0], v, "")
	}
	d.report.src = d.src
	return d.src, d.report.Err()
}

// Decoder walks a YAML tree into config values.
type Decoder struct {
	src    *Source
	report Report
	lines  int // in the file
}

// pos is where n was written. An empty value at the very end of the file
// ("---", "key:") is placed by the YAML parser on the line after the
// last; it is reported at the end of the last line instead.
func (d *Decoder) pos(n *yaml.Node) Pos {
	if n.Line > d.lines {
		return Pos{d.lines, 1}
	}
	return Pos{n.Line, n.Column}
}

// Errorf reports a problem at node n.
func (d *Decoder) Errorf(n *yaml.Node, format string, args ...any) {
	p := d.pos(n)
	d.report.errs = append(d.report.errs, Error{File: d.src.File, Line: p.Line, Col: p.Col, Msg: fmt.Sprintf(format, args...)})
}

func (d *Decoder) errors() int { return len(d.report.errs) }

// MarkKey records where the key at path was written.
func (d *Decoder) MarkKey(path string, k *yaml.Node) { d.src.keys[path] = d.pos(k) }

// MarkValue records where the value at path was written.
func (d *Decoder) MarkValue(path string, n *yaml.Node) { d.src.values[path] = d.pos(n) }

// Decode reads n into v (a pointer) at path.
func (d *Decoder) Decode(n *yaml.Node, v any, path string) {
	d.value(n, reflect.ValueOf(v).Elem(), path)
}

var (
	unmarshalerType     = reflect.TypeFor[Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (d *Decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.MarkValue(path, n)
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		v.Addr().Interface().(Unmarshaler).UnmarshalConfig(d, n, path)
		return
	}
	switch {
	case v.Kind() == reflect.Pointer:
		// Set only when the value was good, so that a bad one keeps
		// the default rather than a zero.
		e := reflect.New(v.Type().Elem())
		before := d.errors()
		d.value(n, e.Elem(), path)
		if d.errors() == before {
			v.Set(e)
		}
	case v.Kind() == reflect.Struct && !reflect.PointerTo(v.Type()).Implements(textUnmarshalerType):
		d.fields(n, v, path)
	case v.Kind() == reflect.Slice:
		d.seq(n, v, path)
	default:
		d.Scalar(n, v.Addr().Interface(), path)
	}
}

// field is one key of a struct: its name and where the value goes.
type field struct {
	key   string
	value reflect.Value
}

// structFields lists the keys of a struct, inline structs' included.
func structFields(v reflect.Value) []field {
	var fs []field
	for i := range v.NumField() {
		sf := v.Type().Field(i)
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case !sf.IsExported() || name == "-":
		case opts == "inline" || sf.Anonymous && tag == "":
			fs = append(fs, structFields(v.Field(i))...)
		case name != "":
			fs = append(fs, field{name, v.Field(i)})
		}
	}
	return fs
}

// fields decodes a mapping into a struct, and reports unknown keys with the
// valid ones.
func (d *Decoder) fields(n *yaml.Node, v reflect.Value, path string) {
	fs := structFields(v)
	var valid []string
	for _, f := range fs {
		valid = append(valid, f.key)
	}
	slices.Sort(valid)
	where := SectionName(path)
	for _, kv := range d.Keys(n, where) {
		k, val := kv[0], kv[1]
		i := slices.IndexFunc(fs, func(f field) bool { return f.key == k.Value })
		if i < 0 {
			d.Errorf(k, "unknown key %q in %s (valid: %s)", k.Value, where, strings.Join(valid, ", "))
			continue
		}
		p := Join(path, k.Value)
		d.MarkKey(p, k)
		if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
			continue // "key:" with no value keeps the default
		}
		d.value(val, fs[i].value, p)
	}
}

// Keys returns a mapping's key and value nodes, reporting duplicate keys.
func (d *Decoder) Keys(n *yaml.Node, where string) [][2]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, "%s: want a mapping of keys to values", where)
		return nil
	}
	seen := map[string]bool{}
	var kv [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			d.Errorf(k, "%s: key %q given twice", where, k.Value)
			continue
		}
		seen[k.Value] = true
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		kv = append(kv, [2]*yaml.Node{k, v})
	}
	return kv
}

// seq decodes a list into a slice. A bad scalar item is reported and left
// out (Source.Failed then says so); a mapping item is kept with what could
// be read of it.
func (d *Decoder) seq(n *yaml.Node, v reflect.Value, path string) {
	v.Set(reflect.MakeSlice(v.Type(), 0, len(n.Content)))
	d.Seq(n, path, func(item *yaml.Node, i int) {
		e := reflect.New(v.Type().Elem()).Elem()
		before := d.errors()
		d.value(item, e, fmt.Sprintf("%s[%d]", path, i))
		if d.errors() > before && item.Kind == yaml.ScalarNode {
			d.src.failed[path] = true
			return
		}
		v.Set(reflect.Append(v, e))
	})
}

// Seq calls item for each item of a list; a single scalar counts as a list
// of one.
func (d *Decoder) Seq(n *yaml.Node, path string, item func(*yaml.Node, int)) {
	switch n.Kind {
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if c.Kind == yaml.AliasNode {
				c = c.Alias
			}
			item(c, i)
		}
	case yaml.ScalarNode:
		item(n, 0)
	default:
		d.Errorf(n, "%s: want a list", SectionName(path))
	}
}

// Scalar decodes a scalar node with yaml's own rules (numbers, booleans,
// durations such as 60s, and types with UnmarshalText) into v, a pointer,
// reporting a bad value at its place under the name of path (a list item
// under its list's name).
func (d *Decoder) Scalar(n *yaml.Node, v any, path string) bool {
	where := itemList(path)
	if n.Kind != yaml.ScalarNode {
		d.Errorf(n, "%s: want a single value", where)
		return false
	}
	if err := n.Decode(v); err != nil {
		msg := err.Error()
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			msg = te.Errors[0]
			if i := strings.Index(msg, ": "); strings.HasPrefix(msg, "line ") && i > 0 {
				msg = msg[i+2:]
			}
		}
		d.Errorf(n, "%s: %s", where, msg)
		return false
	}
	return true
}

// itemList names a list item by its list: "listen[1]" → "listen".
func itemList(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i > 0 {
			return path[:i]
		}
	}
	return path
}

// SectionName names a path in messages; "" is the top level.
func SectionName(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

// Join appends a key to a path.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlSyntaxError turns "yaml: line 3: mapping values are not allowed" into
// an Error at line 3. YAML reads an unquoted IPv6 address that starts a
// list item in brackets ([10.0.0.0/8, ::1/128]) as a broken mapping, and
// says so on no line or the line before: such an error points at the
// address's line and says to quote it.
func yamlSyntaxError(file string, data []byte, err error) Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	for i, l := range strings.Split(string(data), "\n") {
		if m := unquotedIPv6.FindStringSubmatch(l); m != nil && (line == 0 || i+1 >= line && i+1 <= line+1) {
			addr := m[1]
			return Error{File: file, Line: i + 1, Msg: fmt.Sprintf("not valid YAML: %s; quote an IPv6 address in a [ ] list: %q", msg, addr)}
		}
	}
	return Error{File: file, Line: line, Msg: "not valid YAML: " + msg}
}

// unquotedIPv6 is a flow list item that starts with "::" or "[" and holds
// "::" or an address in brackets: YAML takes its ':' for a mapping.
var unquotedIPv6 = regexp.MustCompile(`[\[,]\s*((?:::|\[[0-9A-Fa-f:]*:[0-9A-Fa-f:]*\])[0-9A-Fa-f:./]*)`)

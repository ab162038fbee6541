package policy

import (
	"slices"
	"strings"
	"testing"
)

// TestListHostnames: the three line formats of a list take the same names,
// by endpoints.ValidHostname; "was" says what the list reader did before it
// shared the rule, where that differs.
func TestListHostnames(t *testing.T) {
	long := strings.Repeat("a", 64) + ".example.com"
	for _, c := range []struct {
		line string
		want []string // patterns added
		warn bool
		was  string
	}{
		{"_dmarc.Example.COM", []string{"_dmarc.example.com"}, false, ""},
		{"0.0.0.0 _dmarc.example.com", []string{"_dmarc.example.com"}, false, ""},
		{"||_dmarc.example.com^", []string{"_dmarc.example.com", "*._dmarc.example.com"}, false, ""},
		{"a.example.com.", []string{"a.example.com"}, false, ""},
		{"0.0.0.0 a.example.com.", []string{"a.example.com"}, false, "warned: the root's dot was taken on plain lines only"},
		{"||a.example.com.^", []string{"a.example.com", "*.a.example.com"}, false, "warned"},
		{long, nil, true, "added: no label limit"},
		{"0.0.0.0 " + long, nil, true, "added"},
		{"||" + long + "^", nil, true, "added"},
		{"-a.example.com", nil, true, "added: a leading '-' was taken"},
		{"0.0.0.0 a-.example.com", nil, true, "added"},
		{"||-a.example.com^", nil, true, "added"},
		{"1.2.3.4", nil, true, "added as a name"},
		{"0.0.0.0 1.2.3.4", nil, true, "added as a name"},
		{"||1.2.3.4^", nil, true, "added as a name"},
		{"0.0.0.0 0.0.0.0", nil, false, ""},
		{"0.0.0.0 localhost.localdomain", nil, false, ""},
		{"0.0.0.0 wpad", nil, false, "single labels of hosts files are the machine's own"},
		{"wpad", nil, true, ""},
		{"||wpad^", nil, true, ""},
		{"||*.example.com^", nil, true, ""},
		{"0.0.0.0 *.example.com", nil, true, "hosts files have no wildcards"},
		{"*.example.com", []string{"*.example.com"}, false, ""},
	} {
		var b matcherBuilder
		n, warns := b.list("l.txt", []byte(c.line), &Rule{})
		m := b.build()
		var got []string
		for i := range m.slots {
			if s := &m.slots[i]; s.exact != 0 {
				got = append(got, m.key(s))
			}
		}
		for i := range m.slots {
			if s := &m.slots[i]; s.sub != 0 {
				got = append(got, "*."+m.key(s))
			}
		}
		if !slices.Equal(got, c.want) || n != len(c.want) || (len(warns) > 0) != c.warn {
			t.Errorf("%q: added %d %q, warnings %q; want %q, warning %v (before: %s)", c.line, n, got, warns, c.want, c.warn, c.was)
		}
	}
}

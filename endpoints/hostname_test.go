package endpoints

import (
	"strings"
	"testing"
)

// TestHostnameRule is the one host-name rule against the inputs on which
// its former copies disagreed: checkPattern (patterns, and firstparty.tsv's
// domains), policy's hostBytes (block-list lines; it answered as
// checkPattern does on names without '*') and export.go's hostName. name
// is ValidHostname's answer, pattern checkPattern's.
func TestHostnameRule(t *testing.T) {
	l63 := strings.Repeat("a", 63)
	for _, c := range []struct {
		in            string
		name, pattern bool
		was           string // what the copies answered before, where they disagreed
	}{
		{"a.example.com", true, true, ""},
		{"_dmarc.example.com", true, true, "all took '_'; kept: service names use it"},
		{"_ldap._tcp.dc._msdcs.example.com", true, true, ""},
		{"xn--bcher-kva.example", true, true, "a '-' inside a label is fine"},
		{"3com.com", true, true, "a label may start with a digit (RFC 1123)"},
		{"a.b2", true, true, ""},
		{l63 + ".example.com", true, true, ""},
		{l63 + "a.example.com", false, false, "checkPattern and hostBytes took a 64-byte label, hostName did not"},
		{strings.Repeat("a.", 126) + "a", true, true, "253 bytes"},
		{strings.Repeat("a.", 126) + "ab", false, false, "254 bytes: all said no"},
		{"localhost", false, false, "checkPattern and hostBytes wanted two labels, hostName did not"},
		{"-a.example.com", false, false, "all took a leading '-'; RFC 1123 does not"},
		{"a-.example.com", false, false, "all took a trailing '-'; RFC 1123 does not"},
		{"a.-b-.com", false, false, ""},
		{"a.example.com-", false, false, ""},
		{"1.2.3.4", false, false, "all took an IPv4 address as a name; RFC 1123 §2.1: the top label is not numeric"},
		{"a.example.123", false, false, ""},
		{"example.com.", false, false, "a trailing dot: all said no; the list reader and NormalizePattern drop it first"},
		{".example.com", false, false, ""},
		{"a..example.com", false, false, ""},
		{"A.Example.com", false, false, "upper case: all said no, and every path folds case first"},
		{"ünï.com", false, false, ""},
		{"a b.com", false, false, ""},
		{"", false, false, ""},
		// Patterns: '*' may stand anywhere; the limits apply to the literal runs.
		{"*.example.com", false, true, ""},
		{"msnbot-*.search.msn.com", false, true, "'-' may touch a '*'"},
		{"*-edge.example.com", false, true, ""},
		{"wdcp.microsoft.*", false, true, ""},
		{"-*.example.com", false, false, "checkPattern took a label starting with '-'"},
		{"*.-x.example.com", false, false, "checkPattern took a label starting with '-'"},
		{l63 + "a*.example.com", false, false, "checkPattern took a 64-byte literal run in one label"},
		{l63 + "*" + l63 + ".example.com", false, true, "'*' may stand for a dot: two runs of 63"},
		{"*" + strings.Repeat("a.", 126) + "a", false, true, "checkPattern counted the '*': 253 bytes without it, and it matches the 253-byte name"},
		{"*.123", false, false, ""},
		{"*.com", false, false, "pattern rule: a whole top-level domain"},
		{"*.*", false, false, "pattern rule: every name"},
	} {
		if got := ValidHostname(c.in); got != c.name {
			t.Errorf("ValidHostname(%q) = %v, want %v (%s)", c.in, got, c.name, c.was)
		}
		if got := ValidHostname([]byte(c.in)); got != c.name {
			t.Errorf("ValidHostname([]byte(%q)) = %v, want %v", c.in, got, c.name)
		}
		if got := CheckHostname(c.in) == nil; got != c.name {
			t.Errorf("CheckHostname(%q) = %v, want ok %v", c.in, CheckHostname(c.in), c.name)
		}
		if err := checkPattern(c.in); (err == nil) != c.pattern {
			t.Errorf("checkPattern(%q) = %v, want ok %v (%s)", c.in, err, c.pattern, c.was)
		}
	}
}

// TestHostnameErrors: the error says what is wrong, a bad byte first.
func TestHostnameErrors(t *testing.T) {
	for in, want := range map[string]string{
		"":                               "empty host name",
		"two words.com":                  `not a host name: ' ' is not allowed`,
		"a..b c":                         `not a host name: ' ' is not allowed`,
		"ünï.com":                        `not a host name: 'ü' is not allowed`,
		"a..example.com":                 "not a host name: empty label",
		"example.com.":                   "not a host name: empty label",
		"localhost":                      "not a host name: needs a dot",
		"-a.example.com":                 "not a host name: a label starts or ends with '-'",
		"a.b-":                           "not a host name: a label starts or ends with '-'",
		strings.Repeat("a", 64) + ".com": "not a host name: a label is longer than 63 characters",
		"10.0.0.1":                       "not a host name: the last label is all digits",
		strings.Repeat("a.", 127) + "a":  "longer than a host name can be",
		"*.example.com":                  `not a host name: '*' is not allowed`,
	} {
		if err := CheckHostname(in); err == nil || err.Error() != want {
			t.Errorf("CheckHostname(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestValidHostnameNoAllocs(t *testing.T) {
	b := []byte("sls.update.microsoft.com")
	if n := testing.AllocsPerRun(100, func() {
		ValidHostname(b)
		ValidHostname("-bad.example.com")
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// FuzzHostname: the string and byte forms answer alike, and a name without
// '*' is a pattern exactly when it is a host name.
//
//	go test -run '^$' -fuzz FuzzHostname -fuzztime 1m ./endpoints
func FuzzHostname(f *testing.F) {
	for _, s := range []string{"a.example.com", "-a.example.com", "1.2.3.4", "_x.example.com", "a..b", "*.example.com", strings.Repeat("a", 64) + ".com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ok := ValidHostname(s)
		if ValidHostname([]byte(s)) != ok || (CheckHostname(s) == nil) != ok {
			t.Fatalf("%q: the forms disagree", s)
		}
		if !strings.Contains(s, "*") && (checkPattern(s) == nil) != ok {
			t.Fatalf("%q: ValidHostname %v, checkPattern %v", s, ok, checkPattern(s))
		}
		if ok && CheckHostname(strings.ToUpper(s)) == nil && strings.ToUpper(s) != s {
			t.Fatalf("%q: upper case taken", s)
		}
	})
}

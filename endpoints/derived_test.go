package endpoints

import (
	"strings"
	"testing"
)

// under reports whether pattern p names only names under domain d (or d).
func under(p, d string) bool {
	p = strings.TrimLeft(p, "*.")
	return p == d || strings.HasSuffix(p, "."+d)
}

// TestFamiliesTable checks families.tsv: every member is a documented name
// under the family, a family's members and every documented pattern under
// it share its category, and a family over a protected category, or with
// a protected member, is protected.
func TestFamiliesTable(t *testing.T) {
	c := Builtin()
	if len(c.Families) == 0 {
		t.Fatal("no families")
	}
	for _, f := range c.Families {
		dom := strings.TrimPrefix(f.Pattern, "*.")
		if !strings.HasPrefix(f.Pattern, "*.") || strings.Contains(dom, "*") {
			t.Errorf("%s: a family is *.domain", f.Pattern)
		}
		if sharedWildcard(f.Pattern) != "" {
			t.Errorf("%s: a family over a shared domain", f.Pattern)
		}
		if f.Evidence == "" {
			t.Errorf("%s: no evidence", f.Pattern)
		}
		for _, m := range f.Members {
			e := c.Lookup(m)
			switch {
			case e == nil:
				t.Errorf("%s: member %s is in no document", f.Pattern, m)
			case !under(m, dom) || m == dom:
				t.Errorf("%s: member %s is not under it", f.Pattern, m)
			case e.Protected && !f.Protected:
				t.Errorf("%s: member %s is protected, the family is not", f.Pattern, m)
			}
		}
		for _, e := range c.Entries {
			if under(e.Pattern, dom) && e.Category != f.Category {
				t.Errorf("%s (%s): documented %s under it is %s", f.Pattern, f.Category, e.Pattern, e.Category)
			}
		}
		if info, _ := f.Category.Info(); info.Protected && !f.Protected {
			t.Errorf("%s: category %s is protected, the family is not", f.Pattern, f.Category)
		}
		if !strings.HasPrefix(f.Description(), "family of "+f.Members[0]) {
			t.Errorf("%s: description %q", f.Pattern, f.Description())
		}
	}
	if _, err := parseFamilies("*.x.example.com\ttelemetry\ta.x.example.com\tone member\n"); err == nil {
		t.Error("a family of one member: want an error")
	}
}

// TestFirstPartyTable checks firstparty.tsv: every first-party domain has
// documented names under it as evidence, and no shared domain is
// first-party or under one. (policy's TestUndocumentedLosesToDocumented
// checks that a first-party domain only catches what nothing documented
// matches.)
func TestFirstPartyTable(t *testing.T) {
	c := Builtin()
	var shared []string
	for _, d := range Domains() {
		if d.Shared {
			shared = append(shared, d.Domain)
		}
	}
	for _, s := range []string{"blob.core.windows.net", "azureedge.net", "cloudapp.azure.com", "trafficmanager.net", "akamaized.net"} {
		found := false
		for _, d := range shared {
			found = found || d == s
		}
		if !found {
			t.Errorf("%s is not listed as shared", s)
		}
	}
	if len(c.Domains) < 5 {
		t.Fatalf("%d first-party domains", len(c.Domains))
	}
	for _, d := range Domains() {
		if d.Shared {
			if len(d.Evidence) != 0 || d.Protect != "" {
				t.Errorf("firstparty.tsv:%d: shared %s takes no evidence nor protection", d.Line, d.Domain)
			}
			continue
		}
		if len(d.Evidence) == 0 {
			t.Errorf("firstparty.tsv:%d: %s has no documented name as evidence", d.Line, d.Domain)
		}
		for _, ev := range d.Evidence {
			if c.Lookup(ev) == nil || !under(ev, d.Domain) {
				t.Errorf("firstparty.tsv:%d: evidence %s is not a documented pattern under %s", d.Line, ev, d.Domain)
			}
		}
		for _, s := range shared {
			if under(s, d.Domain) || under(d.Domain, s) {
				t.Errorf("firstparty.tsv:%d: first-party %s and shared %s overlap", d.Line, d.Domain, s)
			}
		}
		if d.Protect != "" && !strings.HasPrefix(d.Protect, "blocking it ") {
			t.Errorf("firstparty.tsv:%d: protection should start \"blocking it\": %s", d.Line, d.Protect)
		}
	}
	for _, e := range c.Domains {
		if e.Category != Undocumented || e.Kind != FirstParty {
			t.Errorf("%s: %s, kind %d", e.Pattern, e.Category, e.Kind)
		}
	}
}

package endpoints

import (
	"strings"
	"testing"
)

// TestBuiltinCategories: every pattern of every built-in document is
// reviewed, and one left in other says why.
func TestBuiltinCategories(t *testing.T) {
	for _, e := range Builtin().Entries {
		if e.Category == Other && e.CategoryNote == "" {
			t.Errorf("%s: category other, and the table does not say why", e.Pattern)
		}
		if _, ok := knownPatterns()[e.Pattern]; !ok {
			t.Errorf("%s: not reviewed in categories.tsv", e.Pattern)
		}
	}
}

// TestCategoriesTable keeps categories.tsv and the documents in step: every
// pattern of every document is reviewed, and no line is stale.
func TestCategoriesTable(t *testing.T) {
	all := Build(BuiltinDocs()...)
	known := knownPatterns()
	other := 0
	for _, e := range all.Entries {
		if _, ok := known[e.Pattern]; !ok {
			t.Errorf("%s: not reviewed in categories.tsv", e.Pattern)
		}
		if e.Category == Other {
			other++
		}
	}
	if len(known) != len(all.Entries) {
		for p := range known {
			if all.Lookup(p) == nil {
				t.Errorf("categories.tsv: %s is in no document", p)
			}
		}
	}
	if share := float64(other) / float64(len(all.Entries)); share > 0.15 {
		t.Errorf("%d of %d patterns (%.0f%%) are other, want at most 15%%", other, len(all.Entries), share*100)
	}
	if _, err := parseKnown("a.example.com\tnonsense\t-\t-\n"); err == nil || !strings.Contains(err.Error(), "categories.tsv:1") {
		t.Errorf("unknown category in the table: %v", err)
	}
}

// TestKeywordRules measures the rules that categorise patterns of documents
// phonehome has not seen against the reviewed table: they must agree on most
// known patterns, and leave few in other.
func TestKeywordRules(t *testing.T) {
	all := Build(BuiltinDocs()...)
	agree, other := 0, 0
	for _, e := range all.Entries {
		c, why := ruleCategory(e)
		if c == e.Category {
			agree++
		} else {
			t.Logf("%s: rules say %s (%s), table says %s", e.Pattern, c, why, e.Category)
		}
		if c == Other {
			other++
		}
	}
	n := len(all.Entries)
	t.Logf("rules agree with the table on %d of %d patterns", agree, n)
	if agree*100 < n*80 {
		t.Errorf("rules agree on %d of %d patterns, want at least 80%%", agree, n)
	}
	if other*100 > n*5 {
		t.Errorf("rules leave %d of %d patterns in other", other, n)
	}

	if containsWordStart("restore points", "store") || !containsWordStart("microsoft store", "store") || containsWordStart("bitmaps", "maps") {
		t.Error("containsWordStart matches inside words")
	}

	// A newer document's row the table has never seen.
	e := &Entry{Pattern: "new.example.com", Uses: []Use{{Edition: Home, Areas: []string{"Certificates"}, Descriptions: []string{"Used to download the Windows Update certificate list"}}}}
	classify(e)
	if e.Category != "certificates" || !e.Protected || !strings.HasPrefix(e.CategoryNote, "by rule: area") {
		t.Errorf("unseen certificate endpoint: %+v", e)
	}
}

func TestProtection(t *testing.T) {
	all := Build(BuiltinDocs()...)
	for _, p := range []string{
		"*.update.microsoft.com", "*.windowsupdate.com", "*.prod.do.dsp.mp.microsoft.com", // update, delivery optimisation
		"ctldl.windowsupdate.com", "ocsp.digicert.com", "crl.microsoft.com", // certificates
		"www.msftconnecttest.com", "licensing.mp.microsoft.com", "login.live.com",
		"wdcp.microsoft.com", "*.smartscreen.microsoft.com", "settings-win.data.microsoft.com",
		"*.blob.core.windows.net", "*.g.akamaiedge.net", "*msedge.net", "time.windows.com",
		// What Windows 11 needs too: Defender definitions and SmartScreen,
		// the IPv6 probe, delivery optimisation, activation.
		"definitionupdates.microsoft.com", "nav-edge.smartscreen.microsoft.com", "data-edge.smartscreen.microsoft.com",
		"ipv6.msftconnecttest.com", "geo-prod.do.dsp.mp.microsoft.com", "*.dl.delivery.mp.microsoft.com",
	} {
		e := all.Lookup(p)
		if e == nil {
			t.Errorf("%s: not in the catalog", p)
			continue
		}
		if !e.Protected || !strings.HasPrefix(e.Reason, "blocking it ") || strings.Contains(e.Reason, "\n") {
			t.Errorf("%s: protected %v, reason %q", p, e.Protected, e.Reason)
		}
	}
	for _, p := range []string{"v10.events.data.microsoft.com", "arc.msn.com", "www.bing.com", "officehomeblobs.blob.core.windows.net", "*.telemetry.microsoft.com", "watson.*.microsoft.com"} {
		if e := all.Lookup(p); e == nil || e.Protected {
			t.Errorf("%s: protected, want not: %+v", p, e)
		}
	}
	if r := all.Lookup("*.blob.core.windows.net").Reason; !strings.Contains(r, "Azure Blob Storage") {
		t.Errorf("blob reason: %q", r)
	}
}

func TestSharedWildcard(t *testing.T) {
	for p, want := range map[string]string{
		"*.blob.core.windows.net":   "blob.core.windows.net",
		"*.g.akamaiedge.net":        "akamaiedge.net",
		"*.*.akamai.net":            "akamai.net",
		"*hwcdn.net":                "hwcdn.net",
		"*.msn.com":                 "msn.com",
		"x.blob.core.windows.net":   "",
		"*.telemetry.microsoft.com": "",
		"cds.*.hwcdn.net":           "",
		"*.login.msa.akadns6.net":   "",
		"watson.*.microsoft.com":    "",
		"*.tlu.dl.delivery.mp.microsoft.com.c.footprint.net": "",
	} {
		if got := sharedWildcard(p); got != want {
			t.Errorf("sharedWildcard(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestParseCategory(t *testing.T) {
	if c, err := ParseCategory("Telemetry"); err != nil || c != "telemetry" {
		t.Errorf("ParseCategory: %v %v", c, err)
	}
	if _, err := ParseCategory("telemetri"); err == nil || !strings.Contains(err.Error(), "spotlight") {
		t.Errorf("unknown category: %v", err)
	}
}

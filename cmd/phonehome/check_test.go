package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckCNAME: check -cname decides as the resolver does for an answer
// whose CNAME chain leads through the names given, with its reasons.
func TestCheckCNAME(t *testing.T) {
	for _, c := range []struct {
		name, chain         string
		action, pattern     string
		category, cname     string
		reason              []string // the reason holds each
		protected, withLine bool     // protected: the matched pattern is
	}{
		// An alias of a telemetry endpoint is sinkholed, and says so.
		{name: "alias.example", chain: "Edge.Example.NET,v10.events.data.microsoft.com.",
			action: "sinkhole", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: "v10.events.data.microsoft.com",
			reason: []string{"sinkholed: telemetry endpoint v10.events.data.microsoft.com", "reached through CNAME v10.events.data.microsoft.com"}},
		// A chain through a protected endpoint is logged, not sinkholed.
		{name: "crl.example.com", chain: "ctldl.windowsupdate.com,v10.events.data.microsoft.com",
			action: "log", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: "v10.events.data.microsoft.com",
			reason: []string{"logged, not sinkholed: the answer's CNAME chain reaches v10.events.data.microsoft.com", "but ctldl.windowsupdate.com is protected — blocking it stops certificate trust list"}},
		// An unlisted name whose answer leads to a catalog entry is
		// decided, counted and logged under that entry.
		{name: "www.example.com", chain: "arc.msn.com",
			action: "log", pattern: "arc.msn.com", category: "spotlight", cname: "arc.msn.com",
			reason: []string{"logged: spotlight endpoint arc.msn.com", "reached through CNAME arc.msn.com"}},
		// Unlisted chain names decide nothing.
		{name: "www.example.com", chain: "a.example.net,b.example.org",
			action: "allow", category: "unlisted",
			reason: []string{"not a documented Windows endpoint"}},
		// A CNAME loop back to the question ends the chain before it.
		{name: "www.example.com", chain: "www.example.com,v10.events.data.microsoft.com",
			action: "allow", category: "unlisted"},
	} {
		out, errs, code := phonehome(t, "check", "-json", "-cname", c.chain, c.name)
		if code != 0 || errs != "" {
			t.Fatalf("%s -cname %s: exit %d: %s", c.name, c.chain, code, errs)
		}
		var rs []checkResult
		if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 1 {
			t.Fatalf("%v: %s", err, out)
		}
		r := rs[0]
		if r.Name != c.name || r.Action != c.action || r.Pattern != c.pattern || r.Category != c.category || r.CNAME != c.cname || r.Protected != c.protected {
			t.Errorf("%s -cname %s: %+v", c.name, c.chain, r)
		}
		for _, s := range c.reason {
			if !strings.Contains(r.Reason, s) {
				t.Errorf("%s -cname %s: reason %q lacks %q", c.name, c.chain, r.Reason, s)
			}
		}
		// The text form names the chain's name that decided.
		text, _, _ := phonehome(t, "check", "-cname", c.chain, c.name)
		if line := "\n  cname:      " + c.cname + "\n"; c.cname != "" && !strings.Contains(text, line) {
			t.Errorf("%s -cname %s: no %q in\n%s", c.name, c.chain, line, text)
		}
		if c.cname == "" && strings.Contains(text, "cname:") {
			t.Errorf("%s -cname %s: a cname line in\n%s", c.name, c.chain, text)
		}
	}
}

// TestCheckCNAMEConfig: the config's cname section bounds what check reads
// of the chain as it bounds the resolver, and a bad -cname is a usage error.
func TestCheckCNAMEConfig(t *testing.T) {
	dir := t.TempDir()
	off := filepath.Join(dir, "off.yaml")
	os.WriteFile(off, []byte("cname: {inspect: false}\n"), 0o644)
	short := filepath.Join(dir, "short.yaml")
	os.WriteFile(short, []byte("cname: {max_chain: 1}\n"), 0o644)
	chain := "edge.example.net,v10.events.data.microsoft.com"

	out, errs, code := phonehome(t, "check", "-config", off, "-cname", chain, "alias.example")
	if code != 0 || !strings.HasPrefix(out, "alias.example: allow\n") || !strings.Contains(errs, "cname.inspect off") {
		t.Errorf("inspect off: exit %d\n%s%s", code, out, errs)
	}
	out, _, _ = phonehome(t, "check", "-config", short, "-cname", chain, "alias.example")
	if !strings.HasPrefix(out, "alias.example: allow\n") {
		t.Errorf("max_chain 1:\n%s", out)
	}
	out, _, _ = phonehome(t, "check", "-config", short, "-cname", "v10.events.data.microsoft.com,edge.example.net", "alias.example")
	if !strings.HasPrefix(out, "alias.example: sinkhole\n") {
		t.Errorf("max_chain 1, the first name decides:\n%s", out)
	}
	if _, errs, code := phonehome(t, "check", "-cname", "a.example,,b.example", "x.example"); code != 2 || !strings.Contains(errs, "-cname: empty name") {
		t.Errorf("empty chain name: exit %d: %s", code, errs)
	}
	// Without -cname, the field is there and empty.
	out, _, _ = phonehome(t, "check", "-json", "v10.events.data.microsoft.com")
	if !strings.Contains(out, `"cname": ""`) {
		t.Errorf("no empty cname field:\n%s", out)
	}
}

// TestCheckCNAMEAsReadme runs the README's check -cname examples and
// expects their output: the alias of a telemetry endpoint, and a list line
// that sinkholes through protection.
func TestCheckCNAMEAsReadme(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code := phonehome(t, "check", "-cname", "alias.example.edgekey.net,v10.events.data.microsoft.com", "alias.example")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(string(readme), "```\n"+out+"```") {
		t.Errorf("README does not show what check -cname prints:\n%s", out)
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "marketing.txt"), []byte("0.0.0.0 fg.download.windowsupdate.com.c.footprint.net\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "phonehome.yaml"), []byte("policy:\n  default:\n    windows: \"11\"\n    lists: [{category: telemetry, file: marketing.txt}]\n"), 0o644)
	if !strings.Contains(string(readme), "```yaml\npolicy:\n  default:\n    windows: \"11\"\n    lists: [{category: telemetry, file: marketing.txt}]\n```") {
		t.Errorf("README lacks the config of the list example")
	}
	t.Chdir(dir)
	args := []string{"check", "-config", "phonehome.yaml", "-cname", "fg.download.windowsupdate.com.c.footprint.net", "ctldl.windowsupdate.com"}
	out, errs, code = phonehome(t, args...)
	if code != 0 || errs != "" {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(string(readme), "```\n$ phonehome "+strings.Join(args, " ")+"\n"+out+"```") {
		t.Errorf("README does not show what check -cname with the list prints:\n%s", out)
	}
}

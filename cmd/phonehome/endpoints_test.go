package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/endpoints"
)

// phonehome runs the command in-process as a user would from the shell.
func phonehome(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestEndpointsTable(t *testing.T) {
	out, errs, code := phonehome(t, "endpoints")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(endpoints.Builtin().Entries)+1 || !strings.HasPrefix(lines[0], "PATTERN ") || !strings.Contains(lines[0], " WINDOWS ") {
		t.Fatalf("%d lines, header %q", len(lines), lines[0])
	}
	// Aligned for a terminal: the CATEGORY column starts at the same place on every line.
	col := strings.Index(lines[0], "CATEGORY")
	for _, l := range lines[1:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("not aligned: %q", l)
		}
	}
	if !strings.Contains(out, "ctldl.windowsupdate.com") || !strings.Contains(out, "certificates") {
		t.Errorf("table lacks ctldl: %s", out)
	}
}

func TestEndpointsTSV(t *testing.T) {
	out, _, code := phonehome(t, "endpoints", "-format", "tsv", "-edition", "family", "-windows", "11")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "pattern\teditions\twindows\tcategory\tprotected\tprotocols\tdescription" {
		t.Errorf("header %q", lines[0])
	}
	// Windows 11 Family: 79 hosts in Microsoft's table, 76 distinct patterns.
	if want := len(endpoints.Builtin().Select(endpoints.Home, endpoints.Windows11, nil)); len(lines) != want+1 || want < 70 {
		t.Errorf("%d Windows 11 home entries, want %d", len(lines)-1, want)
	}
	found := false
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		if len(f) != 7 {
			t.Fatalf("%d columns: %q", len(f), l)
		}
		if !strings.Contains(f[1], "home") || !strings.Contains(f[2], "11") {
			t.Errorf("not a Windows 11 home entry: %q", f)
		}
		if f[0] == "ctldl.windowsupdate.com" {
			found = true
			if f[3] != "certificates" || f[4] != "yes" || f[2] != strings.Join(endpoints.AllVersions.Names(), ",") {
				t.Errorf("ctldl: %q", f)
			}
		}
		if f[4] != "yes" && f[4] != "no" {
			t.Errorf("protected %q", f[4])
		}
	}
	if !found {
		t.Error("no ctldl line")
	}
}

func TestEndpointsJSONAndFilters(t *testing.T) {
	out, _, code := phonehome(t, "endpoints", "-format", "json", "-category", "telemetry,spotlight", "-edition", "pro")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var entries []jsonEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("no entries")
	}
	for _, e := range entries {
		if e.Category != "telemetry" && e.Category != "spotlight" {
			t.Errorf("%s: category %s", e.Pattern, e.Category)
		}
		if !strings.Contains(strings.Join(e.Editions, ","), "pro") || len(e.Windows) == 0 || len(e.Uses) == 0 || len(e.Uses[0].Sources) == 0 || len(e.Uses[0].Windows) == 0 {
			t.Errorf("%s: %+v", e.Pattern, e)
		}
	}
}

func TestEndpointsDocs(t *testing.T) {
	// A user's copy of a document, with two rows spoilt: they warn with
	// file and line, and the rest loads.
	raw, err := os.ReadFile("../../endpoints/docs/windows-endpoints-2004-non-enterprise-editions.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "mine.md")
	os.WriteFile(doc, []byte(strings.ReplaceAll(string(raw), "img-prod-cms-rt-microsoft-com", "not a host")), 0o644)
	out, errs, code := phonehome(t, "endpoints", "-builtin=false", "-doc", doc, "-format", "tsv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if strings.Count(errs, "warning: "+doc+":") != 2 || !strings.Contains(errs, doc+":67:") {
		t.Errorf("stderr: %q", errs)
	}
	if strings.Contains(out, "windowsupdate.com/") || !strings.Contains(out, "crl.microsoft.com") {
		t.Errorf("output: %s", out)
	}
	both, _, _ := phonehome(t, "endpoints", "-doc", doc, "-format", "tsv")
	if len(both) <= len(out) {
		t.Error("-doc with the built-in document should list more")
	}
}

func TestEndpointsErrors(t *testing.T) {
	dir := t.TempDir()
	notable := filepath.Join(dir, "notes.md")
	os.WriteFile(notable, []byte("# Notes\n\nnothing here\n"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"endpoints", "-edition", "server"}, 2, `unknown edition "server" (valid: home (or family), pro`},
		{[]string{"endpoints", "-category", "telemetri"}, 2, `unknown category "telemetri" (valid: telemetry, update`},
		{[]string{"endpoints", "-format", "csv"}, 2, `unknown format "csv" (valid: table, tsv, json, hosts`},
		{[]string{"endpoints", "-doc", filepath.Join(dir, "missing.md")}, 1, "missing.md"},
		{[]string{"endpoints", "-doc", notable}, 1, notable + ": no endpoint table"},
		{[]string{"endpoints", "-builtin=false"}, 1, "no endpoint documents"},
		{[]string{"endpoints", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"nosuch"}, 2, `unknown command "nosuch"`},
	} {
		out, errs, code := phonehome(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) || out != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit %d and %q", c.args, code, errs, out, c.code, c.want)
		}
	}
}

func TestEndpointsExport(t *testing.T) {
	out, errs, code := phonehome(t, "endpoints", "-format", "hosts")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "0.0.0.0 v10.events.data.microsoft.com\n") || strings.Contains(out, "0.0.0.0 ctldl.windowsupdate.com") ||
		!strings.Contains(out, "# ctldl.windowsupdate.com: blocking it") {
		t.Errorf("hosts export without -protected:\n%s", out)
	}
	out, _, code = phonehome(t, "endpoints", "-format", "hosts", "-protected", "-category", "certificates")
	if code != 0 || !strings.Contains(out, "0.0.0.0 ctldl.windowsupdate.com\n") || strings.Contains(out, "v10.events") {
		t.Errorf("hosts export with -protected -category certificates:\n%s", out)
	}
}

// TestCheckAsReadme runs the README's check example and expects its output.
func TestCheckAsReadme(t *testing.T) {
	out, errs, code := phonehome(t, "check", "v10.events.data.microsoft.com", "www.example.com")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d: %s", code, errs)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```\n"+out+"```") {
		t.Errorf("README does not show what check prints:\n%s", out)
	}
}

func TestCheckAndValidate(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.yaml")
	os.WriteFile(filepath.Join(dir, "l.txt"), []byte("0.0.0.0 tracker.example.com\nbad line here\n"), 0o644)
	os.WriteFile(cfg, []byte("policy:\n  groups:\n    - name: kids\n      clients: [192.168.1.23, fd00::/64]\n      edition: family\n      actions: {certificates: sinkhole}\n      overrides: {sinkhole: [\"*.windowsupdate.com\"]}\n      lists: [{category: telemetry, file: l.txt}]\n"), 0o644)

	out, errs, code := phonehome(t, "check", "-config", cfg, "-client", "fd00::9", "-json", "tracker.example.com", "ctldl.windowsupdate.com", "x.example.org")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "l.txt:2: ") || !strings.Contains(errs, "sinkholes protected endpoint ctldl.windowsupdate.com") {
		t.Errorf("warnings: %s", errs)
	}
	var rs []checkResult
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 3 {
		t.Fatalf("%v: %s", err, out)
	}
	if rs[0].Action != "sinkhole" || rs[0].Group != "kids" || rs[0].Category != "telemetry" || rs[0].Edition != "home" {
		t.Errorf("tracker: %+v", rs[0]) // telemetry is not named in kids' actions: the default group's sinkhole holds
	}
	if rs[1].Action != "sinkhole" || rs[1].Override != "*.windowsupdate.com" || !rs[1].Protected || !strings.Contains(rs[1].Reason, "this breaks Windows") {
		t.Errorf("ctldl: %+v", rs[1])
	}
	if rs[2].Action != "allow" || rs[2].Category != "unlisted" || rs[2].Pattern != "" {
		t.Errorf("unlisted: %+v", rs[2])
	}
	// Every field the README lists is there, also where it does not apply.
	var raw []map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, r := range raw {
		for _, k := range []string{"name", "action", "group", "edition", "windows", "pattern", "documented", "family", "category", "protected", "override", "cname", "reason"} {
			if _, ok := r[k]; !ok {
				t.Errorf("check -json for %v has no %q", r["name"], k)
			}
		}
	}

	out, _, code = phonehome(t, "validate", "-config", cfg)
	if code != 0 || !strings.Contains(out, cfg+": ok") || !strings.Contains(out, "kids     2        home") ||
		!strings.Contains(out, "certificates=sinkhole telemetry=sinkhole undocumented=log *=log") {
		t.Errorf("validate good file: exit %d\n%s", code, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("policy:\n  groups:\n    - {name: a, clients: [10.0.0.300]}\n    - {name: a, clients: [10.0.0.1], edition: xp}\n"), 0o644)
	out, errs, code = phonehome(t, "validate", "-config", bad)
	want := bad + `:3:27: policy.groups[0].clients: bad client address "10.0.0.300": want an address or CIDR such as 192.168.1.0/24` + "\n" +
		bad + `:4:8: duplicate group name "a" (first at line 3)` + "\n" +
		bad + `:4:47: policy.groups[1].edition: unknown edition "xp" (valid: home (or family), pro, education, enterprise, all)` + "\n"
	if code != 1 || out != "" || errs != want {
		t.Errorf("validate bad file: exit %d\n got %s\nwant %s", code, errs, want)
	}
	for _, args := range [][]string{{"endpoints", "-h"}, {"check", "-h"}} {
		if _, _, code := phonehome(t, args...); code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
	}
	for _, args := range [][]string{{"validate"}, {"check"}, {"check", "-client", "pc", "x.com"}} {
		if _, _, code := phonehome(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestEndpointsDiff compares two real documents, Microsoft's Windows 10
// 21H1 and 21H2 Enterprise pages. Read side by side, 21H2 drops two rows
// (v20.events.data.microsoft.com and www.microsoft.com under Diagnostic
// Data) and rewords one description, "apps from the Microsoft Store" to
// "apps from the Store", which *.delivery.mp.microsoft.com and the row
// below it, *.update.microsoft.com, share. Its other edits are markup,
// case and apostrophes, which are no change.
func TestEndpointsDiff(t *testing.T) {
	out, errs, code := phonehome(t, "endpoints", "diff", "10-21H1", "10-21H2", "-edition", "enterprise", "-format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var d struct {
		From, To string
		Changes  []jsonChange
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range d.Changes {
		got = append(got, c.Change+" "+c.Pattern+" "+strings.Join(c.What, ";"))
		if (c.From == nil) != (c.Change == "added") || (c.To == nil) != (c.Change == "dropped") {
			t.Errorf("%s %s: from %v to %v", c.Change, c.Pattern, c.From, c.To)
		}
	}
	want := []string{
		"dropped v20.events.data.microsoft.com ",
		"dropped www.microsoft.com ",
		"changed *.delivery.mp.microsoft.com description",
		"changed *.update.microsoft.com description",
	}
	slices.Sort(got)
	slices.Sort(want)
	if d.From != "10-21H1" || d.To != "10-21H2" || !slices.Equal(got, want) {
		t.Errorf("diff %s → %s:\n got %q\nwant %q", d.From, d.To, got, want)
	}

	// Flags before the versions, the table, and what a Windows 11 upgrade
	// started contacting.
	out, _, code = phonehome(t, "endpoints", "diff", "-edition", "enterprise", "10-21H2", "11")
	if code != 0 || !strings.HasPrefix(out, "Windows 10-21H2 → 11: ") || !strings.Contains(out, "added    definitionupdates.microsoft.com") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	// Against a version with no document for some editions, a note says so.
	if _, errs, _ := phonehome(t, "endpoints", "diff", "10-21H1", "10-21H2"); !strings.Contains(errs, "note: no document lists endpoints for home, pro, education on Windows 10-21H2") {
		t.Errorf("no note: %q", errs)
	}
	for _, bad := range [][]string{{"10-1909"}, {"10-1909", "10-1910"}, {"10-1909..11", "11"}, {"10-1909", "11", "-format", "xml"}} {
		if _, errs, code := phonehome(t, append([]string{"endpoints", "diff"}, bad...)...); code != 2 || errs == "" {
			t.Errorf("diff %v: exit %d, stderr %q", bad, code, errs)
		}
	}
}

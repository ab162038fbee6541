package endpoints

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

const seedPath = "docs/" + SeedDocument

func parseTestFile(t *testing.T, path string) *Document {
	t.Helper()
	d, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// rowAt finds the row parsed from a line.
func rowAt(t *testing.T, d *Document, line int) []Row {
	t.Helper()
	var rows []Row
	for _, r := range d.Rows() {
		if r.Line == line {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no row from line %d", d.Name, line)
	}
	return rows
}

func TestSeedDocument(t *testing.T) {
	d := parseTestFile(t, seedPath)
	if d.Title != "Windows 10, version 1909, connection endpoints for non-Enterprise editions" || d.Date != "7/15/2020" {
		t.Errorf("front matter: title %q date %q", d.Title, d.Date)
	}
	if len(d.Warnings) != 0 {
		t.Errorf("warnings: %v", d.Warnings)
	}
	type sec struct {
		heading string
		edition Edition
		rows    int
	}
	var got []sec
	for _, s := range d.Sections {
		got = append(got, sec{s.Heading, s.Edition, len(s.Rows)})
	}
	want := []sec{{"Windows 10 Family", Home, 48}, {"Windows 10 Pro", Pro, 57}, {"Windows 10 Education", Education, 43}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sections = %v, want %v", got, want)
	}
	if n := len(d.Rows()); n != 148 {
		t.Errorf("%d rows, want 148", n)
	}

	// The line that runs two rows together is two rows.
	merged := rowAt(t, d, 143)
	if len(merged) != 2 {
		t.Fatalf("line 143 gave %d rows, want 2: %+v", len(merged), merged)
	}
	wantMerged := []Row{
		{Line: 143, Destination: "telecommand.telemetry.microsoft.com", Patterns: []string{"telecommand.telemetry.microsoft.com"}, Protocol: "TLSv1.2", Description: "Used by Windows Error Reporting", Versions: versionOf("10-1909")},
		{Line: 143, Destination: "tile-service.weather.microsoft.com", Patterns: []string{"tile-service.weather.microsoft.com"}, Protocol: "HTTP", Description: "Used for the Weather app", Versions: versionOf("10-1909")},
	}
	if !reflect.DeepEqual(merged, wantMerged) {
		t.Errorf("merged line:\n got %+v\nwant %+v", merged, wantMerged)
	}

	// An empty protocol cell is one row with an empty protocol.
	for _, line := range []int{73, 116, 138} {
		r := rowAt(t, d, line)
		if len(r) != 1 || r[0].Protocol != "" || r[0].Description == "" {
			t.Errorf("line %d: %+v, want one row with an empty protocol", line, r)
		}
	}
	fe3 := rowAt(t, d, 73)[0]
	if fe3.Patterns[0] != "fe3cr.delivery.mp.microsoft.com" || fe3.Description != "Used to download operating system patches, updates, and apps from Microsoft Store" {
		t.Errorf("line 73: %+v", fe3)
	}

	// Odd destinations and what they become.
	for _, c := range []struct {
		line    int
		pattern string
	}{
		{50, "*dl.delivery.mp.microsoft.com"},
		{160, "*.dl.delivery.mp.microsoft.com"},
		{54, "ctldl.windowsupdate.com"},          // ctldl.windowsupdate.com/*
		{87, "watson.telemetry.microsoft.com"},   // watson.telemetry.microsoft.com*
		{88, "10.events.data.microsoft.com"},     // …/onecollector/1.0/
		{117, "displaycatalog.mp.microsoft.com"}, // displaycatalog.mp.microsoft.com*
		{165, "inference.location.live.net"},     // Inference.location.live.net
		{196, "v10.events.data.microsoft.com"},   // V10.events.data.microsoft.com/onecollector/1.0/
		{197, "watson.telemetry.microsoft.com"},  // Watson.telemetry.microsoft.com/telemetry.request
	} {
		r := rowAt(t, d, c.line)
		if len(r) != 1 || !reflect.DeepEqual(r[0].Patterns, []string{c.pattern}) {
			t.Errorf("line %d: %+v, want pattern %s", c.line, r, c.pattern)
		}
	}
}

var cleanPattern = regexp.MustCompile(`^[a-z0-9*_-]+(\.[a-z0-9*_-]+)+$`)

// TestTestdataDocuments checks each of Microsoft's other documents against
// counts taken by reading the files: the endpoint rows of each section
// (table lines, less header, separator, heading rows such as "[Learn how to
// turn off …]" and the Xbox Live area row, plus the two rows after a stray
// blank line in 1709 Education).
func TestTestdataDocuments(t *testing.T) {
	type sec struct {
		edition Edition
		rows    int
	}
	for _, c := range []struct {
		file     string
		sections []sec
		warnings []int // lines that warn
	}{
		{"manage-windows-2004-endpoints.md", []sec{{Enterprise, 48}}, nil},
		{"windows-endpoints-1709-non-enterprise-editions.md", []sec{{Home, 84}, {Pro, 89}, {Education, 68}}, nil},
		{"windows-endpoints-1803-non-enterprise-editions.md", []sec{{Home, 44}, {Pro, 23}, {Education, 44}}, nil},
		{"windows-endpoints-1809-non-enterprise-editions.md", []sec{{Home, 50}, {Pro, 21}, {Education, 39}}, nil},
		// Lines 67 and 125 name "img-prod-cms-rt-microsoft-com", a host
		// name cut short in Microsoft's document: its first label.
		{"windows-endpoints-2004-non-enterprise-editions.md", []sec{{Home, 43}, {Pro, 55}, {Education, 47}}, nil},
		{"windows-endpoints-20H2-non-enterprise-editions.md", []sec{{Home, 84}, {Pro, 64}, {Education, 59}}, nil},
	} {
		t.Run(c.file, func(t *testing.T) {
			d := parseTestFile(t, filepath.Join("docs", c.file))
			var got []sec
			for _, s := range d.Sections {
				got = append(got, sec{s.Edition, len(s.Rows)})
			}
			if !reflect.DeepEqual(got, c.sections) {
				t.Errorf("sections = %v, want %v", got, c.sections)
			}
			var lines []int
			for _, w := range d.Warnings {
				lines = append(lines, w.Line)
				if w.File != d.Name || !strings.Contains(w.String(), d.Name+":") {
					t.Errorf("warning does not name the file: %v", w)
				}
			}
			if !reflect.DeepEqual(lines, c.warnings) {
				t.Errorf("warnings on lines %v, want %v: %v", lines, c.warnings, d.Warnings)
			}
			for _, r := range d.Rows() {
				for _, p := range r.Patterns {
					if !cleanPattern.MatchString(p) {
						t.Errorf("line %d: pattern %q has a space, markup, a path or upper case", r.Line, p)
					}
				}
				if r.Destination == "" {
					t.Errorf("line %d: row without destination", r.Line)
				}
			}
		})
	}
}

// TestFourColumnCarryDown: in Area|Description|Protocol|Destination tables an
// empty Area or Description continues the row above, and "Learn how" rows
// are headings.
func TestFourColumnCarryDown(t *testing.T) {
	d := parseTestFile(t, "docs/manage-windows-2004-endpoints.md")
	ctl := rowAt(t, d, 58)[0] // |||HTTP|ctldl.windowsupdate.com|
	if ctl.Area != "Certificates" || !strings.HasPrefix(ctl.Description, "The following endpoint is used by the Automatic Root Certificates Update") || ctl.Protocol != "HTTP" {
		t.Errorf("line 58: %+v", ctl)
	}
	watson := rowAt(t, d, 66)[0] // |||TLS v1.2|watson.*.microsoft.com|
	if watson.Area != "Diagnostic Data" || !strings.Contains(watson.Description, "Windows Error Reporting") || watson.Patterns[0] != "watson.*.microsoft.com" {
		t.Errorf("line 66: %+v", watson)
	}
	for _, r := range d.Rows() {
		if r.Line == 52 || r.Line == 57 || strings.Contains(strings.ToLower(r.Destination), "learn how") {
			t.Errorf("heading row parsed as endpoint: %+v", r)
		}
	}
	// A new Area does not inherit the description of the area above.
	d20 := parseTestFile(t, "docs/windows-endpoints-20H2-non-enterprise-editions.md")
	xbox := rowAt(t, d20, 127)[0]
	if xbox.Area != "Xbox Live" || xbox.Description != "The following endpoints are used for Xbox Live." {
		t.Errorf("line 127: %+v", xbox)
	}
	wdcpalt := rowAt(t, d20, 110)[0] // ||||wdcpalt.microsoft.com|
	if wdcpalt.Area != "Windows Defender" || wdcpalt.Protocol != "" || wdcpalt.Patterns[0] != "wdcpalt.microsoft.com" {
		t.Errorf("line 110: %+v", wdcpalt)
	}
}

// TestParseShapes covers what the real documents show only once or not at
// all, as a user's newer document may: </br>-separated hosts, an HTML span
// and a link inside a destination, rows without a leading pipe, a table
// without edition sections, bad rows that warn while the rest loads.
func TestParseShapes(t *testing.T) {
	doc := "---\r\ntitle: Windows 11 connection endpoints for non-Enterprise editions\r\nms.date: 1/2/2026\r\n---\r\n" +
		"# Windows 11 endpoints\r\n\r\n" +
		"## Windows 11 Home\r\n\r\n" +
		"Destination | Protocol | Description\r\n" +
		":--|:-:|--:\r\n" +
		"a.example.com</br>B.Example.com<br/>c.example.com | HTTPS | Three hosts\r\n" +
		"cs12.<span class=\"anchor\" id=\"x\"></span>wpc.v0cdn.net\t|\tHTTP\t|\tSpan\r\n" +
		"[www.microsoft.com](https://www.microsoft.com/) | HTTPS | Link\r\n" +
		"not a host at all | HTTP | Bad\r\n" +
		"\\*.escaped.example.com\\* | HTTP | Escaped\r\n" +
		"| https://d.example.com:443/path | HTTP | With scheme and port |\r\n" +
		"\r\n" +
		"## Windows 11 Professional\r\n\r\n" +
		"| **Protocol** | **Destination** |\r\n|---|---|\r\n| HTTP | e.example.com. |\r\n"
	d, err := Parse("new.md", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if d.Title != "Windows 11 connection endpoints for non-Enterprise editions" || d.Date != "1/2/2026" {
		t.Errorf("front matter: %q %q", d.Title, d.Date)
	}
	var pats []string
	for _, r := range d.Rows() {
		pats = append(pats, r.Patterns...)
	}
	want := []string{"a.example.com", "b.example.com", "c.example.com", "cs12.wpc.v0cdn.net", "www.microsoft.com", "*.escaped.example.com", "d.example.com", "e.example.com"}
	if !reflect.DeepEqual(pats, want) {
		t.Errorf("patterns:\n got %q\nwant %q", pats, want)
	}
	if len(d.Sections) != 2 || d.Sections[0].Edition != Home || d.Sections[1].Edition != Pro {
		t.Errorf("sections: %+v", d.Sections)
	}
	if len(d.Warnings) != 1 || d.Warnings[0].Line != 14 || !strings.Contains(d.Warnings[0].Msg, "not a host at all") {
		t.Errorf("warnings: %v", d.Warnings)
	}

	// An Enterprise document has one table and no edition sections.
	ent := "# Manage connection endpoints for Windows 11 Enterprise\n\n## Endpoints\n\n|Area|Description|Protocol|Destination|\n|-|-|-|-|\n|Maps|Map tiles|HTTPS|maps.example.com|\n"
	d, err = Parse("ent.md", strings.NewReader(ent))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Sections) != 1 || d.Sections[0].Edition != Enterprise || d.Rows()[0].Area != "Maps" {
		t.Errorf("enterprise: %+v", d.Sections)
	}
}

func TestParseErrors(t *testing.T) {
	_, err := Parse("notes.md", strings.NewReader("# Notes\n\nNo table here.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"))
	if !errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), "notes.md") {
		t.Errorf("document without an endpoint table: %v", err)
	}
	_, err = ParseFile(filepath.Join(t.TempDir(), "missing.md"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.md") {
		t.Errorf("missing file: %v", err)
	}
	// A table under a heading that names no edition, in a document that
	// is not an Enterprise one, warns and loads nothing from that table.
	_, err = Parse("odd.md", strings.NewReader("# Endpoints\n\n## Misc\n\n|Destination|Protocol|Description|\n|---|---|---|\n|a.example.com|HTTP|x|\n"))
	if !errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), "odd.md:5: table under heading \"Misc\" names no edition") {
		t.Errorf("table without an edition: %v", err)
	}
}

// TestParseUserShapes covers what a user's newer document may do with the
// shapes the built-in ones taught the parser.
func TestParseUserShapes(t *testing.T) {
	// A part heading's edition carries to the area headings of its level
	// only while its tables sit under them: here the Pro part has a table
	// under a deeper heading, so the later "## Other products" names no
	// edition and its table is skipped with a warning.
	doc := "# Windows 11, version 21H2, connection endpoints\n\n## Windows 11 Pro\n\n### Apps\n\n" +
		"The following endpoint is used by the Weather app. If you turn it off, nothing updates.\n\n" +
		"| Source process | Protocol | Destination |\n|---|---|---|\n| svchost | HTTPS | a.example.com |\n\n" +
		"## Other products\n\n| Destination | Protocol |\n|---|---|\n| b.example.com | HTTP |\n"
	d, err := Parse("user.md", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	rows := d.Rows()
	if len(rows) != 1 || d.Sections[0].Edition != Pro || rows[0].Area != "Apps" || rows[0].Process != "svchost" ||
		rows[0].Description != "The following endpoint is used by the Weather app." {
		t.Errorf("rows: %+v", rows)
	}
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0].Msg, `"Other products" names no edition`) {
		t.Errorf("warnings: %v", d.Warnings)
	}
	// "Windows 11, version 21H2" is Windows 11.
	if d.Version != Windows11 {
		t.Errorf("version %s, want 11", d.Version)
	}

	// An "Applies from" row runs to the document's own version; a cell
	// broken over lines is one row, its pieces joined by a space.
	doc = "---\ntitle: Connection endpoints for Windows 10 Enterprise, version 1903\n---\n## Windows 10 Enterprise connection endpoints\n\n## Apps\n\n" +
		"| Source process | Protocol | Destination | Applies from Windows 10 version |\n|---|---|---|---|\n" +
		"| | HTTP | c.example.com | 1709 |\n| searchui <br> backgroundtaskhost | TLSv1.2/\nHTTPS | d.example.com | 1803\n"
	d, err = Parse("user.md", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	rows = d.Rows()
	if len(rows) != 2 || rows[0].Versions.String() != "10-1709..10-1903" || rows[1].Versions.String() != "10-1803..10-1903" ||
		rows[1].Protocol != "TLSv1.2/ HTTPS" || rows[1].Process != "searchui, backgroundtaskhost" || rows[1].Line != 11 {
		t.Errorf("rows: %+v", rows)
	}
	if ps := protocols(rows[1].Protocol); strings.Join(ps, ",") != "TLSV1.2,HTTPS" && strings.Join(ps, ",") != "TLSv1.2,HTTPS" {
		t.Errorf("protocols %q", ps)
	}
}

// TestParseLongContinuation: a row without a trailing pipe followed by many
// lines stops taking them after a few, so a hostile document stays linear.
func TestParseLongContinuation(t *testing.T) {
	doc := "# Windows 11\n\n## Windows 11 Home\n\n| Destination | Protocol | Description |\n|---|---|---|\n| a.example.com | HTTP | Used by" +
		strings.Repeat("\nmore words", 40000) + "\n"
	d, err := Parse("long.md", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if r := d.Rows(); len(r) != 1 || len(r[0].Description) > 400 {
		t.Errorf("%d rows; description of %d bytes", len(r), len(r[0].Description))
	}
}

package endpoints

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testdataDocs parses every built-in document from its file.
func testdataDocs(t *testing.T) []*Document {
	t.Helper()
	files, err := filepath.Glob("docs/*.md")
	if err != nil || len(files) != 23 {
		t.Fatalf("documents: %v %v", files, err)
	}
	var ds []*Document
	for _, f := range files {
		ds = append(ds, parseTestFile(t, f))
	}
	return ds
}

// TestSeedCatalog checks the catalog of the seed document alone against
// counts made by reading it.
func TestSeedCatalog(t *testing.T) {
	cat := Build(BuiltinDoc(SeedDocument))
	if len(cat.Entries) != 65 {
		t.Errorf("%d patterns, want 65", len(cat.Entries))
	}
	if got, want := cat.Count(), map[Edition]int{Home: 48, Pro: 56, Education: 41}; !reflect.DeepEqual(got, want) {
		t.Errorf("patterns per edition = %v, want %v", got, want)
	}
	if !slices.IsSortedFunc(cat.Entries, func(a, b *Entry) int { return strings.Compare(a.Pattern, b.Pattern) }) {
		t.Error("entries not sorted by pattern")
	}

	for _, c := range []struct {
		pattern  string
		editions Edition
		uses     []Use // Sources left out
	}{
		// The merged line 143 and its own rows in other sections.
		{"telecommand.telemetry.microsoft.com", Pro | Education, []Use{
			{Edition: Pro, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Used by Windows Error Reporting"}},
			{Edition: Education, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Used by Windows Error Reporting"}},
		}},
		{"tile-service.weather.microsoft.com", Home | Pro | Education, []Use{
			{Edition: Home, Protocols: []string{"HTTP"}, Descriptions: []string{"Used for the Weather app"}},
			{Edition: Pro, Protocols: []string{"HTTP"}, Descriptions: []string{"Used for the Weather app"}},
			{Edition: Education, Protocols: []string{"HTTP"}, Descriptions: []string{"Used to download updates to the Weather app Live Tile"}},
		}},
		// Empty protocol cells: Family's fe3cr and Pro's ctldl and mobile.pipe.aria.
		{"fe3cr.delivery.mp.microsoft.com", Home | Pro | Education, []Use{
			{Edition: Home, Descriptions: []string{"Used to download operating system patches, updates, and apps from Microsoft Store"}},
			{Edition: Pro, Protocols: []string{"HTTP"}, Descriptions: []string{"Windows Update"}},
			{Edition: Education, Protocols: []string{"HTTP", "TLSv1.2"}, Descriptions: []string{"Windows Update"}},
		}},
		{"mobile.pipe.aria.microsoft.com", Home | Pro, []Use{
			{Edition: Home, Protocols: []string{"HTTP"}, Descriptions: []string{"Office Telemetry"}},
			{Edition: Pro, Descriptions: []string{"Office Telemetry"}},
		}},
		{"*dl.delivery.mp.microsoft.com", Home | Pro, []Use{
			{Edition: Home, Protocols: []string{"HTTP"}, Descriptions: []string{"Used to download operating system patches, updates, and apps from Microsoft"}},
			{Edition: Pro, Protocols: []string{"HTTP"}, Descriptions: []string{"Used to download operating system patches, updates, and apps from Microsoft Store"}},
		}},
		{"*.dl.delivery.mp.microsoft.com", Education, []Use{
			{Edition: Education, Protocols: []string{"HTTP"}, Descriptions: []string{"Used to download operating system patches, updates, and apps from Microsoft"}},
		}},
		// watson.telemetry.microsoft.com*, and Education's two spellings.
		{"watson.telemetry.microsoft.com", Home | Pro | Education, []Use{
			{Edition: Home, Protocols: []string{"HTTP", "TLSv1.2"}, Descriptions: []string{"Diagnostic Data"}},
			{Edition: Pro, Protocols: []string{"HTTP", "TLSv1.2"}, Descriptions: []string{"Used by Windows Error Reporting"}},
			{Edition: Education, Protocols: []string{"HTTP"}, Descriptions: []string{"Diagnostic Data"}},
		}},
		{"10.events.data.microsoft.com", Home, []Use{
			{Edition: Home, Protocols: []string{"HTTP"}, Descriptions: []string{"Microsoft Office"}},
		}},
		// v10…/onecollector/1.0/ and V10… merge with the plain host.
		{"v10.events.data.microsoft.com", Home | Pro | Education, []Use{
			{Edition: Home, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Used by the Connected User Experiences and Telemetry component and connects to the Microsoft Data Management service"}},
			{Edition: Pro, Protocols: []string{"HTTP", "TLSv1.2"}, Descriptions: []string{"Diagnostic Data", "Used by the Connected User Experiences and Telemetry component and connects to the Microsoft Data Management service"}},
			{Edition: Education, Protocols: []string{"TLSv1.2", "HTTP"}, Descriptions: []string{"Diagnostic Data"}},
		}},
		{"inference.location.live.net", Home | Pro | Education, []Use{
			{Edition: Home, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Used for Location Data"}},
			{Edition: Pro, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Used for Location Data"}},
			{Edition: Education, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Location"}},
		}},
		{"displaycatalog.mp.microsoft.com", Home | Pro | Education, []Use{
			{Edition: Home, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Used to communicate with Microsoft Store"}},
			{Edition: Pro, Protocols: []string{"TLSv1.2"}, Descriptions: []string{"Microsoft Store"}},
			{Edition: Education, Protocols: []string{"HTTP", "TLSv1.2"}, Descriptions: []string{"Microsoft Store"}},
		}},
	} {
		e := cat.Lookup(c.pattern)
		if e == nil {
			t.Errorf("%s: not in the catalog", c.pattern)
			continue
		}
		if e.Editions != c.editions {
			t.Errorf("%s: editions %v, want %v", c.pattern, e.Editions, c.editions)
		}
		var uses []Use
		for _, u := range e.Uses {
			if len(u.Sources) == 0 || !strings.HasPrefix(u.Sources[0], SeedDocument+":") {
				t.Errorf("%s: sources %v", c.pattern, u.Sources)
			}
			if u.Versions != versionOf("10-1909") {
				t.Errorf("%s: %s documented for %s, want 10-1909", c.pattern, u.Edition, u.Versions)
			}
			u.Sources, u.Versions = nil, 0
			uses = append(uses, u)
		}
		if !reflect.DeepEqual(uses, c.uses) {
			t.Errorf("%s: uses\n got %+v\nwant %+v", c.pattern, uses, c.uses)
		}
	}
}

func TestSelect(t *testing.T) {
	c := Build(BuiltinDoc(SeedDocument))
	if n := len(c.Select(Home, AllVersions, nil)); n != 48 {
		t.Errorf("home: %d", n)
	}
	if n := len(c.Select(Home, Windows11, nil)); n != 0 {
		t.Errorf("home on Windows 11 from the 1909 seed: %d", n)
	}
	tel := c.Select(AllEditions, AllVersions, []Category{"telemetry"})
	if len(tel) == 0 {
		t.Fatal("no telemetry")
	}
	for _, e := range tel {
		if e.Category != "telemetry" {
			t.Errorf("%s: %s", e.Pattern, e.Category)
		}
	}
}

func TestLoad(t *testing.T) {
	c, warns, err := Load(true, "docs/windows-endpoints-2004-non-enterprise-editions.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 || len(c.Sources) != 24 || len(c.Entries) != len(Builtin().Entries) {
		t.Errorf("warnings %v, sources %v, %d entries", warns, c.Sources, len(c.Entries))
	}
	if _, _, err := Load(false); err == nil {
		t.Error("no documents at all: want an error")
	}
	if _, _, err := Load(true, "no/such/file.md"); err == nil || !strings.Contains(err.Error(), "no/such/file.md") {
		t.Errorf("missing document: %v", err)
	}
}

func TestEditions(t *testing.T) {
	for in, want := range map[string]Edition{"home": Home, "Family": Home, "PRO": Pro, "education": Education, "enterprise": Enterprise, "all": AllEditions} {
		if got, err := ParseEdition(in); err != nil || got != want {
			t.Errorf("ParseEdition(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseEdition("server"); err == nil || !strings.Contains(err.Error(), "family") {
		t.Errorf("unknown edition: %v", err)
	}
	if s := (Home | Education).String(); s != "home,education" {
		t.Errorf("String = %q", s)
	}
}

// TestSourceProcess: the source process a per-area Enterprise document
// names is kept for its edition and shown before the description.
func TestSourceProcess(t *testing.T) {
	e := Builtin().Lookup("tile-service.weather.microsoft.com")
	if e == nil {
		t.Fatal("tile-service.weather.microsoft.com is not in the catalog")
	}
	if u := e.Use(Enterprise); u == nil || !slices.Contains(u.Processes, "explorer") {
		t.Errorf("enterprise use: %+v", u)
	}
	if u := e.Use(Home); u == nil || len(u.Processes) != 0 {
		t.Errorf("home use has processes: %+v", u)
	}
	if d := e.Description(); !strings.HasPrefix(d, "explorer: ") || strings.Count(d, ". ") > 0 {
		t.Errorf("description %q: want the process, then one sentence", d)
	}
}

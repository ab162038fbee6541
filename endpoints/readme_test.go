package endpoints

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// categoryRow is the README's line for one category.
func categoryRow(ci CategoryInfo) string {
	prot := ""
	if ci.Protected {
		prot = "protected"
	}
	breaks := strings.TrimPrefix(ci.Breaks, "blocking it ")
	return fmt.Sprintf("| `%s` | %s | %s | %s |", ci.Name, ci.About, breaks, prot)
}

// TestReadmeCategories keeps the README's category table in step with the
// vocabulary, so the documentation cannot rot.
func TestReadmeCategories(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var want []string
	for _, ci := range Categories {
		want = append(want, categoryRow(ci))
	}
	if !strings.Contains(readme, strings.Join(want, "\n")) {
		t.Errorf("README.md's category table is out of date; it should read:\n%s", strings.Join(want, "\n"))
	}
}

// TestReadmeExportTable holds the README's table of how each export format
// errs to what the exporters do.
func TestReadmeExportTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Formats {
		var want []string
		for _, fi := range fidelities[f] {
			want = append(want, fi.String())
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "| `"+f+"`") {
				continue
			}
			found = true
			cells := strings.Split(strings.Trim(line, "| "), " | ")
			if got := cells[1:]; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("README row for %s says %v, the exporter does %v", f, got, want)
			}
		}
		if !found {
			t.Errorf("README has no row for export format %s", f)
		}
	}
}

package endpoints

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// manifestRow is one line of docs/MANIFEST.tsv: where a built-in document
// comes from, and what a person counted in it by reading it.
type manifestRow struct {
	file     string
	version  string
	editions string
	sections []manifestSection
}

type manifestSection struct {
	heading string
	lines   int    // body lines of the tables, as a markdown renderer sees them
	extra   string // what the brackets say: "19 link", "79 hosts", …
}

var sectionCount = regexp.MustCompile(`^(.+?)=(\d+)(?: \((.*)\))?$`)

func readManifest(t *testing.T) []manifestRow {
	t.Helper()
	b, err := os.ReadFile("docs/MANIFEST.tsv")
	if err != nil {
		t.Fatal(err)
	}
	var rows []manifestRow
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n")[1:] {
		f := strings.Split(line, "\t")
		if len(f) != 9 {
			t.Fatalf("MANIFEST.tsv:%d: %d fields", i+2, len(f))
		}
		r := manifestRow{file: f[0], version: f[4], editions: f[5]}
		// "22 link rows (not counted)": these counts leave the links out.
		uncounted := 0
		if m := regexp.MustCompile(`(\d+) link rows \(not counted\)`).FindStringSubmatch(f[7]); m != nil {
			uncounted, _ = strconv.Atoi(m[1])
		}
		for _, s := range strings.Split(f[8], "; ") {
			m := sectionCount.FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("MANIFEST.tsv:%d: section count %q", i+2, s)
			}
			n, _ := strconv.Atoi(m[2])
			extra := m[3]
			if uncounted > 0 {
				n += uncounted
				extra = strings.TrimSpace(extra + " " + strconv.Itoa(uncounted) + " link")
			}
			r.sections = append(r.sections, manifestSection{m[1], n, extra})
		}
		rows = append(rows, r)
	}
	return rows
}

// bracket reads a number the brackets give: "19 link" with word "link".
func bracket(extra, word string) int {
	m := regexp.MustCompile(`(?:^|[ (+])(\d+) ` + word).FindStringSubmatch(extra)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestBuiltinDocumentsMatchManifest parses every built-in document and
// checks it against what a person counted by reading the file: its Windows
// version and editions, and the rows of each section, with its link rows,
// rows without a destination, hosts, and rows a blank line left outside.
func TestBuiltinDocumentsMatchManifest(t *testing.T) {
	files, _ := filepath.Glob("docs/*.md")
	manifest := readManifest(t)
	if len(manifest) != len(files) {
		t.Errorf("MANIFEST.tsv lists %d documents, docs/ has %d", len(manifest), len(files))
	}
	for _, m := range manifest {
		t.Run(m.file, func(t *testing.T) {
			d := BuiltinDoc(m.file)
			if d == nil {
				t.Fatalf("%s is not built in", m.file)
			}
			// Version: "10-1909", or "10-1709+ (rows name 1709 or 1803)".
			wantS := strings.Fields(m.version)[0]
			if v, ok := strings.CutSuffix(wantS, "+"); ok {
				wantS = v + "..10-1803" // the newest version its rows name
			}
			wantV, err := ParseVersion(wantS)
			if err != nil {
				t.Fatal(err)
			}
			if d.Versions != wantV {
				t.Errorf("versions %s, want %s", d.Versions, wantV)
			}
			var eds Edition
			for _, s := range d.Sections {
				eds |= s.Edition
			}
			var wantEds Edition
			for _, e := range strings.Split(strings.ReplaceAll(m.editions, "/", ","), ",") {
				ed, err := ParseEdition(e)
				if err != nil {
					t.Fatal(err)
				}
				wantEds |= ed
			}
			if eds != wantEds {
				t.Errorf("editions %s, want %s", eds, wantEds)
			}
			var got []string
			for _, s := range d.Sections {
				hosts := 0
				for _, r := range s.Rows {
					hosts += len(r.Patterns)
				}
				got = append(got, describeSection(s.Heading, s.Lines, s.Links, s.NoDest, s.Stray, hosts))
			}
			var want []string
			for _, s := range m.sections {
				g := slices.IndexFunc(d.Sections, func(x Section) bool { return x.Heading == s.heading })
				hosts := -1 // only where the manifest counts them
				if g >= 0 && strings.Contains(s.extra, "hosts") {
					hosts = bracket(s.extra, "hosts")
				}
				want = append(want, describeSection(s.heading, s.lines, bracket(s.extra, "link"), bracket(s.extra, "no-destination"), bracket(s.extra, "pipe rows outside a table"), hosts))
			}
			// Compare hosts only where the manifest counts them.
			for i := range want {
				if i < len(got) && strings.HasSuffix(want[i], "hosts=-1") {
					got[i] = got[i][:strings.LastIndex(got[i], "hosts=")] + "hosts=-1"
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("sections:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func describeSection(heading string, lines, links, nodest, stray, hosts int) string {
	return heading + ": lines=" + strconv.Itoa(lines) + " links=" + strconv.Itoa(links) + " nodest=" + strconv.Itoa(nodest) +
		" stray=" + strconv.Itoa(stray) + " hosts=" + strconv.Itoa(hosts)
}

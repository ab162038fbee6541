package endpoints

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Document is one of Microsoft's connection-endpoint documents as read: its
// front matter, and the endpoint rows of each section's table.
type Document struct {
	Name  string // the file name, as given to Parse
	Title string // front matter title, else the first "# " heading
	Date  string // front matter ms.date, as written
	// Version is the Windows version the title (or, failing that, the
	// introduction) names; Versions adds those that rows name themselves.
	Version  Version
	Versions Version
	Sections []Section
	Warnings []Warning // rows that could not be understood; the rest loaded
}

// Section is a "##" section of a document with an endpoint table.
type Section struct {
	Heading string
	Line    int
	Edition Edition
	Rows    []Row
	// Counted as a markdown renderer sees the tables: body lines (Lines),
	// of which "Learn how…" links (Links) and rows without a destination
	// (NoDest); Stray are pipe rows after a blank line that phonehome reads
	// as the table's, though a renderer leaves them outside it.
	Lines, Links, NoDest, Stray int
}

// Row is one endpoint row of a table. In tables with an Area column, Area and
// Description are already carried down from the rows above when left empty.
type Row struct {
	Line        int
	Area        string
	Destination string   // the cell as written
	Patterns    []string // what Destination names; usually one
	Protocol    string
	Description string
	// Process is the "Source process" cell: the Windows program that makes
	// the connection (svchost.exe, searchui, …), where the table has one.
	Process string
	// Versions are the Windows versions the row is documented for: the
	// document's, or those its "Applies from" cell names.
	Versions Version
}

// Warning is a problem with one line of a document that did not stop the rest
// of it from loading.
type Warning struct {
	File string
	Line int
	Msg  string
}

func (w Warning) String() string { return fmt.Sprintf("%s:%d: %s", w.File, w.Line, w.Msg) }

// Rows returns every endpoint row of the document, section after section.
func (d *Document) Rows() []Row {
	var rows []Row
	for _, s := range d.Sections {
		rows = append(rows, s.Rows...)
	}
	return rows
}

// ParseFile reads and parses the document at path.
func ParseFile(path string) (*Document, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading endpoint document: %w", err)
	}
	return Parse(path, bytes.NewReader(b))
}

// ErrNoTable is returned (wrapped, with the file name) for a document that has
// no endpoint table: no table with a Destination column and at least one row.
var ErrNoTable = errors.New("no endpoint table (a markdown table with a Destination column)")

// Parse reads a connection-endpoint document: markdown with YAML front matter,
// a section per edition, and pipe tables whose header row names the columns.
// A row it cannot understand becomes a Warning naming the line; a document
// without any endpoint row is an error naming the file.
func Parse(name string, r io.Reader) (*Document, error) {
	doc := &Document{Name: name}
	p := parser{doc: doc}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		p.lines = append(p.lines, strings.TrimRight(sc.Text(), "\r"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	p.run()
	if len(doc.Rows()) == 0 {
		err := fmt.Errorf("%s: %w", name, ErrNoTable)
		if len(doc.Warnings) > 0 {
			// Say why the tables it has gave nothing.
			var why []string
			for i, w := range doc.Warnings {
				if i == 3 {
					why = append(why, fmt.Sprintf("and %d more", len(doc.Warnings)-3))
					break
				}
				why = append(why, w.String())
			}
			err = fmt.Errorf("%w; %s", err, strings.Join(why, "; "))
		}
		return nil, err
	}
	return doc, nil
}

type parser struct {
	doc   *Document
	lines []string
	i     int // index of the next line; line numbers are i+1

	docEdition Edition    // from the title: Enterprise documents have no edition sections
	headings   [7]Edition // the edition named by the open heading of each level
	heading    string
	headLine   int
	headLevel  int
	// sticky is the edition of a "part" heading ("## Windows 10 Enterprise
	// connection endpoints") that has no table of its own: the headings of
	// its level that follow ("## Apps", "## Cortana and Search") name areas
	// of that edition.
	sticky   [7]Edition
	areaHead bool     // the open heading names an area, not an edition
	para     []string // the prose paragraph last read, which describes the table after it
	applies  Version  // the newest version an "Applies from" cell names
	rowLine  int      // the line the row being read starts on
}

func (p *parser) warn(line int, format string, args ...any) {
	p.doc.Warnings = append(p.doc.Warnings, Warning{File: p.doc.Name, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) run() {
	p.frontMatter()
	for p.i < len(p.lines) {
		line := p.lines[p.i]
		if level, text, ok := headingOf(line); ok {
			p.openHeading(level, text)
			p.para = nil
			p.i++
			continue
		}
		if strings.Contains(line, "|") && p.i+1 < len(p.lines) && isSeparator(p.lines[p.i+1]) {
			p.table()
			p.para = nil
			continue
		}
		p.prose(line)
		p.i++
	}
	p.versions()
}

// prose keeps the paragraph being read, and takes the document's version
// from the introduction when the title names none ("… a clean installation
// of Windows 10, version 1709 and later").
func (p *parser) prose(line string) {
	t := strings.TrimSpace(line)
	switch {
	case t == "":
		if len(p.para) > 0 && p.para[len(p.para)-1] != "" {
			p.para = append(p.para, "") // the paragraph ended
		}
		return
	case len(p.para) > 0 && p.para[len(p.para)-1] == "":
		p.para = nil // a new paragraph
	}
	p.para = append(p.para, t)
	if p.doc.Version == 0 && len(p.doc.Sections) == 0 {
		p.doc.Version = versionOfText(t)
	}
}

// paragraphSentence is the first sentence of the paragraph before a table,
// which says what its endpoints are for: "The following endpoint is used to
// download updates to the Weather app Live Tile."
func (p *parser) paragraphSentence() string {
	return firstSentence(cleanMarkdown(strings.Join(p.para, " ")))
}

// firstSentence cuts text after its first full stop that ends a sentence.
func firstSentence(text string) string {
	if i := strings.Index(text, ". "); i >= 0 {
		return text[:i+1]
	}
	return text
}

// versions settles the Windows versions of every row once the whole
// document is read: an "Applies from Windows 10 version 1709" row is
// documented from 1709 to the newest version any row of the document names;
// other rows are documented for the document's version. A document that
// names no version we know counts for every version, with a warning.
func (p *parser) versions() {
	d := p.doc
	if d.Version == 0 {
		d.Version = p.applies // the newest its rows name, if they name any
	}
	if d.Version == 0 {
		p.warn(1, "the document names no Windows version phonehome knows (%s); its rows count for every version", VersionWords())
		d.Version = AllVersions
	}
	// An "Applies from" row runs to the newest version the document or
	// any of its rows names.
	top := max(p.applies, d.Version.Newest())
	for i := range d.Sections {
		for j := range d.Sections[i].Rows {
			r := &d.Sections[i].Rows[j]
			if r.Versions == 0 {
				r.Versions = d.Version
			} else if r.Versions <= top {
				r.Versions = top<<1 - r.Versions // from the row's version to the newest named
			}
			d.Versions |= r.Versions
		}
	}
}

// frontMatter reads the YAML block between the leading "---" lines.
func (p *parser) frontMatter() {
	if len(p.lines) == 0 || strings.TrimSpace(p.lines[0]) != "---" {
		return
	}
	end := -1
	for j := 1; j < len(p.lines); j++ {
		if strings.TrimSpace(p.lines[j]) == "---" {
			end = j
			break
		}
	}
	if end < 0 {
		p.warn(1, "front matter has no closing ---")
		return
	}
	var fm struct {
		Title string `yaml:"title"`
		Date  string `yaml:"ms.date"`
	}
	if err := yaml.Unmarshal([]byte(strings.Join(p.lines[1:end], "\n")), &fm); err != nil {
		p.warn(1, "front matter: %v", err)
	}
	p.doc.Title, p.doc.Date = strings.TrimSpace(fm.Title), strings.TrimSpace(fm.Date)
	p.setTitle(p.doc.Title)
	p.i = end + 1
}

// setTitle derives, from the front matter's title and then the first "#"
// heading, the edition of tables under no edition heading (an Enterprise
// document has one table and no edition sections) and the document's
// Windows version.
func (p *parser) setTitle(title string) {
	if ed := editionOfHeading(title); ed == Enterprise {
		p.docEdition = Enterprise
	}
	if p.doc.Version == 0 {
		p.doc.Version = versionOfText(title)
	}
}

// headingOf recognises an ATX heading: "## Windows 10 Pro".
func headingOf(line string) (level int, text string, ok bool) {
	t := strings.TrimLeft(line, " ")
	for level < len(t) && t[level] == '#' {
		level++
	}
	if level == 0 || level > 6 || (level < len(t) && t[level] != ' ' && t[level] != '\t') {
		return 0, "", false
	}
	return level, strings.TrimSpace(strings.Trim(strings.TrimSpace(t[level:]), "#")), true
}

func (p *parser) openHeading(level int, text string) {
	if level == 1 {
		if p.doc.Title == "" {
			p.doc.Title = text
		}
		p.setTitle(text)
		return
	}
	ed := editionOfHeading(text)
	p.areaHead = ed == 0
	if ed == 0 {
		ed = p.sticky[level]
	} else {
		p.sticky[level] = ed
	}
	p.headings[level] = ed
	for l := level + 1; l < len(p.headings); l++ {
		p.headings[l], p.sticky[l] = 0, 0
	}
	p.heading, p.headLine, p.headLevel = text, p.i+1, level
}

// edition is the edition of the innermost heading that names one, else the
// document's.
func (p *parser) edition() Edition {
	for l := len(p.headings) - 1; l >= 2; l-- {
		if p.headings[l] != 0 {
			return p.headings[l]
		}
	}
	return p.docEdition
}

// isSeparator recognises a table's delimiter row in its many shapes:
// "| --- | --- |", "|---|:---:|", "--- | ---".
func isSeparator(line string) bool {
	cells := splitCells(line)
	if len(cells) == 0 {
		return false
	}
	for _, c := range cells {
		c = strings.Trim(c, ":")
		if c == "" || strings.Trim(c, "-") != "" {
			return false
		}
	}
	return true
}

// splitCells splits a table row on the pipes that are not escaped, dropping
// the empty cells outside a leading and a trailing pipe, and trims each cell.
func splitCells(line string) []string {
	line = strings.TrimSpace(line)
	var cells []string
	start := 0
	for j := 0; j < len(line); j++ {
		switch line[j] {
		case '\\':
			j++ // an escaped character, "\|" included
		case '|':
			cells = append(cells, line[start:j])
			start = j + 1
		}
	}
	cells = append(cells, line[start:])
	if strings.HasPrefix(line, "|") {
		cells = cells[1:]
	}
	if len(cells) > 0 && strings.HasSuffix(line, "|") && !strings.HasSuffix(line, `\|`) {
		cells = cells[:len(cells)-1]
	}
	for k := range cells {
		cells[k] = strings.TrimSpace(cells[k])
	}
	return cells
}

// columns maps the header row of a table to the cell index of each column.
type columns struct {
	n                                        int
	area, description, protocol, destination int
	process, applies                         int
}

func columnsOf(header string) (columns, bool) {
	c := columns{area: -1, description: -1, protocol: -1, destination: -1, process: -1, applies: -1}
	cells := splitCells(header)
	c.n = len(cells)
	for k, cell := range cells {
		name := strings.ToLower(strings.Trim(cleanMarkdown(cell), "*_ "))
		switch {
		case name == "area":
			c.area = k
		case name == "description":
			c.description = k
		case name == "protocol":
			c.protocol = k
		case name == "destination":
			c.destination = k
		case name == "source process":
			c.process = k
		case strings.HasPrefix(name, "applies from"): // "Applies from Windows 10 version"
			c.applies = k
		}
	}
	return c, c.destination >= 0
}

func (c columns) cell(cells []string, k int) string {
	if k < 0 || k >= len(cells) {
		return ""
	}
	return cells[k]
}

// table reads a table from its header row to the first line that is not a row.
func (p *parser) table() {
	headerLine := p.i + 1
	cols, ok := columnsOf(p.lines[p.i])
	p.i += 2 // header and separator
	var sec *Section
	if ok {
		ed := p.edition()
		switch {
		case ed == 0:
			p.warn(headerLine, "table under heading %q names no edition (Family/Home, Pro, Education or Enterprise); its rows are skipped", p.heading)
			ok = false
		case len(p.doc.Sections) > 0 && p.doc.Sections[len(p.doc.Sections)-1].Line == p.headLine && p.headLine > 0:
			// Another table under the same heading, as in the per-area
			// documents: one section.
			sec = &p.doc.Sections[len(p.doc.Sections)-1]
		default:
			p.doc.Sections = append(p.doc.Sections, Section{Heading: p.heading, Line: p.headLine, Edition: ed})
			sec = &p.doc.Sections[len(p.doc.Sections)-1]
		}
		for l := range p.sticky {
			// An edition heading with a table of its own, or with tables
			// under deeper headings, is no part heading.
			if !p.areaHead || l < p.headLevel {
				p.sticky[l] = 0
			}
		}
	}
	rt := rowText{desc: p.paragraphSentence()}
	if p.areaHead {
		rt.area = p.heading
	}
	var area, desc string // carried down in tables with an Area column
	stray := false
	for ; p.i < len(p.lines); p.i++ {
		line := p.lines[p.i]
		if strings.TrimSpace(line) == "" {
			if next, ok := p.rowsResume(); ok {
				p.i = next - 1 // stray blank lines inside a table, as in the 1709 document
				stray = true
				continue
			}
		}
		if strings.TrimSpace(line) == "" || !strings.Contains(line, "|") {
			break
		}
		if !ok {
			continue
		}
		if stray {
			sec.Stray++
		} else {
			sec.Lines++
		}
		// A line without a leading pipe after a row without a trailing
		// one continues that row: a cell broken by a raw newline
		// ("| fe3….nsatc.net | TLSv1.2/" then "HTTPS | Enables … |").
		p.rowLine = p.i + 1
		// At most maxContinued lines, joined with a space.
		lead := strings.HasPrefix(strings.TrimSpace(line), "|") // a table written without pipes at its edges has no such rows
		if lead && !strings.HasSuffix(strings.TrimSpace(line), "|") {
			var b strings.Builder
			b.WriteString(line)
			for k := 0; k < maxContinued && p.i+1 < len(p.lines); k++ {
				next := strings.TrimSpace(p.lines[p.i+1])
				if next == "" || strings.HasPrefix(next, "|") {
					break
				}
				if _, _, h := headingOf(next); h {
					break
				}
				b.WriteString(" ")
				b.WriteString(next)
				p.i++
				if strings.HasSuffix(next, "|") {
					break
				}
			}
			line = b.String()
		}
		cells := splitCells(line)
		// Two rows run together on one line ("…Reporting ||tile-service…")
		// leave an empty cell where the first row ended: split there. An
		// empty cell inside a row ("fe3cr…||Used to…") is not at index n.
		for len(cells) > cols.n && cells[cols.n] == "" {
			p.row(sec, cols, cells[:cols.n], rt, &area, &desc, nil)
			cells = cells[cols.n+1:]
		}
		// One row holding a second Protocol and Destination after its own
		// ("…|HTTPS|img-prod-cms-rt-microsoft-com*|HTTPS|store-images.microsoft.com|"),
		// in a table whose last two columns are those.
		var more []string
		if extra := len(cells) - cols.n; extra > 0 && extra%2 == 0 && cols.protocol == cols.n-2 && cols.destination == cols.n-1 {
			for k := cols.n + 1; k < len(cells); k += 2 {
				more = append(more, cells[k])
			}
			cells = cells[:cols.n]
		}
		if len(cells) > cols.n {
			p.warn(p.i+1, "row has %d cells, the table has %d columns; the extra cells are ignored", len(cells), cols.n)
			cells = cells[:cols.n]
		}
		p.row(sec, cols, cells, rt, &area, &desc, more)
	}
}

// maxContinued bounds the lines that continue one table row.
const maxContinued = 16

// rowText is what a table without Area or Description columns takes from
// around it: its heading as the area, its paragraph as the description.
type rowText struct{ area, desc string }

// rowsResume reports whether the rows of the table go on after the blank
// line at p.i, and where: the next line that is not blank starts with a pipe
// and is not the header of another table.
func (p *parser) rowsResume() (int, bool) {
	j := p.i
	for j < len(p.lines) && strings.TrimSpace(p.lines[j]) == "" {
		j++
	}
	if j >= len(p.lines) || !strings.HasPrefix(strings.TrimSpace(p.lines[j]), "|") {
		return 0, false
	}
	return j, j+1 >= len(p.lines) || !isSeparator(p.lines[j+1])
}

// row adds one table row to sec, or warns about it. more are further
// destinations written in the same row.
func (p *parser) row(sec *Section, cols columns, cells []string, rt rowText, area, desc *string, more []string) {
	line := p.rowLine
	empty := true
	for _, c := range cells {
		empty = empty && c == ""
	}
	if empty {
		sec.NoDest++ // a stray "|" line
		return
	}
	r := Row{
		Line:        line,
		Destination: cols.cell(cells, cols.destination),
		Protocol:    cleanMarkdown(cols.cell(cells, cols.protocol)),
		Description: cleanMarkdown(cols.cell(cells, cols.description)),
		Process:     processes(cols.cell(cells, cols.process)),
	}
	if cols.description < 0 {
		r.Description = rt.desc
	}
	if cols.area < 0 {
		r.Area = rt.area
	}
	if a := cleanMarkdown(cols.cell(cells, cols.applies)); a != "" {
		v, err := ParseVersion(a)
		if err != nil {
			p.warn(line, "applies from: %v; the document's version is used", err)
		} else {
			r.Versions = v.Newest()
			p.applies = max(p.applies, r.Versions)
		}
	}
	if cols.area >= 0 {
		// An Area starts a new group; an empty Area or Description cell
		// continues the row above.
		if a := cleanMarkdown(cols.cell(cells, cols.area)); a != "" {
			*area, *desc = a, ""
		}
		if r.Description != "" {
			*desc = r.Description
		}
		r.Area, r.Description = *area, *desc
	}
	dest := cleanMarkdown(r.Destination)
	if strings.HasPrefix(strings.ToLower(dest), "learn how") {
		sec.Links++
		return // a heading row: "[Learn how to turn off traffic …](…)"
	}
	if dest == "" {
		sec.NoDest++
		if cols.area < 0 {
			p.warn(line, "row has no destination")
		}
		return
	}
	pats, errs := destinations(r.Destination)
	for _, m := range more {
		mp, merrs := destinations(m)
		pats, errs = append(pats, mp...), append(errs, merrs...)
	}
	for _, err := range errs {
		p.warn(line, "%v; skipped", err)
	}
	if len(pats) == 0 {
		return
	}
	r.Patterns = pats
	sec.Rows = append(sec.Rows, r)
}

// processes reads a Source process cell, which may name several programs
// separated by <br>: "searchui <br> backgroundtaskhost".
func processes(cell string) string {
	var out []string
	for _, p := range lineBreak.Split(cell, -1) {
		if p = cleanMarkdown(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ", ")
}

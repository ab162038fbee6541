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
	Name     string // the file name, as given to Parse
	Title    string // front matter title, else the first "# " heading
	Date     string // front matter ms.date, as written
	Sections []Section
	Warnings []Warning // rows that could not be understood; the rest loaded
}

// Section is a "##" section of a document with an endpoint table.
type Section struct {
	Heading string
	Line    int
	Edition Edition
	Rows    []Row
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
			p.i++
			continue
		}
		if strings.Contains(line, "|") && p.i+1 < len(p.lines) && isSeparator(p.lines[p.i+1]) {
			p.table()
			continue
		}
		p.i++
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

// setTitle derives the edition of tables under no edition heading: an
// Enterprise document has one table and no edition sections.
func (p *parser) setTitle(title string) {
	if ed := editionOfHeading(title); ed == Enterprise {
		p.docEdition = Enterprise
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
			p.setTitle(text)
		}
		return
	}
	p.headings[level] = editionOfHeading(text)
	for l := level + 1; l < len(p.headings); l++ {
		p.headings[l] = 0
	}
	p.heading, p.headLine = text, p.i+1
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
}

func columnsOf(header string) (columns, bool) {
	c := columns{area: -1, description: -1, protocol: -1, destination: -1}
	cells := splitCells(header)
	c.n = len(cells)
	for k, cell := range cells {
		switch strings.ToLower(strings.Trim(cleanMarkdown(cell), "*_ ")) {
		case "area":
			c.area = k
		case "description":
			c.description = k
		case "protocol":
			c.protocol = k
		case "destination":
			c.destination = k
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
		if ed == 0 {
			p.warn(headerLine, "table under heading %q names no edition (Family/Home, Pro, Education or Enterprise); its rows are skipped", p.heading)
			ok = false
		} else {
			p.doc.Sections = append(p.doc.Sections, Section{Heading: p.heading, Line: p.headLine, Edition: ed})
			sec = &p.doc.Sections[len(p.doc.Sections)-1]
		}
	}
	var area, desc string // carried down in tables with an Area column
	for ; p.i < len(p.lines); p.i++ {
		line := p.lines[p.i]
		if strings.TrimSpace(line) == "" {
			if next, ok := p.rowsResume(); ok {
				p.i = next - 1 // stray blank lines inside a table, as in the 1709 document
				continue
			}
		}
		if strings.TrimSpace(line) == "" || !strings.Contains(line, "|") {
			break
		}
		if !ok {
			continue
		}
		cells := splitCells(line)
		// Two rows run together on one line ("…Reporting ||tile-service…")
		// leave an empty cell where the first row ended: split there. An
		// empty cell inside a row ("fe3cr…||Used to…") is not at index n.
		for len(cells) > cols.n && cells[cols.n] == "" {
			p.row(sec, cols, cells[:cols.n], &area, &desc)
			cells = cells[cols.n+1:]
		}
		if len(cells) > cols.n {
			p.warn(p.i+1, "row has %d cells, the table has %d columns; the extra cells are ignored", len(cells), cols.n)
			cells = cells[:cols.n]
		}
		p.row(sec, cols, cells, &area, &desc)
	}
}

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

// row adds one table row to sec, or warns about it.
func (p *parser) row(sec *Section, cols columns, cells []string, area, desc *string) {
	line := p.i + 1
	empty := true
	for _, c := range cells {
		empty = empty && c == ""
	}
	if empty {
		return
	}
	r := Row{
		Line:        line,
		Destination: cols.cell(cells, cols.destination),
		Protocol:    cleanMarkdown(cols.cell(cells, cols.protocol)),
		Description: cleanMarkdown(cols.cell(cells, cols.description)),
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
	if dest == "" || strings.HasPrefix(strings.ToLower(dest), "learn how") {
		if cols.area < 0 {
			p.warn(line, "row has no destination")
		}
		return // a heading row: "[Learn how to turn off traffic …](…)"
	}
	pats, errs := destinations(r.Destination)
	for _, err := range errs {
		p.warn(line, "%v; skipped", err)
	}
	if len(pats) == 0 {
		return
	}
	r.Patterns = pats
	sec.Rows = append(sec.Rows, r)
}

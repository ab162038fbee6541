package endpoints

import (
	"fmt"
	"html"
	"regexp"
	"strings"
)

// A pattern is a lower-case host name in which '*' matches any run of
// characters, dots included, possibly none. See the README for how the
// destinations of Microsoft's tables become patterns.

// Shape says how a pattern can be matched, and so how it can be exported.
type Shape int

const (
	// Exact: "fe2cr.update.microsoft.com" matches that name only.
	Exact Shape = iota
	// Subdomains: "*.update.microsoft.com" matches every name under
	// update.microsoft.com, not the name itself.
	Subdomains
	// Suffix: "*dl.delivery.mp.microsoft.com" matches every name that ends in
	// dl.delivery.mp.microsoft.com, that name included.
	Suffix
	// Glob: any other place of '*', as in "watson.*.microsoft.com".
	Glob
)

// PatternShape returns the shape of p and, except for Glob, the literal part:
// the name itself for Exact, the text after the leading '*' or "*." otherwise.
func PatternShape(p string) (Shape, string) {
	rest, wild := strings.CutPrefix(p, "*")
	switch {
	case !wild && !strings.Contains(p, "*"):
		return Exact, p
	case wild && !strings.Contains(rest, "*"):
		if r, ok := strings.CutPrefix(rest, "."); ok {
			return Subdomains, r
		}
		return Suffix, rest
	}
	return Glob, ""
}

// Match reports whether name (any case, with or without a trailing dot)
// matches pattern. It is the reference for the semantics; the policy package
// compiles patterns into something faster.
func Match(pattern, name string) bool {
	return GlobMatch(pattern, strings.ToLower(strings.TrimSuffix(name, ".")))
}

// GlobMatch reports whether name, lower case and without a trailing dot,
// matches pattern, '*' matching any run of characters. It takes a string or
// a byte slice, so a caller with a name in a buffer does not allocate.
// Classic wildcard matching with one backtrack point: linear in len(name)
// for every pattern with a single '*', O(len(pattern)*len(name)) at worst.
func GlobMatch[N string | []byte](pattern string, name N) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			mark++
			p, n = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

var (
	mdLink    = regexp.MustCompile(`\[([^\]]*)\]\(([^)]*)\)`)
	htmlTag   = regexp.MustCompile(`<[^>]*>`)
	lineBreak = regexp.MustCompile(`(?i)<\s*/?\s*br\s*/?\s*>`)
	mdEscape  = regexp.MustCompile(`\\([[:punct:]])`)
	portRe    = regexp.MustCompile(`:[0-9]*$`)
	alphaTLD  = regexp.MustCompile(`\.[a-z]+$`)
	manyStars = regexp.MustCompile(`\*{2,}`)
)

// cleanMarkdown turns a table cell into plain text: links become their text,
// HTML tags go, escapes and entities are resolved, runs of white space fold.
func cleanMarkdown(s string) string {
	s = mdLink.ReplaceAllStringFunc(s, func(m string) string {
		sub := mdLink.FindStringSubmatch(m)
		if strings.TrimSpace(sub[1]) == "" {
			return sub[2]
		}
		return sub[1]
	})
	s = htmlTag.ReplaceAllString(s, "")
	s = mdEscape.ReplaceAllString(s, "$1")
	s = html.UnescapeString(s)
	return strings.Join(strings.Fields(s), " ")
}

// destinations splits a Destination cell into the patterns it names: hosts
// separated by </br> each become one. A host that is not a valid pattern is
// returned as an error, and the others are still returned.
func destinations(cell string) ([]string, []error) {
	var pats []string
	var errs []error
	for _, part := range lineBreak.Split(cell, -1) {
		if strings.TrimSpace(part) == "" {
			continue
		}
		p, err := NormalizePattern(part)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pats = append(pats, p)
	}
	return pats, errs
}

// NormalizePattern turns one destination as Microsoft writes it, or as a user
// types it, into a pattern: markdown, HTML, a scheme, a path, a port and a
// trailing dot are dropped, the name is lower-cased, a leading '.' means "*.",
// a '*' right after a complete host name (one whose last label is
// alphabetic, "watson.telemetry.microsoft.com*") is the document's URL glob,
// so the pattern is that host, and a single long hyphenated label
// ("img-prod-cms-rt-microsoft-com*") is a name's first label: "label.*".
func NormalizePattern(dest string) (string, error) {
	s := strings.TrimSpace(dest)
	if b, ok := strings.CutPrefix(s, "**"); ok && len(b) > 2 && strings.HasSuffix(b, "**") {
		s = strings.TrimSuffix(b, "**") // bold
	}
	s = strings.ToLower(strings.Trim(cleanMarkdown(s), "`"))
	if _, after, ok := strings.Cut(s, "://"); ok {
		s = after
	}
	if i := strings.IndexAny(s, "/?#"); i >= 0 {
		s = s[:i]
	}
	s = portRe.ReplaceAllString(s, "")
	s = strings.TrimSuffix(manyStars.ReplaceAllString(s, "*"), ".")
	if host, ok := strings.CutSuffix(s, "*"); ok && alphaTLD.MatchString(host) {
		s = host
	}
	if r, ok := strings.CutPrefix(s, "."); ok {
		s = "*." + r
	}
	if label := strings.Trim(s, "*"); !strings.ContainsAny(label, ".*") && len(label) >= 8 && strings.Contains(label, "-") {
		// One long label, with or without stars around it
		// ("img-prod-cms-rt-microsoft-com*"): the first label of a name
		// whose domain the document left out.
		s = label + ".*"
	}
	if err := checkPattern(s); err != nil {
		return "", fmt.Errorf("destination %q: %w", strings.TrimSpace(dest), err)
	}
	return s, nil
}

// checkPattern checks a pattern: a host name by the host-name rule (see
// hostname.go) in which '*' may stand anywhere, that does not match every
// name nor every name of a top-level domain.
func checkPattern(s string) error {
	if err := hostError(s, true); err != nil {
		return err
	}
	if strings.Trim(s, "*.") == "" {
		return fmt.Errorf("pattern matches every name")
	}
	if s[0] == '*' && !strings.Contains(strings.TrimLeft(s, "*."), ".") {
		return fmt.Errorf("wildcard over a whole top-level domain")
	}
	return nil
}

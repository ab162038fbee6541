package endpoints

import (
	"fmt"
	"strings"
)

// Edition is a set of Windows editions, one bit each. An Entry documented for
// Home and Pro has Editions == Home|Pro.
type Edition uint8

const (
	Home Edition = 1 << iota
	Pro
	Education
	Enterprise

	// AllEditions is every edition the catalog knows.
	AllEditions = Home | Pro | Education | Enterprise
)

// editionNames is the canonical order and spelling of the editions.
var editionNames = []struct {
	ed   Edition
	name string
}{
	{Home, "home"},
	{Pro, "pro"},
	{Education, "education"},
	{Enterprise, "enterprise"},
}

// EditionWords lists what a user may type for an edition, for error messages.
const EditionWords = "home (or family), pro, education, enterprise, all"

// ParseEdition reads an edition as a user types it: home, family (another name
// for home), pro, education, enterprise or all. Case does not matter.
func ParseEdition(s string) (Edition, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "home", "family":
		return Home, nil
	case "pro", "professional":
		return Pro, nil
	case "education":
		return Education, nil
	case "enterprise":
		return Enterprise, nil
	case "all":
		return AllEditions, nil
	}
	return 0, fmt.Errorf("unknown edition %q (valid: %s)", s, EditionWords)
}

// UnmarshalText lets configuration files name an edition.
func (e *Edition) UnmarshalText(b []byte) error {
	ed, err := ParseEdition(string(b))
	if err != nil {
		return err
	}
	*e = ed
	return nil
}

// MarshalText writes the edition set as String does.
func (e Edition) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// Each returns the single editions in e, in canonical order.
func (e Edition) Each() []Edition {
	var out []Edition
	for _, n := range editionNames {
		if e&n.ed != 0 {
			out = append(out, n.ed)
		}
	}
	return out
}

// Names returns the names of the editions in e, in canonical order.
func (e Edition) Names() []string {
	var out []string
	for _, n := range editionNames {
		if e&n.ed != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// String writes the set comma-separated ("home,pro"); the full set is "all".
func (e Edition) String() string {
	if e == AllEditions {
		return "all"
	}
	if e == 0 {
		return "none"
	}
	return strings.Join(e.Names(), ",")
}

// editionOfHeading finds the editions a section heading names: "Windows 10
// Family" and "Windows 10 Home" are Home, "Windows 10 Pro" is Pro. It returns 0
// when the heading names none.
func editionOfHeading(h string) Edition {
	var ed Edition
	for _, w := range strings.FieldsFunc(strings.ToLower(h), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}) {
		switch w {
		case "home", "family":
			ed |= Home
		case "pro", "professional":
			ed |= Pro
		case "education":
			ed |= Education
		case "enterprise":
			ed |= Enterprise
		case "non-enterprise":
			// "connection endpoints for non-Enterprise editions" names no single edition.
		}
	}
	return ed
}

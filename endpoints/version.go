package endpoints

import (
	"fmt"
	"math/bits"
	"regexp"
	"strings"
)

// Version is a set of Windows versions, one bit each, in release order. An
// entry that the 1909 and 2004 documents list has 10-1909 and 10-2004 set.
type Version uint16

// versionNames are the versions Microsoft published endpoint documents for,
// named as Microsoft names them, oldest first. Bit i is versionNames[i].
var versionNames = []string{
	"10-1709", "10-1803", "10-1809", "10-1903", "10-1909",
	"10-2004", "10-20H2", "10-21H1", "10-21H2", "11",
}

// AllVersions is every version the catalog knows.
var AllVersions = Version(1)<<len(versionNames) - 1

// Windows11 is the version of Microsoft's Windows 11 documents.
var Windows11 = versionOf("11")

func versionOf(name string) Version {
	for i, n := range versionNames {
		if n == name {
			return 1 << i
		}
	}
	panic("unknown version " + name)
}

// VersionWords lists what a user may type for a version, for error messages.
func VersionWords() string {
	return strings.Join(versionNames, ", ") + ", a range such as 10-1909..11, or all"
}

// versionAliases are other spellings Microsoft used: 19H1 was 1903's codename.
var versionAliases = map[string]string{"19h1": "1903"}

// parseOne reads a single version: "10-1909", "1909", "21h2", "11".
func parseOne(s string) (Version, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(strings.TrimPrefix(t, "windows"), " ")
	if r, ok := strings.CutPrefix(t, "10-"); ok && r != "11" {
		t = r
	}
	if a, ok := versionAliases[t]; ok {
		t = a
	}
	if t != "11" {
		t = "10-" + t
	}
	for i, n := range versionNames {
		if strings.EqualFold(n, t) {
			return 1 << i, nil
		}
	}
	hint := ""
	if strings.EqualFold(t, "10-22h2") {
		hint = "; Microsoft published no endpoint document for 22H2, so choose 10-21H2, the newest Windows 10 one"
	}
	return 0, fmt.Errorf("unknown Windows version %q (valid: %s)%s", s, VersionWords(), hint)
}

// ParseVersion reads a version as a user types it: one version ("11",
// "10-1909", "1909"), a comma-separated list, a range "10-1909..11" (both
// ends included), or "all". Case does not matter.
func ParseVersion(s string) (Version, error) {
	var v Version
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" || part == ".." {
			return 0, fmt.Errorf("%q: an empty version (valid: %s)", s, VersionWords())
		}
		if strings.EqualFold(part, "all") {
			v |= AllVersions
			continue
		}
		from, to, isRange := strings.Cut(part, "..")
		lo, err := parseOne(from)
		if err != nil {
			return 0, err
		}
		if !isRange {
			v |= lo
			continue
		}
		hi, err := parseOne(to)
		if err != nil {
			return 0, err
		}
		if hi < lo {
			return 0, fmt.Errorf("version range %q runs backwards: %s is older than %s", part, hi, lo)
		}
		v |= hi<<1 - lo // every bit from lo to hi
	}
	if v == 0 {
		return 0, fmt.Errorf("no Windows version given (valid: %s)", VersionWords())
	}
	return v, nil
}

// UnmarshalText lets configuration files name versions.
func (v *Version) UnmarshalText(b []byte) error {
	p, err := ParseVersion(string(b))
	if err != nil {
		return err
	}
	*v = p
	return nil
}

// MarshalText writes the set as String does.
func (v Version) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// Names returns the names of the versions in v, oldest first.
func (v Version) Names() []string {
	var out []string
	for i, n := range versionNames {
		if v&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// Each returns the single versions in v, oldest first.
func (v Version) Each() []Version {
	var out []Version
	for i := range versionNames {
		if v&(1<<i) != 0 {
			out = append(out, 1<<i)
		}
	}
	return out
}

// Newest returns the newest single version in v, or 0.
func (v Version) Newest() Version {
	if v == 0 {
		return 0
	}
	return 1 << (bits.Len16(uint16(v)) - 1)
}

// String writes the set with runs of consecutive versions as ranges:
// "10-1709..10-1909,11"; the full set is "all" and the empty one "none".
func (v Version) String() string {
	switch v {
	case AllVersions:
		return "all"
	case 0:
		return "none"
	}
	var parts []string
	for i := 0; i < len(versionNames); {
		if v&(1<<i) == 0 {
			i++
			continue
		}
		j := i
		for j+1 < len(versionNames) && v&(1<<(j+1)) != 0 {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, versionNames[i])
		case j == i+1:
			parts = append(parts, versionNames[i], versionNames[j])
		default:
			parts = append(parts, versionNames[i]+".."+versionNames[j])
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

var (
	// versionInText finds "version 1909", "version 20H2" or "version 19H1".
	versionInText = regexp.MustCompile(`(?i)\bversion\s+(\d{4}|\d{2}h\d)\b`)
	windows11     = regexp.MustCompile(`(?i)\bwindows\s+11\b`)
	windows10     = regexp.MustCompile(`(?i)\bwindows\s+10\b`)
)

// versionOfText finds the Windows version a title or sentence names, or 0.
// "Windows 11, version 21H2" is Windows 11, not Windows 10 21H2.
func versionOfText(s string) Version {
	if windows11.MatchString(s) && !windows10.MatchString(s) {
		return Windows11
	}
	if m := versionInText.FindStringSubmatch(s); m != nil {
		if v, err := parseOne(m[1]); err == nil {
			return v
		}
	}
	if windows11.MatchString(s) {
		return Windows11
	}
	return 0
}

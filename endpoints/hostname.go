package endpoints

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// The host-name rule: one for every place that takes a name, patterns
// (checkPattern, which adds '*' and its own rules), the reviewed domain
// tables and the lines of users' block lists (policy).
//
// A host name, as phonehome stores it, is RFC 1123's with '_', which
// service names use (_ldap._tcp.example.com, _dmarc.example.com):
//
//   - lower case: every path folds case before it checks (queries,
//     NormalizePattern, the list reader), so upper case is refused here;
//   - letters, digits, '-', '_' and the dots between labels, no other byte;
//   - at least two labels, none empty: no leading, trailing or double dot
//     (a trailing root dot is dropped before the check, as queries drop it);
//   - no label starts or ends with '-';
//   - no label longer than 63 bytes, the name no longer than 253;
//   - the last label not all digits, so that an IPv4 address is not a name.
//
// In a pattern a '*' may stand anywhere, for any run of characters: the
// 63 bytes then bound each run between stars and dots, the 253 the pattern
// without its stars; '-' may touch a '*' ("msnbot-*.search.msn.com"); and a
// last label with a '*' in it is not all digits.

// hostProblem is what the rule finds wrong with a name; hostOK for none.
type hostProblem uint8

const (
	hostOK hostProblem = iota
	hostEmpty
	hostChar // a byte outside the rule's alphabet
	hostEmptyLabel
	hostOneLabel
	hostHyphen
	hostLongLabel
	hostNumeric
	hostLong
)

var hostProblems = [...]string{
	hostEmpty:      "empty host name",
	hostEmptyLabel: "not a host name: empty label",
	hostOneLabel:   "not a host name: needs a dot",
	hostHyphen:     "not a host name: a label starts or ends with '-'",
	hostLongLabel:  "not a host name: a label is longer than 63 characters",
	hostNumeric:    "not a host name: the last label is all digits",
	hostLong:       "longer than a host name can be",
}

// checkHost applies the host-name rule to s, with '*' allowed where star
// is set. It returns the first problem, a bad byte before any other, and
// for hostChar the byte's index. It does not allocate.
func checkHost[N string | []byte](s N, star bool) (hostProblem, int) {
	if len(s) == 0 {
		return hostEmpty, 0
	}
	problem := hostOK     // the first problem of the name's shape
	labels, start := 1, 0 // start of the current label
	run := 0              // bytes since the last '.' or '*': within one label
	stars := 0
	digits := true // the current label is digits only
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z' || c == '_':
			digits = false
			run++
		case '0' <= c && c <= '9':
			run++
		case c == '-':
			if i == start && problem == hostOK {
				problem = hostHyphen
			}
			digits = false
			run++
		case c == '*' && star:
			stars++
			digits = false
			run = 0
		case c == '.':
			if problem == hostOK {
				if i == start {
					problem = hostEmptyLabel
				} else if s[i-1] == '-' {
					problem = hostHyphen
				}
			}
			labels++
			start, run, digits = i+1, 0, true
		default:
			return hostChar, i
		}
		if run > 63 && problem == hostOK {
			problem = hostLongLabel
		}
	}
	switch {
	case problem != hostOK:
		return problem, 0
	case start == len(s):
		return hostEmptyLabel, 0
	case s[len(s)-1] == '-':
		return hostHyphen, 0
	case labels < 2:
		return hostOneLabel, 0
	case digits:
		return hostNumeric, 0
	case len(s)-stars > 253:
		return hostLong, 0
	}
	return hostOK, 0
}

// ValidHostname reports whether s is a host name by the rule above: lower
// case, RFC 1123 with '_', at least two labels, no trailing dot. It takes a
// string or a byte slice, so a caller with a name in a buffer (a line of a
// block list) does not allocate.
func ValidHostname[N string | []byte](s N) bool {
	p, _ := checkHost(s, false)
	return p == hostOK
}

// CheckHostname returns nil for a host name ValidHostname accepts, else an
// error that says what is wrong with it.
func CheckHostname(s string) error {
	return hostError(s, false)
}

func hostError(s string, star bool) error {
	p, at := checkHost(s, star)
	switch p {
	case hostOK:
		return nil
	case hostChar:
		r, _ := utf8.DecodeRuneInString(s[at:])
		return fmt.Errorf("not a host name: %q is not allowed", r)
	}
	return errors.New(hostProblems[p])
}

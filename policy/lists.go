package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/phonehome/phonehome/endpoints"
)

// A user list is a file of names to add under one category, in any of the
// formats community block lists use, one entry a line:
//
//	0.0.0.0 telemetry.example.com   hosts format: the names after the address, exactly
//	telemetry.example.com           a plain name: exactly that name
//	*.telemetry.example.com         a pattern, with phonehome's pattern semantics
//	||telemetry.example.com^        AdGuard: the name and every name under it
//
// Lines starting with '#' or '!' and text after " #" are comments.

// maxListWarnings caps how many bad lines of one list are reported one by
// one; the rest are counted.
const maxListWarnings = 10

// listFile reads a list file into b under rule r and returns how many
// patterns it added and warnings naming file and line. It streams the file
// twice, counting lines first so the table is sized once, and never holds the
// whole file.
func (b *matcherBuilder) listFile(path string, r *Rule) (int, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, fmt.Errorf("reading list: %w", err)
	}
	defer f.Close()
	lines, size, err := countLines(f)
	if err != nil {
		return 0, nil, fmt.Errorf("reading list %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, nil, fmt.Errorf("reading list %s: %w", path, err)
	}
	b.reserve(lines, size)
	l := listReader{b: b, name: path, rule: r}
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			l.warn("line longer than 64 KiB; skipped")
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			l.line++
			continue
		}
		if len(line) > 0 {
			l.add(line)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, nil, fmt.Errorf("reading list %s: %w", path, err)
		}
	}
	return l.added, l.warnings(), nil
}

func countLines(r io.Reader) (lines, size int, err error) {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		lines += bytes.Count(buf[:n], []byte("\n"))
		size += n
		if err == io.EOF {
			return lines + 1, size, nil
		}
		if err != nil {
			return 0, 0, err
		}
	}
}

// list adds the entries of a list's text, such as patterns written in the
// config file. It lower-cases data in place.
func (b *matcherBuilder) list(name string, data []byte, r *Rule) (int, []string) {
	l := listReader{b: b, name: name, rule: r}
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			line, data = data, nil
		}
		l.add(line)
	}
	return l.added, l.warnings()
}

// listReader adds a list's lines one by one.
type listReader struct {
	b          *matcherBuilder
	name       string
	rule       *Rule
	line       int
	added, bad int
	warns      []string
}

func (l *listReader) warn(msg string) {
	l.bad++
	if l.bad <= maxListWarnings {
		l.warns = append(l.warns, fmt.Sprintf("%s:%d: %s", l.name, l.line, msg))
	}
}

func (l *listReader) warnings() []string {
	if l.bad > maxListWarnings {
		return append(l.warns, fmt.Sprintf("%s: %d more lines skipped", l.name, l.bad-maxListWarnings))
	}
	return l.warns
}

// add adds one line; it may change the line's bytes.
func (l *listReader) add(line []byte) {
	l.line++
	if i := bytes.Index(line, []byte(" #")); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' || line[0] == '!' || line[0] == '[' {
		return
	}
	lower(line)
	b, r := l.b, l.rule
	switch {
	case bytes.HasPrefix(line, []byte("||")):
		name, ok := bytes.CutSuffix(line[2:], []byte("^"))
		if !ok {
			l.warn(fmt.Sprintf("%q: only ||name^ AdGuard rules are understood; skipped", line))
			return
		}
		if name = rootless(name); !endpoints.ValidHostname(name) {
			l.warn(fmt.Sprintf("%q: %v; skipped", line, endpoints.CheckHostname(string(name))))
			return
		}
		b.addLiteralBytes(endpoints.Exact, name, r)
		b.addLiteralBytes(endpoints.Subdomains, name, r)
		l.added += 2
	case hostsAddress(line):
		for _, f := range bytes.Fields(line)[1:] {
			f = rootless(f)
			if bytes.IndexByte(f, '.') < 0 || hostsNoise(f) {
				continue // localhost, ip6-loopback and the like
			}
			if !endpoints.ValidHostname(f) {
				l.warn(fmt.Sprintf("%q: %v; skipped", f, endpoints.CheckHostname(string(f))))
				continue
			}
			b.addLiteralBytes(endpoints.Exact, f, r)
			l.added++
		}
	case endpoints.ValidHostname(line):
		b.addLiteralBytes(endpoints.Exact, line, r)
		l.added++
	default:
		p, err := endpoints.NormalizePattern(string(line))
		if err != nil {
			l.warn(err.Error() + "; skipped")
			return
		}
		b.add(p, r)
		l.added++
	}
}

func lower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

// rootless drops the root's dot that ends a fully qualified name
// ("example.com."): a plain line loses it in endpoints.NormalizePattern, a
// query before it is looked up.
func rootless(name []byte) []byte {
	if n := len(name); n > 1 && name[n-1] == '.' {
		return name[:n-1]
	}
	return name
}

// hostsAddress reports whether a line starts with an address, as a hosts
// file line does ("0.0.0.0 name", "127.0.0.1 name", ":: name").
func hostsAddress(l []byte) bool {
	i := bytes.IndexAny(l, " \t")
	if i <= 0 || !(l[0] >= '0' && l[0] <= '9' || l[0] == ':') {
		return false
	}
	_, err := netip.ParseAddr(string(l[:i]))
	return err == nil
}

// hostsNoise are names hosts files carry for the machine itself.
func hostsNoise(name []byte) bool {
	switch string(name) {
	case "localhost.localdomain", "local", "broadcasthost", "ip6-localhost", "ip6-loopback", "0.0.0.0":
		return true
	}
	return false
}

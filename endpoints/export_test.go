package endpoints

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// exportSample has one pattern of each shape, and the overlaps that need
// care across entries: fe2cr comes before the wildcard whose domain holds it,
// and dl.delivery.mp.microsoft.com after the suffix pattern that lists it.
func exportSample() []*Entry {
	return []*Entry{
		{Pattern: "settings-win.data.microsoft.com", Category: "telemetry", Protected: true, Uses: []Use{{
			Edition: Home, Descriptions: []string{"Used by\tsettings."}, Sources: []string{"docs/a.md:10", "../b.md:3"},
		}}},
		{Pattern: "fe2cr.update.microsoft.com", Category: "update"},
		{Pattern: "*.update.microsoft.com", Category: "update"},
		{Pattern: "*dl.delivery.mp.microsoft.com"},
		{Pattern: "dl.delivery.mp.microsoft.com", Category: "update"},
		{Pattern: "watson.*.microsoft.com", Category: "telemetry"},
	}
}

// exportShapes returns the entries of exportSample, one of each shape.
func exportShapes() []*Entry {
	es := exportSample()
	return []*Entry{es[0], es[2], es[3], es[5]}
}

// exportCatalog builds the catalog of the built-in document and the testdata
// documents.
func exportCatalog(t *testing.T) *Catalog {
	t.Helper()
	paths, err := filepath.Glob("docs/*.md")
	if err != nil || len(paths) == 0 {
		t.Fatalf("testdata documents: %v %v", paths, err)
	}
	paths = append([]string{"docs/windows-endpoints-1909-non-enterprise-editions.md"}, paths...)
	var ds []*Document
	for _, p := range paths {
		d, err := ParseFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return Build(ds...)
}

func export(t *testing.T, format string, entries []*Entry) string {
	t.Helper()
	var b bytes.Buffer
	if err := Export(&b, format, entries, ExportOptions{Protected: true}); err != nil {
		t.Fatalf("Export(%s): %v", format, err)
	}
	return b.String()
}

func TestExportLines(t *testing.T) {
	want := map[string]string{
		"hosts": `# phonehome block list (hosts format): Windows connection endpoints
# Sources: a.md, b.md (descriptions: Microsoft, CC BY 4.0)
# 6 patterns, 3 rules. Where this format cannot express a pattern exactly, a comment there says how it errs.
# Patterns marked protected break a Windows feature when blocked.
# settings-win.data.microsoft.com (telemetry, protected): Used by settings.
0.0.0.0 settings-win.data.microsoft.com
# fe2cr.update.microsoft.com (update)
0.0.0.0 fe2cr.update.microsoft.com
# *.update.microsoft.com (update)
# *.update.microsoft.com: hosts files have no wildcards; not listed
# *dl.delivery.mp.microsoft.com
# *dl.delivery.mp.microsoft.com: hosts files have no wildcards; only dl.delivery.mp.microsoft.com itself is listed, not other names ending in it
0.0.0.0 dl.delivery.mp.microsoft.com
# dl.delivery.mp.microsoft.com (update)
# dl.delivery.mp.microsoft.com: already listed above
# watson.*.microsoft.com (telemetry)
# watson.*.microsoft.com: hosts files have no wildcards; not listed
`,
		"dnsmasq": `# phonehome block list (dnsmasq format): Windows connection endpoints
# Sources: a.md, b.md (descriptions: Microsoft, CC BY 4.0)
# 6 patterns, 10 rules. Where this format cannot express a pattern exactly, a comment there says how it errs.
# Patterns marked protected break a Windows feature when blocked.
# settings-win.data.microsoft.com (telemetry, protected): Used by settings.
# settings-win.data.microsoft.com: dnsmasq matches whole domains; every name under settings-win.data.microsoft.com is blocked too
address=/settings-win.data.microsoft.com/#
local=/settings-win.data.microsoft.com/
# fe2cr.update.microsoft.com (update)
# fe2cr.update.microsoft.com: dnsmasq matches whole domains; every name under fe2cr.update.microsoft.com is blocked too
address=/fe2cr.update.microsoft.com/#
local=/fe2cr.update.microsoft.com/
# *.update.microsoft.com (update)
address=/*.update.microsoft.com/#
local=/*.update.microsoft.com/
# *dl.delivery.mp.microsoft.com
address=/*dl.delivery.mp.microsoft.com/#
local=/*dl.delivery.mp.microsoft.com/
# dl.delivery.mp.microsoft.com (update)
# dl.delivery.mp.microsoft.com: dnsmasq matches whole domains; every name under dl.delivery.mp.microsoft.com is blocked too
address=/dl.delivery.mp.microsoft.com/#
local=/dl.delivery.mp.microsoft.com/
# watson.*.microsoft.com (telemetry)
# watson.*.microsoft.com: dnsmasq takes '*' only at the start of a name; not listed
`,
		"unbound": `# phonehome block list (unbound format): Windows connection endpoints
# Sources: a.md, b.md (descriptions: Microsoft, CC BY 4.0)
# 6 patterns, 5 rules. Where this format cannot express a pattern exactly, a comment there says how it errs.
# Patterns marked protected break a Windows feature when blocked.
server:
	# settings-win.data.microsoft.com (telemetry, protected): Used by settings.
	local-zone: "settings-win.data.microsoft.com." transparent
	local-data: "settings-win.data.microsoft.com. A 0.0.0.0"
	local-data: "settings-win.data.microsoft.com. AAAA ::"
	# fe2cr.update.microsoft.com (update)
	# fe2cr.update.microsoft.com: blocked by local-zone "update.microsoft.com." always_null
	# *.update.microsoft.com (update)
	# *.update.microsoft.com: a local-zone holds its own name; update.microsoft.com itself is blocked too
	local-zone: "update.microsoft.com." always_null
	# *dl.delivery.mp.microsoft.com
	# *dl.delivery.mp.microsoft.com: a local-zone holds whole names; other names ending in dl.delivery.mp.microsoft.com are not blocked
	local-zone: "dl.delivery.mp.microsoft.com." always_null
	# dl.delivery.mp.microsoft.com (update)
	# dl.delivery.mp.microsoft.com: blocked by local-zone "dl.delivery.mp.microsoft.com." always_null
	# watson.*.microsoft.com (telemetry)
	# watson.*.microsoft.com: unbound local-zones have no wildcards; not listed
`,
		"rpz": `; phonehome block list (rpz format): Windows connection endpoints
; Sources: a.md, b.md (descriptions: Microsoft, CC BY 4.0)
; 6 patterns, 6 rules. Where this format cannot express a pattern exactly, a comment there says how it errs.
; Patterns marked protected break a Windows feature when blocked.
$TTL 300
@ SOA localhost. hostmaster.localhost. 1 3600 600 86400 300
@ NS localhost.
; settings-win.data.microsoft.com (telemetry, protected): Used by settings.
settings-win.data.microsoft.com CNAME .
; fe2cr.update.microsoft.com (update)
fe2cr.update.microsoft.com CNAME .
; *.update.microsoft.com (update)
*.update.microsoft.com CNAME .
; *dl.delivery.mp.microsoft.com
; *dl.delivery.mp.microsoft.com: RPZ wildcards stand for whole labels; other names ending in dl.delivery.mp.microsoft.com are not blocked
dl.delivery.mp.microsoft.com CNAME .
*.dl.delivery.mp.microsoft.com CNAME .
; dl.delivery.mp.microsoft.com (update)
; dl.delivery.mp.microsoft.com: already listed above
; watson.*.microsoft.com (telemetry)
; watson.*.microsoft.com: RPZ wildcards stand only for whole leading labels; not listed
; names under a wildcard above that exist in this zone, listed again: a wildcard covers neither them nor the names under them (RFC 4592)
*.fe2cr.update.microsoft.com CNAME .
`,
		"adguard": `! phonehome block list (adguard format): Windows connection endpoints
! Sources: a.md, b.md (descriptions: Microsoft, CC BY 4.0)
! 6 patterns, 6 rules. Where this format cannot express a pattern exactly, a comment there says how it errs.
! Patterns marked protected break a Windows feature when blocked.
! Title: phonehome Windows connection endpoints
! settings-win.data.microsoft.com (telemetry, protected): Used by settings.
|settings-win.data.microsoft.com^
! fe2cr.update.microsoft.com (update)
|fe2cr.update.microsoft.com^
! *.update.microsoft.com (update)
|*.update.microsoft.com^
! *dl.delivery.mp.microsoft.com
|*dl.delivery.mp.microsoft.com^
! dl.delivery.mp.microsoft.com (update)
|dl.delivery.mp.microsoft.com^
! watson.*.microsoft.com (telemetry)
|watson.*.microsoft.com^
`,
	}
	for _, f := range Formats {
		if got := export(t, f, exportSample()); got != want[f] {
			t.Errorf("Export(%s):\n%s\nwant:\n%s", f, got, want[f])
		}
	}
	if len(want) != len(Formats) {
		t.Errorf("want has %d formats, Formats %d", len(want), len(Formats))
	}
}

func TestExportOddEntries(t *testing.T) {
	long := strings.Repeat("a", 64) + ".example.com"
	desc := strings.Repeat("word ", 40)
	entries := []*Entry{
		{Pattern: long},
		{Pattern: "Upper.example.com"},
		{Pattern: "evil.example.com\naddress=/#/1.2.3.4", Category: "x\ny"},
		{Pattern: "ok.example.com", Uses: []Use{{Descriptions: []string{desc}}}},
	}
	for _, f := range Formats {
		out := export(t, f, entries)
		for _, p := range []string{long, "Upper.example.com", "evil.example.com address=/#/1.2.3.4"} {
			if !strings.Contains(out, p+": not a valid host name; not listed") {
				t.Errorf("%s: no note that %s is not listed:\n%s", f, p, out)
			}
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "ok.example.com: word") && (len(l) > 150 || !strings.HasSuffix(l, "word...")) {
				t.Errorf("%s: description not shortened: %q", f, l)
			}
		}
		if strings.Contains(out, "\naddress=/#/") || strings.Contains(out, "\ny") {
			t.Errorf("%s: a line break in a pattern or category breaks out of its comment:\n%s", f, out)
		}
		if strings.Count(out, "ok.example.com") < 2 {
			t.Errorf("%s: ok.example.com not listed:\n%s", f, out)
		}
	}
	if err := Export(&bytes.Buffer{}, "bind", nil, ExportOptions{}); err == nil || !strings.Contains(err.Error(), "hosts, dnsmasq, unbound, rpz, adguard") {
		t.Errorf("unknown format: err = %v, want one naming the formats", err)
	}
}

// TestExportDocTable holds the table in Export's doc comment, which the
// README quotes, to the fidelities the other tests check.
func TestExportDocTable(t *testing.T) {
	src, err := os.ReadFile("export.go")
	if err != nil {
		t.Fatal(err)
	}
	words := map[string]fidelity{}
	for _, f := range []fidelity{faithful, overBlocks, underBlocks, unlisted} {
		words[f.String()] = f
	}
	row := regexp.MustCompile(`^//\t\| (\w+) +\|(.*)\|$`)
	seen := map[string]bool{}
	for _, l := range strings.Split(string(src), "\n") {
		m := row.FindStringSubmatch(l)
		if m == nil || m[1] == "format" {
			continue
		}
		cells := strings.Split(m[2], "|")
		var got [4]fidelity
		for i, c := range cells {
			f, ok := words[strings.TrimSpace(c)]
			if !ok || len(cells) != 4 {
				t.Fatalf("doc table row %q: cell %q", l, c)
			}
			got[i] = f
		}
		if got != fidelities[m[1]] {
			t.Errorf("doc table says %s is %v, fidelities %v", m[1], got, fidelities[m[1]])
		}
		seen[m[1]] = true
	}
	for _, f := range Formats {
		if !seen[f] {
			t.Errorf("doc table has no row for %s", f)
		}
	}
	if len(fidelities) != len(Formats) {
		t.Errorf("fidelities has %d formats, Formats %d", len(fidelities), len(Formats))
	}
}

// findTool finds a program in PATH or, since Debian keeps dnsmasq, unbound
// and named there and a user's PATH may lack it, in /usr/sbin.
func findTool(name string) string {
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if p, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	return ""
}

// exportTool finds a program the export tests hand their output to, which
// CI installs.
func exportTool(t *testing.T, name string) string {
	t.Helper()
	if p := findTool(name); p != "" {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found; CI must install it (scripts/test.sh)", name)
	}
	t.Skipf("%s not found; apt-get install dnsmasq-base unbound bind9-utils", name)
	return ""
}

// TestExportToolsAccept hands each export of the sample and of the catalog to
// the program that reads it, and the same export with one bad line added, to
// show that the check can fail.
func TestExportToolsAccept(t *testing.T) {
	lists := []struct {
		name    string
		entries []*Entry
	}{{"sample", exportSample()}, {"catalog", exportCatalog(t).Entries}}
	for _, c := range []struct {
		format, tool string
		args         func(file string) []string
		bad          string // makes the file invalid
	}{
		{"dnsmasq", "dnsmasq", func(f string) []string {
			return []string{"--test", "--conf-file=" + f, "--no-resolv", "--no-hosts"}
		}, "address=/no-closing-slash"},
		// unbound-checkconf only warns about a duplicate local-zone, and
		// unbound 1.17 then takes the last: a warning fails the check too.
		{"unbound", "unbound-checkconf", func(f string) []string { return []string{f} },
			"\tlocal-zone: \"update.microsoft.com.\" transparent"},
		// -i local: no look-ups of out-of-zone names, so nothing leaves the machine.
		{"rpz", "named-checkzone", func(f string) []string { return []string{"-i", "local", "rpz.phonehome.", f} },
			"*.update.microsoft.com TXT \"CNAME and other data\""},
	} {
		t.Run(c.format, func(t *testing.T) {
			bin := exportTool(t, c.tool)
			for _, l := range lists {
				out := export(t, c.format, l.entries)
				if msg, ok := runCheck(t, bin, c.args, out); !ok {
					t.Errorf("%s rejects the %s export:\n%s", c.tool, l.name, msg)
				}
				if msg, ok := runCheck(t, bin, c.args, out+c.bad+"\n"); ok {
					t.Errorf("%s accepts the %s export with %q added:\n%s", c.tool, l.name, c.bad, msg)
				}
			}
		})
	}
}

// runCheck writes content to a file, runs bin on it, and reports whether it
// exited 0 without a warning.
func runCheck(t *testing.T, bin string, args func(string) []string, content string) (string, bool) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "blocklist")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args(file)...).CombinedOutput()
	return string(out), err == nil && !strings.Contains(strings.ToLower(string(out)), "warning")
}

// exportProbes returns names to try a pattern on: the pattern with each '*'
// filled in several ways, and for each of those a subdomain, a name with a
// character more in front, and the parent.
func exportProbes(pattern string) []string {
	var out []string
	for _, fill := range []string{"", "x", "a.b", "x-y"} {
		n := strings.Trim(strings.ReplaceAll(pattern, "*", fill), ".")
		if n == "" || strings.Contains(n, "..") {
			continue
		}
		_, up, _ := strings.Cut(n, ".")
		out = append(out, n, "a."+n, "x"+n, up)
	}
	out = slices.DeleteFunc(out, func(n string) bool { return !ValidHostname(n) })
	slices.Sort(out)
	return slices.Compact(out)
}

// inDomain reports whether name is domain or a name under it.
func inDomain(name, domain string) bool {
	return name == domain || strings.HasSuffix(name, "."+domain)
}

// observe tries a list made of the one entry for pattern on its probe names
// and returns the fidelity the verdicts show against Match.
func observe(t *testing.T, pattern string, blocked func(string) bool) fidelity {
	t.Helper()
	_, lit := PatternShape(pattern)
	var over, under, some bool
	for _, q := range exportProbes(pattern) {
		got, want := blocked(q), Match(pattern, q)
		some = some || got
		if got && !want {
			over = true
			if !inDomain(q, lit) {
				t.Errorf("%s blocks %s, outside %s", pattern, q, lit)
			}
		}
		under = under || want && !got
	}
	switch {
	case over && under:
		t.Errorf("%s both over- and under-blocks", pattern)
	case over:
		return overBlocks
	case under && !some:
		return unlisted
	case under:
		return underBlocks
	}
	return faithful
}

// checkList holds the verdicts of a whole list on the probe names of all its
// entries to the fidelities of format: a name that an entry listed exactly or
// over-blocking matches must be blocked, and a blocked name must be matched
// by some entry or lie in the domain of an over-blocking one.
func checkList(t *testing.T, format string, entries []*Entry, blocked func(string) bool) {
	t.Helper()
	var probes []string
	for _, e := range entries {
		probes = append(probes, exportProbes(e.Pattern)...)
	}
	slices.Sort(probes)
	probes = slices.Compact(probes)
	fails := 0
	for _, q := range probes {
		var must, may string
		for _, e := range entries {
			s, lit := PatternShape(e.Pattern)
			m, f := Match(e.Pattern, q), fidelities[format][s]
			if m && (f == faithful || f == overBlocks) {
				must = e.Pattern
			}
			if m || f == overBlocks && inDomain(q, lit) {
				may = e.Pattern
			}
		}
		got := blocked(q)
		if must != "" && !got {
			t.Errorf("%s: %s not blocked, though %s is listed", format, q, must)
			fails++
		}
		if got && may == "" {
			t.Errorf("%s: %s blocked, though no pattern matches it", format, q)
			fails++
		}
		if fails > 20 {
			t.Fatal("too many failures")
		}
	}
	if len(probes) < 3*len(entries) {
		t.Errorf("only %d probe names for %d entries", len(probes), len(entries))
	}
}

// blocker returns the verdicts of a list in format: from an interpreter of
// the format, or from the real server answering queries on 127.0.0.1.
func blocker(t *testing.T, format, list string) func(string) bool {
	t.Helper()
	switch format {
	case "hosts":
		return hostsBlocker(t, list)
	case "adguard":
		return adguardBlocker(t, list)
	case "rpz":
		return rpzBlocker(t, list)
	case "dnsmasq":
		return serverBlocker(t, startDnsmasq(t, list))
	case "unbound":
		return serverBlocker(t, startUnbound(t, list))
	}
	t.Fatalf("no blocker for %s", format)
	return nil
}

// TestExportFidelity checks, for every format, that each shape errs the way
// the table in Export's doc says, on a list of that one entry, and that the
// sample and the whole catalog, whose patterns overlap, keep those promises.
func TestExportFidelity(t *testing.T) {
	catalog := exportCatalog(t).Entries
	for _, f := range Formats {
		t.Run(f, func(t *testing.T) {
			for _, e := range exportShapes() {
				s, _ := PatternShape(e.Pattern)
				blocked := blocker(t, f, export(t, f, []*Entry{e}))
				if got, want := observe(t, e.Pattern, blocked), fidelities[f][s]; got != want {
					t.Errorf("%s: %s %v, the table says %v", f, e.Pattern, got, want)
				}
			}
			checkList(t, f, exportSample(), blocker(t, f, export(t, f, exportSample())))
			checkList(t, f, catalog, blocker(t, f, export(t, f, catalog)))
		})
	}
}

// TestExportFidelityNamed does for rpz with BIND's named what
// TestExportFidelity does with a model of a zone lookup. CI does not install
// named (Debian package bind9), so it runs where named is installed.
func TestExportFidelityNamed(t *testing.T) {
	bin := findTool("named")
	if bin == "" {
		t.Skip("named not found; apt-get install bind9")
	}
	for _, e := range exportShapes() {
		s, _ := PatternShape(e.Pattern)
		blocked := serverBlocker(t, startNamed(t, bin, export(t, "rpz", []*Entry{e})))
		if got, want := observe(t, e.Pattern, blocked), fidelities["rpz"][s]; got != want {
			t.Errorf("named: %s %v, the table says %v", e.Pattern, got, want)
		}
	}
	for _, list := range [][]*Entry{exportSample(), exportCatalog(t).Entries} {
		checkList(t, "rpz", list, serverBlocker(t, startNamed(t, bin, export(t, "rpz", list))))
	}
}

var hostsLine = regexp.MustCompile(`^0\.0\.0\.0 ([a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})+)$`)

// hostsBlocker reads a hosts file: every line but comments must be 0.0.0.0
// and a host name, which is blocked.
func hostsBlocker(t *testing.T, list string) func(string) bool {
	names := map[string]bool{}
	for i, l := range strings.Split(strings.TrimSuffix(list, "\n"), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		m := hostsLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("hosts line %d: %q is not 0.0.0.0 and a host name", i+1, l)
			continue
		}
		names[m[1]] = true
	}
	return func(q string) bool { return names[q] }
}

var adguardRule = regexp.MustCompile(`^(\|\|?)([a-z0-9._*-]+)\^$`)

// adguardBlocker reads an AdGuard filter list as AdGuard's DNS filtering
// syntax describes it: "||" anchors at the start of the host name or of any
// name it is under, "|" at the start of the host name, '*' stands for any
// characters, and '^' for a separator or the end of the host name.
func adguardBlocker(t *testing.T, list string) func(string) bool {
	var rules []*regexp.Regexp
	for i, l := range strings.Split(strings.TrimSuffix(list, "\n"), "\n") {
		if strings.HasPrefix(l, "!") {
			continue
		}
		m := adguardRule.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("adguard line %d: %q is not a rule this test reads", i+1, l)
			continue
		}
		re := "^"
		if m[1] == "||" {
			re += `([a-z0-9-_.]+\.)?`
		}
		re += strings.ReplaceAll(regexp.QuoteMeta(m[2]), `\*`, ".*") + `([^ a-zA-Z0-9.%_-]|$)`
		rules = append(rules, regexp.MustCompile(re))
	}
	return func(q string) bool {
		return slices.ContainsFunc(rules, func(r *regexp.Regexp) bool { return r.MatchString(q) })
	}
}

// rpzBlocker reads a policy zone's "owner CNAME ." rules and answers as a
// zone lookup does (RFC 4592): a listed name is blocked, a name that exists
// only above listed names is not, and any other name is blocked if its
// closest existing ancestor has a wildcard.
func rpzBlocker(t *testing.T, list string) func(string) bool {
	owners := map[string]bool{}
	exists := map[string]bool{}
	for i, l := range strings.Split(strings.TrimSuffix(list, "\n"), "\n") {
		if strings.HasPrefix(l, ";") || strings.HasPrefix(l, "$TTL ") || strings.HasPrefix(l, "@ ") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 3 || f[1] != "CNAME" || f[2] != "." {
			t.Errorf("rpz line %d: %q is not a CNAME . rule", i+1, l)
			continue
		}
		owners[f[0]] = true
		for n := f[0]; n != ""; _, n, _ = strings.Cut(n, ".") {
			exists[n] = true
		}
	}
	return func(q string) bool {
		if exists[q] {
			return owners[q]
		}
		for _, ce, _ := strings.Cut(q, "."); ce != ""; _, ce, _ = strings.Cut(ce, ".") {
			if exists[ce] {
				return owners["*."+ce]
			}
		}
		return owners["*"]
	}
}

// The stub upstream's answers, so that a name the server under test passed
// on is told apart from one it blocked.
var upstreamAnswers = map[uint16]string{
	dns.TypeA:    "192.0.2.1",
	dns.TypeAAAA: "2001:db8::1",
	dns.TypeTXT:  `"upstream"`,
}

// startUpstream runs a DNS server on 127.0.0.1 that answers every A, AAAA
// and TXT query with the upstream data, and returns its port. It is the only
// server the servers under test forward to, so no query leaves the machine.
func startUpstream(t *testing.T) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		r.RecursionAvailable = true
		if len(q.Question) == 1 {
			qq := q.Question[0]
			if data, ok := upstreamAnswers[qq.Qtype]; ok {
				rr, err := dns.NewRR(fmt.Sprintf("%s 60 IN %s %s", qq.Name, dns.TypeToString[qq.Qtype], data))
				if err == nil {
					r.Answer = append(r.Answer, rr)
				}
			}
		}
		w.WriteMsg(r)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// exchange sends one query to 127.0.0.1:port and returns the reply's rcode
// and the data of its answers of type qtype, as text.
func exchange(port int, name string, qtype uint16) (int, []string, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.Exchange(q, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0, nil, err
	}
	var data []string
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == qtype {
			f := strings.Fields(rr.String())
			data = append(data, strings.Join(f[4:], " "))
		}
	}
	return r.Rcode, data, nil
}

// serverBlocker asks the server on port for A, AAAA and TXT of a name: it is
// blocked if no answer is the upstream's, and the three must agree.
func serverBlocker(t *testing.T, port int) func(string) bool {
	return func(name string) bool {
		var verdicts []bool
		for qtype, pass := range upstreamAnswers {
			rcode, data, err := exchange(port, name, qtype)
			if err != nil || rcode != dns.RcodeSuccess && rcode != dns.RcodeNameError {
				t.Fatalf("query %s type %s: rcode %d, %v", name, dns.TypeToString[qtype], rcode, err)
			}
			verdicts = append(verdicts, !slices.Contains(data, pass))
		}
		if slices.Contains(verdicts, !verdicts[0]) {
			t.Errorf("%s is blocked for some query types only", name)
		}
		return verdicts[0]
	}
}

// freePort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// startServer starts cmd, a DNS server on 127.0.0.1:port, stops it when the
// test ends, and waits until it answers.
func startServer(t *testing.T, cmd *exec.Cmd, port int) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited; lf.Close() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, _, err := exchange(port, "ready.phonehome.test", dns.TypeA); err == nil {
			return
		}
		select {
		case <-exited:
		default:
			if time.Now().Before(deadline) {
				continue
			}
		}
		log, _ := os.ReadFile(logFile)
		t.Fatalf("%s does not answer on 127.0.0.1:%d:\n%s", cmd.Path, port, log)
	}
}

// startDnsmasq serves list with dnsmasq on 127.0.0.1, forwarding only to
// the stub upstream, and returns its port.
func startDnsmasq(t *testing.T, list string) int {
	bin := exportTool(t, "dnsmasq")
	file := filepath.Join(t.TempDir(), "blocklist.conf")
	if err := os.WriteFile(file, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	startServer(t, exec.Command(bin, "--keep-in-foreground", "--conf-file="+file,
		"--no-resolv", "--no-hosts", "--pid-file=", "--log-facility=-",
		"--listen-address=127.0.0.1", "--bind-interfaces", fmt.Sprint("--port=", port),
		fmt.Sprint("--server=127.0.0.1#", startUpstream(t))), port)
	return port
}

// startUnbound serves list with unbound on 127.0.0.1, forwarding only to
// the stub upstream and sending only from 127.0.0.1, and returns its port.
func startUnbound(t *testing.T, list string) int {
	bin := exportTool(t, "unbound")
	dir := t.TempDir()
	file := filepath.Join(dir, "blocklist.conf")
	if err := os.WriteFile(file, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf(`server:
	interface: 127.0.0.1
	port: %d
	outgoing-interface: 127.0.0.1
	do-ip6: no
	do-tcp: no
	do-not-query-localhost: no
	module-config: "iterator"
	num-threads: 1
	username: ""
	chroot: ""
	pidfile: ""
	directory: %q
	use-syslog: no
	logfile: ""
	include: %q
forward-zone:
	name: "."
	forward-addr: 127.0.0.1@%d
`, port, dir, file, startUpstream(t))
	main := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(main, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startServer(t, exec.Command(bin, "-d", "-c", main), port)
	return port
}

// startNamed serves the policy zone list with named on 127.0.0.1, forwarding
// only to the stub upstream and sending only from 127.0.0.1, and returns its
// port once the zone blocks its first rule's name.
func startNamed(t *testing.T, bin, list string) int {
	dir := t.TempDir()
	zone := filepath.Join(dir, "rpz.zone")
	if err := os.WriteFile(zone, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf(`options {
	directory %q;
	pid-file none;
	session-keyfile %q;
	listen-on port %d { 127.0.0.1; };
	listen-on-v6 { none; };
	query-source address 127.0.0.1;
	recursion yes;
	allow-query { 127.0.0.1; };
	forwarders { 127.0.0.1 port %d; };
	forward only;
	dnssec-validation no;
	notify no;
	response-policy { zone "rpz.phonehome"; };
};
controls { };
zone "rpz.phonehome" { type primary; file %q; };
`, dir, filepath.Join(dir, "session.key"), port, startUpstream(t), zone)
	main := filepath.Join(dir, "named.conf")
	if err := os.WriteFile(main, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startServer(t, exec.Command(bin, "-g", "-4", "-c", main), port)
	// named answers before it has loaded the policy zone.
	rule := regexp.MustCompile(`(?m)^(\S+) CNAME \.$`).FindStringSubmatch(list)
	if rule == nil {
		return port
	}
	name := strings.Replace(rule[1], "*", "x", 1)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if rcode, _, err := exchange(port, name, dns.TypeA); err == nil && rcode == dns.RcodeNameError {
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("named does not block %s", name)
		}
	}
}

// TestExportLeavesProtectedOut: by default a block list never carries an
// endpoint whose blocking breaks Windows; it names it in a comment instead.
func TestExportLeavesProtectedOut(t *testing.T) {
	cat := Builtin()
	var unprotected []*Entry
	for _, e := range cat.Entries {
		if !e.Protected {
			unprotected = append(unprotected, e)
		}
	}
	rules := func(out string) []string {
		var r []string
		for _, line := range strings.Split(out, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.ContainsAny(l[:1], "#;!") {
				r = append(r, l)
			}
		}
		return r
	}
	for _, f := range Formats {
		var all, some bytes.Buffer
		if err := Export(&all, f, cat.Entries, ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := Export(&some, f, unprotected, ExportOptions{Protected: true}); err != nil {
			t.Fatal(err)
		}
		if got, want := rules(all.String()), rules(some.String()); !slices.Equal(got, want) {
			t.Errorf("%s: protected entries changed the rules:\n%s", f, all.String())
		}
		for _, e := range cat.Entries {
			if e.Protected && !strings.Contains(all.String(), e.Pattern+": "+e.Reason) {
				t.Errorf("%s: protected %s is not named with its reason", f, e.Pattern)
			}
		}
		if strings.Contains(all.String(), "0.0.0.0 ctldl.windowsupdate.com") || strings.Contains(all.String(), "|ctldl.windowsupdate.com^") {
			t.Errorf("%s: ctldl.windowsupdate.com is listed", f)
		}
	}
}

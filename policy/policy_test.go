package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/endpoints"
)

func compileText(t *testing.T, yml string) (*Policy, []string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "extra.txt"), []byte("# community list\n0.0.0.0 tracker.example.com other.example.com\n||ads.example.net^\nplain.example.org\n*.wild.example.org\n"), 0o644)
	path := filepath.Join(dir, "phonehome.yaml")
	os.WriteFile(path, []byte(yml), 0o644)
	cfg, src, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p, warns, err := Compile(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	return p, warns
}

const testConfig = `
policy:
  default: {edition: all, actions: {telemetry: sinkhole, "*": log}, unlisted: allow}
  groups:
    - name: kids-pc
      clients: [192.168.1.23, "192.168.1.64/28", "fd00::/64"]
      edition: home
      actions: {telemetry: sinkhole, spotlight: sinkhole, cortana: sinkhole, ads: sinkhole, "*": log}
      overrides: {allow: [g.live.com], sinkhole: ["*.bing.com", ctldl.windowsupdate.com]}
      lists:
        - {category: telemetry, file: extra.txt}
        - {category: ads, patterns: [banner.example.com, "*.adserver.example"]}
    - name: lab
      clients: [192.168.1.0/24, "fd00::5"]
      edition: education
      actions: {"*": allow}
      unlisted: log
`

func TestDecide(t *testing.T) {
	p, warns := compileText(t, testConfig)
	if len(warns) != 1 || !strings.Contains(warns[0], "ctldl.windowsupdate.com") || !strings.Contains(warns[0], "certificate") {
		t.Errorf("warnings: %q", warns)
	}
	kid, lab, other := netip.MustParseAddr("192.168.1.23"), netip.MustParseAddr("192.168.1.5"), netip.MustParseAddr("10.0.0.9")
	for _, c := range []struct {
		client            netip.Addr
		name              string
		group, action     string
		pattern, category string
		protected         bool
	}{
		// default group: telemetry sinkholed, other endpoints logged, the rest allowed
		{other, "v10.events.data.microsoft.com", "default", "sinkhole", "v10.events.data.microsoft.com", "telemetry", false},
		{other, "V10.Events.Data.Microsoft.Com.", "default", "sinkhole", "v10.events.data.microsoft.com", "telemetry", false},
		{other, "arc.msn.com", "default", "log", "arc.msn.com", "spotlight", false},
		{other, "www.example.com", "default", "allow", "", "unlisted", false},
		// protection: *.blob.core.windows.net is telemetry but never sinkholed by category
		{other, "foo.blob.core.windows.net", "default", "log", "*.blob.core.windows.net", "telemetry", true},
		{other, "sls.update.microsoft.com", "default", "log", "sls.update.microsoft.com", "update", false},
		{other, "foo.update.microsoft.com", "default", "log", "*.update.microsoft.com", "update", false},
		// kids-pc (longest prefix: /32 beats lab's /24): home edition only
		{kid, "arc.msn.com", "kids-pc", "sinkhole", "arc.msn.com", "spotlight", false},
		{kid, "fe2cr.update.microsoft.com", "kids-pc", "log", "fe2cr.update.microsoft.com", "update", false},
		{kid, "www.bing.com", "kids-pc", "sinkhole", "www.bing.com", "cortana", false}, // override *.bing.com
		{kid, "g.live.com", "kids-pc", "allow", "g.live.com", "onedrive", false},       // override allow
		{kid, "ctldl.windowsupdate.com", "kids-pc", "sinkhole", "ctldl.windowsupdate.com", "certificates", false},
		{kid, "tracker.example.com", "kids-pc", "sinkhole", "tracker.example.com", "telemetry", false},
		{kid, "x.ads.example.net", "kids-pc", "sinkhole", "*.ads.example.net", "telemetry", false}, // ||ads.example.net^ covers subdomains
		{kid, "ads.example.net", "kids-pc", "sinkhole", "ads.example.net", "telemetry", false},
		{kid, "banner.example.com", "kids-pc", "sinkhole", "banner.example.com", "ads", false},
		{kid, "a.adserver.example", "kids-pc", "sinkhole", "*.adserver.example", "ads", false},
		{netip.MustParseAddr("192.168.1.70"), "arc.msn.com", "kids-pc", "sinkhole", "arc.msn.com", "spotlight", false},
		{netip.MustParseAddr("::ffff:192.168.1.70"), "arc.msn.com", "kids-pc", "sinkhole", "arc.msn.com", "spotlight", false},
		{netip.MustParseAddr("fd00::1"), "arc.msn.com", "kids-pc", "sinkhole", "arc.msn.com", "spotlight", false},
		// lab: education edition, everything allowed, unlisted logged; fd00::5 is more specific than fd00::/64
		{lab, "fe2cr.update.microsoft.com", "lab", "allow", "fe2cr.update.microsoft.com", "update", false},
		{lab, "arc.msn.com", "lab", "allow", "arc.msn.com", "spotlight", false},
		{lab, "www.example.com", "lab", "log", "", "unlisted", false},
		{lab, "tracker.example.com", "lab", "log", "", "unlisted", false},
		{netip.MustParseAddr("fd00::5"), "www.example.com", "lab", "log", "", "unlisted", false},
	} {
		d := p.Decide(c.client, c.name)
		pat := ""
		if d.Match.Rule != nil {
			pat = d.Match.Pattern()
		}
		if d.Group.Name != c.group || d.Action.String() != c.action || pat != c.pattern || string(d.Category()) != c.category || d.Protected != c.protected {
			t.Errorf("%s %s: group %s, %s, pattern %q, %s, protected %v; want %s, %s, %q, %s, %v\n\t%s",
				c.client, c.name, d.Group.Name, d.Action, pat, d.Category(), d.Protected, c.group, c.action, c.pattern, c.category, c.protected, d.Reason())
		}
	}
}

func TestDefaultPolicy(t *testing.T) {
	p, warns, err := Compile(DefaultConfig(), nil)
	if err != nil || len(warns) != 0 {
		t.Fatal(err, warns)
	}
	any := netip.MustParseAddr("192.168.7.7")
	for name, want := range map[string]string{
		"v10.events.data.microsoft.com": "sinkholed: telemetry endpoint v10.events.data.microsoft.com, documented for home/pro/education/enterprise on Windows 10-1809..11",
		"ctldl.windowsupdate.com":       "logged: certificates endpoint ctldl.windowsupdate.com, documented for home/pro/education/enterprise on every Windows version (10-1709 to 11)",
		"foo.windows.com":               "logged: undocumented Microsoft host: under Microsoft's domain windows.com, and no Microsoft document lists it",
		"www.example.com":               "allowed: not a documented Windows endpoint nor in group default's lists, and the group's action for unlisted names is allow",
		"foo.blob.core.windows.net":     "logged, not sinkholed: *.blob.core.windows.net is protected — blocking it cuts off every site and app that keeps files in Azure Blob Storage, far beyond Windows telemetry",
	} {
		if got := p.Decide(any, name).Reason(); got != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	// Every protected catalog endpoint stays reachable under the default policy.
	for _, e := range p.Catalog.Entries {
		if d := p.Decide(any, representative(e.Pattern)); e.Protected && d.Action == Sinkhole {
			t.Errorf("%s: protected, sinkholed: %s", e.Pattern, d.Reason())
		}
	}
}

func TestDecideNoAllocs(t *testing.T) {
	p, _ := compileText(t, testConfig)
	kid := netip.MustParseAddr("192.168.1.23")
	if n := testing.AllocsPerRun(100, func() {
		p.Decide(kid, "www.bing.com")
		p.Decide(kid, "WWW.Example.COM.")
		p.Decide(netip.MustParseAddr("fd00::1"), "arc.msn.com")
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// TestWindowsVersions checks the version dimension: an entry applies to a
// group only when a version the group chose documents it for the group's
// edition, and the decision says which versions do.
func TestWindowsVersions(t *testing.T) {
	p, _ := compileText(t, `
policy:
  default: {edition: enterprise, windows: "11", actions: {spotlight: sinkhole, apps: sinkhole}}
  groups:
    - {name: old, clients: [10.0.0.0/8], edition: enterprise, windows: "10-1909", actions: {spotlight: sinkhole, apps: sinkhole}}
    - {name: oldest, clients: [10.1.0.0/16], edition: all, windows: [10-1709, "10-1803"], actions: {spotlight: sinkhole, apps: sinkhole}}
    - {name: new, clients: [10.2.0.0/16], edition: all, windows: 10-21H2..11, actions: {spotlight: sinkhole, apps: sinkhole}}
`)
	w11, old, oldest, newer := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.2.0.1")
	for _, c := range []struct {
		client            netip.Addr
		name              string
		action, category  string
		pattern, versions string
	}{
		// api.msn.com: only the Windows 11 Enterprise document lists it.
		{w11, "api.msn.com", "sinkhole", "spotlight", "api.msn.com", "11"},
		{newer, "api.msn.com", "sinkhole", "spotlight", "api.msn.com", "11"},
		{old, "api.msn.com", "log", "undocumented", "*.msn.com", ""}, // a Microsoft host no 1909 document lists
		// Only the 1709 documents list these.
		{oldest, "cdn.content.prod.cms.msn.com", "sinkhole", "spotlight", "cdn.content.prod.cms.msn.com", "10-1709"},
		{w11, "cdn.content.prod.cms.msn.com", "log", "undocumented", "*.msn.com", ""},
		{oldest, "www.facebook.com", "sinkhole", "apps", "www.facebook.com", "10-1709"},
		{w11, "www.facebook.com", "allow", "unlisted", "", ""},
		{newer, "www.facebook.com", "allow", "unlisted", "", ""},
	} {
		d := p.Decide(c.client, c.name)
		pat, vers := "", ""
		if d.Match.Rule != nil {
			pat, vers = d.Match.Pattern(), d.Match.Rule.Versions
			if d.Match.Rule.Entry.Kind != endpoints.Documented {
				vers = ""
			}
		}
		if d.Action.String() != c.action || string(d.Category()) != c.category || pat != c.pattern || vers != c.versions {
			t.Errorf("%s (group %s) %s: %s %s %q documented on %q; want %s %s %q on %q\n\t%s", c.client, d.Group.Name, c.name,
				d.Action, d.Category(), pat, vers, c.action, c.category, c.pattern, c.versions, d.Reason())
		}
		if c.versions != "" && !strings.Contains(d.Reason(), "on Windows "+c.versions) {
			t.Errorf("%s: the reason does not say which versions document it: %s", c.name, d.Reason())
		}
	}
	if p.Default.Windows.String() != "11" || p.Groups[2].Windows.String() != "10-21H2,11" {
		t.Errorf("windows: %s, %s", p.Default.Windows, p.Groups[2].Windows)
	}
}

// TestUndocumentedLosesToDocumented checks the built-in tables against the
// matcher: a name any documented pattern or family matches is never taken
// for an undocumented Microsoft host, and a new name under each
// first-party domain is, unless a documented wildcard or a family covers
// the whole domain for that group.
func TestUndocumentedLosesToDocumented(t *testing.T) {
	p, _, err := Compile(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	any := netip.MustParseAddr("192.0.2.1")
	for _, e := range append(append([]*endpoints.Entry{}, p.Catalog.Entries...), p.Catalog.Families...) {
		name := representative(e.Pattern)
		if d := p.Decide(any, name); d.Category() == endpoints.Undocumented {
			t.Errorf("%s (matching %s) is taken for undocumented: %s", name, e.Pattern, d.Reason())
		}
	}
	// A group that knows only what the Windows 11 documents list.
	p11, _ := compileText(t, "policy:\n  default: {windows: \"11\"}\n")
	for _, e := range p.Catalog.Domains {
		name := "phonehome-test-label" + strings.TrimPrefix(e.Pattern, "*")
		for _, p := range []*Policy{p, p11} {
			d := p.Decide(any, name)
			// A documented wildcard or a family over the whole domain
			// may catch it first, in groups whose versions document it.
			whole := d.Match.Rule != nil && d.Match.Pattern() == e.Pattern && d.Match.Rule.Entry.Kind != endpoints.FirstParty
			if !whole && (d.Category() != endpoints.Undocumented || d.Action != Log) {
				t.Errorf("%s (windows %s): %s %s, want log undocumented", name, d.Group.Windows, d.Action, d.Category())
			}
		}
	}
	if d := p11.Decide(any, "phonehome-test-label.msn.com"); d.Category() != endpoints.Undocumented {
		t.Errorf("msn.com on Windows 11: %s, want undocumented (*.msn.com is documented for older versions only)", d.Category())
	}
}

// TestWindowsNoDocument: a group whose edition has no document for its
// versions (Microsoft published no 21H2 list for Home) warns, naming the
// versions that have one.
func TestWindowsNoDocument(t *testing.T) {
	_, warns := compileText(t, "policy:\n  groups:\n    - {name: kids, clients: [10.0.0.0/8], edition: home, windows: 10-21H2}\n")
	if len(warns) != 1 || !strings.Contains(warns[0], "group kids: no document lists endpoints for edition home on Windows 10-21H2; documents for that edition cover 10-1709..10-21H1,11") {
		t.Errorf("warnings: %q", warns)
	}
}

// TestUndocumentedAction: undocumented Microsoft hosts are logged, whatever
// "*" says, until a group names the category; even then the domains
// Windows needs stay unsinkholed.
func TestUndocumentedAction(t *testing.T) {
	p, _ := compileText(t, `
policy:
  default: {actions: {"*": sinkhole}}
  groups:
    - {name: strict, clients: [10.0.0.0/8], actions: {undocumented: sinkhole}}
`)
	any, strict := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.1")
	for _, c := range []struct {
		client    netip.Addr
		name      string
		action    string
		protected bool
	}{
		{any, "foo.windows.com", "log", false},
		{strict, "foo.windows.com", "sinkhole", false},
		{strict, "foo.live.com", "sinkhole", false},
		{strict, "x.msocsp.com", "log", true}, // certificate revocation
		{strict, "www.example.com", "allow", false},
	} {
		d := p.Decide(c.client, c.name)
		if d.Action.String() != c.action || d.Protected != c.protected {
			t.Errorf("%s %s: %s (protected %v), want %s (%v): %s", d.Group.Name, c.name, d.Action, d.Protected, c.action, c.protected, d.Reason())
		}
	}
}

// TestGroupInherits: a group takes from the default group each category's
// action it does not set ("*" included) and the unlisted action, so a group
// written only to give machines another edition keeps sinkholing telemetry.
func TestGroupInherits(t *testing.T) {
	p, _ := compileText(t, `
policy:
  default: {actions: {telemetry: sinkhole, spotlight: log, "*": log}, unlisted: log}
  groups:
    - {name: pro-only, clients: [10.1.0.0/16], edition: pro}
    - {name: own, clients: [10.2.0.0/16], actions: {spotlight: sinkhole, "*": allow}, unlisted: allow}
`)
	for _, c := range []struct {
		client, name, action string
	}{
		{"10.1.0.1", "v10.events.data.microsoft.com", "sinkhole"}, // inherited telemetry
		{"10.1.0.1", "arc.msn.com", "log"},                        // inherited spotlight
		{"10.1.0.1", "www.example.com", "log"},                    // inherited unlisted
		{"10.2.0.1", "v10.events.data.microsoft.com", "sinkhole"}, // inherited: its own "*" does not name telemetry
		{"10.2.0.1", "arc.msn.com", "sinkhole"},                   // its own key wins
		{"10.2.0.1", "tile-service.weather.microsoft.com", "allow"},
		{"10.2.0.1", "www.example.com", "allow"},
	} {
		d := p.Decide(netip.MustParseAddr(c.client), c.name)
		if d.Action.String() != c.action {
			t.Errorf("%s %s: %s, want %s: %s", d.Group.Name, c.name, d.Action, c.action, d.Reason())
		}
	}
	if got := p.Groups[0].ActionsString(); got != "spotlight=log telemetry=sinkhole undocumented=log *=log" {
		t.Errorf("pro-only's actions: %s", got)
	}
}

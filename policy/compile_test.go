package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProtectedWarnings: loading a config whose override or sinkholing
// list decides for a protected endpoint warns, naming what breaks, and
// says that a CNAME chain reaching it is sinkholed too; a list line that
// loses to the protected pattern, a list that only logs and a name an
// override allows do not warn.
func TestProtectedWarnings(t *testing.T) {
	dir := t.TempDir()
	// A block list naming CDN hosts that Windows Update and certificate
	// trust lists are served from: cs9.wac.phicdn.net is in the catalog
	// and keeps it, cs1 and *.x are more specific than the protected
	// *.wac.phicdn.net and win over it.
	os.WriteFile(filepath.Join(dir, "cdn.txt"), []byte("0.0.0.0 cs1.wac.phicdn.net cs9.wac.phicdn.net\n*.x.wac.phicdn.net\n"+
		"ctldl.windowsupdate.com\n*.windowsupdate.com\ntracker.example.com\nkept.wac.phicdn.net\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "log.txt"), []byte("cs10.wac.phicdn.net\n"), 0o644)
	path := filepath.Join(dir, "p.yaml")
	os.WriteFile(path, []byte(`policy:
  default:
    overrides: {sinkhole: [ctldl.windowsupdate.com], allow: [kept.wac.phicdn.net]}
    lists:
      - {category: telemetry, file: cdn.txt}
      - {category: noise, file: log.txt}
      - {category: telemetry, patterns: [www.example.org, a.tlu.dl.delivery.mp.microsoft.com]}
`), 0o644)
	cfg, src, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p, warns, err := Compile(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	reason := "blocking it stops certificate trust list"
	want := []string{
		path + ":3:28: group default: override sinkhole ctldl.windowsupdate.com sinkholes protected endpoint ctldl.windowsupdate.com, also where an answer's CNAME chain reaches it: " + reason,
		path + ":5:31: group default: list " + filepath.Join(dir, "cdn.txt") + " (category telemetry: sinkhole) sinkholes protected endpoint *.wac.phicdn.net (*.x.wac.phicdn.net and 1 more), also where an answer's CNAME chain reaches it: blocking it stops Windows Update",
		path + ":7:59: group default: list in the config (category telemetry: sinkhole) sinkholes protected endpoint *.tlu.dl.delivery.mp.microsoft.com (a.tlu.dl.delivery.mp.microsoft.com), also",
	}
	if len(warns) != len(want) {
		t.Fatalf("%d warnings, want %d:\n%s", len(warns), len(want), strings.Join(warns, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(warns[i], w) {
			t.Errorf("warning %d:\n got %s\nwant %s…", i, warns[i], w)
		}
	}

	// What the warnings say happens: the list's line wins over the
	// protected pattern, and along the chain from ctldl.windowsupdate.com.
	var client netip.Addr
	if d := p.Decide(client, "cs1.wac.phicdn.net"); d.Action != Sinkhole || d.Match.Pattern() != "cs1.wac.phicdn.net" {
		t.Errorf("cs1.wac.phicdn.net: %s by %s", d.Action, d.Match.Pattern())
	}
	q := p.Decide(client, "crl.example.com")
	if d := p.DecideChain(client, q, []string{"ctldl.windowsupdate.com."}); d.Action != Sinkhole || d.CNAME != "ctldl.windowsupdate.com." {
		t.Errorf("chain through the override: %s through %q", d.Action, d.CNAME)
	}
	q = p.Decide(client, "download.windowsupdate.com")
	if d := p.DecideChain(client, q, []string{"a.x.wac.phicdn.net."}); d.Action != Sinkhole || d.CNAME != "a.x.wac.phicdn.net." {
		t.Errorf("chain from a protected name into the list: %s through %q", d.Action, d.CNAME)
	}
	// Lines the catalog's patterns beat decide nothing.
	for _, name := range []string{"x.windowsupdate.com", "cs9.wac.phicdn.net"} {
		if d := p.Decide(client, name); d.Action != Log || d.Match.Rule.Entry == nil || !d.Match.Rule.Protected() {
			t.Errorf("%s: %s by %s", name, d.Action, d.Match.Pattern())
		}
	}
}

// TestListWarningWithoutLists: a config without lists or with lists that
// cover no protected endpoint compiles without warnings.
func TestListWarningWithoutLists(t *testing.T) {
	_, warns := compileText(t, "policy:\n  default:\n    lists: [{category: telemetry, file: extra.txt}]\n")
	if len(warns) != 0 {
		t.Errorf("warnings: %q", warns)
	}
}

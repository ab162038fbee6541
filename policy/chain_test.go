package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// chainConfig has a default group that sinkholes telemetry, logs the rest
// and allows unlisted names; a group that sinkholes unlisted names; and a
// group with a telemetry list (extra.txt, written by compileText) and
// overrides of its own.
const chainConfig = `
policy:
  default: {edition: all, actions: {telemetry: sinkhole, "*": log}, unlisted: allow}
  groups:
    - name: strict
      clients: [10.0.0.2]
      actions: {telemetry: sinkhole, "*": log}
      unlisted: sinkhole
    - name: listed
      clients: [10.0.0.3]
      actions: {telemetry: sinkhole, "*": log}
      overrides: {log: [alias.example], sinkhole: [ctldl.windowsupdate.com, "*.bing.com"]}
      lists:
        - {category: telemetry, file: extra.txt}
`

// TestDecideChain decides the names of an answer's CNAME chain after the
// question's own decision, a table of what the chain may and may not
// change.
func TestDecideChain(t *testing.T) {
	p, _ := compileText(t, chainConfig)
	def, strict, listed := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	const (
		v10   = "v10.events.data.microsoft.com."
		ctldl = "ctldl.windowsupdate.com."
		arc   = "arc.msn.com."
		blob  = "foo.blob.core.windows.net." // telemetry, protected
		cdn   = "cdn.example.net."
		edge  = "edge.example.org."
		line  = "tracker.example.com."      // a line of extra.txt
		sls   = "sls.update.microsoft.com." // update: protected
	)
	for _, c := range []struct {
		what     string
		client   netip.Addr
		question string
		chain    []string
		// want: the action, the matched pattern and category, the chain
		// name that decided ("" when the question did), the shield's
		// pattern ("" for none).
		action, pattern, category, cname, shield string
		same                                     bool // the question's decision, unchanged
	}{
		{what: "question sinkholed", client: def, question: v10, chain: []string{cdn, arc, ctldl, "watson.telemetry.microsoft.com."},
			action: "sinkhole", pattern: "v10.events.data.microsoft.com", category: "telemetry", same: true},
		{what: "question overridden", client: listed, question: "alias.example.", chain: []string{v10},
			action: "log", category: "unlisted", same: true},
		{what: "question override wins over a list line in the chain", client: listed, question: "alias.example.", chain: []string{line},
			action: "log", category: "unlisted", same: true},
		{what: "no chain", client: def, question: "www.example.com.", chain: nil,
			action: "allow", category: "unlisted", same: true},
		{what: "unlisted chain names decide nothing, even with unlisted: sinkhole", client: strict, question: arc, chain: []string{cdn, edge},
			action: "log", pattern: "arc.msn.com", category: "spotlight", same: true},
		{what: "unlisted chain, unlisted question allowed", client: def, question: "www.example.com.", chain: []string{cdn, edge},
			action: "allow", category: "unlisted", same: true},

		{what: "chain into telemetry sinkholes", client: def, question: "alias.example.", chain: []string{v10, cdn},
			action: "sinkhole", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: v10},
		{what: "sinkholed second in the chain", client: def, question: "alias.example.", chain: []string{edge, v10, cdn},
			action: "sinkhole", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: v10},
		{what: "logged question, sinkholed chain name", client: def, question: arc, chain: []string{v10},
			action: "sinkhole", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: v10},
		{what: "chain through an override sinkhole", client: listed, question: "www.example.com.", chain: []string{"www.bing.com."},
			action: "sinkhole", pattern: "www.bing.com", category: "cortana", cname: "www.bing.com."},

		{what: "protected question shields a sinkholed chain name", client: def, question: ctldl, chain: []string{v10},
			action: "log", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: v10, shield: "ctldl.windowsupdate.com"},
		{what: "protected chain name before the sinkholed one", client: def, question: "alias.example.", chain: []string{ctldl, v10},
			action: "log", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: v10, shield: "ctldl.windowsupdate.com"},
		{what: "protected chain name after the sinkholed one", client: def, question: "alias.example.", chain: []string{v10, ctldl},
			action: "log", pattern: "v10.events.data.microsoft.com", category: "telemetry", cname: v10, shield: "ctldl.windowsupdate.com"},
		{what: "a protected telemetry chain name protects itself", client: def, question: "alias.example.", chain: []string{blob},
			action: "log", pattern: "*.blob.core.windows.net", category: "telemetry", cname: blob, shield: "*.blob.core.windows.net"},

		{what: "a list line sinkholes through a protected question", client: listed, question: sls, chain: []string{line},
			action: "sinkhole", pattern: "tracker.example.com", category: "telemetry", cname: line, shield: "sls.update.microsoft.com"},
		// Only a pattern the user wrote sinkholes through protection, wherever
		// it stands in the chain: a category's sinkhole or a protected
		// endpoint before it does not hide it.
		{what: "a list line after a category sinkhole, protected question", client: listed, question: sls, chain: []string{v10, line},
			action: "sinkhole", pattern: "tracker.example.com", category: "telemetry", cname: line, shield: "sls.update.microsoft.com"},
		{what: "a list line after a protected chain name", client: listed, question: "alias2.example.", chain: []string{blob, line},
			action: "sinkhole", pattern: "tracker.example.com", category: "telemetry", cname: line, shield: "*.blob.core.windows.net"},
		{what: "an override sinkholes a protected chain name", client: listed, question: "www.example.com.", chain: []string{ctldl, cdn},
			action: "sinkhole", pattern: "ctldl.windowsupdate.com", category: "certificates", cname: ctldl, shield: "ctldl.windowsupdate.com"},

		{what: "unlisted question aliasing a catalog entry", client: def, question: "www.example.com.", chain: []string{cdn, arc, edge},
			action: "log", pattern: "arc.msn.com", category: "spotlight", cname: arc},
		{what: "listed question keeps its own entry", client: def, question: "foo.windows.com.", chain: []string{arc},
			action: "log", pattern: "*.windows.com", category: "undocumented", same: true},
	} {
		q := p.Decide(c.client, c.question)
		d := p.DecideChain(c.client, q, c.chain)
		pat, shield := "", ""
		if d.Match.Rule != nil {
			pat = d.Match.Pattern()
		}
		if d.Shield != nil {
			shield = d.Shield.Entry.Pattern
		}
		if d.Action.String() != c.action || pat != c.pattern || string(d.Category()) != c.category || d.CNAME != c.cname || shield != c.shield || d.Group != q.Group {
			t.Errorf("%s: %s, %q, %s, cname %q, shield %q, group %s; want %s, %q, %s, cname %q, shield %q, group %s\n\t%s",
				c.what, d.Action, pat, d.Category(), d.CNAME, shield, d.Group.Name, c.action, c.pattern, c.category, c.cname, c.shield, q.Group.Name, d.Reason())
		}
		if c.same && d != q {
			t.Errorf("%s: the question's decision changed: %+v, was %+v", c.what, d, q)
		}
		if c.shield != "" && c.action == "log" && (!d.Protected || !strings.Contains(d.Reason(), "protected") || !strings.Contains(d.Reason(), "CNAME")) {
			t.Errorf("%s: protected %v, reason %q", c.what, d.Protected, d.Reason())
		}
	}
}

// TestDecideChainTexts: what people read about a decision that came
// through the chain names the CNAME, in the EDE text and the reason.
func TestDecideChainTexts(t *testing.T) {
	p, _ := compileText(t, chainConfig)
	def, listed := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.3")
	chain := func(client netip.Addr, question string, names ...string) Decision {
		return p.DecideChain(client, p.Decide(client, question), names)
	}
	for _, c := range []struct {
		what         string
		d            Decision
		blocked, why string
	}{
		{"category", chain(def, "alias.example.", "v10.events.data.microsoft.com."),
			"phonehome: telemetry v10.events.data.microsoft.com (Windows 10-1809..11) (through CNAME v10.events.data.microsoft.com)",
			"sinkholed: telemetry endpoint v10.events.data.microsoft.com, documented for home/pro/education/enterprise on Windows 10-1809..11, reached through CNAME v10.events.data.microsoft.com"},
		{"list line", chain(listed, "alias.example.net.", "tracker.example.com."),
			"phonehome: telemetry tracker.example.com (through CNAME tracker.example.com)", ""},
		{"override", chain(listed, "www.example.com.", "ctldl.windowsupdate.com."),
			"phonehome: certificates ctldl.windowsupdate.com (Windows all) (through CNAME ctldl.windowsupdate.com)", ""},
		{"protected", chain(def, "ctldl.windowsupdate.com.", "v10.events.data.microsoft.com."), "",
			"logged, not sinkholed: the answer's CNAME chain reaches v10.events.data.microsoft.com (telemetry endpoint v10.events.data.microsoft.com, documented for home/pro/education/enterprise on Windows 10-1809..11, reached through CNAME v10.events.data.microsoft.com), but ctldl.windowsupdate.com is protected — "},
		{"alias", chain(def, "www.example.com.", "arc.msn.com."), "",
			"logged: spotlight endpoint arc.msn.com, documented for home/pro/education/enterprise on every Windows version (10-1709 to 11), reached through CNAME arc.msn.com"},
	} {
		if c.blocked != "" && c.d.BlockedText() != c.blocked {
			t.Errorf("%s: EDE text\n got %s\nwant %s", c.what, c.d.BlockedText(), c.blocked)
		}
		if c.why != "" && !strings.HasPrefix(c.d.Reason(), c.why) {
			t.Errorf("%s: reason\n got %s\nwant %s…", c.what, c.d.Reason(), c.why)
		}
		if !strings.Contains(c.d.BlockedText(), "CNAME") || !strings.Contains(c.d.Reason(), "CNAME") {
			t.Errorf("%s: %q, %q say nothing of the CNAME", c.what, c.d.BlockedText(), c.d.Reason())
		}
	}
}

// TestDecideChainNoAllocs: DecideChain runs on the query path for each
// cache miss of an alias and each new group; it does not allocate.
func TestDecideChainNoAllocs(t *testing.T) {
	p, _ := compileText(t, chainConfig)
	client := netip.MustParseAddr("10.0.0.3")
	q := p.Decide(client, "sls.update.microsoft.com.")
	chain := []string{"edge.example.org.", "v10.events.data.microsoft.com.", "tracker.example.com.", "foo.blob.core.windows.net."}
	if n := testing.AllocsPerRun(100, func() { p.DecideChain(client, q, chain) }); n != 0 {
		t.Errorf("DecideChain allocates %v times", n)
	}
}

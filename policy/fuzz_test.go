package policy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/endpoints"
)

// FuzzList feeds the block-list reader (hosts files, plain domains,
// AdGuard rules, patterns) arbitrary text: it must never panic, every
// warning names a line of the input, and every pattern it adds is one the
// matcher finds again.
//
//	go test -run '^$' -fuzz FuzzList -fuzztime 5m ./policy
func FuzzList(f *testing.F) {
	for _, s := range []string{
		"! AdGuard header\n[Adblock Plus 2.0]\n# hosts\n127.0.0.1 localhost\n0.0.0.0 A.example.com b.example.com # trailing\n::1 ip6-localhost\n",
		"plain.example.com\n||Sub.example.net^\n||bad rule^$third-party\n*.wild.example.org\nnot a name\n",
		"0.0.0.0 0.0.0.0\n\r\n\t\n||x.example^|\n@@||y.example^\n*\n*.*\n.\n..\n-a.example\n",
		"msnbot-*.search.msn.com\nimg-prod-cms-rt-microsoft-com*\n",
		strings.Repeat("not a name\n", maxListWarnings+3),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := bytes.Count(data, []byte("\n")) + 1
		var b matcherBuilder
		r := &Rule{Category: "ads"}
		n, warns := b.list("l.txt", bytes.Clone(data), r)
		for i, w := range warns {
			var line, more int
			if _, err := fmt.Sscanf(w, "l.txt: %d more lines skipped", &more); err == nil && i == len(warns)-1 && more > 0 {
				continue // the summary after the first maxListWarnings
			}
			if _, err := fmt.Sscanf(w, "l.txt:%d:", &line); err != nil || line < 1 || line > lines {
				t.Fatalf("warning %q is not at a line of the %d", w, lines)
			}
		}
		m := b.build()
		if n > 0 && m.Len() == 0 {
			t.Fatalf("%d patterns added, none kept", n)
		}
		// Every plain host the list names is found again.
		for _, line := range bytes.Split(bytes.ToLower(data), []byte("\n")) {
			name := bytes.TrimSpace(line)
			if endpoints.ValidHostname(name) {
				if got := m.Lookup(string(name)); got.Rule == nil {
					t.Fatalf("%q is in the list but not found", name)
				}
			}
		}
	})
}

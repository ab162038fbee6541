package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/internal/config"
)

// loadConfig reads a file holding only the policy's sections, checked and
// with its defaults, as the config file's loader does.
func loadConfig(path string) (*Config, *config.Source, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return parseConfig(path, b)
}

func parseConfig(path string, data []byte) (*Config, *config.Source, error) {
	c := &Config{}
	src, err := config.Decode(path, data, c)
	r := config.NewReport(src)
	r.Add(err)
	c.Check(r)
	if err := r.Err(); err != nil {
		return nil, src, err
	}
	c.SetDefaults()
	return c, src, nil
}

func TestCompileErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	os.WriteFile(path, []byte("policy:\n  groups:\n    - name: a\n      clients: [10.0.0.1]\n      lists: [{category: telemetry, file: missing.txt}]\n"), 0o644)
	cfg, src, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Compile(cfg, src)
	if err == nil || !strings.HasPrefix(err.Error(), path+":5:37: reading list: open "+filepath.Join(dir, "missing.txt")) {
		t.Errorf("missing list: %v", err)
	}
	os.WriteFile(path, []byte("catalog: {docs: [nodoc.md]}\n"), 0o644)
	cfg, src, _ = loadConfig(path)
	if _, _, err = Compile(cfg, src); err == nil || !strings.Contains(err.Error(), "nodoc.md") {
		t.Errorf("missing document: %v", err)
	}
	if _, _, err := loadConfig(filepath.Join(dir, "none.yaml")); err == nil || !strings.Contains(err.Error(), "none.yaml") {
		t.Errorf("missing config: %v", err)
	}
}

func TestListFormats(t *testing.T) {
	var b matcherBuilder
	r := &Rule{Category: "ads"}
	text := "! AdGuard header\n[Adblock Plus 2.0]\n# hosts\n127.0.0.1 localhost\n0.0.0.0 A.example.com b.example.com # trailing\n::1 ip6-localhost\n" +
		"plain.example.com\n||Sub.example.net^\n||bad rule^$third-party\n*.wild.example.org\nnot a name\n"
	n, warns := b.list("l.txt", []byte(text), r)
	m := b.build()
	if n != 6 || len(warns) != 2 || !strings.HasPrefix(warns[0], "l.txt:9: ") || !strings.HasPrefix(warns[1], "l.txt:11: ") {
		t.Errorf("added %d, warnings %q", n, warns)
	}
	for name, want := range map[string]string{
		"a.example.com": "a.example.com", "b.example.com": "b.example.com", "x.a.example.com": "",
		"plain.example.com": "plain.example.com", "sub.example.net": "sub.example.net", "x.sub.example.net": "*.sub.example.net",
		"x.wild.example.org": "*.wild.example.org", "localhost": "",
	} {
		got := m.Lookup(name)
		if (got.Rule == nil && want != "") || (got.Rule != nil && got.Pattern() != want) {
			t.Errorf("%s: %q, want %q", name, got.Pattern(), want)
		}
	}
}

package configfile

import (
	"slices"
	"testing"
)

// TestWatchConfig: watch_config is off by default, read at start only,
// and the files it watches are the config file and the documents, lists
// and upstream CA file it names, relative to the file.
func TestWatchConfig(t *testing.T) {
	parse := func(text string) *File {
		t.Helper()
		f, err := Parse("/etc/phonehome/p.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	off, on := parse(""), parse("watch_config: true\n")
	if off.WatchConfig || !on.WatchConfig || Default().WatchConfig {
		t.Errorf("watch_config: default %v, unset %v, set %v", Default().WatchConfig, off.WatchConfig, on.WatchConfig)
	}
	if got := RestartNeeded(off, on); !slices.Equal(got, []string{"watch_config"}) || !slices.Contains(StartOnly, "watch_config") {
		t.Errorf("turning watch_config on: restart needed for %v; StartOnly %v", got, StartOnly)
	}
	f := parse(`catalog: {docs: [docs/extra.md, /srv/more.md]}
upstream_tls_ca: ca.pem
policy:
  default:
    lists: [{category: ads, file: ads.txt}, {category: ads, patterns: [x.example]}]
  groups:
    - {name: kids, clients: [10.0.0.1], lists: [{category: ads, file: ads.txt}, {category: games, file: /srv/lists/games.txt}]}
`)
	want := []string{"/etc/phonehome/p.yaml", "/etc/phonehome/docs/extra.md", "/srv/more.md", "/etc/phonehome/ca.pem", "/etc/phonehome/ads.txt", "/srv/lists/games.txt"}
	if got := f.Files(); !slices.Equal(got, want) {
		t.Errorf("files:\n got  %v\n want %v", got, want)
	}
	if got := Default().Files(); got != nil {
		t.Errorf("files of the built-in defaults: %v", got)
	}
}

package configfile

import (
	"slices"
	"testing"
)

// TestSharedRestartNeeded: the shared database and the instance name are
// read at start; changing either is a restart.
func TestSharedRestartNeeded(t *testing.T) {
	t.Setenv("PHONEHOME_HISTORY_DSN", "")
	parse := func(text string) *File {
		t.Helper()
		f, err := Parse("/etc/phonehome/p.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	running := parse("history: {path: /a/h.db, dsn: 'postgres://ph@db/ph', instance: dns1}\n")
	for _, c := range []struct {
		next string
		want []string
	}{
		{"history: {path: /a/h.db, dsn: 'postgres://ph@db/ph', instance: dns1, flush: 1s}\n", nil},
		{"history: {path: /a/h.db, dsn: 'postgres://ph@db2/ph', instance: dns1}\n", []string{"history.dsn"}},
		{"history: {path: /a/h.db, instance: dns1}\n", []string{"history.dsn"}},
		{"history: {path: /a/h.db, dsn: env, instance: dns1}\n", []string{"history.dsn"}},
		{"history: {path: /a/h.db, dsn: 'postgres://ph@db/ph', instance: dns2}\n", []string{"history.instance"}},
		{"history: off\n", []string{"history"}},
	} {
		if got := RestartNeeded(running, parse(c.next)); !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, want %v", c.next, got, c.want)
		}
	}
	for _, k := range []string{"history.dsn", "history.instance"} {
		if !slices.Contains(StartOnly, k) {
			t.Errorf("StartOnly lacks %s", k)
		}
	}
}

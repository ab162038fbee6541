package history

import (
	"os"
	"strings"
	"testing"
)

// TestConfigShared: history.dsn and $PHONEHOME_HISTORY_DSN choose the
// shared database; the PG* variables alone do not; history: off has none.
func TestConfigShared(t *testing.T) {
	t.Setenv("PGHOST", "db.example")
	t.Setenv("PGDATABASE", "phonehome")
	for _, c := range []struct {
		text, env string
		want      string
		ok        bool
	}{
		{"", "", "", false}, // PG* variables alone: the file, as before
		{"history: {dsn: 'postgres://ph@db/ph'}\n", "", "postgres://ph@db/ph", true},
		{"history: {dsn: 'host=/run/postgresql dbname=ph'}\n", "", "host=/run/postgresql dbname=ph", true},
		{"history: {dsn: env}\n", "", "", true},
		{"", "postgres://ph@k8s/ph", "postgres://ph@k8s/ph", true},
		{"", " env\n", "", true},
		{"history: {dsn: 'postgres://ph@file/ph'}\n", "postgres://ph@k8s/ph", "postgres://ph@file/ph", true}, // the file wins
		{"history: off\n", "postgres://ph@k8s/ph", "", false},
	} {
		t.Setenv(EnvDSN, c.env)
		cfg, err := parse(t, c.text)
		if err != nil {
			t.Errorf("%q: %v", c.text, err)
			continue
		}
		if got, ok := cfg.Shared(); got != c.want || ok != c.ok {
			t.Errorf("%q with $%s=%q: Shared() = %q, %v; want %q, %v", c.text, EnvDSN, c.env, got, ok, c.want, c.ok)
		}
	}
}

func TestConfigInstance(t *testing.T) {
	cfg, err := parse(t, "history: {instance: dns-1.lan}\n")
	if err != nil || cfg.InstanceName() != "dns-1.lan" {
		t.Fatalf("%q, %v", cfg.InstanceName(), err)
	}
	host, _ := os.Hostname()
	if cfg, _ := parse(t, ""); host != "" && len(host) <= maxInstance && cfg.InstanceName() != host {
		t.Errorf("default instance %q, want the host name %q", cfg.InstanceName(), host)
	}
}

// TestConfigSharedErrors: a DSN pgx cannot read, from the file or the
// environment, and a bad instance name, each at its place; no message
// repeats the password.
func TestConfigSharedErrors(t *testing.T) {
	for _, c := range []struct{ text, env, want string }{
		{"history:\n  dsn: 'postgres://ph:s3cret@db:notaport/ph'\n", "",
			`p.yaml:2:8: history.dsn: not a PostgreSQL connection string (postgres://user@host/db, key=value pairs, or env): invalid port`},
		{"history:\n  dsn: 'host=db password=s3cret sslmode=sometimes'\n", "",
			`p.yaml:2:8: history.dsn: not a PostgreSQL connection string (postgres://user@host/db, key=value pairs, or env): failed to configure TLS (sslmode is invalid)`},
		{"history:\n  dsn: 'dbname'\n", "",
			`p.yaml:2:8: history.dsn: not a PostgreSQL connection string (postgres://user@host/db, key=value pairs, or env): failed to parse as keyword/value (invalid keyword/value)`},
		{"history:\n  flush: 5s\n", "postgres://ph:s3cret@db:notaport/ph",
			`p.yaml:1:1: history.dsn: $PHONEHOME_HISTORY_DSN: not a PostgreSQL connection string (postgres://user@host/db, key=value pairs, or env): invalid port`},
		{"history: {instance: dns 1}\n", "",
			`p.yaml:1:21: history.instance: "dns 1": want at most 64 letters, digits, dots, hyphens and underscores, such as dns1 or a host name`},
		{"history: {instance: " + strings.Repeat("a", 65) + "}\n", "",
			`p.yaml:1:21: history.instance: "` + strings.Repeat("a", 65) + `": want at most 64 letters, digits, dots, hyphens and underscores, such as dns1 or a host name`},
	} {
		t.Setenv(EnvDSN, c.env)
		_, err := parse(t, c.text)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q:\n got  %v\n want %s", c.text, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the message shows the password: %v", c.text, err)
		}
	}
}

package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// TestReloadEachKey reloads the config with each documented key changed and
// checks that the change took effect at once, or, for the keys read at start
// only, that the reload's answer and a metric name them.
func TestReloadEachKey(t *testing.T) {
	up, other := dnstest.Start(t), dnstest.Start(t)
	dir := t.TempDir()
	cfg, qlog := filepath.Join(dir, "phonehome.yaml"), filepath.Join(dir, "queries.jsonl")
	os.WriteFile(filepath.Join(dir, "list.txt"), []byte("listed.example.net\n"), 0o644)
	doc1909, _ := filepath.Abs("../../endpoints/docs/windows-endpoints-1909-non-enterprise-editions.md")
	// DNS over TLS and over HTTPS, with a certificate from a CA of the
	// test's, and another certificate for the tls_cert case.
	ca, err := dnstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	leaf := dnstest.Leaf{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
	for _, name := range []string{"cert", "new-cert"} {
		c, k, err := ca.Issue(leaf)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name+".pem"), c, 0o644)
		os.WriteFile(filepath.Join(dir, name+"-key.pem"), k, 0o600)
	}
	base := fmt.Sprintf("upstreams: [%q]\naccess: {rate_limit: 0}\nquerylog: {output: %q}\n", up.Addr(), qlog) +
		"tls_listen: [\"127.0.0.1:0\"]\nhttps_listen: [\"127.0.0.1:0\"]\ntls_cert: cert.pem\ntls_key: cert-key.pem\n"
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(base)
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-http", "127.0.0.1:0")
	reload := func(t *testing.T) []string {
		t.Helper()
		r, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+ph.http+"/api/reload", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		var answer struct {
			Restart []string `json:"restart_needed"`
		}
		if r.StatusCode != 200 || json.Unmarshal(b, &answer) != nil {
			t.Fatalf("reload: %d %s", r.StatusCode, b)
		}
		return answer.Restart
	}
	// ask returns the answer's rcode, then its first record's data and TTL.
	ask := func(t *testing.T, from, name string) (string, string, uint32) {
		t.Helper()
		c := &dns.Client{Timeout: 3 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}}
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		r, _, err := c.Exchange(q, ph.dns[0])
		if err != nil {
			t.Fatalf("%s from %s: %v", name, from, err)
		}
		if len(r.Answer) == 0 {
			return dns.RcodeToString[r.Rcode], "", 0
		}
		a := r.Answer[0].(*dns.A)
		return dns.RcodeToString[r.Rcode], a.A.String(), a.Hdr.Ttl
	}
	logged := func(t *testing.T, s string) bool {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if b, _ := os.ReadFile(qlog); strings.Contains(string(b), s) {
				return true
			}
		}
		return false
	}

	for _, c := range []struct {
		key, yaml string
		check     func(t *testing.T)
	}{
		{"access.allow", "access: {rate_limit: 0, allow: [127.0.0.1/32]}\n", func(t *testing.T) {
			if rc, _, _ := ask(t, "127.0.0.2", "allow.example."); rc != "REFUSED" {
				t.Errorf("a client outside the new access.allow: %s", rc)
			}
		}},
		{"sinkhole.mode", "sinkhole: {mode: nxdomain}\n", func(t *testing.T) {
			if rc, _, _ := ask(t, "127.0.0.1", "v10.events.data.microsoft.com."); rc != "NXDOMAIN" {
				t.Errorf("telemetry: %s", rc)
			}
		}},
		{"sinkhole.ttl, ipv4", "sinkhole: {mode: ip, ipv4: 10.9.9.9, ttl: 7m}\n", func(t *testing.T) {
			if _, a, ttl := ask(t, "127.0.0.1", "v10.events.data.microsoft.com."); a != "10.9.9.9" || ttl != 420 {
				t.Errorf("telemetry: %s, TTL %d", a, ttl)
			}
		}},
		{"cache.size", "cache: {size: 0}\n", func(t *testing.T) {
			ask(t, "127.0.0.1", "nocache.example.")
			ask(t, "127.0.0.1", "nocache.example.")
			if n := up.Seen("nocache.example"); n != 2 {
				t.Errorf("with the cache off the upstream saw %d, want 2", n)
			}
		}},
		// The cache's bounds hold for answers from the cache.
		{"cache.max_ttl", "cache: {max_ttl: 10s}\n", func(t *testing.T) {
			ask(t, "127.0.0.1", "maxttl.example.")
			if _, _, ttl := ask(t, "127.0.0.1", "maxttl.example."); ttl > 10 {
				t.Errorf("TTL %d over max_ttl", ttl)
			}
		}},
		{"cache.min_ttl", "cache: {min_ttl: 1h}\n", func(t *testing.T) {
			ask(t, "127.0.0.1", "minttl.example.")
			if _, _, ttl := ask(t, "127.0.0.1", "minttl.example."); ttl < 3500 {
				t.Errorf("TTL %d, want min_ttl 3600", ttl)
			}
		}},
		{"upstreams", fmt.Sprintf("upstreams: [%q]\n", other.Addr()), func(t *testing.T) {
			ask(t, "127.0.0.1", "moved.example.")
			if up.Seen("moved.example") != 0 || other.Seen("moved.example") != 1 {
				t.Errorf("old upstream %d, new %d", up.Seen("moved.example"), other.Seen("moved.example"))
			}
		}},
		// Only the 1909 non-Enterprise document: no Enterprise endpoints.
		{"catalog", "catalog: {builtin: false, docs: [" + doc1909 + "]}\n", func(t *testing.T) {
			if _, metrics := get(t, "http://"+ph.http+"/metrics"); strings.Contains(metrics, `edition="enterprise"`) ||
				!strings.Contains(metrics, `phonehome_catalog_endpoints{category="telemetry",edition="pro"}`) {
				t.Errorf("the catalog did not change:\n%s", metrics)
			}
		}},
		{"policy.default.actions", "policy:\n  default: {actions: {spotlight: sinkhole}}\n", func(t *testing.T) {
			if _, a, _ := ask(t, "127.0.0.1", "arc.msn.com."); a != "0.0.0.0" {
				t.Errorf("spotlight: %s", a)
			}
		}},
		{"policy.default.unlisted", "policy:\n  default: {unlisted: sinkhole}\n", func(t *testing.T) {
			if _, a, _ := ask(t, "127.0.0.1", "unlisted.example."); a != "0.0.0.0" {
				t.Errorf("unlisted: %s", a)
			}
		}},
		{"policy.default.overrides", "policy:\n  default: {overrides: {allow: [v10.events.data.microsoft.com]}}\n", func(t *testing.T) {
			if _, a, _ := ask(t, "127.0.0.1", "v10.events.data.microsoft.com."); a != dnstest.AnswerA {
				t.Errorf("overridden telemetry: %s", a)
			}
		}},
		{"policy.groups", "policy:\n  groups:\n    - {name: lab, clients: [127.0.0.5], actions: {telemetry: log}}\n", func(t *testing.T) {
			if _, a, _ := ask(t, "127.0.0.5", "v10.events.data.microsoft.com."); a != dnstest.AnswerA {
				t.Errorf("telemetry for the new group: %s", a)
			}
			if _, a, _ := ask(t, "127.0.0.1", "v10.events.data.microsoft.com."); a != "0.0.0.0" {
				t.Errorf("telemetry for the default group: %s", a)
			}
		}},
		{"policy lists", "policy:\n  default:\n    actions: {ads: sinkhole}\n    lists: [{category: ads, file: list.txt}]\n", func(t *testing.T) {
			if _, a, _ := ask(t, "127.0.0.1", "listed.example.net."); a != "0.0.0.0" {
				t.Errorf("a listed name: %s", a)
			}
		}},
		{"querylog.all_queries", fmt.Sprintf("querylog: {output: %q, all_queries: true}\n", qlog), func(t *testing.T) {
			ask(t, "127.0.0.1", "everything.example.")
			if !logged(t, "everything.example.") {
				t.Error("an unlisted name is not in the query log")
			}
		}},
		// A machine's name from the config, in the query log beside its
		// address; client_names: off takes every name away.
		{"policy.groups clients name", "policy:\n  groups:\n    - {name: lab, clients: [{client: 127.0.0.12, name: lab-pc}]}\n", func(t *testing.T) {
			ask(t, "127.0.0.12", "watson.telemetry.microsoft.com.")
			if !logged(t, `"client":"127.0.0.12","client_name":"lab-pc","group":"lab"`) {
				t.Error("the query log lacks the name")
			}
		}},
		{"client_names", "client_names: \"off\"\npolicy:\n  groups:\n    - {name: lab, clients: [{client: 127.0.0.13, name: lab-pc}]}\n", func(t *testing.T) {
			ask(t, "127.0.0.13", "watson.telemetry.microsoft.com.")
			if !logged(t, `"client":"127.0.0.13","group":"lab"`) {
				t.Error("with client_names: off the query log has a name, or no line")
			}
		}},
		// The certificate of the encrypted listeners, at the next
		// handshake.
		{"tls_cert, tls_key", "tls_cert: new-cert.pem\ntls_key: new-cert-key.pem\n", func(t *testing.T) {
			want, err := tls.X509KeyPair(mustRead(t, filepath.Join(dir, "new-cert.pem")), mustRead(t, filepath.Join(dir, "new-cert-key.pem")))
			if err != nil {
				t.Fatal(err)
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", ph.tls[0], &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := conn.ConnectionState().PeerCertificates[0]; !got.Equal(want.Leaf) {
				t.Errorf("DNS over TLS gave certificate %v, not the new one %v", got.SerialNumber, want.Leaf.SerialNumber)
			}
		}},
		// X-Forwarded-For from a trusted proxy names the client of a DNS
		// over HTTPS query.
		{"trusted_proxies", "trusted_proxies: [127.0.0.1]\n", func(t *testing.T) {
			q := new(dns.Msg)
			q.SetQuestion("watson.telemetry.microsoft.com.", dns.TypeA)
			b, _ := q.Pack()
			r, _ := http.NewRequest(http.MethodPost, "https://"+ph.https[0]+"/dns-query", bytes.NewReader(b))
			r.Header.Set("Content-Type", "application/dns-message")
			r.Header.Set("X-Forwarded-For", "192.168.77.7")
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
			resp, err := c.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || !logged(t, `"client":"192.168.77.7"`) {
				t.Errorf("HTTP %d; the query log lacks the proxied client", resp.StatusCode)
			}
		}},
		{"querylog.anonymize_clients", fmt.Sprintf("querylog: {output: %q, anonymize_clients: true}\n", qlog), func(t *testing.T) {
			ask(t, "127.0.0.6", "watson.telemetry.microsoft.com.")
			if !logged(t, `"client":"127.0.0.0","group":"default","name":"watson.telemetry.microsoft.com."`) {
				t.Error("the query log has the full address")
			}
			if _, clients := get(t, "http://"+ph.http+"/api/clients"); strings.Contains(clients, "127.0.0.6") {
				t.Errorf("/api/clients: %s", clients)
			}
		}},
	} {
		t.Run(c.key, func(t *testing.T) {
			text := base
			for _, line := range strings.SplitAfter(c.yaml, "\n") {
				// A key of the case replaces the base's.
				if k, _, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
					text = strings.Join(slices.DeleteFunc(strings.SplitAfter(text, "\n"), func(l string) bool { return strings.HasPrefix(l, k+":") }), "")
				}
			}
			write(text + c.yaml)
			if restart := reload(t); len(restart) != 0 {
				t.Errorf("restart needed for %v", restart)
			}
			c.check(t)
			write(base)
			reload(t)
		})
	}

	// The encrypted listeners are bound at start, as listen is.
	for _, key := range []string{"tls_listen", "https_listen"} {
		t.Run(key, func(t *testing.T) {
			write(strings.Replace(base, key+`: ["127.0.0.1:0"]`, key+`: ["127.0.0.1:0", "[::1]:0"]`, 1))
			if restart := reload(t); !slices.Equal(restart, []string{key}) {
				t.Errorf("restart needed for %v, want %s", restart, key)
			}
			write(base)
			reload(t)
		})
	}

	// The connection bounds are the listeners', made at start.
	for _, key := range []string{"access.max_connections", "access.max_connections_per_client"} {
		t.Run(key, func(t *testing.T) {
			write(strings.Replace(base, "access: {rate_limit: 0}", "access: {rate_limit: 0, "+strings.TrimPrefix(key, "access.")+": 20}", 1))
			if restart := reload(t); !slices.Equal(restart, []string{key}) {
				t.Errorf("restart needed for %v, want %s", restart, key)
			}
			write(base)
			reload(t)
		})
	}

	t.Run("start-only keys", func(t *testing.T) {
		// Listen and http from the file, not from flags, which win.
		conf := filepath.Join(dir, "start.yaml")
		os.WriteFile(conf, []byte(base+"listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\n"), 0o644)
		ph := startServe(t, "-config", conf)
		os.WriteFile(conf, []byte(strings.Replace(base, qlog, "stderr", 1)+"listen: [\"127.0.0.2:0\"]\nhttp: \"127.0.0.1:0\"\n"), 0o644)
		code, body := post(t, "", "http://"+ph.http+"/api/reload", "")
		if code != 200 || !strings.Contains(body, `"restart_needed":["listen","querylog.output"]`) {
			t.Errorf("reload: %d %s", code, body)
		}
		_, metrics := get(t, "http://"+ph.http+"/metrics")
		for _, want := range []string{`phonehome_config_restart_needed{key="listen"} 1`, `phonehome_config_restart_needed{key="querylog.output"} 1`,
			`phonehome_config_restart_needed{key="http"} 0`} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if !strings.Contains(ph.logs.String(), "take effect after a restart") || !strings.Contains(ph.logs.String(), "keys=listen,querylog.output") {
			t.Errorf("no log line names the keys:\n%s", ph.logs.String())
		}
	})
}

// mustRead reads a file the test wrote.
func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

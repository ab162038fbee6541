package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// TestAnonymizeEveryView: with anonymize_clients, no full client address
// appears in any view (the query log, the page's API, the metrics),
// whichever of them are on, for queries over UDP and TCP from several
// addresses; nor does any machine's name, from the config or the
// upstream's PTR records, which are never asked for.
func TestAnonymizeEveryView(t *testing.T) {
	up := dnstest.Start(t)
	clients := []string{"127.0.0.7", "127.0.0.8"}
	up.SetPTR("127.0.0.7", "study-pc.lan")
	up.SetPTR("127.0.0.8", "kids-laptop.lan")
	for _, output := range []string{"off", "file"} {
		t.Run("querylog "+output, func(t *testing.T) {
			dir := t.TempDir()
			qlog := filepath.Join(dir, "queries.jsonl")
			out := "off"
			if output == "file" {
				out = qlog
			}
			cfg := filepath.Join(dir, "phonehome.yaml")
			os.WriteFile(cfg, []byte("access: {rate_limit: 0}\nquerylog: {output: "+out+", anonymize_clients: true, all_queries: true}\n"+
				"policy:\n  groups: [{name: kids, clients: [{client: 127.0.0.8, name: kids-pc}, {client: 127.0.0.0, name: anon-net}]}]\n"), 0o644)
			ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
			for _, from := range clients {
				for _, network := range []string{"udp", "tcp"} {
					for _, name := range []string{"arc.msn.com.", "foo.windows.com.", "www.example.com."} {
						if err := ask(network, from, ph.dns[0], name); err != nil {
							t.Fatalf("%s %s from %s: %v", network, name, from, err)
						}
					}
				}
			}
			views := map[string]string{}
			for _, path := range []string{"/api/clients", "/api/events", "/api/undocumented", "/api/summary", "/metrics"} {
				// Wait for the last query's observers: the last client's
				// undocumented name counted twice (UDP and TCP).
				views[path] = getWhen(t, "http://"+ph.http+path, func(string) bool {
					_, u := get(t, "http://"+ph.http+"/api/undocumented")
					return strings.Contains(u, `"count":4`)
				})
			}
			if output == "file" {
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					if b, _ := os.ReadFile(qlog); strings.Count(string(b), "\n") >= 12 {
						break
					}
				}
				b, _ := os.ReadFile(qlog)
				views["query log"] = string(b)
			}
			for view, text := range views {
				for _, c := range append(clients, "kids-pc", "study-pc", "kids-laptop", "anon-net", `"client_name"`) {
					if strings.Contains(text, c) {
						t.Errorf("%s shows %s:\n%s", view, c, text)
					}
				}
			}
			for _, c := range clients {
				if rev, _ := dns.ReverseAddr(c); up.Seen(rev) != 0 {
					t.Errorf("%s was looked up", c)
				}
			}
			for _, view := range []string{"/api/clients", "/api/events", "/api/undocumented", "query log"} {
				if text, ok := views[view]; ok && !strings.Contains(text, "127.0.0.0") {
					t.Errorf("%s lacks the anonymised address:\n%s", view, text)
				}
			}
		})
	}
}

// ask sends one A query over network from the address from.
func ask(network, from, addr, name string) error {
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	if network == "tcp" {
		c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	} else {
		c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	_, _, err := c.Exchange(q, addr)
	return err
}

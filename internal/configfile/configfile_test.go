package configfile

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/policy"
)

func TestConfigDefaults(t *testing.T) {
	for _, text := range []string{"", "# nothing\n", "policy:\n"} {
		c, err := Parse("p.yaml", []byte(text))
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if strings.Join(c.Listen, " ") != "127.0.0.1:5300 [::1]:5300" || *c.Web.HTTP != "127.0.0.1:8053" || *c.Access.RateLimit != 200 ||
			c.Sinkhole.Mode != "null_ip" || c.Sinkhole.TTL != time.Minute || *c.Cache.Size != 20000 || c.Cache.MaxTTL != 24*time.Hour ||
			!*c.Policy.Catalog.Builtin || len(c.Access.Allow) != 8 || c.QueryLog.Output != "stdout" {
			t.Errorf("%q: defaults %+v", text, c)
		}
		d := c.Policy.Rules.Default
		if *d.Edition != endpoints.AllEditions || *d.Unlisted != policy.Allow || d.Actions["telemetry"] != policy.Sinkhole || d.Actions["*"] != policy.Log {
			t.Errorf("%q: default group %+v", text, d)
		}
	}
	c, err := Parse("p.yaml", []byte("http: \"\"\nsinkhole: {mode: ip, ipv4: 10.0.0.1, ttl: 5m}\ncache: {size: 0}\naccess: {rate_limit: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if *c.Web.HTTP != "" || c.Sinkhole.IPv4.String() != "10.0.0.1" || c.Sinkhole.TTL != 5*time.Minute || *c.Cache.Size != 0 || *c.Access.RateLimit != 0 {
		t.Errorf("explicit zero values lost: %+v", c)
	}
}

// TestConfigErrors: every error path, with the exact message a user sees.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"lisen: [\":53\"]\n", `p.yaml:1:1: unknown key "lisen" in the top level (valid: access, cache, canary, catalog, client_names, cname, history, http, http_hosts, http_token, https_listen, listen, policy, querylog, sinkhole, tls_cert, tls_key, tls_listen, trusted_proxies, upstream_tls_ca, upstreams, watch_config)`},
		{"cache:\n  sise: 10\n", `p.yaml:2:3: unknown key "sise" in cache (valid: max_ttl, min_ttl, size)`},
		{"cache: {size: lots}\n", "p.yaml:1:15: cache.size: cannot unmarshal !!str `lots` into int"},
		{"cache: {max_ttl: forever}\n", "p.yaml:1:18: cache.max_ttl: cannot unmarshal !!str `forever` into time.Duration"},
		{"cache: {min_ttl: 2h, max_ttl: 1h}\n", "p.yaml:1:8: cache min_ttl is more than max_ttl"},
		{"sinkhole: {mode: blackhole}\n", `p.yaml:1:18: sinkhole.mode: unknown sinkhole mode "blackhole" (valid: null_ip, nxdomain, nodata, refused, ip)`},
		{"sinkhole: {mode: ip}\n", "p.yaml:1:11: sinkhole mode ip needs ipv4:, ipv6: or both"},
		{"sinkhole: {mode: ip, ipv4: 1.2.3}\n", `p.yaml:1:28: sinkhole.ipv4: ParseAddr("1.2.3"): IPv4 address too short`},
		{"access: {allow: [10.0.0.0/33]}\n", `p.yaml:1:18: access.allow: bad client network "10.0.0.0/33": want an address or CIDR such as 192.168.1.0/24`},
		{"listen: {a: b}\n", "p.yaml:1:9: listen: want a list"},
		{"policy:\n  default: {actions: {telemetri: sinkhole}}\n", `p.yaml:2:23: unknown category "telemetri" (valid: ` + endpoints.CategoryNames() + `, or a category of this group's lists, or "*")`},
		{"policy:\n  default: {actions: {telemetry: block}}\n", `p.yaml:2:34: policy.default.actions.telemetry: unknown action "block" (valid: allow, log, sinkhole)`},
		{"policy:\n  default: {edition: server}\n", `p.yaml:2:22: policy.default.edition: unknown edition "server" (valid: home (or family), pro, education, enterprise, all)`},
		{"policy:\n  default: {unlisted: deny}\n", `p.yaml:2:23: policy.default.unlisted: unknown action "deny" (valid: allow, log, sinkhole)`},
		{"policy:\n  default: {clients: [10.0.0.1]}\n", "p.yaml:2:13: policy.default takes no clients: it is for every client no group names"},
		{"policy:\n  groups:\n    - {name: a, clients: [10.0.0.1]}\n    - {name: a, clients: [10.0.0.2]}\n", `p.yaml:4:8: duplicate group name "a" (first at line 3)`},
		{"policy:\n  groups:\n    - {clients: [10.0.0.1]}\n", "p.yaml:3:7: group without a name"},
		{"policy:\n  groups:\n    - {name: a}\n", `p.yaml:3:7: group "a" has no clients`},
		{"policy:\n  groups:\n    - {name: a, clients: [10.0.0.1/8]}\n", `p.yaml:3:27: policy.groups[0].clients: bad client network "10.0.0.1/8": host bits are set; did you mean 10.0.0.0/8?`},
		{"policy:\n  groups:\n    - {name: a, clients: [pc.lan]}\n", `p.yaml:3:27: policy.groups[0].clients: bad client address "pc.lan": want an address or CIDR such as 192.168.1.0/24`},
		{"policy:\n  groups:\n    - {name: a, clients: [10.0.0.1], overrides: {block: [x.com]}}\n", `p.yaml:3:50: policy.groups[0].overrides: unknown action "block" (valid: allow, log, sinkhole)`},
		{"policy:\n  groups:\n    - {name: a, clients: [10.0.0.1], overrides: {sinkhole: [\"bad name\"]}}\n", `p.yaml:3:61: policy.groups[0].overrides.sinkhole: destination "bad name": not a host name: ' ' is not allowed`},
		{"policy:\n  groups:\n    - {name: a, clients: [10.0.0.1], lists: [{category: x}]}\n", "p.yaml:3:46: a list takes either file: or patterns:"},
		{"policy:\n  groups:\n    - {name: a, clients: [10.0.0.1], colour: red}\n", `p.yaml:3:38: unknown key "colour" in policy.groups[0] (valid: actions, clients, edition, lists, name, overrides, unlisted, windows)`},
		{"policy: [a, b]\n", "p.yaml:1:9: policy: want a mapping of keys to values"},
		{"policy:\n  default: {windows: 10-1910}\n", `p.yaml:2:22: policy.default.windows: unknown Windows version "10-1910" (valid: 10-1709, 10-1803, 10-1809, 10-1903, 10-1909, 10-2004, 10-20H2, 10-21H1, 10-21H2, 11, a range such as 10-1909..11, or all)`},
		{"policy:\n  default: {windows: [11, 10-22h2]}\n", `p.yaml:2:27: policy.default.windows: unknown Windows version "10-22h2" (valid: 10-1709, 10-1803, 10-1809, 10-1903, 10-1909, 10-2004, 10-20H2, 10-21H1, 10-21H2, 11, a range such as 10-1909..11, or all); Microsoft published no endpoint document for 22H2, so choose 10-21H2, the newest Windows 10 one`},
		{"policy:\n  default: {windows: []}\n", `p.yaml:2:22: policy.default.windows: no Windows version given (valid: 10-1709, 10-1803, 10-1809, 10-1903, 10-1909, 10-2004, 10-20H2, 10-21H1, 10-21H2, 11, a range such as 10-1909..11, or all)`},
		{"policy:\n  default: {windows: 11..10-1909}\n", `p.yaml:2:22: policy.default.windows: version range "11..10-1909" runs backwards: 10-1909 is older than 11`},
		{"listen: [a\n", "p.yaml:1: not valid YAML: did not find expected ',' or ']'"},
		{"access: {allow: [127.0.0.1/32, ::1/128]}\n", `p.yaml:1: not valid YAML: did not find expected node content; quote an IPv6 address in a [ ] list: "::1/128"`},
		{"listen: [\":53\"]\naccess:\n  allow: [127.0.0.1/32, ::1/128]\n", `p.yaml:3: not valid YAML: did not find expected node content; quote an IPv6 address in a [ ] list: "::1/128"`},
		{"listen: [[::1]:53]\n", `p.yaml:1: not valid YAML: did not find expected node content; quote an IPv6 address in a [ ] list: "[::1]:53"`},
		{"listen: [\":53\", \"localhost:53\"]\n", `p.yaml:1:17: listen: "localhost:53": "localhost" is not an IP address`},
		{"upstreams:\n  - 192.168.1.1\n", `p.yaml:2:5: upstreams: upstream "192.168.1.1" is not host:port (like 127.0.0.1:53 or [::1]:53)`},
		{"upstreams: [\"quic://1.1.1.1:853\"]\n", `p.yaml:1:13: upstreams: "quic://1.1.1.1:853": unknown scheme "quic" (valid: host:port, tcp://host:port, tls://host:port#servername, https://host/path#address)`},
		{"upstreams: [\"http://1.1.1.1/dns-query\"]\n", `p.yaml:1:13: upstreams: "http://1.1.1.1/dns-query": DNS over plain HTTP is not supported: write https://`},
		{"upstreams:\n  - https://dns.quad9.net/dns-query\n", `p.yaml:2:5: upstreams: https://dns.quad9.net/dns-query: the host dns.quad9.net is a name, and no other upstream can look it up; write its IP address after '#' (https://dns.quad9.net/dns-query#ADDRESS), or add an upstream that needs no lookup (host:port, tcp://, tls://, or https:// with #address) before or after it`},
		{"http: 8053\n", `p.yaml:1:1: http: "8053" is not host:port (like 127.0.0.1:53 or [::1]:53)`},
		{"cache: {size: 1, size: 2}\n", `p.yaml:1:18: cache: key "size" given twice`},
	} {
		_, err := Parse("p.yaml", []byte(c.text))
		var ce config.Errors
		if !errors.As(err, &ce) || err.Error() != c.want {
			t.Errorf("%q:\n got %v\nwant %s", c.text, err, c.want)
		}
	}
}

// TestConfigErrorsAll: one file with several mistakes reports each.
func TestConfigErrorsAll(t *testing.T) {
	_, err := Parse("p.yaml", []byte("lisen: x\ncache: {size: big}\npolicy:\n  default: {edition: xp}\n"))
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Errorf("%d errors reported, want 3:\n%v", n, err)
	}
	// A group without clients is reported beside an earlier error; one whose
	// only client is bad is reported once, at the client.
	_, err = Parse("p.yaml", []byte("lisen: x\npolicy:\n  groups:\n    - {name: a, clients: []}\n    - {name: b, clients: [10.0.0.300]}\n"))
	want := "p.yaml:1:1: unknown key \"lisen\" in the top level (valid: access, cache, canary, catalog, client_names, cname, history, http, http_hosts, http_token, https_listen, listen, policy, querylog, sinkhole, tls_cert, tls_key, tls_listen, trusted_proxies, upstream_tls_ca, upstreams, watch_config)\n" +
		"p.yaml:4:7: group \"a\" has no clients\n" +
		"p.yaml:5:27: policy.groups[1].clients: bad client address \"10.0.0.300\": want an address or CIDR such as 192.168.1.0/24"
	if err == nil || !sameLines(err.Error(), want) {
		t.Errorf("errors:\n%v\nwant (in any order):\n%s", err, want)
	}
}

func sameLines(a, b string) bool {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

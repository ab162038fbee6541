package web

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonehome/phonehome/internal/config"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// newTestAPI runs a resolver that takes changes from 192.168.1.0/24 and
// serves it with c.
func newTestAPI(t *testing.T, c Config) (*API, *prometheus.Registry) {
	t.Helper()
	cfg := &resolver.Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"127.0.0.1:9"},
		Access: resolver.AccessConfig{Allow: []policy.Prefix{{Prefix: netip.MustParsePrefix("192.168.1.0/24")}}}}
	s, err := resolver.New(cfg, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	return NewAPI(s, NewActivity(10, 10, false), reg, c, nil), reg
}

// TestAPIGuard: state-changing calls need an address in access.allow and,
// when http_token is set, the token.
func TestAPIGuard(t *testing.T) {
	a, _ := newTestAPI(t, Config{HTTPToken: "s3cret"})
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	for _, c := range []struct {
		remote, auth string
		want         int
	}{
		{"192.168.1.5:4000", "Bearer s3cret", 200},
		{"192.168.1.5:4000", "", 401},
		{"192.168.1.5:4000", "Bearer wrong", 401},
		{"192.168.1.5:4000", "s3cret", 401}, // not "Bearer TOKEN"
		{"10.0.0.5:4000", "Bearer s3cret", 403},
		{"[::ffff:192.168.1.5]:4000", "Bearer s3cret", 200},
	} {
		r := httptest.NewRequest("POST", "/api/pause", strings.NewReader("{}"))
		r.RemoteAddr = c.remote
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		a.guard(ok)(w, r)
		if w.Code != c.want {
			t.Errorf("%s %q: %d, want %d", c.remote, c.auth, w.Code, c.want)
		}
	}
	// Bad pause bodies.
	for _, body := range []string{"nope", `{"duration":"forever"}`, `{"duration":"48h"}`} {
		w := httptest.NewRecorder()
		a.pause(w, httptest.NewRequest("POST", "/api/pause", strings.NewReader(body)))
		if w.Code != 400 {
			t.Errorf("%s: %d", body, w.Code)
		}
	}
}

// TestHTTPRules sends each kind of request the HTTP side must refuse, and
// the ones it must take, through the whole handler, and checks the status,
// the headers every answer has, and the refusals counted.
func TestHTTPRules(t *testing.T) {
	a, _ := newTestAPI(t, Config{HTTPToken: "s3cret", HTTPHosts: []string{"phonehome.lan", "PI.Home.Arpa."}})
	h := a.Handler()
	const (
		json  = "application/json"
		token = "Bearer s3cret"
		lan   = "192.168.1.5:4000" // in access.allow
		pause = `{"duration":"15m"}`
	)
	type hdr = map[string]string
	cases := []struct {
		name, method, url string
		header            hdr
		body, remote      string
		want              int
		reason            string // counted in phonehome_http_refused_total, "" for none
	}{
		// The two requests of issue 11: a web page pausing the blocking
		// with a simple request, and a rebound name reading the API.
		{"simple cross-site request", "POST", "http://127.0.0.1:8053/api/pause",
			hdr{"Content-Type": "text/plain", "Origin": "http://evil.example", "Authorization": token}, pause, lan, 403, refusedOrigin},
		{"simple request without Origin", "POST", "http://127.0.0.1:8053/api/pause",
			hdr{"Content-Type": "text/plain", "Authorization": token}, pause, lan, 415, refusedContentType},
		{"rebound name reads clients", "GET", "http://attacker.example:8053/api/clients", nil, "", lan, 421, refusedHost},
		{"rebound name reads events", "GET", "http://attacker.example:8053/api/events", nil, "", lan, 421, refusedHost},
		{"rebound name pauses from its own origin", "POST", "http://attacker.example:8053/api/pause",
			hdr{"Content-Type": json, "Origin": "http://attacker.example:8053", "Sec-Fetch-Site": "same-origin", "Authorization": token}, pause, lan, 421, refusedHost},
		{"foreign Host for metrics", "GET", "http://attacker.example:8053/metrics", nil, "", lan, 421, refusedHost},
		{"foreign Host for healthz", "GET", "http://attacker.example/healthz", nil, "", lan, 421, refusedHost},
		{"foreign Host for readyz", "GET", "http://attacker.example/readyz", nil, "", lan, 421, refusedHost},
		{"foreign Host for the page", "GET", "http://attacker.example/", nil, "", lan, 421, refusedHost},
		{"a name under a listed one", "GET", "http://evil.phonehome.lan:8053/healthz", nil, "", lan, 421, refusedHost},
		{"no Host", "GET", "http:///healthz", nil, "", lan, 421, refusedHost},

		// Hosts that are taken.
		{"IPv4 literal", "GET", "http://127.0.0.1:8053/healthz", nil, "", lan, 200, ""},
		{"IPv4 literal without port", "GET", "http://192.168.1.2/healthz", nil, "", lan, 200, ""},
		{"IPv6 literal", "GET", "http://[::1]:8053/healthz", nil, "", lan, 200, ""},
		{"IPv6 literal without port", "GET", "http://[fd00::53]/healthz", nil, "", lan, 200, ""},
		{"localhost", "GET", "http://localhost:8053/metrics", nil, "", lan, 200, ""},
		{"LOCALHOST.", "GET", "http://LOCALHOST./healthz", nil, "", lan, 200, ""},
		{"a name in http_hosts", "GET", "http://phonehome.lan:8053/api/clients", nil, "", lan, 200, ""},
		{"a name in http_hosts, spelled otherwise", "GET", "http://PhoneHome.LAN.:8053/", nil, "", lan, 200, ""},
		{"a name in http_hosts with a final dot", "GET", "http://pi.home.arpa/healthz", nil, "", lan, 200, ""},

		// A CORS preflight and other methods.
		{"preflight", "OPTIONS", "http://127.0.0.1:8053/api/pause",
			hdr{"Origin": "http://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, authorization"}, "", lan, 405, refusedMethod},
		{"PUT", "PUT", "http://127.0.0.1:8053/api/pause", hdr{"Content-Type": json, "Authorization": token}, pause, lan, 405, refusedMethod},
		{"GET of a POST route", "GET", "http://127.0.0.1:8053/api/pause", nil, "", lan, 405, refusedMethod},
		{"POST of a GET route", "POST", "http://127.0.0.1:8053/api/summary", hdr{"Content-Type": json}, "", lan, 405, refusedMethod},

		// Content-Type.
		{"POST without Content-Type", "POST", "http://127.0.0.1:8053/api/resume", hdr{"Authorization": token}, "", lan, 415, refusedContentType},
		{"POST as a form", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": "application/x-www-form-urlencoded", "Authorization": token}, "a=b", lan, 415, refusedContentType},
		{"POST as multipart", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": "multipart/form-data; boundary=x", "Authorization": token}, "", lan, 415, refusedContentType},
		{"POST JSON with a charset", "POST", "http://127.0.0.1:8053/api/pause",
			hdr{"Content-Type": "Application/JSON; charset=utf-8", "Authorization": token}, pause, lan, 200, ""},

		// Origin and Sec-Fetch-Site.
		{"Origin is the own Host", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "http://127.0.0.1:8053", "Sec-Fetch-Site": "same-origin", "Authorization": token}, "", lan, 200, ""},
		{"Origin is the own name", "POST", "http://phonehome.lan:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "http://phonehome.lan:8053", "Authorization": token}, "", lan, 200, ""},
		{"Origin is the own IPv6 Host", "POST", "http://[::1]:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "http://[::1]:8053", "Authorization": token}, "", lan, 200, ""},
		{"Origin on another port", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "http://127.0.0.1:3000", "Authorization": token}, "", lan, 403, refusedOrigin},
		{"Origin of a listed name, Host an address", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "http://phonehome.lan:8053", "Authorization": token}, "", lan, 403, refusedOrigin},
		{"Origin null", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "null", "Authorization": token}, "", lan, 403, refusedOrigin},
		{"Origin another origin, Sec-Fetch-Site same-origin", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin", "Authorization": token}, "", lan, 403, refusedOrigin},
		{"Sec-Fetch-Site cross-site", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Sec-Fetch-Site": "cross-site", "Authorization": token}, "", lan, 403, refusedOrigin},
		{"Sec-Fetch-Site same-site from another origin", "POST", "http://phonehome.lan:8053/api/resume",
			hdr{"Content-Type": json, "Origin": "http://printer.lan", "Sec-Fetch-Site": "same-site", "Authorization": token}, "", lan, 403, refusedOrigin},
		{"Sec-Fetch-Site none", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Sec-Fetch-Site": "none", "Authorization": token}, "", lan, 200, ""},
		{"no Origin: a program", "POST", "http://127.0.0.1:8053/api/resume", hdr{"Content-Type": json, "Authorization": token}, "", lan, 200, ""},

		// Who may change things.
		{"no token", "POST", "http://127.0.0.1:8053/api/resume", hdr{"Content-Type": json}, "", lan, 401, refusedToken},
		{"wrong token", "POST", "http://127.0.0.1:8053/api/resume", hdr{"Content-Type": json, "Authorization": "Bearer s3cre"}, "", lan, 401, refusedToken},
		{"outside access.allow", "POST", "http://127.0.0.1:8053/api/resume", hdr{"Content-Type": json, "Authorization": token}, "", "10.0.0.5:4000", 403, refusedAccess},

		// Bounded bodies: declared, and read.
		{"body over 64 KiB", "POST", "http://127.0.0.1:8053/api/resume",
			hdr{"Content-Type": json, "Authorization": token}, strings.Repeat(" ", maxBody+1), lan, 413, refusedSize},
		{"body over 64 KiB, chunked", "POST", "http://127.0.0.1:8053/api/pause",
			hdr{"Content-Type": json, "Authorization": token, "chunked": "yes"}, strings.Repeat(" ", maxBody+1) + pause, lan, 413, refusedSize},
	}
	counts := map[string]int{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, c.url, strings.NewReader(c.body))
			r.RemoteAddr = c.remote
			for k, v := range c.header {
				if k == "chunked" {
					r.ContentLength = -1
					r.Body = io.NopCloser(strings.NewReader(c.body))
					continue
				}
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Errorf("%d, want %d: %s", w.Code, c.want, w.Body)
			}
			checkHeaders(t, w.Result().Header)
		})
		if c.reason != "" {
			counts[c.reason]++
		}
	}

	// Every refusal was counted under its reason, and every reason is
	// there from the start.
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://127.0.0.1:8053/metrics", nil))
	for _, reason := range refusedReasons {
		want := fmt.Sprintf("phonehome_http_refused_total{reason=%q} %d\n", reason, counts[reason])
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if n := strings.Count(w.Body.String(), "phonehome_http_refused_total{"); n != len(refusedReasons) {
		t.Errorf("phonehome_http_refused_total has %d series, want %d", n, len(refusedReasons))
	}
}

// checkHeaders: every answer, refusals included, has these headers and
// none that opens it to other origins.
func checkHeaders(t *testing.T, h http.Header) {
	t.Helper()
	for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("answer has %s: %s", k, h.Get(k))
		}
	}
}

// TestHTTPHostsReload: a reload (Apply) changes the names taken.
func TestHTTPHostsReload(t *testing.T) {
	a, _ := newTestAPI(t, Config{HTTPHosts: []string{"phonehome.lan"}})
	h := a.Handler()
	get := func(url string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", url, nil))
		return w.Code
	}
	if got := get("http://phonehome.lan:8053/healthz"); got != 200 {
		t.Errorf("phonehome.lan before the reload: %d", got)
	}
	a.Apply(Config{HTTPHosts: []string{"dns.lan"}})
	if got := get("http://phonehome.lan:8053/healthz"); got != 421 {
		t.Errorf("phonehome.lan after the reload dropped it: %d", got)
	}
	if got := get("http://dns.lan:8053/healthz"); got != 200 {
		t.Errorf("dns.lan after the reload: %d", got)
	}
}

// TestPageCSP: the page may run only its own inline script and style,
// fetch only from its own origin, and be framed by no one.
func TestPageCSP(t *testing.T) {
	a, _ := newTestAPI(t, Config{})
	w := httptest.NewRecorder()
	a.Handler().ServeHTTP(w, httptest.NewRequest("GET", "http://127.0.0.1:8053/", nil))
	if w.Code != 200 || !strings.Contains(w.Body.String(), "<title>phonehome</title>") {
		t.Fatalf("the page: %d", w.Code)
	}
	checkHeaders(t, w.Result().Header)
	csp := w.Header().Get("Content-Security-Policy")
	hash := func(tag string) string {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindSubmatch(page)
		if m == nil {
			t.Fatalf("index.html has no <%s>", tag)
		}
		sum := sha256.Sum256(m[1])
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	directives := map[string]string{}
	for _, d := range strings.Split(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{
		"default-src":     "'none'",
		"script-src":      hash("script"),
		"style-src":       hash("style"),
		"connect-src":     "'self'",
		"base-uri":        "'none'",
		"form-action":     "'none'",
		"frame-ancestors": "'none'",
	} {
		if directives[name] != want {
			t.Errorf("%s: %q, want %q (CSP %q)", name, directives[name], want, csp)
		}
	}
	if len(directives) != 7 {
		t.Errorf("CSP has other directives: %q", csp)
	}
}

// TestConfigHTTPHosts: http_hosts takes names, and says why it takes
// nothing else.
func TestConfigHTTPHosts(t *testing.T) {
	for _, c := range []struct {
		host, err string
	}{
		{"phonehome.lan", ""},
		{"PhoneHome.LAN.", ""},
		{"phonehome", ""},
		{"pi-hole.home.arpa", ""},
		{"my_box.lan", ""},
		{"", "is not a host name"},
		{"phonehome.lan:8053", `has a port; list the name only ("phonehome.lan")`},
		{"192.168.1.2", "is an IP address; IP addresses are always allowed"},
		{"[::1]", "is an IP address"},
		{"fd00::53", "is an IP address"},
		{"*.lan", "is not a host name"},
		{"-x.lan", "is not a host name"},
		{"a..lan", "is not a host name"},
		{"http://phonehome.lan", "is not a host name"},
		{strings.Repeat("a", 64) + ".lan", "is not a host name"},
	} {
		r := config.NewReport(nil)
		(&Config{HTTPHosts: []string{"ok.lan", c.host}}).Check(r)
		err := r.Err()
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.host, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), "http_hosts: ") || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: %v, want %q", c.host, err, c.err)
		}
	}
}

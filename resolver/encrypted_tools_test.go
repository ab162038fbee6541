package resolver

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// run runs a client program on loopback, bounded in time, and returns
// what it printed.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// TestKdig asks the encrypted listeners with Knot's kdig (Debian's
// knot-dnsutils): DNS over TLS and DNS over HTTPS (POST and GET), the
// certificate checked against the test's CA; a client outside
// access.allow gets nothing; padding; and kdig reads the DDR answer.
func TestKdig(t *testing.T) {
	kdig := daemonTool(t, "kdig", "knot-dnsutils")
	up := dnstest.Start(t)
	s := startEncrypted(t, Options{}, loopbackLeaf, "access: {allow: [127.0.0.1/32], rate_limit: 0}\n", up)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, s.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	dotHost, dotPort, _ := net.SplitHostPort(s.dot)
	dohHost, dohPort, _ := net.SplitHostPort(s.doh)
	tlsArgs := []string{"+tls-ca=" + ca, "+tls-hostname=phonehome.test", "+time=5", "+retry=0"}
	dot := append([]string{"@" + dotHost, "-p", dotPort}, tlsArgs...)
	doh := append([]string{"@" + dohHost, "-p", dohPort, "+https=/dns-query"}, tlsArgs...)
	for _, c := range []struct {
		what string
		args []string
		want []string
	}{
		{"DoT, allowed", append(dot, "www.example.com", "A"), []string{"NOERROR", dnstest.AnswerA}},
		{"DoT, sinkholed", append(dot, "v10.events.data.microsoft.com", "A"), []string{"0.0.0.0", "EDE: 15"}},
		{"DoH POST, allowed", append(doh, "www.example.com", "A"), []string{"NOERROR", dnstest.AnswerA, "HTTP/2-POST"}},
		{"DoH GET, sinkholed", append(doh, "+https-get", "v10.events.data.microsoft.com", "A"), []string{"0.0.0.0", "EDE: 15", "HTTP/2-GET"}},
		{"DoT, padded", append(dot, "+padding", "www.example.com", "A"), []string{"PADDING", "Received 468 B"}},
		{"DoH, padded", append(doh, "+padding", "www.example.com", "A"), []string{"PADDING", "Received 468 B"}},
	} {
		out, err := run(t, kdig, c.args...)
		if err != nil {
			t.Errorf("%s: kdig %s: %v\n%s", c.what, strings.Join(c.args, " "), err, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: kdig's output lacks %q:\n%s", c.what, w, out)
			}
		}
	}

	// Outside access.allow: the connections are closed before the
	// handshake, so kdig gets no answer at all.
	for what, args := range map[string][]string{"DoT": dot, "DoH": doh} {
		args = append([]string{"-b", "127.0.0.2"}, append(args, "www.example.com", "A")...)
		if out, _ := run(t, kdig, args...); strings.Contains(out, dnstest.AnswerA) || strings.Contains(out, "NOERROR") {
			t.Errorf("%s from outside access.allow: answered\n%s", what, out)
		}
	}

	// DDR, read by another parser of SVCB than miekg/dns's (kdig 3.2
	// knows dohpath by its number, key7).
	host, port, _ := net.SplitHostPort(s.addr)
	out, err := run(t, kdig, "@"+host, "-p", port, "+time=5", "+retry=0", "_dns.resolver.arpa", "SVCB")
	if err != nil {
		t.Fatalf("kdig: %v\n%s", err, out)
	}
	for _, w := range []string{`1 phonehome.test. alpn=h2 port=` + dohPort + ` ipv4hint=127.0.0.1 dohpath=/dns-query{?dns}`,
		`2 phonehome.test. alpn=dot port=` + dotPort + ` ipv4hint=127.0.0.1`} {
		if !strings.Contains(strings.NewReplacer(`"`, "", "key7=", "dohpath=").Replace(out), w) {
			t.Errorf("kdig's DDR answer lacks %q:\n%s", w, out)
		}
	}
}

// TestCurlDoH resolves names with curl's --doh-url through phonehome's DNS
// over HTTPS, the certificate checked against the test's CA: an allowed
// name leads curl to a web server on loopback, a sinkholed one (nxdomain
// here) to nothing.
func TestCurlDoH(t *testing.T) {
	curl := daemonTool(t, "curl", "curl")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("reached through phonehome\n")) }))
	defer web.Close()
	_, webPort, _ := net.SplitHostPort(web.Listener.Addr().String())
	up := dnstest.Start(t)
	// allowed.test is 127.0.0.1, where the web server is; no IPv6.
	up.SetHandler(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 1)}}
		}
		w.WriteMsg(m)
	})
	s := startEncrypted(t, Options{}, loopbackLeaf, "sinkhole: {mode: nxdomain}\naccess: {rate_limit: 0}\n", up)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, s.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--silent", "--show-error", "--max-time", "10", "--noproxy", "*", "--cacert", ca, "--doh-url", "https://" + s.doh + "/dns-query"}
	out, err := run(t, curl, append(args, "http://allowed.test:"+webPort+"/")...)
	if err != nil || !strings.Contains(out, "reached through phonehome") {
		t.Errorf("curl, an allowed name: %v\n%s", err, out)
	}
	out, err = run(t, curl, append(args, "http://v10.events.data.microsoft.com:"+webPort+"/")...)
	if err == nil || !strings.Contains(out, "resolve") {
		t.Errorf("curl, a sinkholed name: %v\n%s", err, out)
	}
	if up.Seen("allowed.test") == 0 || up.Seen("v10.events.data.microsoft.com") != 0 {
		t.Errorf("upstream saw allowed.test %d times, the sinkholed name %d", up.Seen("allowed.test"), up.Seen("v10.events.data.microsoft.com"))
	}
}

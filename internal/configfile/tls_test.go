package configfile

import (
	"slices"
	"strings"
	"testing"
)

// TestEncryptedListenerKeys: the listeners' addresses are read at start
// only; their certificate, key and trusted proxies on every reload, and the
// certificate and key are watched with watch_config.
func TestEncryptedListenerKeys(t *testing.T) {
	parse := func(text string) *File {
		t.Helper()
		f, err := Parse("/etc/phonehome/p.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	base := "tls_listen: [192.168.1.2]\nhttps_listen: [\"192.168.1.2:8443\"]\ntls_cert: tls/cert.pem\ntls_key: /etc/ssl/private/phonehome.key\n"
	running := parse(base)
	if !slices.Equal(running.TLSListen, []string{"192.168.1.2:853"}) || !slices.Equal(running.HTTPSListen, []string{"192.168.1.2:8443"}) {
		t.Errorf("listeners: %v %v", running.TLSListen, running.HTTPSListen)
	}
	want := []string{"/etc/phonehome/p.yaml", "/etc/phonehome/tls/cert.pem", "/etc/ssl/private/phonehome.key"}
	if got := running.Files(); !slices.Equal(got, want) {
		t.Errorf("files:\n got  %v\n want %v", got, want)
	}
	for _, c := range []struct {
		next string
		want []string
	}{
		{strings.Replace(base, "[192.168.1.2]", "[192.168.1.2, \"[fd00::2]\"]", 1), []string{"tls_listen"}},
		{strings.Replace(base, "8443", "443", 1), []string{"https_listen"}},
		{strings.Replace(base, "tls/cert.pem", "new.pem", 1) + "trusted_proxies: [127.0.0.1]\n", nil},
	} {
		if got := RestartNeeded(running, parse(c.next)); !slices.Equal(got, c.want) {
			t.Errorf("%q: restart needed for %v, want %v", c.next, got, c.want)
		}
		for _, k := range c.want {
			if !slices.Contains(StartOnly, k) {
				t.Errorf("StartOnly lacks %s", k)
			}
		}
	}
	for text, want := range map[string]string{
		"https_listen: [\":443\"]\n":                                 "p.yaml:1:1: https_listen needs a certificate: tls_cert and tls_key",
		"tls_key: k.pem\n":                                           "p.yaml:1:1: tls_key needs tls_cert",
		"trusted_proxies: [10.0.0.0/33]\n":                           "p.yaml:1:19: trusted_proxies: bad client network",
		"tls_listen: [\"1.2.3.4:99999\"]\ntls_cert: c\ntls_key: k\n": `p.yaml:1:14: tls_listen: "1.2.3.4:99999": "99999" is not a port`,
	} {
		if _, err := Parse("/etc/phonehome/p.yaml", []byte(text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// TestWatchCertificate: with watch_config, a renewed certificate and key
// renamed over the old files are served from the next handshake on, with
// no signal and no restart.
func TestWatchCertificate(t *testing.T) {
	up := dnstest.Start(t)
	ca, err := dnstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, cert, key := filepath.Join(dir, "phonehome.yaml"), filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem")
	// issue writes a new certificate and key by renaming them into place,
	// as certificate tools do, and returns the certificate.
	issue := func() *x509.Certificate {
		t.Helper()
		c, k, err := ca.Issue(dnstest.Leaf{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, key+".new", string(k))
		writeFile(t, cert+".new", string(c))
		if err := os.Rename(key+".new", key); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cert+".new", cert); err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(c)
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	first := issue()
	writeFile(t, cfg, fmt.Sprintf(`watch_config: true
upstreams: [%q]
http: ""
history: off
querylog: {output: "off"}
tls_listen: ["127.0.0.1:0"]
tls_cert: tls/cert.pem
tls_key: tls/key.pem
`, up.Addr()))
	noWatcherLeft(t)
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0")
	served := func() *x509.Certificate {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", ph.tls[0], &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	if !served().Equal(first) {
		t.Fatal("not serving the first certificate")
	}
	logs(t, ph, "watch_config: watching")
	renewed := issue()
	for deadline := time.Now().Add(watchWait); !served().Equal(renewed); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate is not served:\n%s", ph.logs.String())
		}
	}
}

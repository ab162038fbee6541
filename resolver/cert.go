package resolver

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/phonehome/phonehome/internal/config"
)

// The certificate of the encrypted listeners (tls_cert, tls_key) is read
// into the State at start and on every reload, like the rest of the config:
// a file that cannot be read, or a key that is not the certificate's,
// keeps the running state and its certificate. The listeners' tls.Config
// asks the state in use for it at every handshake (Handler.certificate),
// so a reload swaps it without touching a listener or an open connection.

// serverCert loads tls_cert and tls_key, nil without them. Every problem
// is an error at its key's line.
func (c *Config) serverCert() (*tls.Certificate, error) {
	if c.TLSCert == "" || c.TLSKey == "" {
		return nil, nil
	}
	certPath, keyPath := c.Source.Resolve(c.TLSCert), c.Source.Resolve(c.TLSKey)
	r := config.NewReport(c.Source)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		r.Value("tls_cert", "tls_cert: %v", err)
		return nil, r.Err()
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		r.Value("tls_key", "tls_key: %v", err)
		return nil, r.Err()
	}
	// The certificate first, so that an error in it is not blamed on the
	// key.
	var leaf *x509.Certificate
	for rest := certPEM; leaf == nil; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			r.Value("tls_cert", "tls_cert: %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", certPath)
			return nil, r.Err()
		}
		if b.Type == "CERTIFICATE" {
			if leaf, err = x509.ParseCertificate(b.Bytes); err != nil {
				r.Value("tls_cert", "tls_cert: the certificate in %s: %v", certPath, err)
				return nil, r.Err()
			}
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		why := strings.TrimPrefix(err.Error(), "tls: ")
		if strings.Contains(why, "does not match") {
			why = "it is not the private key of the certificate in " + certPath
		}
		r.Value("tls_key", "tls_key: %s: %s", keyPath, why)
		return nil, r.Err()
	}
	return &cert, nil
}

// certWarnings says what is wrong with a certificate that loaded: expired
// or not valid yet, which every client refuses; and, with encrypted
// listeners, what clients that find the listeners through DDR (RFC 9462)
// need: a host name, without which DDR is off (ddr.go), and the addresses
// phonehome listens on, since they check that the certificate names the
// address they asked in plain DNS, and keep to plain DNS when it does not.
func certWarnings(c *Config, cert *tls.Certificate, now time.Time) []string {
	if cert == nil || cert.Leaf == nil {
		return nil
	}
	leaf, file := cert.Leaf, c.Source.Resolve(c.TLSCert)
	var warns []string
	switch {
	case now.After(leaf.NotAfter):
		warns = append(warns, fmt.Sprintf("tls_cert: the certificate in %s expired on %s: clients refuse it; put a new one in its place and reload", file, leaf.NotAfter.UTC().Format(time.DateOnly)))
	case now.Before(leaf.NotBefore):
		warns = append(warns, fmt.Sprintf("tls_cert: the certificate in %s is not valid before %s: clients refuse it until then", file, leaf.NotBefore.UTC().Format(time.DateTime)))
	}
	if len(c.TLSListen) == 0 && len(c.HTTPSListen) == 0 {
		return warns
	}
	if certHost(cert) == "" {
		warns = append(warns, fmt.Sprintf("tls_cert: the certificate in %s names no host (a DNS name in subjectAltName, not a wildcard): DDR is off, and _dns.resolver.arpa gets NODATA, since its records must name the encrypted resolver by a host name (RFC 9462, section 4); the README's private CA recipe puts one in",
			file))
	}
	var missing []string
	for _, ip := range listenIPs(slices.Concat(c.listen(), c.TLSListen, c.HTTPSListen)) {
		if !slices.ContainsFunc(leaf.IPAddresses, func(n net.IP) bool {
			a, _ := netip.AddrFromSlice(n)
			return a.Unmap() == ip
		}) {
			missing = append(missing, ip.String())
		}
	}
	if len(missing) > 0 {
		warns = append(warns, fmt.Sprintf("tls_cert: the certificate in %s does not name %s, where phonehome listens: clients that find the encrypted listeners through DDR (RFC 9462) check that it names the address they ask in plain DNS, and stay with plain DNS when it does not (the README's private CA recipe puts the addresses in)",
			file, strings.Join(missing, ", ")))
	}
	return warns
}

// listenIPs are the addresses clients reach the listen addresses at: each
// one bound to an address, and for a wildcard the machine's global and
// private addresses (IPv4 for 0.0.0.0, both for :: and none). Loopback and
// link-local addresses are left out: no certificate needs them.
func listenIPs(addrs []string) []netip.Addr {
	var ips []netip.Addr
	add := func(ip netip.Addr) {
		ip = ip.Unmap()
		if ip.IsValid() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	var local []netip.Addr // the machine's, read once if a wildcard asks
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ip, err := netip.ParseAddr(host)
		if err == nil && !ip.IsUnspecified() {
			add(ip)
			continue
		}
		if local == nil {
			local = interfaceIPs()
		}
		for _, l := range local {
			if host == "" || ip.Is6() || l.Is4() {
				add(l)
			}
		}
	}
	return ips
}

// interfaceIPs are the machine's global unicast addresses (private ones
// included).
func interfaceIPs() []netip.Addr {
	ips := []netip.Addr{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				ips = append(ips, ip.Unmap())
			}
		}
	}
	return ips
}

// errNoCert fails a handshake when no certificate is loaded: never while
// an encrypted listener runs, since its config needs one.
var errNoCert = errors.New("no certificate loaded (tls_cert)")

// certificate is the encrypted listeners' tls.Config.GetCertificate: the
// certificate of the state in use.
func (h *Handler) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := h.State().Cert; c != nil {
		return c, nil
	}
	return nil, errNoCert
}

// tlsConfig is an encrypted listener's TLS: TLS 1.2 or newer, the
// certificate of the state in use, and the application protocols the
// listener speaks (ALPN).
func (h *Handler) tlsConfig(protos ...string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: h.certificate, NextProtos: protos,
		CipherSuites: tls12Suites}
}

// tls12Suites are the TLS 1.2 cipher suites the listeners take: forward
// secret and AEAD only, as RFC 9113 (section 9.2.2) asks of HTTP/2 and
// RFC 8310 of DNS over TLS; Go's defaults also take CBC suites. TLS 1.3
// has only such suites.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

package resolver

import (
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// DDR, Discovery of Designated Resolvers (RFC 9462): a client that knows
// phonehome only by its address asks it for _dns.resolver.arpa, type SVCB,
// and learns where phonehome serves DNS over TLS and over HTTPS (RFC 9461).
// A client doing verified discovery then connects there and uses it only
// if the certificate names the address it asked in plain DNS (certWarnings
// says when it does not). The records' target is the certificate's host
// name: RFC 9462, section 4, rules out "." as the target of these records
// (resolver.arpa is a special-use name no one owns, so it cannot stand for
// the resolver) and asks for the name clients use for DNS over TLS and in
// the DoH template. Without encrypted listeners, or with a certificate that
// names no host (certWarnings says so at start and at each reload), the
// answer is NODATA (protocol), as the same section asks of a resolver with
// no designated resolvers.

// designated is what DDR tells: one SVCB record per encrypted listener,
// DNS over HTTPS first (https_listen, then tls_listen, each in the config's
// order). It is built once the listeners are bound, before any query is
// served, and never changes.
type designated struct {
	endpoints []designatedEndpoint
}

type designatedEndpoint struct {
	doh  bool           // DNS over HTTPS, else DNS over TLS
	addr netip.AddrPort // as bound: the address may be a wildcard
}

// ddrTTL is the TTL of the DDR records: they change only with a restart
// (listeners) or a new certificate (its name).
const ddrTTL = 300

func (d *designated) add(doh bool, a net.Addr) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		d.endpoints = append(d.endpoints, designatedEndpoint{doh: doh, addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())})
	}
}

// isDDR reports whether req asks for the designated resolvers.
func isDDR(req *dns.Msg) bool {
	if len(req.Question) != 1 {
		return false
	}
	q := req.Question[0]
	return q.Qtype == dns.TypeSVCB && q.Qclass == dns.ClassINET && strings.EqualFold(q.Name, ddrName)
}

// answer fills m, the NODATA answer to a DDR query that came through w,
// with a record per listener: ALPN (dot, or h2 with the dohpath template),
// port, and the address as a hint. A listener bound to a wildcard address
// is reached at the address the query came to; a loopback one is left out
// for clients elsewhere. The records' target is the certificate's host
// name (certHost), and the additional section gives its addresses too; a
// certificate without one leaves m NODATA.
func (d *designated) answer(m *dns.Msg, w dns.ResponseWriter, st *State) {
	target := certHost(st.Cert)
	if target == "" {
		return
	}
	client, local := addrOf(w.RemoteAddr()), addrOf(w.LocalAddr())
	name := m.Question[0].Name
	var hints []netip.Addr
	for _, e := range d.endpoints {
		ip := e.addr.Addr()
		if ip.IsUnspecified() {
			if !local.IsValid() || local.IsUnspecified() || ip.Is4() && !local.Is4() {
				continue // no address to give: the query came by another way
			}
			ip = local
		}
		if ip.IsLoopback() && !client.IsLoopback() {
			continue
		}
		rr := &dns.SVCB{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSVCB, Class: dns.ClassINET, Ttl: ddrTTL},
			Priority: uint16(len(m.Answer) + 1), Target: target}
		alpn := "dot"
		if e.doh {
			alpn = "h2"
		}
		// Keys in increasing order (RFC 9460, section 2.2).
		rr.Value = append(rr.Value, &dns.SVCBAlpn{Alpn: []string{alpn}}, &dns.SVCBPort{Port: e.addr.Port()})
		if ip.Is4() {
			rr.Value = append(rr.Value, &dns.SVCBIPv4Hint{Hint: []net.IP{ip.AsSlice()}})
		} else {
			rr.Value = append(rr.Value, &dns.SVCBIPv6Hint{Hint: []net.IP{ip.AsSlice()}})
		}
		if e.doh {
			rr.Value = append(rr.Value, &dns.SVCBDoHPath{Template: dohQueryPath + "{?dns}"})
		}
		m.Answer = append(m.Answer, rr)
		if !slices.Contains(hints, ip) {
			hints = append(hints, ip)
		}
	}
	for _, ip := range hints {
		hdr := dns.RR_Header{Name: target, Class: dns.ClassINET, Ttl: ddrTTL}
		if ip.Is4() {
			hdr.Rrtype = dns.TypeA
			m.Extra = append(m.Extra, &dns.A{Hdr: hdr, A: ip.AsSlice()})
		} else {
			hdr.Rrtype = dns.TypeAAAA
			m.Extra = append(m.Extra, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
		}
	}
}

// certHost is the name DDR gives as its records' target: the first DNS
// name of the certificate that is not a wildcard, lower-case and fully
// qualified; "" when it has none. A client that connects by name needs it
// (Android's Private DNS, for one), and RFC 9462 allows no other target.
func certHost(cert *tls.Certificate) string {
	if cert == nil || cert.Leaf == nil {
		return ""
	}
	for _, n := range cert.Leaf.DNSNames {
		if _, ok := dns.IsDomainName(n); ok && !strings.HasPrefix(n, "*") {
			return dns.Fqdn(strings.ToLower(n))
		}
	}
	return ""
}

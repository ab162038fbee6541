package resolver

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Sinkhole says how sinkholed names are answered.
type Sinkhole struct {
	Mode       SinkholeMode // null_ip, nxdomain, nodata, refused, ip
	TTL        time.Duration
	IPv4, IPv6 netip.Addr // for mode ip
}

// answer builds the local answer for a sinkholed query. Sinkholed names
// never reach an upstream.
func (s Sinkhole) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	q := req.Question[0]
	ttl := uint32(s.TTL / time.Second)
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	var v4, v6 netip.Addr
	switch s.Mode {
	case SinkholeRefused:
		m.Rcode = dns.RcodeRefused
		return m
	case SinkholeNXDomain:
		m.Rcode = dns.RcodeNameError
	case SinkholeIP:
		v4, v6 = s.IPv4, s.IPv6
	case SinkholeNoData:
	default: // SinkholeNullIP
		v4, v6 = netip.IPv4Unspecified(), netip.IPv6Unspecified()
	}
	switch {
	case q.Qtype == dns.TypeA && v4.IsValid():
		m.Answer = []dns.RR{&dns.A{Hdr: hdr(dns.TypeA), A: v4.AsSlice()}}
	case q.Qtype == dns.TypeAAAA && v6.IsValid():
		m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: v6.AsSlice()}}
	default:
		// NXDOMAIN or NODATA: a SOA lets the client cache the block for
		// the sinkhole TTL (RFC 2308).
		m.Ns = []dns.RR{&dns.SOA{Hdr: hdr(dns.TypeSOA), Ns: "phonehome.invalid.", Mbox: "hostmaster.phonehome.invalid.",
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl}}
	}
	return m
}

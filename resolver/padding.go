package resolver

import "github.com/miekg/dns"

// paddingBlock is the length answers over TLS and HTTPS are padded to a
// multiple of, for clients that padded their query (RFC 8467, section
// 4.1: the Block-Length Padding strategy, 468 bytes for responses).
const paddingBlock = 468

// padded reports whether a query's OPT holds the padding option (RFC 7830):
// the client asks for padded answers by padding its query.
func padded(o *dns.OPT) bool {
	for _, e := range o.Option {
		if e.Option() == dns.EDNS0PADDING {
			return true
		}
	}
	return false
}

// padAnswer adds the padding option to m's OPT, m otherwise whole (names
// compressed or not as they will be packed), so that m packs to a multiple
// of paddingBlock bytes; an answer too long for that is left as it is.
func padAnswer(m *dns.Msg) {
	opt := m.IsEdns0()
	if opt == nil {
		return
	}
	n := m.Len() + 4 // the option's code and length come first
	p := (paddingBlock - n%paddingBlock) % paddingBlock
	if n+p > dns.MaxMsgSize {
		return
	}
	opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, p)})
}

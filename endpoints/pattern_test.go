package endpoints

import "testing"

func TestNormalizePattern(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"*.update.microsoft.com", "*.update.microsoft.com"},
		{"ctldl.windowsupdate.com/*", "ctldl.windowsupdate.com"},
		{"ctldl.windowsupdate.com/msdownload/update*", "ctldl.windowsupdate.com"},
		{"watson.telemetry.microsoft.com*", "watson.telemetry.microsoft.com"},
		{"*cdn.onenote.net*", "*cdn.onenote.net"},
		{`\*.aria.microsoft.com\*`, "*.aria.microsoft.com"},
		{"wdcp.microsoft.*", "wdcp.microsoft.*"},
		{"fe3.*.mp.microsoft.com.*", "fe3.*.mp.microsoft.com.*"},
		{"watson.*.microsoft.com", "watson.*.microsoft.com"},
		{".g.akamaiedge.net", "*.g.akamaiedge.net"},
		{"V10.events.data.microsoft.com/onecollector/1.0/", "v10.events.data.microsoft.com"},
		{"https://www.Example.com:443/a?b#c", "www.example.com"},
		{"example.com.", "example.com"},
		{" \tlogincdn.msauth.net ", "logincdn.msauth.net"},
		{"[www.microsoft.com](https://www.microsoft.com/)", "www.microsoft.com"},
		{`cs12.<span class="anchor" id="_Hlk500262422"></span>wpc.v0cdn.net`, "cs12.wpc.v0cdn.net"},
		{"**bold.example.com**", "bold.example.com"},
		{"*.*.akamai.net", "*.*.akamai.net"},
		{"store-images.*microsoft.com", "store-images.*microsoft.com"},
		{"msnbot-*.search.msn.com", "msnbot-*.search.msn.com"},
		{"a.example.com**", "a.example.com"},
		{"cdn.onenote.net*.", "cdn.onenote.net"},
		// A name's first label alone, as three documents write it.
		{"img-prod-cms-rt-microsoft-com", "img-prod-cms-rt-microsoft-com.*"},
		{"img-prod-cms-rt-microsoft-com*", "img-prod-cms-rt-microsoft-com.*"},
		{"*img-prod-cms-rt-microsoft-com*", "img-prod-cms-rt-microsoft-com.*"},
	} {
		got, err := NormalizePattern(c.in)
		if err != nil || got != c.want {
			t.Errorf("NormalizePattern(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "localhost", "tiny-a", "two words.com", "*", "*.*", "a..b.com", "ünï.com", "[Learn how to turn off traffic](x.md)", "telecommand..", "a.example.com..", "*.com", "*com", "*.*.net"} {
		if got, err := NormalizePattern(bad); err == nil {
			t.Errorf("NormalizePattern(%q) = %q, want an error", bad, got)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"fe2cr.update.microsoft.com", "fe2cr.update.microsoft.com", true},
		{"fe2cr.update.microsoft.com", "FE2CR.Update.Microsoft.com.", true},
		{"fe2cr.update.microsoft.com", "x.fe2cr.update.microsoft.com", false},
		{"*.update.microsoft.com", "sls.update.microsoft.com", true},
		{"*.update.microsoft.com", "a.b.update.microsoft.com", true},
		{"*.update.microsoft.com", "update.microsoft.com", false},
		{"*.update.microsoft.com", "xupdate.microsoft.com", false},
		{"*dl.delivery.mp.microsoft.com", "dl.delivery.mp.microsoft.com", true},
		{"*dl.delivery.mp.microsoft.com", "tlu.dl.delivery.mp.microsoft.com", true},
		{"*dl.delivery.mp.microsoft.com", "2dl.delivery.mp.microsoft.com", true},
		{"*dl.delivery.mp.microsoft.com", "delivery.mp.microsoft.com", false},
		{"watson.*.microsoft.com", "watson.telemetry.microsoft.com", true},
		{"watson.*.microsoft.com", "watson.a.b.microsoft.com", true},
		{"watson.*.microsoft.com", "watson.microsoft.com", false},
		{"wdcp.microsoft.*", "wdcp.microsoft.com", true},
		{"wdcp.microsoft.*", "wdcp.microsoft.akadns.net", true},
		{"wdcp.microsoft.*", "wdcp.microsoft", false},
		{"msnbot-*.search.msn.com", "msnbot-65-52-108-198.search.msn.com", true},
		{"*.*.akamai.net", "a.b.akamai.net", true},
		{"*.*.akamai.net", "b.akamai.net", false},
	} {
		if got := Match(c.pattern, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestPatternShape(t *testing.T) {
	for _, c := range []struct {
		p     string
		shape Shape
		lit   string
	}{
		{"a.example.com", Exact, "a.example.com"},
		{"*.example.com", Subdomains, "example.com"},
		{"*dl.example.com", Suffix, "dl.example.com"},
		{"watson.*.example.com", Glob, ""},
		{"*.*.example.com", Glob, ""},
		{"*cdn.*", Glob, ""},
	} {
		shape, lit := PatternShape(c.p)
		if shape != c.shape || lit != c.lit {
			t.Errorf("PatternShape(%q) = %v, %q; want %v, %q", c.p, shape, lit, c.shape, c.lit)
		}
	}
}

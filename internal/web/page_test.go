package web

import (
	"regexp"
	"slices"
	"testing"
)

// TestPageSelfContained: the page loads nothing from elsewhere, so it
// works offline and on a phone, and nothing in it needs more than its CSP
// allows: no inline event handler or style attribute (the CSP's hashes
// cover the <script> and <style> blocks only), no setAttribute("style"),
// no src or href, and no URL but the SVG namespace its plots are drawn in.
func TestPageSelfContained(t *testing.T) {
	for _, c := range []struct {
		what string
		re   string
	}{
		{"an inline event handler", `<[^>]*\son[a-z]+\s*=`},
		{"a style attribute", `<[^>]*\sstyle\s*=|setAttribute\(\s*["']style`},
		{"a src or href", `\s(src|href|xlink:href)\s*=|["'](src|href)["']`},
		{"an external asset", `@import|url\(`},
	} {
		if m := regexp.MustCompile(c.re).Find(page); m != nil {
			t.Errorf("the page has %s: %q", c.what, m)
		}
	}
	var urls []string
	for _, m := range regexp.MustCompile(`[a-z]+://[^"'\s)]*`).FindAll(page, -1) {
		urls = append(urls, string(m))
	}
	if urls = slices.Compact(urls); !slices.Equal(urls, []string{"http://www.w3.org/2000/svg"}) {
		t.Errorf("the page names URLs: %q", urls)
	}
}

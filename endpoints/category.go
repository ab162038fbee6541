package endpoints

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"
)

// Category is what an endpoint is for. The built-in vocabulary is in
// Categories; users may add their own names for their own lists.
type Category string

// CategoryInfo describes one category of the built-in vocabulary.
type CategoryInfo struct {
	Name  Category
	About string // what its endpoints do
	// Breaks says, in one sentence starting "blocking it", what stops
	// working when its endpoints are sinkholed.
	Breaks string
	// Protected categories are never sinkholed through their category:
	// Breaks is the reason users are shown.
	Protected bool
}

// Categories is the built-in vocabulary, in the order the README lists it.
var Categories = []CategoryInfo{
	{"telemetry", "diagnostic data, error reporting, Office telemetry, Store analytics", "blocking it stops diagnostic data and crash reports reaching Microsoft; Windows keeps working", false},
	{"update", "Windows Update, delivery optimisation and their CDNs", "blocking it stops Windows Update and delivery optimisation, so security fixes stop arriving", true},
	{"store", "Microsoft Store catalogue, downloads and images", "blocking it stops installing and updating Store apps", false},
	{"certificates", "certificate trust lists (CTL), OCSP and CRL", "blocking it stops certificate trust list and revocation updates, so certificate checks fail or go stale", true},
	{"defender", "SmartScreen, cloud protection and definition updates", "blocking it turns off SmartScreen and Defender cloud protection, so downloads and sites go unchecked", true},
	{"connectivity", "the Network Connection Status Indicator (NCSI)", "blocking it makes Windows report \"No Internet access\" and apps refuse to go online", true},
	{"licensing", "Windows activation and app licences", "blocking it stops Windows activation and app licence checks, so Store apps may stop starting", true},
	{"account", "device authentication, Microsoft account sign-in, device metadata", "blocking it stops Microsoft account sign-in and device metadata updates", false},
	{"spotlight", "Windows Spotlight lock-screen images, tips and suggested apps", "blocking it stops Spotlight images, tips and suggested apps", false},
	{"cortana", "Cortana, Bing and Live Tiles", "blocking it stops Cortana, Bing results in search and Live Tile updates", false},
	{"onedrive", "OneDrive sync and its configuration", "blocking it stops OneDrive sync", false},
	{"office", "Office and the Office 365 portal", "blocking it stops Office apps and Office on the web from reaching their services", false},
	{"skype", "Skype", "blocking it stops Skype", false},
	{"teams", "Microsoft Teams", "blocking it stops Microsoft Teams", false},
	{"location", "the location service", "blocking it stops network-based location", false},
	{"maps", "offline maps and map tiles", "blocking it stops map tiles and offline map updates", false},
	{"weather", "the Weather app and tile", "blocking it stops the Weather app and tile updating", false},
	{"edge", "Microsoft Edge services and updates", "blocking it stops Microsoft Edge's update and browser services", false},
	{"push", "Windows Push Notification Services (WNS)", "blocking it stops push notifications to apps and tiles", false},
	{"settings", "dynamic configuration of Windows and apps", "blocking it stops apps and Windows features receiving configuration changes", false},
	{"photos", "the Photos app", "blocking it stops the Photos app's online features", false},
	{"apps", "third-party and inbox apps: games, music, social tiles, Xbox", "blocking it stops those apps and their tiles from updating", false},
	{"other", "documented endpoints with no better category", "blocking it affects what the endpoint's description says", false},
	{"undocumented", "Microsoft hosts that no Microsoft document lists, under Microsoft's own domains", "blocking it stops whatever uses the host, which no document explains, so it is logged and never sinkholed unless a group says so", false},
}

// Other is the category of endpoints nothing else fits.
const Other Category = "other"

// Info returns the vocabulary entry of c, and false for a name outside it.
func (c Category) Info() (CategoryInfo, bool) {
	for _, ci := range Categories {
		if ci.Name == c {
			return ci, true
		}
	}
	return CategoryInfo{}, false
}

// CategoryNames lists the built-in category names, for error messages.
func CategoryNames() string {
	var names []string
	for _, ci := range Categories {
		names = append(names, string(ci.Name))
	}
	return strings.Join(names, ", ")
}

// ParseCategory accepts a built-in category name in any case.
func ParseCategory(s string) (Category, error) {
	c := Category(strings.ToLower(strings.TrimSpace(s)))
	if _, ok := c.Info(); !ok {
		return "", fmt.Errorf("unknown category %q (valid: %s)", s, CategoryNames())
	}
	return c, nil
}

// categoriesTSV is the reviewed assignment of every pattern of the built-in
// and testdata documents: pattern, category, note, protection.
//
//go:embed categories.tsv
var categoriesTSV string

// known is one reviewed line of categories.tsv.
type known struct {
	category Category
	note     string // why, where the category departs from the document's words
	protect  string // a reason to protect beyond the category's, or ""
}

var knownPatterns = sync.OnceValue(func() map[string]known {
	m, err := parseKnown(categoriesTSV)
	if err != nil {
		panic(err) // categories.tsv is embedded and checked by the tests
	}
	return m
})

func parseKnown(tsv string) (map[string]known, error) {
	m := map[string]known{}
	for i, line := range strings.Split(tsv, "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return nil, fmt.Errorf("categories.tsv:%d: want 4 tab-separated fields, have %d", i+1, len(f))
		}
		c, err := ParseCategory(f[1])
		if err != nil {
			return nil, fmt.Errorf("categories.tsv:%d: %w", i+1, err)
		}
		if _, dup := m[f[0]]; dup {
			return nil, fmt.Errorf("categories.tsv:%d: %s listed twice", i+1, f[0])
		}
		m[f[0]] = known{category: c, note: dash(f[2]), protect: dash(f[3])}
	}
	return m, nil
}

func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// keywordRules categorise patterns that categories.tsv does not know, as in
// a newer document: the first rule with a keyword found wins. They are tried
// on the Area column first (the documents' own grouping, the strongest hint),
// then on the descriptions, then on the pattern. The order matters where
// words overlap: "Store analytics" is telemetry, "updates to maps" is maps,
// and "the Automatic Root Certificates Update component" is certificates.
var keywordRules = []struct {
	category Category
	keywords []string
}{
	{"telemetry", []string{"diagnostic", "telemetry", "error reporting", "watson", "store analytics", "experimentation", "aria"}},
	{"certificates", []string{"certificate", "ocsp", "crl", "revocation list", "trust list", "cybertrust"}},
	{"defender", []string{"defender", "smartscreen", "wdcp"}},
	{"connectivity", []string{"ncsi", "connection status", "connectivity", "msftconnecttest", "msftncsi"}},
	{"store", []string{"malicious apps"}},
	{"licensing", []string{"licens", "activation"}},
	{"account", []string{"device authentication", "authenticate a device", "microsoft account", "sign in", "sign-in", "msa ", "msa related", "device metadata", "device directory", "activity feed", "login.live"}},
	{"onedrive", []string{"onedrive", "one drive", "skydrive"}},
	{"spotlight", []string{"spotlight"}},
	{"weather", []string{"weather"}},
	{"teams", []string{"teams"}},
	{"skype", []string{"skype"}},
	{"photos", []string{"photos"}},
	{"edge", []string{"microsoft edge", "edge browser", "edge update"}},
	{"maps", []string{"maps", "virtualearth"}},
	{"location", []string{"location"}},
	{"push", []string{"push notification", "wns"}},
	{"cortana", []string{"cortana", "bing", "live tiles"}},
	{"office", []string{"office", "onenote", "outlook", "microsoft 365"}},
	{"apps", []string{"candy crush", "twitter", "facebook", "spotify", "groove", "music", "wallet", "xbox", "books app", "game"}},
	{"settings", []string{"dynamically update", "configuration", "settings"}},
	{"update", []string{"windows update", "microsoft update", "patches", "update", "content regulation", "compatibility database", "insider", "upgrade", "delivery", "download"}},
	{"store", []string{"store"}},
}

// containsWordStart reports whether k occurs in text at the start of a word,
// so that "store" does not match "restore" nor "maps" "bitmaps".
func containsWordStart(text, k string) bool {
	for i := 0; ; {
		j := strings.Index(text[i:], k)
		if j < 0 {
			return false
		}
		if at := i + j; at == 0 || !unicode.IsLetter(rune(text[at-1])) {
			return true
		}
		i += j + 1
	}
}

// ruleCategory applies keywordRules to an entry, saying which text decided.
func ruleCategory(e *Entry) (Category, string) {
	var areas, descs []string
	for _, u := range e.Uses {
		areas = append(areas, u.Areas...)
		descs = append(descs, u.Descriptions...)
	}
	for _, try := range []struct{ what, text string }{
		{"area", strings.Join(areas, " | ")},
		{"description", strings.Join(descs, " | ")},
		{"pattern", e.Pattern},
	} {
		text := strings.ToLower(try.text)
		if text == "" {
			continue
		}
		for _, r := range keywordRules {
			for _, k := range r.keywords {
				if containsWordStart(text, k) {
					return r.category, fmt.Sprintf("by rule: %s mentions %q", try.what, k)
				}
			}
		}
	}
	return Other, "no rule matched"
}

// cdnZones are domains that CDNs and clouds share between many customers,
// with one level of customer zones below them (e1234.g.akamaiedge.net). A
// wildcard over one of them, or over a zone one label under one of them, reaches
// far beyond Windows.
var cdnZones = []string{
	"akadns.net", "akadns6.net", "akamai.net", "akamaiedge.net", "akamaized.net", "akamaihd.net",
	"azureedge.net", "azurefd.net", "blob.core.windows.net", "cloudapp.net", "cloudapp.azure.com",
	"trafficmanager.net", "msedge.net", "a-msedge.net", "c-msedge.net", "e-msedge.net",
	"s-msedge.net", "m1-msedge.net", "l-msedge.net", "nsatc.net", "footprint.net", "phicdn.net",
	"edgecastcdn.net", "hwcdn.net", "llnwd.net", "llnwi.net", "v0cdn.net", "v2cdn.net",
	"cloudfront.net", "afdogw.com",
}

// sharedSites are whole sites: a wildcard over all of one breaks the site.
var sharedSites = []string{"microsoft.com", "windows.com", "windows.net", "live.com", "live.net", "msn.com", "office.com", "bing.com"}

// sharedWildcard returns the shared domain a wildcard pattern reaches into,
// or "" for an exact name, a narrow wildcard, or one whose leading label is
// fixed ("watson.*.microsoft.com").
func sharedWildcard(pattern string) string {
	shape, lit := PatternShape(pattern)
	switch shape {
	case Exact:
		return ""
	case Glob:
		i := strings.LastIndexByte(pattern, '*')
		rest, ok := strings.CutPrefix(pattern[i+1:], ".")
		if strings.Trim(pattern[:i], "*.") != "" || !ok {
			return ""
		}
		lit = rest
	}
	for _, d := range cdnZones {
		if lit == d {
			return d
		}
		if sub, ok := strings.CutSuffix(lit, "."+d); ok && !strings.Contains(sub, ".") {
			return d
		}
	}
	if slices.Contains(sharedSites, lit) {
		return lit
	}
	return ""
}

// classify sets an entry's category and protection: the reviewed table
// first, the keyword rules for patterns it does not know.
func classify(e *Entry) {
	k, ok := knownPatterns()[e.Pattern]
	if ok {
		e.Category, e.CategoryNote = k.category, k.note
	} else {
		e.Category, e.CategoryNote = ruleCategory(e)
	}
	info, _ := e.Category.Info()
	switch {
	case k.protect != "":
		e.Protected, e.Reason = true, k.protect
	case info.Protected:
		e.Protected, e.Reason = true, info.Breaks
	default:
		if d := sharedWildcard(e.Pattern); d != "" {
			e.Protected = true
			e.Reason = fmt.Sprintf("blocking it could break every site and app on %s, a domain shared far beyond Windows, since the wildcard covers much more than this endpoint", d)
		}
	}
}

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/phonehome/phonehome/endpoints"
	"github.com/phonehome/phonehome/internal/configfile"
	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// loadConfig reads the config at path (the defaults when path is "").
func loadConfig(path string) (*configfile.File, error) {
	if path == "" {
		return configfile.Default(), nil
	}
	return configfile.Load(path)
}

// loadPolicy reads the config at path (the defaults when path is "") and
// compiles its policy. Warnings go to stderr.
func loadPolicy(path string, stderr io.Writer) (*configfile.File, *policy.Policy, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	p, warns, err := policy.Compile(&cfg.Policy, cfg.Source)
	printWarnings(stderr, warns)
	return cfg, p, err
}

func printWarnings(stderr io.Writer, warns []string) {
	for _, w := range warns {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("phonehome check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "config file (default: the built-in defaults)")
	client := fs.String("client", "", "decide as for this client address (default: a client in no group)")
	cname := fs.String("cname", "", "decide as for an answer whose CNAME chain leads to these names, in order (comma-separated)")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: phonehome check [-config FILE] [-client IP] [-cname NAME,...] [-json] NAME...")
		fmt.Fprintln(stderr, "\nSays what phonehome would do with a query for each NAME, and why; with -cname, once")
		fmt.Fprintln(stderr, "the answer is known to lead through those names.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpCode(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var addr netip.Addr
	if *client != "" {
		a, err := netip.ParseAddr(*client)
		if err != nil {
			fmt.Fprintf(stderr, "phonehome check: -client: %q is not an IP address\n", *client)
			return 2
		}
		addr = a
	}
	chain, err := parseChain(*cname)
	if err != nil {
		fmt.Fprintf(stderr, "phonehome check: -cname: %v\n", err)
		return 2
	}
	cfg, p, err := loadPolicy(*config, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "phonehome check: %v\n", err)
		return 1
	}
	if len(chain) > 0 && !*cfg.CNAME.Inspect {
		fmt.Fprintln(stderr, "phonehome check: -cname: the config turns cname.inspect off, so the chain decides nothing")
		chain = nil
	}
	var out []checkResult
	for _, name := range fs.Args() {
		d := p.Decide(addr, name)
		if c := trimChain(chain, name, cfg.CNAME.MaxChain); len(c) > 0 {
			// As the resolver decides an answer from the cache or an upstream.
			d = p.DecideChain(addr, d, c)
		}
		out = append(out, result(name, d))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return 0
	}
	for _, r := range out {
		fmt.Fprintf(stdout, "%s: %s\n  %s\n", r.Name, r.Action, r.Reason)
		tw := tabwriter.NewWriter(stdout, 0, 0, 1, ' ', 0)
		fmt.Fprintf(tw, "  group:\t%s (edition %s, windows %s)\n", r.Group, r.Edition, r.Windows)
		if r.Pattern != "" {
			fmt.Fprintf(tw, "  pattern:\t%s\n", r.Pattern)
		}
		if len(r.Documented) > 0 {
			fmt.Fprintf(tw, "  documented:\t%s\n", strings.Join(r.Documented, ", "))
		}
		if r.Family != "" {
			fmt.Fprintf(tw, "  family of:\t%s\n", r.Family)
		}
		fmt.Fprintf(tw, "  category:\t%s\n  protected:\t%s\n", r.Category, yesNo(r.Protected))
		if r.Override != "" {
			fmt.Fprintf(tw, "  override:\t%s\n", r.Override)
		}
		if r.CNAME != "" {
			fmt.Fprintf(tw, "  cname:\t%s\n", r.CNAME)
		}
		tw.Flush()
	}
	return 0
}

// checkResult is one answer of phonehome check; its JSON form is in the README.
type checkResult struct {
	Name    string `json:"name"`
	Action  string `json:"action"`
	Group   string `json:"group"`
	Edition string `json:"edition"`
	Windows string `json:"windows"`
	Pattern string `json:"pattern"`
	// Documented are the Windows versions whose documents list the
	// pattern for the group's editions; Family the documented names a
	// family match generalises.
	Documented []string `json:"documented"`
	Family     string   `json:"family"`
	Category   string   `json:"category"`
	Protected  bool     `json:"protected"`
	Override   string   `json:"override"`
	// CNAME is the name of the answer's CNAME chain whose pattern decided
	// (the question name is an alias of it); "" when the question decided.
	CNAME  string `json:"cname"`
	Reason string `json:"reason"`
}

// parseChain reads -cname: names separated by commas, each as the
// resolver keeps a chain's names (lower case, with the root's dot).
func parseChain(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var chain []string
	for _, n := range strings.Split(s, ",") {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" || n == "." {
			return nil, fmt.Errorf("empty name in %q", s)
		}
		if !strings.HasSuffix(n, ".") {
			n += "."
		}
		chain = append(chain, n)
	}
	return chain, nil
}

// trimChain is the part of chain the resolver would read from an answer to
// a query for name: at most max names, ending before a name seen already
// (the question's, too), for a CNAME loop.
func trimChain(chain []string, name string, max int) []string {
	q := strings.ToLower(strings.TrimSuffix(name, ".")) + "."
	for i, n := range chain {
		if i == max || n == q || slices.Contains(chain[:i], n) {
			return chain[:i]
		}
	}
	return chain
}

func result(name string, d policy.Decision) checkResult {
	r := checkResult{Name: name, Action: d.Action.String(), Group: d.Group.Name, Edition: d.Group.Edition.String(),
		Windows: d.Group.Windows.String(), Category: string(d.Category()), Reason: d.Reason(), Documented: []string{}}
	if d.Match.Rule != nil {
		r.Pattern, r.Protected = d.Match.Pattern(), d.Match.Rule.Protected()
		if e := d.Match.Rule.Entry; e != nil {
			switch e.Kind {
			case endpoints.Documented:
				r.Documented = e.VersionsFor(d.Group.Edition).Names()
			case endpoints.Family:
				r.Family = strings.Join(e.Members, ", ")
			}
		}
	}
	if d.Override.Rule != nil {
		r.Override = d.Override.Pattern()
	}
	r.CNAME = strings.TrimSuffix(d.CNAME, ".")
	return r
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("phonehome validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "the config file to check (required)")
	resolvConf := fs.String("resolv-conf", "/etc/resolv.conf", "where serve finds upstreams when the config names none")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: phonehome validate -config FILE")
		fmt.Fprintln(stderr, "\nChecks a config file, the documents and lists it names, and prints a summary.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpCode(err)
	}
	if *config == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	// The same checks as serve and a reload: the file, the documents and
	// lists it names, the upstreams (or resolv.conf's).
	cfg, err := configfile.Load(*config)
	var p *policy.Policy
	if err == nil {
		var warns []string
		p, warns, err = resolver.Validate(&cfg.Config, *resolvConf)
		// What only binding can tell: a port taken now (by a phonehome
		// already running, too) or one this user may not bind.
		warns = append(warns, resolver.CheckListen(cfg.Listen)...)
		warns = append(warns, resolver.CheckEncryptedListen(cfg.TLSListen, cfg.HTTPSListen)...)
		printWarnings(stderr, warns)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *config)
	counts := p.Catalog.Count()
	var per []string
	for _, ed := range []string{"home", "pro", "education", "enterprise"} {
		e, _ := endpoints.ParseEdition(ed)
		if counts[e] > 0 {
			per = append(per, fmt.Sprintf("%d %s", counts[e], ed))
		}
	}
	from := strings.Join(p.Catalog.Sources, ", ")
	if *cfg.Policy.Catalog.Builtin {
		n := endpoints.BuiltinCount()
		from = fmt.Sprintf("%d built-in documents (Windows 10 1709 to Windows 11)", n)
		if extra := p.Catalog.Sources[n:]; len(extra) > 0 {
			from += " and " + strings.Join(extra, ", ")
		}
	}
	fmt.Fprintf(stdout, "catalog: %d endpoints (%s) from %s; %d families, %d Microsoft domains\n",
		len(p.Catalog.Entries), strings.Join(per, ", "), from, len(p.Catalog.Families), len(p.Catalog.Domains))
	fmt.Fprintf(stdout, "listen: %s; upstreams: %s\n", strings.Join(cfg.Listen, ", "), orDefault(cfg.Upstreams, "from /etc/resolv.conf"))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tCLIENTS\tEDITION\tWINDOWS\tPATTERNS\tUNLISTED\tACTIONS")
	for _, g := range append([]*policy.Group{p.Default}, p.Groups...) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", g.Name, len(g.Clients), g.Edition, g.Windows, g.Patterns, g.Unlisted, g.ActionsString())
	}
	tw.Flush()
	return 0
}

func orDefault(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return strings.Join(s, ", ")
}

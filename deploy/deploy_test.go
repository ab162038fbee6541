package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/internal/configfile"
	"github.com/phonehome/phonehome/resolver"
)

// root is the repository, one level up from this package.
const root = ".."

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupBuild()
	os.Exit(code)
}

// tool finds a command-line tool the test hands our files to. Without it the
// test is skipped, except in CI (CI set), where scripts/test.sh installs the
// Debian package pkg and a missing tool is a failure.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found; scripts/test.sh installs it (Debian package %s)", name, pkg)
	}
	t.Skipf("%s not found (Debian package %s); skipping", name, pkg)
	return ""
}

// run runs a command and fails the test with its output when it fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadSampleConfig parses a phonehome config under the repository and
// checks it as phonehome validate does; a warning is a failure.
func loadSampleConfig(t *testing.T, p string) *configfile.File {
	t.Helper()
	cfg, err := configfile.Parse(filepath.Join(root, p), readFile(t, p))
	if err != nil {
		t.Fatalf("%s does not load:\n%v", p, err)
	}
	_, warns, err := resolver.Validate(&cfg.Config, "/nonexistent")
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	for _, w := range warns {
		t.Errorf("%s: warning: %s", p, w)
	}
	return cfg
}

// query is one PromQL expression from the dashboard or the alerting rules,
// with where it was found.
type query struct {
	where, expr string
}

// series maps each series name phonehome's /metrics shows (histograms as
// their _bucket, _sum and _count series) to its label names.
type series map[string][]string

var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	metricName = regexp.MustCompile(`\b(?:phonehome|go|process)_[a-z0-9_]+\b|\bup\b`)
	selector   = regexp.MustCompile(`\b([a-z_][a-z0-9_]*)\s*\{([^}]*)\}`)
	matcher    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	grouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	// Prometheus adds these to every series it scrapes.
	targetLabels = []string{"instance", "job"}
)

// checkExpr checks that every series a PromQL expression names is in
// known, and that every label it selects or groups by belongs to one of
// them. It returns the series used. It reads names with regular
// expressions, not a PromQL parser: promtool checks the syntax.
func checkExpr(known series, expr string) (used []string, errs []string) {
	// Label values ("phonehome", "sinkhole") are not names.
	bare := quoted.ReplaceAllString(expr, `""`)
	labels := slices.Clone(targetLabels)
	for _, name := range metricName.FindAllString(bare, -1) {
		ls, ok := known[name]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: no such series in /metrics", name))
			continue
		}
		used = append(used, name)
		labels = append(labels, ls...)
	}
	for _, s := range selector.FindAllStringSubmatch(bare, -1) {
		ls, ok := known[s[1]]
		if !ok {
			continue
		}
		for _, m := range matcher.FindAllStringSubmatch(s[2], -1) {
			if !slices.Contains(ls, m[1]) && !slices.Contains(targetLabels, m[1]) {
				errs = append(errs, fmt.Sprintf("%s has no label %q (labels: %s)", s[1], m[1], strings.Join(ls, ", ")))
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(bare, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(labels, l) {
				errs = append(errs, fmt.Sprintf("grouping by %q, a label none of the series in the expression has", l))
			}
		}
	}
	if len(used) == 0 && len(errs) == 0 {
		errs = append(errs, "queries no phonehome series")
	}
	return used, errs
}

func TestCheckExpr(t *testing.T) {
	known := series{
		"phonehome_queries_total":                    {"group", "action"},
		"phonehome_upstream_duration_seconds_bucket": {"upstream", "le"},
		"phonehome_upstream_duration_seconds_sum":    {"upstream"},
		"phonehome_upstream_duration_seconds_count":  {"upstream"},
		"up": nil,
	}
	for _, tc := range []struct {
		expr    string
		wantErr string
	}{
		{`sum by (action) (rate(phonehome_queries_total{action="sinkhole", job="phonehome"}[5m]))`, ""},
		{`histogram_quantile(0.9, sum by (le, upstream) (rate(phonehome_upstream_duration_seconds_bucket[5m])))`, ""},
		{`rate(phonehome_upstream_duration_seconds_sum[5m]) / rate(phonehome_upstream_duration_seconds_count[5m])`, ""},
		{`up{job="phonehome"} == 0`, ""},
		{`rate(phonehome_querys_total[5m])`, "phonehome_querys_total: no such series"},
		{`rate(phonehome_upstream_duration_seconds[5m])`, "no such series"}, // a histogram has no series of its own name
		{`rate(phonehome_queries_total{categroy="x"}[5m])`, `no label "categroy"`},
		{`rate(phonehome_queries_total{group=~"a|b"}[5m])`, ""},
		{`sum by (categroy) (rate(phonehome_queries_total[5m]))`, `grouping by "categroy"`},
		{`sum by (le) (rate(phonehome_queries_total[5m]))`, `grouping by "le"`},
		{`vector(1)`, "queries no phonehome series"},
	} {
		_, errs := checkExpr(known, tc.expr)
		got := strings.Join(errs, "; ")
		if tc.wantErr == "" && got != "" || !strings.Contains(got, tc.wantErr) {
			t.Errorf("checkExpr(%s) = %q, want %q", tc.expr, got, tc.wantErr)
		}
	}
}

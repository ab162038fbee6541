package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// dashboard is the part of a Grafana dashboard these tests read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"` // a string, or {"query": "..."}
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func readDashboard(t *testing.T) *dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, "deploy/grafana/phonehome.json"), &d); err != nil {
		t.Fatalf("deploy/grafana/phonehome.json: %v", err)
	}
	return &d
}

// each calls f for every panel, those in collapsed rows too.
func (d *dashboard) each(f func(p panel)) {
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			f(p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
}

// queries returns every panel's PromQL.
func (d *dashboard) queries() []query {
	var qs []query
	d.each(func(p panel) {
		for _, tg := range p.Targets {
			qs = append(qs, query{fmt.Sprintf("panel %q, query %s", p.Title, tg.RefID), tg.Expr})
		}
	})
	return qs
}

// variableQueries returns the queries of the dashboard's query variables
// (label_values(...)).
func (d *dashboard) variableQueries() []query {
	var qs []query
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		s, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			s, _ = m["query"].(string)
		}
		qs = append(qs, query{"variable " + v.Name, s})
	}
	return qs
}

// grafanaVars are the variables Grafana itself defines.
var grafanaVars = []string{"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}

var (
	grafanaVar  = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
)

// TestDashboard checks what Grafana would otherwise show as an empty or
// misplaced panel, and that the dashboard shows what issue 5 asks for.
// TestImageServes checks its series and labels against /metrics.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard has no uid or title")
	}
	vars := slices.Clone(grafanaVars)
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}

	ids := map[int]string{}
	d.each(func(p panel) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside Grafana's 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			return
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource is not Prometheus", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: query refId %q is empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q, query %s: no expression", p.Title, tg.RefID)
			}
		}
	})

	qs := d.queries()
	var all []string
	for _, q := range append(qs, d.variableQueries()...) {
		for _, m := range grafanaVar.FindAllStringSubmatch(q.expr, -1) {
			if !slices.Contains(vars, m[1]) {
				t.Errorf("%s: $%s is not a dashboard variable (have %s)", q.where, m[1], strings.Join(vars, ", "))
			}
		}
		all = append(all, q.expr)
	}
	// What issue 5 asks the dashboard to show: queries by action and
	// category, top endpoints, sinkholed share, cache hit ratio, upstream
	// latency and health, refused queries, reload status.
	exprs := strings.Join(all, "\n")
	for _, want := range []string{`by (action)`, `by (category)`, `topk(`, `action="sinkhole"`, `result="hit"`,
		"histogram_quantile(", "phonehome_upstream_duration_seconds_bucket", "phonehome_upstream_healthy", "phonehome_refused_total",
		"phonehome_config_reloads_total", "phonehome_config_last_reload_success_timestamp_seconds"} {
		if !strings.Contains(exprs, want) {
			t.Errorf("no dashboard query has %s", want)
		}
	}
}

// TestDashboardPromQL hands every dashboard query to promtool as a
// recording rule, with Grafana's variables filled in, so that a syntax error
// shows up here rather than as an empty panel.
func TestDashboardPromQL(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	fill := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h",
		"${instance}", ".*", "$instance", ".*", "${group}", ".*", "$group", ".*")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range readDashboard(t).queries() {
		rules = append(rules, rule{fmt.Sprintf("dashboard:query_%d", i+1), fill.Replace(q.expr)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(t, "", nil, promtool, "check", "rules", p)
	if !strings.Contains(out, fmt.Sprintf("%d rules found", len(rules))) {
		t.Errorf("promtool check rules:\n%s", out)
	}
}

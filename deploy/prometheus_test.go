package deploy

import (
	"net"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// rulesFile is a Prometheus rules file, as far as these tests read it.
type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) rulesFile {
	t.Helper()
	var rf rulesFile
	if err := yaml.Unmarshal(readFile(t, "deploy/prometheus/alerts.yml"), &rf); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yml: %v", err)
	}
	return rf
}

func alertQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{"alert " + r.Alert, r.Expr})
		}
	}
	return qs
}

// TestAlertRules checks that each alert says what it is about, that the
// rules watch what issue 5 asks for, and that each alert has a case in
// alerts_test.yml (which TestPromtool runs). TestImageServes checks their
// series and labels against /metrics.
func TestAlertRules(t *testing.T) {
	tests := string(readFile(t, "deploy/prometheus/alerts_test.yml"))
	var exprs []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without an alert name", g.Name)
				continue
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s: no severity label", r.Alert)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: wants a summary and a description", r.Alert)
			}
			if !strings.Contains(tests, "alertname: "+r.Alert+"\n") {
				t.Errorf("alerts_test.yml does not test %s", r.Alert)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	// Upstream down, reload failed, refused-query spike, protected overrides.
	all := strings.Join(exprs, "\n")
	for _, m := range []string{"phonehome_upstream_healthy", `phonehome_config_reloads_total{result="failure"}`,
		"phonehome_refused_total", "phonehome_protected_overrides_total"} {
		if !strings.Contains(all, m) {
			t.Errorf("no alert watches %s", m)
		}
	}
}

func TestPromtool(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	dir := root + "/deploy/prometheus"
	// rule_files in prometheus.yml are relative to it: this also checks alerts.yml.
	out := run(t, dir, nil, promtool, "check", "config", "prometheus.yml")
	if !strings.Contains(out, "1 rule files found") {
		t.Errorf("promtool check config did not find alerts.yml:\n%s", out)
	}
	run(t, dir, nil, promtool, "test", "rules", "alerts_test.yml")
}

// TestScrapeConfig checks that Prometheus scrapes phonehome where compose
// runs it: the service name and the sample config's http port.
func TestScrapeConfig(t *testing.T) {
	var pc struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy/prometheus/prometheus.yml"), &pc); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pc.RuleFiles, "alerts.yml") {
		t.Errorf("rule_files %q does not load alerts.yml", pc.RuleFiles)
	}
	cfg := loadSampleConfig(t, "deploy/docker/phonehome.yaml")
	_, port, _ := net.SplitHostPort(*cfg.Web.HTTP)
	want := "phonehome:" + port
	// phonehome answers only to the names it is told (DNS rebinding).
	if !slices.Contains(cfg.Web.HTTPHosts, "phonehome") {
		t.Errorf("Prometheus scrapes %s, but http_hosts %q does not list phonehome: every scrape would get 421", want, cfg.Web.HTTPHosts)
	}
	for _, sc := range pc.ScrapeConfigs {
		if sc.JobName != "phonehome" {
			continue
		}
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job phonehome scrapes %s, phonehome serves /metrics", sc.MetricsPath)
		}
		for _, s := range sc.StaticConfigs {
			if slices.Contains(s.Targets, want) {
				return
			}
		}
	}
	t.Errorf("no scrape job phonehome with target %s", want)
}

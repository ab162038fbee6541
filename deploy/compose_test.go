package deploy

import (
	"path"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// compose is the part of compose.yaml these tests read.
type compose struct {
	Services map[string]struct {
		Build *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
		Sysctls     map[string]int    `yaml:"sysctls"`
		CapDrop     []string          `yaml:"cap_drop"`
	} `yaml:"services"`
}

// mounts maps each bind mount's target in the container to its source,
// relative to the repository root.
func mounts(t *testing.T, volumes []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, v := range volumes {
		f := strings.Split(v, ":")
		if len(f) < 2 || !strings.HasPrefix(f[0], ".") {
			continue // a named volume
		}
		m[f[1]] = path.Join("deploy/compose", f[0])
	}
	return m
}

// inMount finds the file a container path names in the bind mounts.
func inMount(m map[string]string, p string) (string, bool) {
	for target, src := range m {
		if rest, ok := strings.CutPrefix(p, target+"/"); ok {
			return path.Join(src, rest), true
		}
	}
	return "", false
}

// TestCompose checks what must line up for "docker compose up" to show the
// dashboard with no clicking: the files each service is handed exist where
// its command and provisioning look for them.
func TestCompose(t *testing.T) {
	var c compose
	if err := yaml.Unmarshal(readFile(t, "deploy/compose/compose.yaml"), &c); err != nil {
		t.Fatalf("deploy/compose/compose.yaml: %v", err)
	}
	for _, s := range []string{"phonehome", "prometheus", "grafana"} {
		if _, ok := c.Services[s]; !ok {
			t.Fatalf("compose.yaml has no service %s", s)
		}
	}

	// phonehome: built from the Dockerfile, with the config CMD names.
	ph := c.Services["phonehome"]
	if ph.Build == nil || path.Join("deploy/compose", ph.Build.Context) != "." || ph.Build.Dockerfile != "Dockerfile" {
		t.Errorf("phonehome is not built from the top-level Dockerfile: %+v", ph.Build)
	}
	ic := runtimeConfig(t, readDockerfile(t))
	if src, ok := inMount(mounts(t, ph.Volumes), ic.configPath); !ok {
		t.Errorf("phonehome: no bind mount holds %s, the config the image runs with", ic.configPath)
	} else {
		loadSampleConfig(t, src)
	}
	for _, want := range []string{":53:53/udp", ":53:53/tcp", ":8053:8053/tcp"} {
		if !slices.ContainsFunc(ph.Ports, func(p string) bool { return strings.HasSuffix(p, want) }) {
			t.Errorf("phonehome does not publish %s (ports: %q)", want, ph.Ports)
		}
	}
	if v, ok := ph.Sysctls["net.ipv4.ip_unprivileged_port_start"]; !ok || v != 0 {
		t.Error("phonehome: want sysctl net.ipv4.ip_unprivileged_port_start: 0, so the non-root user binds port 53")
	}
	if !slices.Contains(ph.CapDrop, "ALL") {
		t.Error("phonehome needs no capability: cap_drop: [ALL]")
	}

	// prometheus: its config file and the rules next to it.
	pm := c.Services["prometheus"]
	pmm := mounts(t, pm.Volumes)
	var configFile string
	for _, a := range pm.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configFile = v
		}
	}
	if src, ok := inMount(pmm, configFile); !ok || src != "deploy/prometheus/prometheus.yml" {
		t.Errorf("prometheus --config.file=%s is not deploy/prometheus/prometheus.yml in its mounts %v", configFile, pmm)
	}

	// grafana: provisioning, the dashboard directory, the home dashboard.
	gf := c.Services["grafana"]
	gfm := mounts(t, gf.Volumes)
	prov, ok := gfm["/etc/grafana/provisioning"]
	if !ok {
		t.Fatal("grafana: nothing mounted at /etc/grafana/provisioning")
	}
	var ds struct {
		Datasources []struct {
			Type, URL string
			IsDefault bool `yaml:"isDefault"`
		}
	}
	if err := yaml.Unmarshal(readFile(t, path.Join(prov, "datasources/prometheus.yaml")), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || !ds.Datasources[0].IsDefault ||
		ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana's data source is %+v, want the default, Prometheus at http://prometheus:9090", ds.Datasources)
	}
	var dp struct {
		Providers []struct {
			Type    string
			Options struct{ Path string }
		}
	}
	if err := yaml.Unmarshal(readFile(t, path.Join(prov, "dashboards/providers.yaml")), &dp); err != nil {
		t.Fatal(err)
	}
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("want one file dashboard provider, have %+v", dp.Providers)
	}
	if src, ok := inMount(gfm, dp.Providers[0].Options.Path+"/phonehome.json"); !ok || src != "deploy/grafana/phonehome.json" {
		t.Errorf("the dashboard provider reads %s, which is not deploy/grafana/ in grafana's mounts %v", dp.Providers[0].Options.Path, gfm)
	}
	home := gf.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	if src, ok := inMount(gfm, home); !ok || src != "deploy/grafana/phonehome.json" {
		t.Errorf("grafana's home dashboard %q is not deploy/grafana/phonehome.json", home)
	}
	if gf.Environment["GF_AUTH_ANONYMOUS_ENABLED"] != "true" || gf.Environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] != "Viewer" {
		t.Error("grafana: want anonymous viewers, so the dashboard shows without logging in")
	}
}

// TestComposeSchema hands compose.yaml to docker-compose, which checks it
// against the Compose file schema without a Docker engine. Debian's
// docker-compose is version 1.29: keys newer than that (top-level name:,
// healthcheck start_interval) would fail here though Compose v2 takes them.
func TestComposeSchema(t *testing.T) {
	dc := tool(t, "docker-compose", "docker-compose")
	env := []string{"PHONEHOME_DNS_ADDR=", "PHONEHOME_HTTP_ADDR=", "GRAFANA_ADDR=", "GRAFANA_ADMIN_PASSWORD=", "PHONEHOME_VERSION="}
	run(t, root+"/deploy/compose", env, dc, "--project-directory", ".", "-f", "compose.yaml", "config", "--quiet")
}

package deploy

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/phonehome/phonehome/internal/dnstest"
)

// imageCommand is the image's ENTRYPOINT and CMD with its paths moved to
// this machine: the built binaries and the sample config.
func imageCommand(t *testing.T, out string, ic imageConfig, extra ...string) *exec.Cmd {
	t.Helper()
	args := append(append(slices.Clone(ic.entrypoint), ic.cmd...), extra...)
	cfg, err := filepath.Abs(filepath.Join(root, "deploy/docker/phonehome.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range args {
		a = strings.Replace(a, "/usr/local/bin/", out+"/", 1)
		if a == ic.configPath {
			a = cfg
		}
		args[i] = a
	}
	cmd := exec.Command(args[0], args[1:]...)
	// The image's state directory (ENV STATE_DIRECTORY), for the history.
	cmd.Env = append(os.Environ(), "STATE_DIRECTORY="+t.TempDir())
	return cmd
}

var (
	servingLine = regexp.MustCompile(`msg="phonehome serving" listen=(\S+) http=(\S+)`)
	seriesLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
	labelName   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
)

// parseMetrics reads the series names and label names out of Prometheus'
// text exposition format.
func parseMetrics(text string) series {
	s := series{}
	for _, line := range strings.Split(text, "\n") {
		m := seriesLine.FindStringSubmatch(line)
		if m == nil {
			continue // comments and blank lines
		}
		ls := s[m[1]]
		for _, l := range labelName.FindAllStringSubmatch(quoted.ReplaceAllString(m[2], `"`), -1) {
			if !slices.Contains(ls, l[1]) {
				ls = append(ls, l[1])
			}
		}
		s[m[1]] = ls
	}
	return s
}

// TestImageServes runs the binaries the Dockerfile builds as the image runs
// them (ENTRYPOINT, CMD, the sample config), on loopback with a stub
// upstream in place of :53 and Quad9. The image's HEALTHCHECK command must
// pass against it, and every series and label the dashboard and the
// alerting rules (and the rules' unit tests) use must be in its /metrics
// once it has answered a few queries.
func TestImageServes(t *testing.T) {
	out := imageBinaries(t)
	ic := runtimeConfig(t, readDockerfile(t))
	up := dnstest.Start(t)
	// A first upstream that never answers: nothing listens on this port,
	// so the upstream error and health series appear too.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()

	cmd := imageCommand(t, out, ic, "-listen", "127.0.0.1:0", "-http", "127.0.0.1:0", "-upstream", dead, "-upstream", up.Addr())
	// A shared database that is not there (a Unix socket in an empty
	// directory), as the Kubernetes manifests pass one: the fleet's series
	// are served too (phonehome_fleet_connected at 0), and the
	// HEALTHCHECK passes without the database.
	cmd.Env = append(cmd.Env, k8sDSNEnv+"=host="+t.TempDir()+" user=phonehome dbname=phonehome sslmode=disable")
	// Files rather than buffers: the process writes them directly, and the
	// test reads them while it runs.
	logs, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	cmd.Stderr = logs // the query log (stdout) is not read here
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("phonehome's stderr:\n%s", b)
		}
	})
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("phonehome did not start within 10 s")
		}
		b, _ := os.ReadFile(logs.Name())
		m = servingLine.FindStringSubmatch(string(b))
	}
	dnsAddr, httpAddr := m[1], m[2]

	// The HEALTHCHECK, pointed at the port the kernel chose.
	hc := slices.Clone(ic.healthcheck)
	for i := range hc {
		hc[i] = strings.Replace(hc[i], "/usr/local/bin/", out+"/", 1)
		hc[i] = regexp.MustCompile(`127\.0\.0\.1:\d+`).ReplaceAllString(hc[i], httpAddr)
	}
	run(t, "", nil, hc[0], hc[1:]...)

	// A sinkholed name, a protected one (logged though its category says
	// sinkhole), and a forwarded one past the dead upstream, then cached.
	c := &dns.Client{Timeout: 8 * time.Second}
	for _, name := range []string{"v10.events.data.microsoft.com.", "x.blob.core.windows.net.", "www.example.com.", "www.example.com."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		if _, _, err := c.Exchange(q, dnsAddr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	known := parseMetrics(get(t, "http://"+httpAddr+"/metrics"))
	known["up"] = nil // Prometheus makes it for every target it scrapes
	qs := alertQueries(t)
	d := readDashboard(t)
	qs = append(qs, d.queries()...)
	for _, v := range d.variableQueries() {
		// label_values(SELECTOR, LABEL): the label must be the selector's.
		if m := labelValues.FindStringSubmatch(v.expr); m != nil {
			v.expr = m[1]
			name, _, _ := strings.Cut(strings.TrimSpace(m[1]), "{")
			if ls, ok := known[name]; ok && !slices.Contains(ls, m[2]) && !slices.Contains(targetLabels, m[2]) {
				t.Errorf("%s: label_values of %q, which %s does not have", v.where, m[2], name)
			}
		}
		qs = append(qs, v)
	}
	for _, q := range qs {
		_, errs := checkExpr(known, q.expr)
		for _, e := range errs {
			t.Errorf("%s: %s\n\t%s", q.where, e, q.expr)
		}
	}
	// The unit tests of the rules feed them series that must look like
	// phonehome's, or they test rules against data that never comes.
	var rt struct {
		Tests []struct {
			Name        string `yaml:"name"`
			InputSeries []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy/prometheus/alerts_test.yml"), &rt); err != nil {
		t.Fatal(err)
	}
	for _, tc := range rt.Tests {
		for _, s := range tc.InputSeries {
			if _, errs := checkExpr(known, s.Series); len(errs) > 0 {
				t.Errorf("alerts_test.yml, test %q: series %s: %s", tc.Name, s.Series, strings.Join(errs, "; "))
			}
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/pgtest"
	"github.com/phonehome/phonehome/internal/testlog"
)

// process is phonehome serve running as a process of its own: the test
// binary, which TestMain makes phonehome with PHONEHOME_TEST_PROCESS=1.
type process struct {
	cmd       *exec.Cmd
	dns, http string
	logs      *testlog.Buffer
	done      chan struct{} // closed when it has exited
}

var servingLine = regexp.MustCompile(`msg="phonehome serving" listen=(\S+) .*http=(\S+)`)

// startProcess starts phonehome serve args and waits until it serves. It
// dies with the test binary (SIGKILL), and is stopped (SIGTERM) when the
// test ends.
func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{logs: new(testlog.Buffer), done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], append([]string{"serve"}, args...)...)
	p.cmd.Env = append(os.Environ(), "PHONEHOME_TEST_PROCESS=1")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if m := servingLine.FindStringSubmatch(p.logs.String()); m != nil {
			p.dns, p.http = m[1], m[2]
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("phonehome serve exited:\n%s", p.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("phonehome serve did not start in a minute:\n%s", p.logs)
		}
	}
}

// metric is the value of a metric line (name with its labels) on
// /metrics, -1 when there is none.
func metric(t *testing.T, httpAddr, line string) float64 {
	t.Helper()
	_, body := get(t, "http://"+httpAddr+"/metrics")
	for l := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), line+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// TestFleetProcesses runs three phonehome processes on three loopback
// addresses that share one throwaway PostgreSQL, as a small office would
// (issue 14): queries sent to each are in one instance's history; a
// pause pressed on one sinkholes nothing on all three within two
// seconds; killing one leaves the others answering; and with PostgreSQL
// stopped for 20 seconds no DNS answer is lost, and the history written
// before, during and after the outage is there, the drop counter at 0.
func TestFleetProcesses(t *testing.T) {
	db := pgtest.Start(t, pgtest.Options{})
	up := dnstest.Start(t)
	dir := t.TempDir()
	var ps []*process
	for i, name := range []string{"dns1", "dns2", "dns3"} {
		cfg := filepath.Join(dir, name+".yaml")
		text := fmt.Sprintf("access: {rate_limit: 0}\nquerylog: {output: \"off\"}\nhistory: {dsn: %q, instance: %s, flush: 100ms}\n", db.DSN(), name)
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.%d", 11+i)
		ps = append(ps, startProcess(t, "-config", cfg, "-listen", addr+":0", "-upstream", up.Addr(), "-http", addr+":0"))
	}
	for _, p := range ps {
		waitBody(t, "http://"+p.http+"/metrics", "connected", func(b string) bool { return strings.Contains(b, "\nphonehome_fleet_connected 1\n") })
	}
	const telemetry = "v10.events.data.microsoft.com."

	// Queries sent to each are in dns1's history: 1, 2 and 3 of them.
	for i, p := range ps {
		for range i + 1 {
			if got := lookupA(t, p.dns, telemetry); got != "0.0.0.0" {
				t.Fatalf("telemetry on %s: %s", p.dns, got)
			}
		}
	}
	waitBody(t, "http://"+ps[0].http+"/api/instances?from=-1h", "the three instances' counts", func(b string) bool {
		return strings.Contains(b, `"instances":[{"instance":"dns1","total":1},{"instance":"dns2","total":2},{"instance":"dns3","total":3}]`)
	})
	waitBody(t, "http://"+ps[0].http+"/api/history?from=-1h&step=1h", "the fleet's 6", func(b string) bool { return strings.Contains(b, `"total":6}`) })
	waitBody(t, "http://"+ps[0].http+"/api/history?from=-1h&step=1h&instance=dns3", "dns3's 3", func(b string) bool { return strings.Contains(b, `"total":3}`) })

	// A pause on dns2 reaches every instance within two seconds.
	if code, body := post(t, "", "http://"+ps[1].http+"/api/pause", `{"duration":"15m","reason":"a Windows update"}`); code != 200 {
		t.Fatalf("pause on dns2: %d %s", code, body)
	}
	paused := time.Now()
	for _, p := range ps {
		for lookupA(t, p.dns, telemetry) != dnstest.AnswerA {
			time.Sleep(10 * time.Millisecond)
			if time.Since(paused) > 30*time.Second {
				t.Fatalf("%s still sinkholes 30 s after the pause", p.dns)
			}
		}
	}
	if took := time.Since(paused); took > 2*time.Second {
		t.Errorf("the pause took %v to reach the three instances; want 2 s at most", took)
	} else {
		t.Logf("the pause reached the three instances in %v", took)
	}
	if code, body := post(t, "", "http://"+ps[2].http+"/api/resume", ""); code != 200 {
		t.Fatalf("resume on dns3: %d %s", code, body)
	}
	for _, p := range ps {
		waitBody(t, "http://"+p.http+"/api/summary", "resumed", func(b string) bool { return strings.Contains(b, `"paused":null`) })
	}

	// dns3 is killed: the others answer.
	ps[2].cmd.Process.Kill()
	<-ps[2].done
	live := ps[:2]
	for _, p := range live {
		if got := lookupA(t, p.dns, "arc.msn.com."); got != dnstest.AnswerA {
			t.Errorf("%s after dns3 was killed: %s", p.dns, got)
		}
	}

	// PostgreSQL stops for 20 seconds under a steady load on dns1 and
	// dns2: every query is answered, and every sinkholed one counted.
	before := settledTotal(t, live)
	var sent, failed int
	var mu sync.Mutex
	load := func(d time.Duration) {
		c := &dns.Client{Timeout: 2 * time.Second}
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			for _, p := range live {
				q := new(dns.Msg)
				q.SetQuestion(telemetry, dns.TypeA)
				r, _, err := c.Exchange(q, p.dns)
				mu.Lock()
				sent++
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					failed++
				}
				mu.Unlock()
			}
		}
	}
	db.Stop()
	load(20 * time.Second)
	for _, p := range live {
		if metric(t, p.http, "phonehome_history_pending_queries") <= 0 {
			t.Errorf("%s: the history is not behind with the database down", p.http)
		}
		if code, body := get(t, "http://"+p.http+"/readyz"); code != 200 {
			t.Errorf("%s: /readyz with the database down: %d %s", p.http, code, body)
		}
	}
	db.Start()
	load(2 * time.Second)
	if failed > 0 {
		t.Errorf("%d of %d queries unanswered across the outage", failed, sent)
	}
	after := settledTotal(t, live)
	if after != before+sent {
		t.Errorf("the fleet's history: %d before, %d after, %d sinkholed queries sent meanwhile: %d lost", before, after, sent, before+sent-after)
	}
	for _, p := range live {
		for _, part := range []string{"counts", "events"} {
			if n := metric(t, p.http, `phonehome_history_dropped_total{part="`+part+`"}`); n != 0 {
				t.Errorf("%s: %v %s dropped", p.http, n, part)
			}
		}
		if n := strings.Count(p.logs.String(), "history: cannot write"); n != 1 {
			t.Errorf("%s logged the outage %d times, want once:\n%s", p.http, n, p.logs)
		}
	}
	t.Logf("%d queries across the outage, none lost; the history went from %d to %d", sent, before, after)
}

// settledTotal is the fleet's count of the last hour on the first of
// ps, once every one of ps has written all it counted and two reads a
// flush apart agree.
func settledTotal(t *testing.T, ps []*process) int {
	t.Helper()
	total := regexp.MustCompile(`"total":(\d+)}$`)
	last := -1
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		behind := false
		for _, p := range ps {
			behind = behind || metric(t, p.http, "phonehome_history_pending_queries") != 0
		}
		_, body := get(t, "http://"+ps[0].http+"/api/history?from=-2h&step=1h")
		m := total.FindStringSubmatch(strings.TrimSpace(body))
		if m == nil {
			t.Fatalf("/api/history: %s", body)
		}
		n, _ := strconv.Atoi(m[1])
		if !behind && n == last {
			return n
		}
		last = n
		if time.Now().After(deadline) {
			t.Fatalf("the history did not settle in a minute: %s", body)
		}
	}
}

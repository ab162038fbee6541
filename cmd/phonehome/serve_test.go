package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/phonehome/phonehome/internal/dnstest"
	"github.com/phonehome/phonehome/internal/testlog"
)

func lookupA(t *testing.T, addr, name string) string {
	t.Helper()
	return lookupFrom(t, "", addr, name)
}

// lookupFrom asks for name's A record from the client address from.
func lookupFrom(t *testing.T, from, addr, name string) string {
	t.Helper()
	a, err := exchangeA(from, addr, name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return a
}

// exchangeA asks for name's A record and returns the first address or the
// rcode; it does not touch t, so other goroutines may call it.
func exchangeA(from, addr, name string) (string, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: 3 * time.Second}
	if from != "" {
		c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	}
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		return "", err
	}
	if len(r.Answer) == 0 {
		return dns.RcodeToString[r.Rcode], nil
	}
	return r.Answer[0].(*dns.A).A.String(), nil
}

// running is phonehome serve, started in-process by startServe.
type running struct {
	bound
	logs *testlog.Buffer
	done chan struct{} // closed when serve has returned
	code int           // its exit code, once done
}

// startServe runs phonehome serve with args in-process and waits until it
// listens. The test may stop it with SIGTERM and wait on done; otherwise
// cleanup stops it, without a signal, which would reach every serve the
// test process runs.
func startServe(t *testing.T, args ...string) *running {
	t.Helper()
	r := &running{logs: new(testlog.Buffer), done: make(chan struct{})}
	ready, stop := make(chan bound, 1), make(chan struct{})
	go func() {
		r.code = serve(args, r.logs, ready, stop)
		close(r.done)
	}()
	t.Cleanup(func() {
		close(stop)
		<-r.done
	})
	select {
	case r.bound = <-ready:
	case <-r.done:
		t.Fatalf("serve exited %d:\n%s", r.code, r.logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	return r
}

// TestServeReloadAndShutdown runs phonehome serve in-process: SIGHUP with a
// good and a bad file while a bounded load runs, then SIGTERM with a query
// in flight.
func TestServeReloadAndShutdown(t *testing.T) {
	up := dnstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "phonehome.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("http: \"\"\naccess: {rate_limit: 0}\nquerylog: {output: \"off\"}\n")
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr())
	addr, logs := ph.dns[0], ph.logs
	if got := lookupA(t, addr, "arc.msn.com."); got != dnstest.AnswerA {
		t.Fatalf("arc.msn.com before reload: %s", got)
	}

	// A bounded load runs through both reloads: every query is answered.
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := &dns.Client{Timeout: 2 * time.Second}
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			q := new(dns.Msg)
			q.SetQuestion("www.example.com.", dns.TypeA)
			sent.Add(1)
			if r, _, err := c.Exchange(q, addr); err != nil || r.Rcode != dns.RcodeSuccess {
				failed.Add(1)
			}
		}
	}()

	write("http: \"\"\naccess: {rate_limit: 0}\nquerylog: {output: \"off\"}\npolicy:\n  default: {actions: {spotlight: sinkhole}}\n")
	syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for lookupA(t, addr, "arc.msn.com.") != "0.0.0.0" {
		if time.Now().After(deadline) {
			t.Fatalf("reload did not take:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	write("http: \"\"\naccess: {rate_limit: 0}\nquerylog: {output: \"off\"}\npolicy:\n  default: {actions: {spotlite: sinkhole}}\n")
	syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "reload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("bad reload not logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), cfg+`:5:23: unknown category \"spotlite\"`) {
		t.Errorf("the error does not name file, line and column:\n%s", logs.String())
	}
	if got := lookupA(t, addr, "arc.msn.com."); got != "0.0.0.0" {
		t.Errorf("after a bad reload the running policy should stay: %s", got)
	}
	close(stop)
	wg.Wait()
	if sent.Load() == 0 || failed.Load() != 0 {
		t.Errorf("%d of %d queries failed during reloads", failed.Load(), sent.Load())
	}

	// Shutdown lets a query in flight finish.
	up.SetMode(dnstest.Delay)
	up.SetDelay(300 * time.Millisecond)
	answer := make(chan string, 1)
	go func() {
		a, err := exchangeA("", addr, "slow.example.") // no t.Fatal off the test goroutine
		if err != nil {
			a = err.Error()
		}
		answer <- a
	}()
	for deadline := time.Now().Add(5 * time.Second); up.Seen("slow.example") == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow query never reached the upstream")
		}
	}
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	if got := <-answer; got != dnstest.AnswerA {
		t.Errorf("query in flight at shutdown: %s", got)
	}
	select {
	case <-ph.done:
		if ph.code != 0 {
			t.Errorf("exit %d", ph.code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestServeRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("cache: {size: lots}\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-listen", "127.0.0.1:5397", "-upstream", "127.0.0.1:5397"}, "queries would loop"},
		{[]string{"-config", bad, "-upstream", "127.0.0.1:5399"}, bad + ":1:15: cache.size"},
		{[]string{"-upstream", "quic://x:1"}, "unknown scheme"},
		{[]string{"-upstream", "https://x:1"}, "no other upstream can look it up"},
	} {
		var logs testlog.Buffer
		if code := serve(c.args, &logs, nil, nil); code != 1 || !strings.Contains(logs.String(), c.want) {
			t.Errorf("%v: exit %d\n%s", c.args, code, logs.String())
		}
	}
}

// TestServeReloadListenChange: a reload that changes the listen addresses
// says they need a restart, and the running listeners keep answering.
func TestServeReloadListenChange(t *testing.T) {
	up := dnstest.Start(t)
	cfg := filepath.Join(t.TempDir(), "phonehome.yaml")
	conf := "listen: [%q]\nhttp: \"\"\naccess: {rate_limit: 0}\nquerylog: {output: \"off\"}\n"
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(conf, "127.0.0.1:0")), 0o644); err != nil {
		t.Fatal(err)
	}
	ph := startServe(t, "-config", cfg, "-upstream", up.Addr())
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(conf, "127.0.0.2:0")), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(ph.logs.String(), "take effect after a restart") {
		if time.Now().After(deadline) {
			t.Fatalf("no restart warning after changing listen:\n%s", ph.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := lookupA(t, ph.dns[0], "www.example.com."); got != dnstest.AnswerA {
		t.Errorf("the running listener after the reload: %s", got)
	}
}

// TestServeReloadOverHTTP: POST /api/reload applies the file without any
// signal, the HTTP token included; a bad file is refused with its errors
// and changes nothing.
func TestServeReloadOverHTTP(t *testing.T) {
	up := dnstest.Start(t)
	cfg := filepath.Join(t.TempDir(), "phonehome.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const base = "access: {rate_limit: 0}\nquerylog: {output: \"off\"}\n"
	write(base + "http_token: one\n")
	ph := startServe(t, "-config", cfg, "-listen", "127.0.0.1:0", "-upstream", up.Addr(), "-http", "127.0.0.1:0")
	reload := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+ph.http+"/api/reload", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		r, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if got := lookupA(t, ph.dns[0], "arc.msn.com."); got != dnstest.AnswerA {
		t.Fatalf("arc.msn.com before the reload: %s", got)
	}

	write(base + "http_token: two\npolicy:\n  default: {actions: {spotlight: sinkhole}}\n")
	if code, body := reload("one"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if got := lookupA(t, ph.dns[0], "arc.msn.com."); got != "0.0.0.0" {
		t.Errorf("arc.msn.com after the reload: %s", got)
	}
	if code, _ := reload("one"); code != http.StatusUnauthorized {
		t.Errorf("the old token after rotating it: %d", code)
	}

	write(base + "http_token: two\npolicy:\n  default: {actions: {spotlite: sinkhole}}\n")
	code, body := reload("two")
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, cfg+`:5:23: unknown category "spotlite"`) {
		t.Errorf("bad file: %d %s", code, body)
	}
	if got := lookupA(t, ph.dns[0], "arc.msn.com."); got != "0.0.0.0" {
		t.Errorf("after a bad reload the running policy should stay: %s", got)
	}
	if _, metrics := get(t, "http://"+ph.http+"/metrics"); !strings.Contains(metrics, `phonehome_config_reloads_total{result="failure"} 1`) ||
		!strings.Contains(metrics, `phonehome_config_reloads_total{result="success"} 2`) {
		t.Errorf("reloads counted wrong:\n%s", metrics)
	}
}

// TestValidateAgreesWithServe: validate runs serve's checks and reports
// the same errors, and warns of what only binding can tell.
func TestValidateAgreesWithServe(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ config, want string }{
		{"listen: [\"127.0.0.1:25353\"]\nupstreams: [\"127.0.0.1:25353\"]\nhttp: \"\"\n", ":2:1: upstream 127.0.0.1:25353 is phonehome's own listen address 127.0.0.1:25353: queries would loop"},
		{"listen: [\":25353\"]\nupstreams: [\"127.0.0.1:25353\"]\nhttp: \"\"\n", ":2:1: upstream 127.0.0.1:25353 is phonehome's own listen address :25353: queries would loop"},
		{"cache: {size: lots}\nhttp: \"\"\n", ":1:15: cache.size: cannot unmarshal"},
		{"policy:\n  groups:\n    - {name: a, clients: [10.0.0.1], lists: [{category: x, file: none.txt}]}\n", ":3:60: reading list: open"},
	} {
		cfg := filepath.Join(dir, "p.yaml")
		os.WriteFile(cfg, []byte(c.config), 0o644)
		_, errs, code := phonehome(t, "validate", "-config", cfg, "-resolv-conf", "/nonexistent")
		if code != 1 || !strings.Contains(errs, cfg+c.want) {
			t.Errorf("validate %q: exit %d\n%s", c.config, code, errs)
		}
		var logs testlog.Buffer
		if code := serve([]string{"-config", cfg, "-resolv-conf", "/nonexistent"}, &logs, nil, nil); code != 1 || !strings.Contains(logs.String(), cfg+c.want) {
			t.Errorf("serve %q: exit %d\n%s", c.config, code, logs.String())
		}
	}

	// A port taken now: validate says so, and by whom it usually is.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := filepath.Join(dir, "taken.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: [%q]\nupstreams: [\"127.0.0.1:9\"]\n", pc.LocalAddr())), 0o644)
	out, errs, code := phonehome(t, "validate", "-config", cfg)
	if code != 0 || !strings.Contains(out, cfg+": ok") || !strings.Contains(errs, "warning: listening on "+pc.LocalAddr().String()+"/udp") ||
		!strings.Contains(errs, "a phonehome already running") {
		t.Errorf("validate with a taken port: exit %d\n%s%s", code, out, errs)
	}
}

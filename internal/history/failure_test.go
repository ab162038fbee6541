package history

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonehome/phonehome/internal/testlog"
)

// The failure tests run as root here, where permission bits stop nothing:
// each makes the file fail in a way that stops root too.

// childCommand runs this test binary again for the calling test alone,
// with HISTORY_CHILD naming it: the test then plays the child's part.
func childCommand(t *testing.T, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), "HISTORY_CHILD="+t.Name()), env...)
	return cmd
}

func isChild(t *testing.T) bool { return os.Getenv("HISTORY_CHILD") == t.Name() }

// runChild runs the child and fails with its output if it fails.
func runChild(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return string(out)
}

// answerLoad answers n queries from distinct clients in one minute, each
// a new count, and returns the longest one Answered call took.
func answerLoad(t *testing.T, s *Store, n, from int) time.Duration {
	t.Helper()
	var longest time.Duration
	for i := range n {
		a := answer(t, fmt.Sprintf("10.%d.%d.%d", (from+i)>>16&255, (from+i)>>8&255, (from+i)&255), telemetry, t0)
		start := time.Now()
		s.Answered(a)
		longest = max(longest, time.Since(start))
	}
	return longest
}

// checkFailing checks what a run of failed flushes leaves: each counted,
// one log line, the backlog held to its bound and the rest dropped and
// counted.
func checkFailing(t *testing.T, s *Store, logs *testlog.Buffer, flushes, answered, bound int) {
	t.Helper()
	if got := testutil.ToFloat64(s.m.failures); got < float64(flushes) {
		t.Errorf("flush failures = %v, want at least %d", got, flushes)
	}
	if n := strings.Count(logs.String(), "cannot write"); n != 1 {
		t.Errorf("%d log lines about the failure, want 1:\n%s", n, logs)
	}
	held := min(answered, bound)
	if got := testutil.ToFloat64(s.m.pending); got != float64(held) {
		t.Errorf("pending queries = %v, want %d", got, held)
	}
	if got := testutil.ToFloat64(s.m.droppedCounts); got != float64(answered-held) {
		t.Errorf("counts dropped = %v, want %d", got, answered-held)
	}
	if got := testutil.ToFloat64(s.m.droppedEvents); got != float64(answered-held) {
		t.Errorf("events dropped = %v, want %d", got, answered-held)
	}
}

// TestPathNotADirectory: the file's directory is a regular file (ENOTDIR,
// which root gets too). Open says so and the store runs anyway: answers
// are taken, flushes fail and are counted and logged once, the backlog
// stays bounded; once the directory can be made, the next flush writes
// what the backlog held.
func TestPathNotADirectory(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Path: filepath.Join(state, "history.db"), Flush: time.Hour}
	logs := &testlog.Buffer{}
	s, err := Open(cfg, Options{Backlog: 100, Log: slogTo(logs), Now: (&clock{t: t0}).Now, MaintainEvery: time.Hour})
	if err == nil || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("Open = %v, want ENOTDIR", err)
	}
	defer s.Close()
	answered := 0
	for range 3 {
		answerLoad(t, s, 100, answered)
		answered += 100
		if err := s.Flush(); err == nil {
			t.Fatal("a flush under a regular file succeeded")
		}
	}
	checkFailing(t, s, logs, 3, answered, 100)

	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatalf("flush once the directory can be made: %v", err)
	}
	db := readDB(t, cfg.Path)
	if n := one(t, db, `SELECT count(*) FROM counts`); n != 100 {
		t.Errorf("%d counts written from the backlog, want 100", n)
	}
	if n := one(t, db, `SELECT sum(n) FROM event_blocks`); n != 100 {
		t.Errorf("%d events written from the backlog, want 100", n)
	}
	if got := testutil.ToFloat64(s.m.pending); got != 0 {
		t.Errorf("pending = %v after a good flush", got)
	}
	if !strings.Contains(logs.String(), "writing again") {
		t.Error("no log line when writing works again")
	}
}

// TestLocked: another process holds the write lock. The flush waits for
// SQLite's busy timeout and fails; Answered goes on meanwhile, on other
// goroutines, and does not wait for it; the lock released, the next flush
// writes everything.
func TestLocked(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	logs := &testlog.Buffer{}
	s, err := Open(cfg, Options{Log: slogTo(logs), Now: (&clock{t: t0}).Now, MaintainEvery: time.Hour, busyTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := sql.Open("sqlite", dsn(cfg.Path, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}

	answerLoad(t, s, 100, 0)
	flushed := make(chan error, 1)
	started := time.Now()
	go func() { flushed <- s.Flush() }()
	time.Sleep(50 * time.Millisecond) // the writer is waiting for the lock
	longest := answerLoad(t, s, 1000, 100)
	select {
	case err := <-flushed:
		t.Fatalf("the flush returned (%v) before the answers were taken: they waited for it", err)
	default:
	}
	err = <-flushed
	took := time.Since(started)
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("flush under a lock held elsewhere = %v, want database is locked", err)
	}
	t.Logf("1,000 answers while the writer waited for the lock: longest Answered %v; the flush failed after %v", longest, took)
	checkFailing(t, s, logs, 1, 100, 100) // the second load is not yet taken by a flush

	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := one(t, readDB(t, cfg.Path), `SELECT sum(n) FROM counts`); n != 1100 {
		t.Errorf("%d queries counted, want 1100", n)
	}
}

// TestReadOnlyMount: the file's directory is a read-only bind mount
// (EROFS stops root too), in a mount namespace of the child's own so
// nothing is left mounted. The file was written before; Open fails, the
// store takes answers and counts failed flushes; remounted read-write,
// the next flush writes the backlog. Skipped where mounting is not
// permitted.
func TestReadOnlyMount(t *testing.T) {
	if !isChild(t) {
		cmd := childCommand(t)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
			t.Skipf("no mount namespace here: %v", err)
		}
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "SKIP") {
			t.Skipf("child skipped:\n%s", out)
		}
		t.Logf("child:\n%s", out)
		return
	}
	src, mnt := t.TempDir(), t.TempDir()
	cfg := testConfig(src)
	s, _ := open(t, cfg, Options{})
	s.Answered(answer(t, "192.168.1.23", telemetry, t0))
	s.Close()
	if err := syscall.Mount(src, mnt, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	if err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Skipf("read-only remount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "probe"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("writing to the read-only mount as root: %v, want EROFS", err)
	}

	roCfg := testConfig(mnt)
	logs := &testlog.Buffer{}
	s, err := Open(roCfg, Options{Backlog: 100, Log: slogTo(logs), Now: (&clock{t: t0}).Now, MaintainEvery: time.Hour})
	if err == nil {
		t.Fatal("Open on a read-only mount succeeded")
	}
	t.Logf("Open on the read-only mount: %v", err)
	defer s.Close()
	answered := 0
	for range 3 {
		if longest := answerLoad(t, s, 100, answered); longest > time.Second {
			t.Errorf("an Answered call took %v", longest)
		}
		answered += 100
		if err := s.Flush(); err == nil {
			t.Fatal("a flush to a read-only mount succeeded")
		}
	}
	checkFailing(t, s, logs, 3, answered, 100)

	if err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT|syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatalf("flush after the remount read-write: %v", err)
	}
	if n := one(t, readDB(t, cfg.Path), `SELECT count(*) FROM counts`); n != 101 {
		t.Errorf("%d counts in the file, want the first one and the 100 the backlog held", n)
	}
}

// TestFullDisk: a file size limit (RLIMIT_FSIZE, which binds root too; set
// in a child process, so that nothing else of the test run is limited)
// makes writes to the file fail with EFBIG, as a full disk fails them
// with ENOSPC. Answers are taken without waiting, failed flushes counted
// and logged once, the backlog bounded; with the limit lifted the next
// flush writes, and the file passes integrity_check.
func TestFullDisk(t *testing.T) {
	dir := os.Getenv("HISTORY_DIR")
	if !isChild(t) {
		dir = t.TempDir()
		t.Logf("child:\n%s", runChild(t, childCommand(t, "HISTORY_DIR="+dir)))
		db := readDB(t, filepath.Join(dir, "history.db"))
		if got := rows(t, db, `PRAGMA integrity_check`); len(got) != 1 || got[0] != "ok" {
			t.Errorf("integrity_check: %v", got)
		}
		if n := one(t, db, `SELECT count(*) FROM counts`); n != 1+200 {
			t.Errorf("%d counts rows, want the first flush's and the backlog's: 201", n)
		}
		return
	}
	cfg := testConfig(dir)
	logs := &testlog.Buffer{}
	s, err := Open(cfg, Options{Backlog: 200, Log: slogTo(logs), Now: (&clock{t: t0}).Now, MaintainEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.Answered(answer(t, "192.168.1.23", telemetry, t0))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Past the first write, the file and its WAL may not grow beyond what
	// they are now and a few pages.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	limit := uint64(fileSize(cfg.Path) + 8<<10)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	answered := 0
	var longest time.Duration
	for range 5 {
		longest = max(longest, answerLoad(t, s, 200, answered))
		answered += 200
		err := s.Flush()
		if err == nil {
			t.Fatal("a flush past the file size limit succeeded")
		}
		t.Logf("flush: %v", err)
	}
	if longest > time.Second {
		t.Errorf("an Answered call took %v while the file could not be written", longest)
	}
	checkFailing(t, s, logs, 5, answered, 200)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatalf("flush with the limit lifted: %v", err)
	}
	s.Close()
}

// TestCrash kills a process that writes the history as fast as it can
// with SIGKILL, three times, and opens the file after each: it passes
// integrity_check, and what was committed before the kill is there.
func TestCrash(t *testing.T) {
	dir := os.Getenv("HISTORY_DIR")
	if isChild(t) {
		cfg := testConfig(dir)
		cfg.Flush = 5 * time.Millisecond
		s, err := Open(cfg, Options{EventRate: 1e6})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			answerLoad(t, s, 200, i*200)
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				fmt.Println("WRITING")
			}
		}
	}
	dir = t.TempDir()
	path := filepath.Join(dir, "history.db")
	var last int64
	for round := range 3 {
		cmd := childCommand(t, "HISTORY_DIR="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "WRITING" {
			t.Logf("child: %s", sc.Text())
		}
		time.Sleep(time.Duration(100+round*70) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if st := cmd.ProcessState.Sys().(syscall.WaitStatus); !st.Signaled() || st.Signal() != syscall.SIGKILL {
			t.Fatalf("the child ended with %v, not by SIGKILL", cmd.ProcessState)
		}
		db, err := sql.Open("sqlite", dsn(path, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var check string
		if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
			t.Fatalf("round %d: integrity_check = %q, %v", round, check, err)
		}
		var n, events int64
		db.QueryRow(`SELECT coalesce(sum(n), 0) FROM counts`).Scan(&n)
		db.QueryRow(`SELECT coalesce(sum(n), 0) FROM event_blocks`).Scan(&events)
		db.Close()
		t.Logf("round %d: %d queries counted, %d events after SIGKILL", round, n, events)
		if n <= last || n != events {
			t.Errorf("round %d: %d queries counted (%d before), %d events; want more than before, one event each", round, n, last, events)
		}
		last = n
	}
}

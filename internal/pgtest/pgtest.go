// Package pgtest runs a throwaway PostgreSQL server for a test: initdb in
// a temporary directory, the server listening on a Unix socket there and
// nowhere else, stopped and removed when the test ends.
//
// The tools (initdb and postgres) are found on PATH or under
// /usr/lib/postgresql/*/bin, where Debian's postgresql package puts them.
// Without them the test is skipped, except in CI (CI set), where
// scripts/test.sh installs the package and a missing tool is a failure.
//
// PostgreSQL refuses to run as root. Run as root (as CI does), pgtest runs
// initdb and the server as the postgres user that Debian's package
// creates, with the data in a directory that user owns.
//
// The server is a child of the test process, not a daemon started by
// pg_ctl: it gets SIGQUIT (PostgreSQL's immediate shutdown) if the test
// binary dies, so a test killed by its timeout leaves no server behind. A
// test can stop and start it again (Stop, Start) to see what its code does
// while the database is down.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// User and Database are what the DSN connects as and to: initdb's
// superuser and a database of that name.
const (
	User     = "phonehome"
	Database = "phonehome"
)

// port names the socket (.s.PGSQL.5432) in the server's own directory; no
// TCP port is opened.
const port = 5432

// maxSocketPath is the room for a Unix socket's path (sun_path, 108 bytes
// with its NUL on Linux).
const maxSocketPath = 107

// Options change the server Start makes.
type Options struct {
	// Password, when set, is required of every connection (scram-sha-256),
	// so that a test can give a wrong one. Without it every connection is
	// trusted.
	Password string
}

// Server is a running (or stopped) throwaway PostgreSQL.
type Server struct {
	t        testing.TB
	bin      string // the directory of initdb and postgres
	dir      string // data/, the socket, postgres.log
	password string
	cred     *syscall.Credential // the postgres user's, when the test runs as root

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	log    *os.File
}

// Start makes a new database cluster and starts its server, or skips the
// test (fails it under CI) when PostgreSQL is not installed. The server is
// stopped and its files removed when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := findTools()
	if err != nil {
		unavailable(t, "%v", err)
	}
	s := &Server{t: t, bin: bin, password: o.Password}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			unavailable(t, "running as root, and PostgreSQL refuses to run as root; the postgres user (Debian's postgresql package creates it) is not there to run it as: %v", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if s.dir, err = makeDir(s.cred); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(s.cleanup)
	if sock := s.socket(); len(sock) > maxSocketPath {
		t.Fatalf("pgtest: the socket path %s is over %d bytes; set TMPDIR to a shorter directory", sock, maxSocketPath)
	}
	s.initdb()
	s.Start()
	return s
}

// DSN is a libpq key=value connection string for the server, with the
// password of Options if there is one.
func (s *Server) DSN() string { return s.DSNWithPassword(s.password) }

// DSNWithPassword is DSN with another password ("" for none).
func (s *Server) DSNWithPassword(password string) string { return s.DSNAs(User, password) }

// DSNAs is a connection string for another role ("" for no password), so
// that a test can connect as a user with fewer rights than the superuser
// (make it with Exec: CREATE ROLE app LOGIN, with PASSWORD when Options
// has one).
func (s *Server) DSNAs(user, password string) string {
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=10", s.dir, port, quote(user), Database)
	if password != "" {
		dsn += " password=" + quote(password)
	}
	return dsn
}

// Exec runs SQL statements as the superuser in Database (roles, grants,
// fixtures), failing the test if one fails. Call it from the test's
// goroutine.
func (s *Server) Exec(sql string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		s.t.Fatalf("pgtest: Exec: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql); err != nil {
		s.t.Fatalf("pgtest: Exec %q: %v", sql, err)
	}
}

// Dir is the directory of the server's socket, data and log.
func (s *Server) Dir() string { return s.dir }

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
func (s *Server) Start() {
	s.t.Helper()
	if s.running() {
		s.t.Fatal("pgtest: Start: the server is running")
	}
	if s.log == nil {
		var err error
		if s.log, err = os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			s.t.Fatalf("pgtest: %v", err)
		}
	}
	cmd := s.command("postgres", "-D", filepath.Join(s.dir, "data"), "-k", s.dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=", // the Unix socket only
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=40", "-c", "shared_buffers=16MB",
		"-c", "dynamic_shared_memory_type=mmap") // containers often have a tiny /dev/shm
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// The server ends with the test binary, whatever kills it.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("pgtest: starting postgres: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(s.exited)

	// Ready when a connection works; a server that exits has said why in
	// its log.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, s.DSN())
		cancel()
		if err == nil {
			c.Close(context.Background())
			return
		}
		select {
		case <-s.exited:
			s.t.Fatalf("pgtest: postgres exited at start: %v\n%s", err, s.logText())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("pgtest: postgres is not ready after a minute: %v\n%s", err, s.logText())
		}
	}
}

// Stop shuts the server down as pg_ctl stop -m fast does (SIGINT: every
// session is ended, then the server exits cleanly) and waits for it. The
// socket goes with it, so a connection fails at once.
func (s *Server) Stop() {
	s.t.Helper()
	if !s.running() {
		s.t.Fatal("pgtest: Stop: the server is not running")
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		s.cmd.Process.Signal(syscall.SIGQUIT)
		<-s.exited
		s.t.Fatalf("pgtest: postgres did not stop within a minute\n%s", s.logText())
	}
}

// running reports whether the server process is there.
func (s *Server) running() bool {
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// cleanup stops the server at once (pg_ctl's immediate mode) and removes
// its files.
func (s *Server) cleanup() {
	if s.running() {
		s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}

// initdb makes the cluster in dir/data, with User as its superuser.
func (s *Server) initdb() {
	s.t.Helper()
	args := []string{"-D", filepath.Join(s.dir, "data"), "-U", User, "-E", "UTF8", "--locale=C", "--no-sync"}
	if s.password == "" {
		args = append(args, "--auth=trust")
	} else {
		pw := filepath.Join(s.dir, "pwfile")
		if err := s.writeFile(pw, s.password+"\n"); err != nil {
			s.t.Fatalf("pgtest: %v", err)
		}
		defer os.Remove(pw)
		args = append(args, "--auth=scram-sha-256", "--pwfile="+pw)
	}
	if out, err := s.command("initdb", args...).CombinedOutput(); err != nil {
		s.t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	// The database the DSN names, made in single-user mode: no server yet.
	cmd := s.command("postgres", "--single", "-D", filepath.Join(s.dir, "data"), "postgres")
	cmd.Stdin = strings.NewReader("CREATE DATABASE " + Database + ";\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("pgtest: creating the database: %v\n%s", err, out)
	}
}

// command runs one of PostgreSQL's programs, as the postgres user when
// the test runs as root, in a small known environment.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC", "HOME=" + s.dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// writeFile writes a file the server's user can read.
func (s *Server) writeFile(path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	if s.cred != nil {
		return os.Chown(path, int(s.cred.Uid), int(s.cred.Gid))
	}
	return nil
}

func (s *Server) socket() string {
	return filepath.Join(s.dir, ".s.PGSQL."+strconv.Itoa(port))
}

func (s *Server) logText() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return string(b)
}

// makeDir makes the server's directory: short enough for the socket's
// path (t.TempDir's names, which carry the test's name, may not be), and
// owned by the user the server runs as.
func makeDir(cred *syscall.Credential) (string, error) {
	var bases []string
	for _, b := range []string{os.TempDir(), "/tmp"} {
		// The postgres user must be able to reach it when the test is root.
		if fi, err := os.Stat(b); err == nil && fi.IsDir() && len(b) < 64 && (cred == nil || fi.Mode().Perm()&0o001 != 0) {
			bases = append(bases, b)
		}
	}
	if len(bases) == 0 {
		return "", errors.New("no temporary directory with a short path that the postgres user can reach; set TMPDIR")
	}
	dir, err := os.MkdirTemp(bases[0], "pgtest")
	if err != nil {
		return "", err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

// findTools returns the directory that holds both initdb and postgres:
// initdb's on PATH, else the newest /usr/lib/postgresql/VERSION/bin.
func findTools() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	lib, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	slices.SortFunc(lib, func(a, b string) int { return version(b) - version(a) })
	dirs = append(dirs, lib...)
	for _, d := range dirs {
		if executable(filepath.Join(d, "initdb")) && executable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL's initdb and postgres are neither on PATH nor in /usr/lib/postgresql/*/bin (Debian package postgresql)")
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}

// unavailable skips the test, or fails it under CI, where scripts/test.sh
// installs PostgreSQL.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("pgtest: %s; scripts/test.sh installs it", msg)
	}
	t.Skipf("pgtest: %s; skipping", msg)
}

// quote writes a libpq key=value value.
func quote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

package deploy

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
	line int
}

// stage is one FROM and what follows it.
type stage struct {
	image, name string
	instrs      []instruction
}

// dockerfile is the top-level Dockerfile, parsed as far as these tests need:
// global ARG defaults substituted in FROM, stages and their instructions.
type dockerfile struct {
	args   map[string]string
	stages []stage
}

func parseDockerfile(text string) (*dockerfile, error) {
	d := &dockerfile{args: map[string]string{}}
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue // comments may also sit between continuation lines
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:]
			}
			if len(f) == 0 {
				return nil, fmt.Errorf("line %d: FROM without an image", in.line)
			}
			st := stage{image: os.Expand(f[0], func(k string) string { return d.args[k] })}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			d.stages = append(d.stages, st)
		case len(d.stages) == 0:
			if in.cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			k, v, _ := strings.Cut(in.args, "=")
			d.args[k] = v
		default:
			st := &d.stages[len(d.stages)-1]
			st.instrs = append(st.instrs, in)
		}
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("the Dockerfile ends in a continuation line")
	}
	return d, nil
}

// all returns the instructions of a stage with this command.
func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// last returns the stage's last instruction with this command.
func (s stage) last(t *testing.T, cmd string) instruction {
	t.Helper()
	all := s.all(cmd)
	if len(all) == 0 {
		t.Fatalf("the runtime stage has no %s", cmd)
	}
	return all[len(all)-1]
}

// execForm parses ["a", "b"], the exec form of CMD, ENTRYPOINT and
// HEALTHCHECK CMD; the shell form would need a shell, which distroless lacks.
func execForm(t *testing.T, in instruction, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil || len(v) == 0 {
		t.Fatalf("Dockerfile:%d: %s %s: want the exec form [\"...\"] (no shell in the image): %v", in.line, in.cmd, s, err)
	}
	return v
}

func readDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	d, err := parseDockerfile(string(readFile(t, "Dockerfile")))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if len(d.stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a builder and a runtime stage", len(d.stages))
	}
	return d
}

// imageConfig is what the runtime stage says about running the image.
type imageConfig struct {
	entrypoint, cmd, healthcheck []string
	configPath                   string // the -config file CMD names, in the image
}

func runtimeConfig(t *testing.T, d *dockerfile) imageConfig {
	t.Helper()
	rt := d.stages[len(d.stages)-1]
	var c imageConfig
	c.entrypoint = execForm(t, rt.last(t, "ENTRYPOINT"), rt.last(t, "ENTRYPOINT").args)
	c.cmd = execForm(t, rt.last(t, "CMD"), rt.last(t, "CMD").args)
	hc := rt.last(t, "HEALTHCHECK")
	f := strings.Fields(hc.args)
	for len(f) > 0 && strings.HasPrefix(f[0], "--") {
		f = f[1:]
	}
	if len(f) < 2 || f[0] != "CMD" {
		t.Fatalf("Dockerfile:%d: HEALTHCHECK %s: want [options] CMD [...]", hc.line, hc.args)
	}
	c.healthcheck = execForm(t, hc, strings.Join(f[1:], " "))
	args := append(slices.Clone(c.entrypoint), c.cmd...)
	if i := slices.Index(args, "-config"); i >= 0 && i+1 < len(args) {
		c.configPath = args[i+1]
	}
	return c
}

func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	builder, rt := d.stages[0], d.stages[len(d.stages)-1]

	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(readFile(t, "go.mod")))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	goVersion := m[1]
	if want := "golang:" + goVersion; !strings.HasPrefix(builder.image, want) {
		t.Errorf("builder image %s, want %s (go.mod says go %s)", builder.image, want, goVersion)
	}
	if strings.HasPrefix(rt.image, "golang:") {
		t.Errorf("the runtime stage is %s: want a minimal image, not the toolchain", rt.image)
	}

	user := rt.last(t, "USER").args
	if u, _, _ := strings.Cut(user, ":"); u == "root" || u == "0" {
		t.Errorf("the image runs as %s, want a non-root user", user)
	}

	var exposed []string
	for _, in := range rt.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	ic := runtimeConfig(t, d)
	cfg := loadSampleConfig(t, "deploy/docker/phonehome.yaml")
	_, httpPort, _ := net.SplitHostPort(*cfg.HTTP)
	for _, want := range []string{"53/udp", "53/tcp", httpPort + "/tcp"} {
		if !slices.Contains(exposed, want) {
			t.Errorf("EXPOSE %s, want %s among them", strings.Join(exposed, " "), want)
		}
	}
	if !slices.Equal(cfg.Listen, []string{":53"}) {
		t.Errorf("the image's config listens on %q, want \":53\"", cfg.Listen)
	}
	if hc := strings.Join(ic.healthcheck, " "); !strings.Contains(hc, "127.0.0.1:"+httpPort+"/healthz") {
		t.Errorf("HEALTHCHECK %s does not ask the config's http port %s for /healthz", hc, httpPort)
	}
	if ic.configPath == "" {
		t.Fatalf("ENTRYPOINT %q CMD %q name no -config file", ic.entrypoint, ic.cmd)
	}

	// Every file COPY takes from the context is there and not excluded by
	// .dockerignore, and the config CMD names is copied in.
	ignore := readDockerignore(t)
	configCopied := false
	for _, in := range rt.all("COPY") {
		f := strings.Fields(in.args)
		if strings.HasPrefix(f[0], "--from") {
			continue
		}
		srcs, dst := f[:len(f)-1], f[len(f)-1]
		for _, src := range srcs {
			if _, err := os.Stat(filepath.Join(root, src)); err != nil {
				t.Errorf("Dockerfile:%d: COPY %s: %v", in.line, src, err)
			}
			if ignore.excludes(src) {
				t.Errorf("Dockerfile:%d: COPY %s, which .dockerignore leaves out of the context", in.line, src)
			}
			if src == "deploy/docker/phonehome.yaml" && dst == ic.configPath {
				configCopied = true
			}
		}
	}
	if !configCopied {
		t.Errorf("the runtime stage does not COPY deploy/docker/phonehome.yaml to %s, the file CMD names", ic.configPath)
	}
}

// dockerignore is .dockerignore's patterns. Docker matches each against the
// path from the context root (and so against every directory above a file);
// these tests support that much and refuse what they do not (! and **).
type dockerignore []string

func readDockerignore(t *testing.T) dockerignore {
	t.Helper()
	d, err := parseDockerignore(string(readFile(t, ".dockerignore")))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func parseDockerignore(text string) (dockerignore, error) {
	var d dockerignore
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") || strings.Contains(line, "**") {
			return nil, fmt.Errorf(".dockerignore: %q: this test's copy of the build context does not support ! or **", line)
		}
		if _, err := path.Match(line, ""); err != nil {
			return nil, fmt.Errorf(".dockerignore: %q: %w", line, err)
		}
		d = append(d, path.Clean(strings.TrimPrefix(line, "/")))
	}
	return d, nil
}

func (d dockerignore) excludes(p string) bool {
	for p = path.Clean(p); p != "." && p != "/"; p = path.Dir(p) {
		for _, pat := range d {
			if ok, _ := path.Match(pat, p); ok {
				return true
			}
		}
	}
	return false
}

func TestDockerignoreMatch(t *testing.T) {
	d := dockerignore{".git", "deploy/compose", "*.test", "testdata"}
	for p, want := range map[string]bool{
		".git/config":                  true,
		"deploy/compose/compose.yaml":  true,
		"deploy/docker/phonehome.yaml": false,
		"deploy.test":                  true,
		"cmd/phonehome/phonehome.test": false, // * does not cross /
		"testdata/x.md":                true,
		"endpoints/testdata/x.md":      false, // patterns are anchored at the root
		"go.mod":                       false,
	} {
		if got := d.excludes(p); got != want {
			t.Errorf("excludes(%s) = %v, want %v", p, got, want)
		}
	}
}

var build struct {
	once sync.Once
	dir  string // holds context/ and out/
	out  string
	err  error
}

func cleanupBuild() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// imageBinaries runs the builder stage's go commands the way docker build
// would — in a copy of the build context as .dockerignore leaves it, with
// the stage's ARGs in the environment — and returns the directory that
// stands for the stage's /out. It builds once for all the tests, for this
// machine's platform.
func imageBinaries(t *testing.T) string {
	t.Helper()
	build.once.Do(func() { build.out, build.err = buildImage() })
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.out
}

func buildImage() (string, error) {
	text, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return "", err
	}
	d, err := parseDockerfile(string(text))
	if err != nil {
		return "", err
	}
	text, err = os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return "", err
	}
	ignore, err := parseDockerignore(string(text))
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "phonehome-image-")
	if err != nil {
		return "", err
	}
	build.dir = dir
	ctx := filepath.Join(dir, "context")
	if err := copyContext(ctx, ignore); err != nil {
		return "", fmt.Errorf("copying the build context: %w", err)
	}
	out := filepath.Join(dir, "out")
	env := append(os.Environ(), "TARGETOS="+runtime.GOOS, "TARGETARCH="+runtime.GOARCH, "VERSION=deploy-test",
		"GOFLAGS=-mod=readonly", "GOTOOLCHAIN=local")
	ran := 0
	for _, in := range d.stages[0].instrs {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") && !strings.Contains(in.args, "go run") {
			continue // go mod download only fills a cache layer, and would need the network
		}
		f := strings.Fields(in.args)
		for len(f) > 0 && strings.HasPrefix(f[0], "--") {
			f = f[1:] // --mount=type=cache,...
		}
		script := strings.ReplaceAll(strings.Join(f, " "), "/out/", out+"/")
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir, cmd.Env = ctx, env
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("Dockerfile:%d: RUN %s: %v\n%s", in.line, script, err, b)
		}
		ran++
	}
	if ran == 0 {
		return "", fmt.Errorf("the builder stage runs no go build")
	}
	return out, nil
}

// copyContext copies the repository into dst, leaving out what
// .dockerignore excludes.
func copyContext(dst string, ignore dockerignore) error {
	src, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		if rel != "." && ignore.excludes(rel) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		o, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(o, in); err != nil {
			o.Close()
			return err
		}
		return o.Close()
	})
}

func TestImageBinaries(t *testing.T) {
	out := imageBinaries(t)
	d := readDockerfile(t)
	rt := d.stages[len(d.stages)-1]
	// Everything the runtime stage copies from the builder was built.
	for _, in := range rt.all("COPY") {
		f := strings.Fields(in.args)
		if !strings.HasPrefix(f[0], "--from") {
			continue
		}
		for _, src := range f[1 : len(f)-1] {
			p := strings.Replace(src, "/out/", out+"/", 1)
			if p == src {
				t.Errorf("Dockerfile:%d: COPY %s: this test only knows the builder's /out", in.line, src)
				continue
			}
			checkStatic(t, p)
		}
	}
	if v := run(t, "", nil, filepath.Join(out, "phonehome"), "version"); strings.TrimSpace(v) != "phonehome deploy-test" {
		t.Errorf("phonehome version = %q, want the VERSION build argument", v)
	}
}

// checkStatic checks that a binary has no program interpreter: it is
// static, so distroless/static can run it.
func checkStatic(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", filepath.Base(p))
		}
	}
}

package deploy

import (
	"debug/elf"
	"errors"
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

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// dockerfile is a Dockerfile as BuildKit's own parser reads it: its stages,
// each FROM's image with the global ARGs' defaults substituted, and what
// the parser and BuildKit's build checks warn about.
type dockerfile struct {
	stages   []instructions.Stage
	warnings []string
}

func parseDockerfile(text string) (*dockerfile, error) {
	res, err := parser.Parse(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	d := &dockerfile{}
	for _, w := range res.Warnings {
		d.warnings = append(d.warnings, fmt.Sprintf("Dockerfile:%d: %s", w.Location.Start.Line, w.Short))
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		d.warnings = append(d.warnings, fmt.Sprintf("Dockerfile:%d: %s: %s", loc[0].Start.Line, rule, msg))
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, err
	}
	if len(stages) == 0 {
		return nil, errors.New("no FROM")
	}
	lex := shell.NewLex(res.EscapeToken)
	var env []string
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			v := ""
			if kv.Value != nil {
				if v, _, err = lex.ProcessWord(*kv.Value, shell.EnvsFromSlice(env)); err != nil {
					return nil, fmt.Errorf("Dockerfile:%d: ARG %s: %w", line(&a), kv.Key, err)
				}
			}
			env = append(env, kv.Key+"="+v)
		}
	}
	for i, s := range stages {
		if stages[i].BaseName, _, err = lex.ProcessWord(s.BaseName, shell.EnvsFromSlice(env)); err != nil {
			return nil, fmt.Errorf("Dockerfile:%d: FROM %s: %w", s.Location[0].Start.Line, s.BaseName, err)
		}
	}
	d.stages = stages
	return d, nil
}

func line(c instructions.Command) int {
	return c.Location()[0].Start.Line
}

// all returns a stage's instructions of one kind (*instructions.UserCommand...).
func all[T instructions.Command](s instructions.Stage) []T {
	var out []T
	for _, c := range s.Commands {
		if c, ok := c.(T); ok {
			out = append(out, c)
		}
	}
	return out
}

// last returns the stage's last instruction of one kind, the one in force.
func last[T instructions.Command](s instructions.Stage) (T, error) {
	cs := all[T](s)
	if len(cs) == 0 {
		var zero T
		return zero, fmt.Errorf("the runtime stage has no %s", strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%T", zero), "*instructions."), "Command"))
	}
	return cs[len(cs)-1], nil
}

// runtimeStage is the last stage, the image; builder is the stage whose
// output its COPY --from takes (the first stage when none does).
func (d *dockerfile) runtimeStage() instructions.Stage { return d.stages[len(d.stages)-1] }

func (d *dockerfile) builder() instructions.Stage {
	for _, c := range all[*instructions.CopyCommand](d.runtimeStage()) {
		if i, ok := instructions.HasStage(d.stages, c.From); ok && c.From != "" {
			return d.stages[i]
		}
	}
	return d.stages[0]
}

// execForm is the command of CMD and ENTRYPOINT, which must be the exec
// form ["a", "b"]: the shell form needs a shell, which distroless lacks.
func execForm(c instructions.Command, cl instructions.ShellDependantCmdLine) ([]string, error) {
	if cl.PrependShell || len(cl.CmdLine) == 0 {
		return nil, fmt.Errorf("Dockerfile:%d: %s: want the exec form [\"...\"] (no shell in the image)", line(c), c)
	}
	return cl.CmdLine, nil
}

func readDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	d, err := parseDockerfile(string(readFile(t, "Dockerfile")))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return d
}

// imageConfig is what the runtime stage says about running the image.
type imageConfig struct {
	entrypoint, cmd, healthcheck []string
	configPath                   string // the -config file CMD names, in the image
}

func (d *dockerfile) imageConfig() (imageConfig, error) {
	var c imageConfig
	rt := d.runtimeStage()
	ep, err := last[*instructions.EntrypointCommand](rt)
	if err != nil {
		return c, err
	}
	if c.entrypoint, err = execForm(ep, ep.ShellDependantCmdLine); err != nil {
		return c, err
	}
	cmd, err := last[*instructions.CmdCommand](rt)
	if err != nil {
		return c, err
	}
	if c.cmd, err = execForm(cmd, cmd.ShellDependantCmdLine); err != nil {
		return c, err
	}
	hc, err := last[*instructions.HealthCheckCommand](rt)
	if err != nil {
		return c, err
	}
	if test := hc.Health.Test; len(test) < 2 || test[0] != "CMD" {
		return c, fmt.Errorf("Dockerfile:%d: %s: want HEALTHCHECK [options] CMD [\"...\"] (no shell in the image)", line(hc), hc)
	}
	c.healthcheck = hc.Health.Test[1:]
	args := append(slices.Clone(c.entrypoint), c.cmd...)
	if i := slices.Index(args, "-config"); i >= 0 && i+1 < len(args) {
		c.configPath = args[i+1]
	}
	if c.configPath == "" {
		return c, fmt.Errorf("ENTRYPOINT %q CMD %q name no -config file", c.entrypoint, c.cmd)
	}
	return c, nil
}

func runtimeConfig(t *testing.T, d *dockerfile) imageConfig {
	t.Helper()
	c, err := d.imageConfig()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dockerfileWants is what the Dockerfile must agree with outside it.
type dockerfileWants struct {
	goVersion string       // go.mod's go line, major.minor
	httpPort  string       // the sample config's http port
	ignore    dockerignore // .dockerignore
}

func readDockerfileWants(t *testing.T) dockerfileWants {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(readFile(t, "go.mod")))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	cfg := loadSampleConfig(t, "deploy/docker/phonehome.yaml")
	if !slices.Equal(cfg.Listen, []string{":53"}) {
		t.Errorf("the image's config listens on %q, want \":53\"", cfg.Listen)
	}
	_, httpPort, err := net.SplitHostPort(*cfg.Web.HTTP)
	if err != nil {
		t.Fatalf("deploy/docker/phonehome.yaml: http: %v", err)
	}
	return dockerfileWants{goVersion: m[1], httpPort: httpPort, ignore: readDockerignore(t)}
}

// checkDockerfile returns what is wrong with a Dockerfile's text.
func checkDockerfile(text string, w dockerfileWants) []string {
	d, err := parseDockerfile(text)
	if err != nil {
		return []string{err.Error()}
	}
	errs := slices.Clone(d.warnings)
	if len(d.stages) < 2 {
		return append(errs, fmt.Sprintf("%d stages, want a builder and a runtime stage", len(d.stages)))
	}
	builder, rt := d.builder(), d.runtimeStage()
	if want := "golang:" + w.goVersion; !strings.HasPrefix(builder.BaseName, want) {
		errs = append(errs, fmt.Sprintf("builder image %s, want %s (go.mod says go %s)", builder.BaseName, want, w.goVersion))
	}
	if strings.HasPrefix(rt.BaseName, "golang:") {
		errs = append(errs, fmt.Sprintf("the runtime stage is %s: want a minimal image, not the toolchain", rt.BaseName))
	}

	if u, err := last[*instructions.UserCommand](rt); err != nil {
		errs = append(errs, err.Error())
	} else if name, _, _ := strings.Cut(u.User, ":"); name == "root" || name == "0" {
		errs = append(errs, fmt.Sprintf("the image runs as %s, want a non-root user", u.User))
	}

	var exposed []string
	for _, e := range all[*instructions.ExposeCommand](rt) {
		exposed = append(exposed, e.Ports...)
	}
	for _, want := range []string{"53/udp", "53/tcp", w.httpPort + "/tcp"} {
		if !slices.Contains(exposed, want) {
			errs = append(errs, fmt.Sprintf("EXPOSE %s, want %s among them", strings.Join(exposed, " "), want))
		}
	}
	ic, err := d.imageConfig()
	if err != nil {
		return append(errs, err.Error())
	}
	if hc := strings.Join(ic.healthcheck, " "); !strings.Contains(hc, "127.0.0.1:"+w.httpPort+"/healthz") {
		errs = append(errs, fmt.Sprintf("HEALTHCHECK %s does not ask the config's http port %s for /healthz", hc, w.httpPort))
	}

	// Every file COPY takes from the context is there and not excluded by
	// .dockerignore, and the config CMD names is copied in.
	configCopied := false
	for _, c := range all[*instructions.CopyCommand](rt) {
		if c.From != "" {
			continue
		}
		for _, src := range c.SourcePaths {
			if _, err := os.Stat(filepath.Join(root, src)); err != nil {
				errs = append(errs, fmt.Sprintf("Dockerfile:%d: COPY %s: %v", line(c), src, err))
			}
			if ex, err := w.ignore.excludes(src); err != nil {
				errs = append(errs, fmt.Sprintf("Dockerfile:%d: COPY %s: %v", line(c), src, err))
			} else if ex {
				errs = append(errs, fmt.Sprintf("Dockerfile:%d: COPY %s, which .dockerignore leaves out of the context", line(c), src))
			}
			if src == "deploy/docker/phonehome.yaml" && c.DestPath == ic.configPath {
				configCopied = true
			}
		}
	}
	if !configCopied {
		errs = append(errs, fmt.Sprintf("the runtime stage does not COPY deploy/docker/phonehome.yaml to %s, the file CMD names", ic.configPath))
	}
	return errs
}

func TestDockerfile(t *testing.T) {
	for _, e := range checkDockerfile(string(readFile(t, "Dockerfile")), readDockerfileWants(t)) {
		t.Error(e)
	}
}

// TestDockerfileChecks breaks the real Dockerfile one way at a time: each
// check must catch its case.
func TestDockerfileChecks(t *testing.T) {
	text := string(readFile(t, "Dockerfile"))
	w := readDockerfileWants(t)
	for _, tc := range []struct {
		name, old, new, wantErr string
	}{
		{"as is", "", "", ""},
		{"syntax", "HEALTHCHECK --interval", "HEALTHCHECK --intervl", "unknown flag: --intervl"},
		{"build check", " AS build", " as build", "FromAsCasing"},
		{"old Go", "ARG GO_VERSION=1.", "ARG GO_VERSION=0.", "go.mod says go"},
		{"toolchain at run time", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM golang:1", "not the toolchain"},
		{"root", "USER nonroot:nonroot", "USER root", "want a non-root user"},
		{"no USER", "USER nonroot:nonroot", "", "has no User"},
		{"port 53/udp", "EXPOSE 53/udp 53/tcp", "EXPOSE 53/tcp", "want 53/udp"},
		{"shell form", `CMD ["serve", "-config", "/etc/phonehome/phonehome.yaml"]`, "CMD serve -config /etc/phonehome/phonehome.yaml", "want the exec form"},
		{"health check port", "127.0.0.1:8053/healthz", "127.0.0.1:1/healthz", "does not ask the config's http port"},
		{"health check shell", `CMD ["/usr/local/bin/healthcheck", "-url", "http://127.0.0.1:8053/healthz"]`, "CMD /usr/local/bin/healthcheck", "want HEALTHCHECK [options] CMD"},
		{"missing file", "COPY deploy/docker/phonehome.yaml", "COPY deploy/docker/nosuch.yaml", "no such file"},
		{"ignored file", "COPY deploy/docker/phonehome.yaml", "COPY deploy/prometheus/prometheus.yml", ".dockerignore leaves out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := strings.Replace(text, tc.old, tc.new, 1)
			if tc.old != "" && broken == text {
				t.Fatalf("the Dockerfile has no %q to break", tc.old)
			}
			errs := strings.Join(checkDockerfile(broken, w), "\n")
			if tc.wantErr == "" && errs != "" || !strings.Contains(errs, tc.wantErr) {
				t.Errorf("got %q, want %q", errs, tc.wantErr)
			}
		})
	}
}

// dockerignore is .dockerignore, read and matched by the code Docker and
// BuildKit use for it.
type dockerignore struct {
	pm *patternmatcher.PatternMatcher
}

func readDockerignore(t *testing.T) dockerignore {
	t.Helper()
	d, err := parseDockerignore(string(readFile(t, ".dockerignore")))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func parseDockerignore(text string) (dockerignore, error) {
	pats, err := ignorefile.ReadAll(strings.NewReader(text))
	if err != nil {
		return dockerignore{}, fmt.Errorf(".dockerignore: %w", err)
	}
	pm, err := patternmatcher.New(pats)
	if err != nil {
		return dockerignore{}, fmt.Errorf(".dockerignore: %w", err)
	}
	return dockerignore{pm}, nil
}

// excludes tells whether a path from the context root is left out, as the
// build's context walk decides it: directory by directory from the root.
func (d dockerignore) excludes(p string) (bool, error) {
	var (
		info patternmatcher.MatchInfo
		ex   bool
		err  error
	)
	parts := strings.Split(path.Clean(filepath.ToSlash(p)), "/")
	for i := range parts {
		if ex, info, err = d.pm.MatchesUsingParentResults(path.Join(parts[:i+1]...), info); err != nil {
			return false, err
		}
	}
	return ex, nil
}

func TestDockerignoreMatch(t *testing.T) {
	d, err := parseDockerignore("# comment\n.git\n/deploy/*\n!deploy/docker\n*.test\ntestdata\n**/*.out\n")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		".git/config":                  true,
		"deploy/compose/compose.yaml":  true,
		"deploy/docker/phonehome.yaml": false, // brought back by !
		"deploy.test":                  true,
		"cmd/phonehome/phonehome.test": false, // * does not cross /
		"testdata/x.md":                true,
		"endpoints/testdata/x.md":      false, // patterns are anchored at the root
		"bench/cpu.out":                true,  // but ** is any depth
		"go.mod":                       false,
	} {
		if got, err := d.excludes(p); err != nil || got != want {
			t.Errorf("excludes(%s) = %v, %v, want %v", p, got, err, want)
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
	for _, r := range all[*instructions.RunCommand](d.builder()) {
		// The parser has taken --mount=type=cache,... off the command.
		script := strings.Join(r.CmdLine, " ")
		if !r.PrependShell || !strings.Contains(script, "go build") && !strings.Contains(script, "go run") && !strings.HasPrefix(script, "mkdir ") {
			continue // go mod download only fills a cache layer, and would need the network
		}
		script = strings.ReplaceAll(script, "/out/", out+"/")
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir, cmd.Env = ctx, env
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("Dockerfile:%d: RUN %s: %v\n%s", line(r), script, err, b)
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
		if rel != "." {
			ex, err := ignore.excludes(rel)
			if err != nil {
				return err
			}
			if ex {
				if e.IsDir() && !ignore.pm.Exclusions() {
					return filepath.SkipDir // no !pattern can bring a file under it back
				}
				return nil
			}
		}
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
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
	// Everything the runtime stage copies from the builder was built.
	for _, c := range all[*instructions.CopyCommand](d.runtimeStage()) {
		if c.From == "" {
			continue
		}
		for _, src := range c.SourcePaths {
			p := strings.Replace(src, "/out/", out+"/", 1)
			if p == src {
				t.Errorf("Dockerfile:%d: COPY %s: this test only knows the builder's /out", line(c), src)
				continue
			}
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				continue // a directory made for the image, such as the state directory
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

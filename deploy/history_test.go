package deploy

import (
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"go.yaml.in/yaml/v3"
)

// nonroot is distroless's non-root user and group, by number.
var nonroot = []string{"nonroot:nonroot", "65532:65532", "nonroot", "65532"}

// TestStateDirectory: the history's file (history.db in $STATE_DIRECTORY
// by default) lands in a place that lasts and that phonehome may write,
// however it runs. The image sets STATE_DIRECTORY to a directory it copies
// in owned by its non-root user (so that a new volume there starts
// writable) and declares a volume there; compose mounts a named volume
// there; the sample config keeps the default path. (The systemd unit's
// StateDirectory= is checked with the unit's other settings.)
func TestStateDirectory(t *testing.T) {
	rt := readDockerfile(t).runtimeStage()
	var state string
	for _, e := range all[*instructions.EnvCommand](rt) {
		for _, kv := range e.Env {
			if kv.Key == "STATE_DIRECTORY" {
				state = kv.Value
			}
		}
	}
	if state == "" {
		t.Fatal("the runtime stage sets no ENV STATE_DIRECTORY")
	}
	if u, err := last[*instructions.UserCommand](rt); err != nil || !slices.Contains(nonroot, u.User) {
		t.Fatalf("the image runs as %v (%v); this test knows distroless's nonroot", u, err)
	}
	owned := slices.ContainsFunc(all[*instructions.CopyCommand](rt), func(c *instructions.CopyCommand) bool {
		return c.From != "" && path.Clean(c.DestPath) == state && slices.Contains(nonroot, c.Chown)
	})
	if !owned {
		t.Errorf("no COPY --from=build --chown=65532:65532 makes %s, nonroot's", state)
	}
	if !slices.ContainsFunc(all[*instructions.VolumeCommand](rt), func(v *instructions.VolumeCommand) bool { return slices.Contains(v.Volumes, state) }) {
		t.Errorf("no VOLUME %s", state)
	}

	var c struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy/compose/compose.yaml"), &c); err != nil {
		t.Fatal(err)
	}
	mounted := slices.ContainsFunc(c.Services["phonehome"].Volumes, func(v string) bool {
		name, target, _ := strings.Cut(v, ":")
		_, named := c.Volumes[name]
		return named && strings.TrimSuffix(target, ":rw") == state
	})
	if !mounted {
		t.Errorf("compose.yaml: phonehome has no named volume on %s", state)
	}

	t.Setenv("STATE_DIRECTORY", state)
	cfg := loadSampleConfig(t, "deploy/docker/phonehome.yaml")
	if cfg.History.Off || cfg.History.Path != path.Join(state, "history.db") {
		t.Errorf("deploy/docker/phonehome.yaml: history %+v, want it on, in %s", cfg.History, state)
	}
}

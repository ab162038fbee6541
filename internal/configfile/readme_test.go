package configfile

import (
	"os"
	"regexp"
	"testing"
)

// TestReadmeConfigs parses every YAML example of the README, so the
// documentation cannot drift from what the parser takes.
func TestReadmeConfigs(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(b, -1)
	if len(blocks) == 0 {
		t.Fatal("no yaml examples in the README")
	}
	for i, blk := range blocks {
		if _, err := Parse("README.md example", blk[1]); err != nil {
			t.Errorf("example %d: %v", i+1, err)
		}
	}
}

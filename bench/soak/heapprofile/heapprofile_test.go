package heapprofile

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestServe: each signal writes the next profile, a gzipped protocol
// buffer as runtime/pprof writes them.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	sigs := make(chan os.Signal)
	done := make(chan string)
	go serve(dir, sigs, done)
	defer close(sigs)
	for _, want := range []string{"heap.1", "heap.2"} {
		sigs <- syscall.SIGUSR2
		if got := <-done; got != filepath.Join(dir, want) {
			t.Fatalf("wrote %s, want %s", got, want)
		}
		b, err := os.ReadFile(filepath.Join(dir, want))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) || len(b) < 100 {
			t.Errorf("%s: %d bytes, not a gzipped profile", want, len(b))
		}
	}
}

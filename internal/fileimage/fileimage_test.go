package fileimage

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The fingerprint that lets PushAll skip reading a large tree changes
// with every change to a file of it that stat can see, even one that puts
// the modification time back, and with the recipe's own temp files'
// contents; it stays the same for an untouched tree.
func TestFingerprint(t *testing.T) {
	tree, tmp := t.TempDir(), t.TempDir()
	file := filepath.Join(tree, "bin", "go")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("toolchain 1"), 0o755); err != nil {
		t.Fatal(err)
	}
	recipe := func() Rootfs {
		r, err := TreeOf(tree)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Content(tmp, "etc/profile", "PATH=/usr/local/go/bin", 0o644); err != nil {
			t.Fatal(err)
		}
		return r
	}
	cfg := v1.Config{Env: []string{"GOTOOLCHAIN=local"}}
	fingerprint := func(r Rootfs, cfg v1.Config) string {
		fp, err := r.fingerprint(cfg, tmp)
		if err != nil {
			t.Fatal(err)
		}
		return fp
	}
	first := fingerprint(recipe(), cfg)
	// Content writes its temp file again: same contents, new file.
	if again := fingerprint(recipe(), cfg); again != first {
		t.Errorf("untouched tree, same temp contents: fingerprint %s, want %s", again, first)
	}

	// Same size, mtime put back: only the change time tells.
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // past the file system clock's granularity (a jiffy)
	if err := os.WriteFile(file, []byte("toolchain 2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	rewritten := fingerprint(recipe(), cfg)
	if rewritten == first {
		t.Error("a file rewritten with its modification time put back: fingerprint unchanged")
	}

	// A temp file's contents, a mode and the config count too.
	r := recipe()
	if err := r.Content(tmp, "etc/profile", "PATH=/elsewhere", 0o644); err != nil {
		t.Fatal(err)
	}
	if fingerprint(r, cfg) == rewritten {
		t.Error("other contents of a temp file: fingerprint unchanged")
	}
	r = recipe()
	r.File("bin/go", file, 0o700)
	if fingerprint(r, cfg) == rewritten {
		t.Error("another mode: fingerprint unchanged")
	}
	if fingerprint(recipe(), v1.Config{Env: []string{"GOTOOLCHAIN=auto"}}) == rewritten {
		t.Error("another config: fingerprint unchanged")
	}
}

package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// FindInTree returns the regular files under root whose bytes contain
// needle. Unreadable entries are skipped, symlinks are not followed, and
// special files (sockets, FIFOs, devices) are not opened. A missing root
// fails the test, so a typo cannot make "the secret is nowhere" pass.
func FindInTree(t testing.TB, root string, needle []byte) []string {
	t.Helper()
	if len(needle) == 0 {
		t.Fatalf("testenv: FindInTree with an empty needle")
	}
	if _, err := os.Lstat(root); err != nil {
		t.Fatalf("testenv: FindInTree: %v", err)
	}
	var hits []string
	buf := make([]byte, 1<<20)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() && p != root {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if fileContains(p, needle, buf) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}

// fileContains streams the file, keeping len(needle)-1 bytes of overlap
// between chunks.
func fileContains(p string, needle, buf []byte) bool {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	keep := len(needle) - 1
	if keep >= len(buf)/2 {
		buf = make([]byte, 2*len(needle))
	}
	carry := 0
	for {
		n, err := f.Read(buf[carry:])
		if n > 0 {
			if bytes.Contains(buf[:carry+n], needle) {
				return true
			}
			total := carry + n
			if total > keep {
				copy(buf, buf[total-keep:total])
				carry = keep
			} else {
				carry = total
			}
		}
		if err != nil { // io.EOF too
			return false
		}
	}
}

// WriteFiles lays files (slash-separated name → content, 0644) out under
// dir, making their directories.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// RandomHex is n random bytes as hex: markers no earlier run can match.
func RandomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

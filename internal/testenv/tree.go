package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// FindInTree returns the files under root whose bytes contain needle. It
// backs the tests that prove a secret never reached disk, so a part of the
// tree it could not read is a hole in that proof: the test fails, naming
// every such entry. What the tree may hold, and what each one gets:
//
//   - regular files are read to the end; one that cannot be opened or read
//     (permissions, I/O error) fails the test;
//   - directories are descended; one that cannot be listed fails the test;
//   - entries that vanish between being listed and being opened (a live
//     daemon's state directory renames and removes files all the time) are
//     passed over: what is gone is no longer on disk. Each directory is seen
//     as it was when listed, so a file created after that is not; scan once
//     the build that might leak has ended, as the callers do;
//   - symlinks are not followed (a target inside root is scanned there, one
//     outside is not this tree's), but the link text is on-disk bytes, so a
//     link whose target contains needle is a hit, as is any entry whose name
//     contains it;
//   - sockets, FIFOs and device nodes are not opened: they hold no bytes of
//     their own on disk (their data lives in the kernel or the device), and
//     reading one can block or never end.
//
// A missing root fails the test, so a typo cannot make "the secret is
// nowhere" pass.
func FindInTree(t testing.TB, root string, needle []byte) []string {
	t.Helper()
	if len(needle) == 0 {
		t.Fatalf("testenv: FindInTree with an empty needle")
	}
	if _, err := os.Lstat(root); err != nil {
		t.Fatalf("testenv: FindInTree: %v", err)
	}
	var hits, unread []string
	buf := make([]byte, 1<<20)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil { // only a directory that could not be listed gets here
			if !errors.Is(err, fs.ErrNotExist) {
				unread = append(unread, err.Error())
			}
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p != root && bytes.Contains([]byte(d.Name()), needle) {
			hits = append(hits, p)
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err == nil && strings.Contains(target, string(needle)) {
				hits = append(hits, p)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				unread = append(unread, err.Error())
			}
		case d.Type().IsRegular():
			found, err := fileContains(p, needle, buf)
			if err != nil {
				unread = append(unread, err.Error())
			} else if found {
				hits = append(hits, p)
			}
		}
		return nil
	})
	if len(unread) > 0 {
		t.Fatalf("testenv: FindInTree(%s): %d entries could not be read, so the search for the needle has holes:\n%s",
			root, len(unread), strings.Join(unread, "\n"))
	}
	return hits
}

// fileContains streams the file, keeping len(needle)-1 bytes of overlap
// between chunks. A file that is gone holds nothing (see FindInTree), and
// one that is no longer a regular file is not read; any other failure is
// an error.
func fileContains(p string, needle, buf []byte) (bool, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return false, err
	} else if !fi.Mode().IsRegular() {
		return false, nil
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
				return true, nil
			}
			total := carry + n
			if total > keep {
				copy(buf, buf[total-keep:total])
				carry = keep
			} else {
				carry = total
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			return false, err // *fs.PathError: names the file
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

package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestFindInTree(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("sk-live-my-secret-key")
	big := bytes.Repeat([]byte("x"), 3<<20-5) // needle straddles a 1 MiB chunk boundary
	WriteFiles(t, dir, map[string]string{
		"a.txt":                   "nothing here",
		"sub/b.txt":               "key=" + string(secret),
		"sub/big.bin":             string(append(append(big[:1<<20-4:1<<20-4], secret...), big...)),
		"named-" + string(secret): "the name is the leak",
	})
	// A symlink to a matching file is not followed; one whose target
	// text holds the secret is a hit.
	for name, target := range map[string]string{
		"link":      filepath.Join(dir, "sub", "b.txt"),
		"link-text": "/nowhere/" + string(secret),
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// A FIFO and a socket are not opened (opening a FIFO to read would
	// wait for a writer).
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	hits := FindInTree(t, dir, secret)
	want := []string{
		filepath.Join(dir, "link-text"),
		filepath.Join(dir, "named-"+string(secret)),
		filepath.Join(dir, "sub", "b.txt"),
		filepath.Join(dir, "sub", "big.bin"),
	}
	if !slices.Equal(hits, want) {
		t.Fatalf("FindInTree = %q, want %q", hits, want)
	}
}

// TestFindInTreeFailsOnUnreadable: a file or directory the scan cannot
// read fails the test, naming it, instead of being passed over.
func TestFindInTreeFailsOnUnreadable(t *testing.T) {
	// A tree nobody (65534) can walk, but for two entries.
	dir, err := os.MkdirTemp("", "findintree-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := []byte("sk-live-" + RandomHex(t, 8))
	WriteFiles(t, dir, map[string]string{
		"readable/a.txt":  "nothing here",
		"hidden/file.txt": "key=" + string(secret),
		"closed/b.txt":    "key=" + string(secret),
	})
	unreadable := filepath.Join(dir, "hidden", "file.txt")
	closed := filepath.Join(dir, "closed")
	for _, p := range []string{unreadable, closed} {
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Chmod(closed, 0o755) })

	if hits, failure := scanAsNobody(t, filepath.Join(dir, "readable"), secret, unreadable); failure != "" || len(hits) != 0 {
		t.Fatalf("twin: a readable tree: hits %q, failure %q", hits, failure)
	}
	_, failure := scanAsNobody(t, dir, secret, unreadable)
	if failure == "" {
		t.Fatal("FindInTree passed over an unreadable file and an unreadable directory")
	}
	for _, name := range []string{unreadable, closed} {
		if !strings.Contains(failure, name) {
			t.Errorf("the failure does not name %s:\n%s", name, failure)
		}
	}
	t.Logf("failure: %s", failure)
}

// scanAsNobody runs FindInTree on a thread whose file-system user is
// 65534: as root it reads everything, and for a non-root run the
// permission bits hold anyway. The thread is discarded afterwards (it
// exits locked). It first checks that unreadable really is unreadable
// there, so the test cannot pass without trying.
func scanAsNobody(t *testing.T, root string, needle []byte, unreadable string) (hits []string, failure string) {
	t.Helper()
	rec := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if os.Geteuid() == 0 {
			// Leaving fsuid 0 drops CAP_DAC_OVERRIDE from this thread.
			if err := syscall.Setfsuid(65534); err != nil {
				t.Errorf("setfsuid: %v", err)
				return
			}
		}
		if f, err := os.Open(unreadable); err == nil {
			f.Close()
			t.Errorf("%s is readable on the scan's thread: the test cannot make an unreadable file", unreadable)
			return
		}
		hits = FindInTree(rec, root, needle)
	}()
	<-done
	return hits, rec.failure
}

// recordingTB records a Fatalf and ends the goroutine, as testing.T does,
// instead of failing the test.
type recordingTB struct {
	testing.TB
	failure string
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

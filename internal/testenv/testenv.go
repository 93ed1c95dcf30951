// Package testenv starts the real daemons the end-to-end tests need — a
// local plain-HTTP registry (Debian's docker-registry) and buildkitd v0.33.1,
// rootless under rootlesskit when it can — through internal/daemon's
// recipes, the same the local stack uses, and gives helpers to inspect what
// ends up in the registry and on disk.
//
// It never skips: when a binary is missing the test fails loudly with its
// name and "run hack/install.sh". Every daemon is stopped and its state
// removed in t.Cleanup.
//
// Environment:
//
//	FNB_TOOLS          tools dir (default $HOME/.cache/fnbuilder); binaries in $FNB_TOOLS/bin
//	FNB_BUILDKIT_MODE  "rootless" or "root" forces that mode (failure is fatal);
//	                   unset tries rootless first and falls back to root
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// LockMachine holds an exclusive lock on path until the test ends, for a
// test of what there is one of per machine (fixed ports, a bridge); it
// waits up to wait while another run holds it.
func LockMachine(t testing.TB, path string, wait time.Duration) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("another run of this test holds %s", path)
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() { f.Close() })
}

// GoBuild runs `go build args...` in dir with env added to the test's,
// failing the test with go's output.
func GoBuild(t testing.TB, dir string, env []string, args ...string) {
	t.Helper()
	gobin := daemon.Find("go")
	if gobin == "" {
		t.Fatal("go not found ($PATH, /usr/local/go/bin)")
	}
	cmd := exec.Command(gobin, append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

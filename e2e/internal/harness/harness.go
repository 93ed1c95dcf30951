// Package harness is what the end-to-end test packages share: build-fn
// served in-process, `go build` of the checkout's commands, a lock for
// the tests of what there is one of per machine, and the probe of
// BuildKit's process sandbox that the builder, the stack and the cluster
// are each put through.
package harness

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/fnserver"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
)

// Serve serves build-fn with these settings on a loopback port, behind the
// golang-middleware template's own server (internal/fnserver, with the
// settings' timeouts), until the test ends and returns its base URL. wrap,
// when not nil, wraps the pipeline's BuildKit runner, so a test can count
// or watch the solves.
func Serve(t testing.TB, settings map[string]string, wrap func(pipeline.Runner) pipeline.Runner) string {
	t.Helper()
	cfg := config.FromMap(settings)
	opts, err := buildfn.Options(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		opts.Pipeline.Runner = wrap(opts.Pipeline.Runner)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fnserver.New(l.Addr().String(), buildfn.Router(cfg, opts), cfg)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

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

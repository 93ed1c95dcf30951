// Package harness is what the end-to-end test packages share: build-fn
// served in-process with its solves watched, a lock for the tests of what
// there is one of per machine, and the probe of BuildKit's process sandbox
// that the builder, the stack and the cluster are each put through.
package harness

import (
	"context"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/fnserver"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
)

// Serve serves build-fn with these settings on a loopback port, behind the
// golang-middleware template's own server (internal/fnserver, with the
// settings' timeouts), until the test ends. It returns the base URL and
// the Solves that watch the pipeline's BuildKit runner.
func Serve(t testing.TB, settings map[string]string) (string, *Solves) {
	t.Helper()
	cfg := config.FromMap(settings)
	opts, err := buildfn.Options(cfg)
	if err != nil {
		t.Fatal(err)
	}
	solves := &Solves{Ends: make(chan RunEnd, 16), opened: map[string][]string{}}
	opts.Pipeline.Runner = watchedRunner{next: opts.Pipeline.Runner, solves: solves}
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
	return "http://" + l.Addr().String(), solves
}

// Solves is what a served build-fn asked BuildKit to do: how many solves
// started (a refused request must start none), how they ended, and which
// context files BuildKit read for each image.
type Solves struct {
	Runs atomic.Int32
	// Ends has how each solve ended, the first 16 not yet received.
	Ends chan RunEnd

	mu     sync.Mutex
	opened map[string][]string // image → context paths opened
}

// RunEnd is how one solve ended: its error and its context's.
type RunEnd struct {
	Err    error
	CtxErr error
}

// Opened is the context files BuildKit opened to transfer for image, in
// order of name.
func (s *Solves) Opened(image string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.opened[image]))
}

type watchedRunner struct {
	next   pipeline.Runner
	solves *Solves
}

func (w watchedRunner) Run(ctx context.Context, b buildkit.Build, logf func([]string)) (string, error) {
	w.solves.Runs.Add(1)
	b.Context = recordingContext{Context: b.Context, image: b.Image, solves: w.solves}
	digest, err := w.next.Run(ctx, b, logf)
	select {
	case w.solves.Ends <- RunEnd{Err: err, CtxErr: ctx.Err()}:
	default:
	}
	return digest, err
}

type recordingContext struct {
	buildkit.Context
	image  string
	solves *Solves
}

func (r recordingContext) Open(p string) (io.ReadCloser, error) {
	r.solves.mu.Lock()
	r.solves.opened[r.image] = append(r.solves.opened[r.image], p)
	r.solves.mu.Unlock()
	return r.Context.Open(p)
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

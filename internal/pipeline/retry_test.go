package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

var (
	errFlaky = errors.New("flaky")
	errFinal = errors.New("final")
)

func isFlaky(err error) bool { return errors.Is(err, errFlaky) }

// lineLog collects logf lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) logf(lines []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, lines...)
}

func (l *lineLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// do runs b.Do on a function whose nth call returns result(n), and
// reports how many calls there were and the retry lines logged.
func do(b pipeline.Backoff, result func(call int) error) (calls int, lines []string, err error) {
	var log lineLog
	err = b.Do(context.Background(), "thing", isFlaky, log.logf, func() error {
		calls++
		return result(calls)
	})
	return calls, log.all(), err
}

func TestBackoffStopsAtAttempts(t *testing.T) {
	calls, lines, err := do(pipeline.Backoff{Attempts: 3, First: time.Microsecond, Max: time.Millisecond}, func(call int) error {
		return fmt.Errorf("try %d: %w", call, errFlaky)
	})
	if calls != 3 {
		t.Fatalf("fn called %d times, want 3", calls)
	}
	if err == nil || !strings.Contains(err.Error(), "try 3") {
		t.Fatalf("error %v, want the last attempt's", err)
	}
	if len(lines) != 2 {
		t.Fatalf("%d retry lines, want 2: %q", len(lines), lines)
	}
	for i, line := range lines {
		const want = "thing: transient error, retrying in "
		if !strings.Contains(line, "Z "+want) || !strings.Contains(line, want) ||
			!strings.Contains(line, fmt.Sprintf("(attempt %d of 3)", i+2)) ||
			!strings.Contains(line, fmt.Sprintf("try %d", i+1)) {
			t.Errorf("retry line %d: %q", i, line)
		}
	}
}

func TestBackoffSucceedsAfterRetries(t *testing.T) {
	calls, _, err := do(pipeline.Backoff{Attempts: 5, First: time.Microsecond, Max: time.Microsecond}, func(call int) error {
		if call < 3 {
			return errFlaky
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls, want nil after 3", err, calls)
	}
}

func TestBackoffDoublesUpToMax(t *testing.T) {
	start := time.Now()
	_, lines, _ := do(pipeline.Backoff{Attempts: 6, First: time.Millisecond, Max: 3 * time.Millisecond}, func(int) error { return errFlaky })
	elapsed := time.Since(start)
	want := []string{"1ms", "2ms", "3ms", "3ms", "3ms"}
	if len(lines) != len(want) {
		t.Fatalf("%d retry lines, want %d: %q", len(lines), len(want), lines)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], "retrying in "+w+" ") {
			t.Errorf("wait %d: %q, want %s", i, lines[i], w)
		}
	}
	if elapsed < 12*time.Millisecond {
		t.Fatalf("took %s, waits add up to 12ms", elapsed)
	}
}

func TestBackoffPermanentErrorStopsAtOnce(t *testing.T) {
	calls, lines, err := do(pipeline.Backoff{Attempts: 5, First: time.Hour, Max: time.Hour}, func(int) error { return errFinal })
	if !errors.Is(err, errFinal) || calls != 1 {
		t.Fatalf("err %v after %d calls, want errFinal after 1", err, calls)
	}
	if len(lines) != 0 {
		t.Fatalf("retry logged for a permanent error: %q", lines)
	}
}

func TestBackoffZeroAttemptsRunsOnce(t *testing.T) {
	calls, _, err := do(pipeline.Backoff{}, func(int) error { return errFlaky })
	if !errors.Is(err, errFlaky) || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestBackoffStopsWhenCancelled(t *testing.T) {
	t.Run("during wait", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		b := pipeline.Backoff{Attempts: 5, First: time.Hour, Max: time.Hour}
		done := make(chan error, 1)
		go func() {
			done <- b.Do(ctx, "x", isFlaky, func([]string) { cancel() }, func() error {
				calls++
				return errFlaky
			})
		}()
		select {
		case err := <-done:
			if !errors.Is(err, errFlaky) || calls != 1 {
				t.Fatalf("err %v after %d calls", err, calls)
			}
		case <-time.After(testenv.HangGuard):
			t.Fatal("hang guard: Do kept waiting after ctx was cancelled")
		}
	})
	t.Run("before next attempt", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		calls := 0
		b := pipeline.Backoff{Attempts: 5, First: time.Microsecond, Max: time.Microsecond}
		err := b.Do(ctx, "x", isFlaky, func([]string) {}, func() error {
			calls++
			if calls == 2 {
				cancel()
			}
			return errFlaky
		})
		if !errors.Is(err, errFlaky) || calls != 2 {
			t.Fatalf("err %v after %d calls, want 2", err, calls)
		}
	})
}

func TestTransient(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing\"")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"grpc unavailable", unavailable, true},
		{"wrapped grpc unavailable", fmt.Errorf("solve: %w", unavailable), true},
		{"grpc internal", status.Error(codes.Internal, "boom"), false},
		{"grpc canceled", status.Error(codes.Canceled, "context canceled"), false},
		{"connection refused", errors.New("dial unix /run/buildkit/buildkitd.sock: connect: connection refused"), true},
		{"tcp refused", errors.New("failed to dial gRPC: dial tcp 10.0.0.1:1234: connect: connection refused"), true},
		{"reset", errors.New("read tcp 1.2.3.4:5->6.7.8.9:10: read: connection reset by peer"), true},
		{"no socket", errors.New("dial unix /run/buildkit/buildkitd.sock: connect: no such file or directory"), true},
		{"registry push 503", errors.New("failed to solve: failed to push r/x:1: unexpected status from PUT request to http://r/v2/x/blobs/uploads/: 503 Service Unavailable"), true},
		{"registry 502", errors.New("failed to do request: unexpected status from HEAD request to https://r/v2/x/manifests/1: 502 Bad Gateway"), true},
		{"registry 401", errors.New("unexpected status from PUT request to http://r/v2/x/blobs/uploads/: 401 Unauthorized"), false},
		{"build step", errors.New(`process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`), false},
		{"dockerfile", errors.New("failed to solve: dockerfile parse error on line 1: unknown instruction: FORM"), false},
		{"canceled", context.Canceled, false},
		{"wrapped canceled", fmt.Errorf("build: %w", context.Canceled), false},
		{"deadline", context.DeadlineExceeded, false},
	} {
		if got := pipeline.Transient(tc.err); got != tc.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// flakyRunner fails with errs in turn, then succeeds.
type flakyRunner struct {
	errs  []error
	calls int
	last  buildkit.Build
}

func (f *flakyRunner) Run(_ context.Context, b buildkit.Build, logf func([]string)) (string, error) {
	f.calls++
	f.last = b
	if f.calls <= len(f.errs) {
		return "", f.errs[f.calls-1]
	}
	logf([]string{"v: built " + b.Image})
	return builtDigest, nil
}

// builtDigest is the digest every successful fake build pushes.
const builtDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestRetryingRunner(t *testing.T) {
	backoff := pipeline.Backoff{Attempts: 3, First: time.Microsecond, Max: time.Microsecond}
	t.Run("transient twice", func(t *testing.T) {
		unavailable := status.Error(codes.Unavailable, "buildkitd restarting")
		next := &flakyRunner{errs: []error{unavailable, errors.New("connect: connection refused")}}
		var log lineLog
		_, err := pipeline.Retrying{Next: next, Backoff: backoff}.Run(context.Background(), buildkit.Build{Image: "r/x:1"}, log.logf)
		if err != nil || next.calls != 3 {
			t.Fatalf("err %v after %d calls, want success after 3", err, next.calls)
		}
		lines := log.all()
		if len(lines) != 3 || !strings.Contains(lines[0], "build: transient error, retrying") || lines[2] != "v: built r/x:1" {
			t.Fatalf("log %q", lines)
		}
	})
	t.Run("permanent", func(t *testing.T) {
		permanent := errors.New(`process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`)
		next := &flakyRunner{errs: []error{permanent, permanent}}
		_, err := pipeline.Retrying{Next: next, Backoff: backoff}.Run(context.Background(), buildkit.Build{}, func([]string) {})
		if !errors.Is(err, permanent) || next.calls != 1 {
			t.Fatalf("err %v after %d calls, want the build error after 1", err, next.calls)
		}
	})
	t.Run("transient every time", func(t *testing.T) {
		unavailable := status.Error(codes.Unavailable, "down")
		next := &flakyRunner{errs: []error{unavailable, unavailable, unavailable, unavailable}}
		_, err := pipeline.Retrying{Next: next, Backoff: backoff}.Run(context.Background(), buildkit.Build{}, func([]string) {})
		if status.Code(err) != codes.Unavailable || next.calls != 3 {
			t.Fatalf("err %v after %d calls, want Unavailable after 3", err, next.calls)
		}
	})
}

// A registry that refuses connections is tried once more, not build_retries
// times: it may be restarting, but a registry that is down should fail the
// build within seconds.
func TestRetryingRegistryDown(t *testing.T) {
	down := errors.New(`failed to solve: failed to push r:5000/x:1: failed to do request: Head "https://r:5000/v2/x/blobs/sha256:ab": dial tcp 10.0.0.1:5000: connect: connection refused`)
	next := &flakyRunner{errs: []error{down, down, down, down}}
	backoff := pipeline.Backoff{Attempts: 5, First: time.Microsecond, Max: time.Microsecond}
	if _, err := (pipeline.Retrying{Next: next, Backoff: backoff}).Run(context.Background(), buildkit.Build{}, func([]string) {}); !errors.Is(err, down) || next.calls != 2 {
		t.Fatalf("err %v after %d calls, want the registry error after 2", err, next.calls)
	}
	// buildkitd itself not answering keeps its full schedule.
	gone := errors.New("connect to buildkitd at unix:///run/buildkit/buildkitd.sock: connection refused")
	next = &flakyRunner{errs: []error{gone, gone, gone}}
	if _, err := (pipeline.Retrying{Next: next, Backoff: backoff}).Run(context.Background(), buildkit.Build{}, func([]string) {}); err != nil || next.calls != 4 {
		t.Fatalf("err %v after %d calls, want success after 4", err, next.calls)
	}
}

// Replicas that accept a connection but never answer make every ping time
// out (DeadlineExceeded, which alone is final): the pool's "no buildkitd is
// reachable" is still transient, as rolling replicas are.
func TestTransientWhenNoReplicaAnswers(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(silent.Addr().String())
	pool := buildkit.NewPool(
		buildkit.New(buildkit.Daemon{Address: "tcp://" + silent.Addr().String()}, buildkit.Registries{}),
		buildkit.New(buildkit.Daemon{Address: "tcp://localhost:" + port}, buildkit.Registries{}))
	pool.PingTimeout = 300 * time.Millisecond
	_, err = pool.Run(context.Background(), buildkit.Build{Image: "r.example/x:1"}, func([]string) {})
	if !errors.Is(err, buildkit.ErrUnreachable) {
		t.Fatalf("pool.Run with no replica answering: %v, want ErrUnreachable", err)
	}
	if !pipeline.Transient(err) {
		t.Errorf("Transient(%v) = false, want true", err)
	}
}

// A config.json that breaks while build-fn runs fails the build that read
// it, naming the file, and is not retried: the operator must fix it.
func TestRetryingBrokenCredentials(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	authPath := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(authPath, []byte(`{"auths": {`), 0o600); err != nil {
		t.Fatal(err)
	}
	counted := &countingRunner{next: buildkit.New(buildkit.Daemon{Address: "unix://" + filepath.Join(dir, "none.sock")}, buildkit.Registries{AuthPath: authPath})}
	backoff := pipeline.Backoff{Attempts: 3, First: time.Microsecond, Max: time.Microsecond}
	_, err := pipeline.Retrying{Next: counted, Backoff: backoff}.Run(context.Background(), buildkit.Build{Context: buildkit.Dir(dir), Image: "r/x:1"}, func([]string) {})
	if err == nil || !strings.Contains(err.Error(), "registry credentials "+authPath) || counted.calls != 1 {
		t.Fatalf("err %v after %d runs, want one naming %s after 1", err, counted.calls, authPath)
	}
}

type countingRunner struct {
	next  pipeline.Runner
	calls int
}

func (c *countingRunner) Run(ctx context.Context, b buildkit.Build, logf func([]string)) (string, error) {
	c.calls++
	return c.next.Run(ctx, b, logf)
}

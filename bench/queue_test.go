package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// handoffRunner stands in for BuildKit: each build says when it starts
// and runs until released, and says when it ends.
type handoffRunner struct {
	started chan time.Time
	release chan struct{}
	ended   chan time.Time
}

func (h handoffRunner) Run(ctx context.Context, _ buildkit.Build, _ func([]string)) (string, error) {
	h.started <- time.Now()
	select {
	case <-h.release:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	h.ended <- time.Now()
	return "sha256:0000000000000000000000000000000000000000000000000000000000000000", nil
}

// queueHandoff times, n times, how long after one build ends the build
// waiting in the queue starts: build-fn with max_inflight=1 over HTTP, two
// streaming clients, BuildKit replaced by handoffRunner so that only
// build-fn's own work is timed.
func queueHandoff(t *testing.T, n int) []time.Duration {
	dir := t.TempDir()
	key := []byte("bench-queue-key")
	if err := os.WriteFile(filepath.Join(dir, config.PayloadSecretName), key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.FromMap(map[string]string{
		"secret_mount_path": dir, "work_dir": t.TempDir(), "results_dir": t.TempDir(),
		"registry_config_path": filepath.Join(dir, "none.json"), "max_inflight": "1",
	})
	opts, err := buildfn.Options(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runner := handoffRunner{started: make(chan time.Time, 2), release: make(chan struct{}), ended: make(chan time.Time, 2)}
	opts.Pipeline.Runner = runner
	srv := httptest.NewServer(buildfn.Router(cfg, opts))
	defer srv.Close()
	body := contextSpec{Dockerfile: "FROM scratch\n"}.Tar("127.0.0.1:1/bench-queue:1")
	post := func() <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, err := http.DefaultClient.Do(signedStream(srv.URL, body, key))
			if err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}()
		return done
	}
	var out []time.Duration
	first := post()
	<-runner.started
	for range n {
		next := post()
		for opts.Slots.Queued() != 1 {
			time.Sleep(100 * time.Microsecond)
		}
		runner.release <- struct{}{}
		end := <-runner.ended
		start := <-runner.started
		out = append(out, start.Sub(end))
		<-first
		first = next
	}
	runner.release <- struct{}{}
	<-runner.ended
	<-first
	return out
}

func signedStream(url string, body, key []byte) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, url+"/build", bytes.NewReader(body))
	req.Header = testenv.SignedHeader(key, body, true)
	return req
}

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const vectors = "../../shared/vectors"

// stack is one registry + buildkitd shared by the tests of this package.
type stack struct {
	reg  *testenv.Registry
	bk   *testenv.BuildKit
	base string // busybox base image ref
}

// The captured faas-cli request builds FROM 127.0.0.1:5000/busybox and
// pushes to 127.0.0.1:5000, and its signature pins those bytes, so the
// registry must listen on that exact address.
const vectorRegistry = "127.0.0.1:5000"

func startStack(t *testing.T) *stack {
	t.Helper()
	reg := testenv.StartRegistryAt(t, vectorRegistry)
	bk := testenv.StartBuildKit(t, testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr}})
	base := testenv.PushBusybox(t, bk, reg)
	return &stack{reg: reg, bk: bk, base: base}
}

// buildFn is build-fn served over real HTTP by the template's own server
// (fnserver, with its 10 s default write timeout), wired to the stack.
type buildFn struct {
	url      string
	workDir  string
	secrets  string
	runs     *atomic.Int32
	opened   *openLog
	settings map[string]string
}

// countingRunner counts solves, so refusal tests can prove nothing ran,
// and records which context files BuildKit read for each image.
type countingRunner struct {
	next interface {
		Run(context.Context, buildkit.Build, func([]string)) error
	}
	n      *atomic.Int32
	opened *openLog
}

func (c countingRunner) Run(ctx context.Context, b buildkit.Build, logf func([]string)) error {
	c.n.Add(1)
	b.Context = recordingContext{Context: b.Context, image: b.Image, log: c.opened}
	return c.next.Run(ctx, b, logf)
}

// openLog is, per image, the context files BuildKit opened to transfer.
type openLog struct {
	mu    sync.Mutex
	files map[string][]string
}

func (l *openLog) of(image string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(slices.Values(l.files[image]))
}

type recordingContext struct {
	buildkit.Context
	image string
	log   *openLog
}

func (r recordingContext) Open(p string) (io.ReadCloser, error) {
	r.log.mu.Lock()
	r.log.files[r.image] = append(r.log.files[r.image], p)
	r.log.mu.Unlock()
	return r.Context.Open(p)
}

func startBuilder(t *testing.T, s *stack, extra map[string]string) *buildFn {
	t.Helper()
	secretsDir := t.TempDir()
	copyFile(t, filepath.Join(vectors, "faas-cli-sealed-test/payload.txt"), filepath.Join(secretsDir, "payload-secret"))
	copyFile(t, filepath.Join(vectors, "faas-cli-sealed-test/key"), filepath.Join(secretsDir, "build-secrets-key"))
	workDir := t.TempDir()
	settings := map[string]string{
		"secret_mount_path":   secretsDir,
		"buildkit_url":        s.bk.Addr,
		"insecure_registries": s.reg.Addr,
		"work_dir":            workDir,
		"results_dir":         t.TempDir(),
		"build_timeout":       "5m",
		"keepalive_interval":  "2s",
	}
	for k, v := range extra {
		settings[k] = v
	}
	cfg := config.FromMap(settings)
	opts, err := buildfn.Options(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runs := &atomic.Int32{}
	opened := &openLog{files: map[string][]string{}}
	opts.Pipeline.Runner = countingRunner{next: opts.Pipeline.Runner, n: runs, opened: opened}
	h := buildfn.Router(cfg, opts)

	url := testenv.Serve(t, h, cfg)
	return &buildFn{url: url, workDir: workDir, secrets: secretsDir, runs: runs, opened: opened, settings: settings}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBuildFn runs every end-to-end build check against one registry and
// one buildkitd, which take seconds to start.
func TestBuildFn(t *testing.T) {
	s := startStack(t)
	t.Run("captured faas-cli request", func(t *testing.T) { testCapturedRequest(t, s) })
	t.Run("go-sdk BuildWithSecretsStream", func(t *testing.T) { testGoSDKStream(t, s) })
	t.Run("go-sdk buffered build failure", func(t *testing.T) { testGoSDKFailure(t, s) })
	t.Run("refusals", func(t *testing.T) { testRefusals(t, s) })
	t.Run("at capacity", func(t *testing.T) { testAtCapacity(t, s) })
	t.Run("client disconnect", func(t *testing.T) { testClientDisconnect(t, s) })
}

// testCapturedRequest replays the exact bytes faas-cli sent and checks the
// pushed image holds the sealed secret's value.
func testCapturedRequest(t *testing.T, s *stack) {
	b := startBuilder(t, s, nil)

	body, err := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/request.tar"))
	if err != nil {
		t.Fatal(err)
	}
	var captured struct {
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
	}
	raw, _ := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/request-headers.json"))
	if err := json.Unmarshal(raw, &captured); err != nil {
		t.Fatal(err)
	}
	header := http.Header{}
	for k, v := range captured.Headers {
		if k != "Host" && k != "Content-Length" {
			header.Set(k, v)
		}
	}

	res := testenv.Post(t, b.url+captured.Path, body, header)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("Content-Type %q", ct)
	}
	results := testenv.ReadNDJSON(t, res.Body)
	final := results[len(results)-1]
	if final.Status != progress.Success || final.Image != "127.0.0.1:5000/sealed-test:0.1" {
		t.Fatalf("final line %+v\nlog:\n%s", final, testenv.LogText(results))
	}
	for _, r := range results[:len(results)-1] {
		if r.Status != progress.InProgress {
			t.Fatalf("progress line with status %q", r.Status)
		}
	}
	if !strings.Contains(testenv.LogText(results), "v: ") {
		t.Fatalf("no vertex lines in log:\n%s", testenv.LogText(results))
	}

	const secret = "sk-live-my-secret-key"
	if got := testenv.ImageFile(t, s.reg, "sealed-test", "0.1", "home/app/api_key.txt"); strings.TrimSpace(string(got)) != secret {
		t.Fatalf("api_key.txt in the pushed image = %q, want %q", got, secret)
	}
	if got := testenv.ImageFile(t, s.reg, "sealed-test", "0.1", "home/app/greeting.txt"); strings.TrimSpace(string(got)) != "hi-there" {
		t.Fatalf("greeting.txt = %q (build arg lost)", got)
	}
	if strings.Contains(testenv.LogText(results), secret) {
		t.Fatal("the secret value appears in the build log")
	}

	// The builder's own directories never hold the plaintext.
	if hits := testenv.FindInTree(t, b.workDir, []byte(secret)); len(hits) > 0 {
		t.Fatalf("plaintext secret on disk in build-fn's work dir: %v", hits)
	}
	if entries, _ := os.ReadDir(b.workDir); len(entries) != 0 {
		t.Fatalf("work dir not cleaned up: %v", entries)
	}
	// This Dockerfile copies the secret into the image on purpose, so the
	// only place buildkitd may hold it is that layer's snapshot.
	for _, hit := range testenv.FindInTree(t, s.bk.Root, []byte(secret)) {
		if !strings.Contains(hit, "/snapshots/") {
			t.Errorf("plaintext secret in buildkitd state outside the image's own layer: %s", hit)
		}
	}
}

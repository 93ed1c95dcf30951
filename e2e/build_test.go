package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	buildfn "github.com/fnbuilder/fnbuilder/build-fn"
	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const vectors = "../../shared/vectors"

// The captured faas-cli request builds FROM 127.0.0.1:5000/busybox and
// pushes to 127.0.0.1:5000, and its signature pins those bytes, so the
// registry must listen on that exact address.
const vectorRegistry = "127.0.0.1:5000"

func startStack(t *testing.T) *testenv.Stack {
	t.Helper()
	return testenv.StartStack(t, vectorRegistry, testenv.BuildKitOptions{})
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
	next   pipeline.Runner
	n      *atomic.Int32
	opened *openLog
}

func (c countingRunner) Run(ctx context.Context, b buildkit.Build, logf func([]string)) (string, error) {
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

func startBuilder(t *testing.T, s *testenv.Stack, extra map[string]string) *buildFn {
	t.Helper()
	secretsDir := t.TempDir()
	copyFile(t, filepath.Join(vectors, "faas-cli-sealed-test/payload.txt"), filepath.Join(secretsDir, "payload-secret"))
	copyFile(t, filepath.Join(vectors, "faas-cli-sealed-test/key"), filepath.Join(secretsDir, "build-secrets-key"))
	workDir := t.TempDir()
	settings := map[string]string{
		"secret_mount_path":   secretsDir,
		"buildkit_url":        s.BK.Addr,
		"insecure_registries": s.Reg.Addr,
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
	t.Run("go-sdk stream shows a refusal's reason", func(t *testing.T) { testGoSDKRefusal(t, s) })
	t.Run("refusals", func(t *testing.T) { testRefusals(t, s) })
	t.Run("at capacity", func(t *testing.T) { testAtCapacity(t, s) })
	t.Run("client disconnect", func(t *testing.T) { testClientDisconnect(t, s) })
	t.Run("log format", func(t *testing.T) { testLogFormat(t, s) })
}

// manifestDigest is the digest the registry gives repo:tag's manifest.
func manifestDigest(t *testing.T, registry, repo, tag string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, "http://"+registry+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if d := res.Header.Get("Docker-Content-Digest"); res.StatusCode == http.StatusOK && d != "" {
		return d
	}
	t.Fatalf("HEAD %s:%s: %s", repo, tag, res.Status)
	return ""
}

// testLogFormat: by default the log takes the form of the Pro builder's
// own announcement, "2026-03-24T11:15:13Z [stage-1 2/4] COPY --from=watchdog
// /fwatchdog /usr/bin/fwatchdog", and a step's end adds its seconds with two
// decimals; log_format=prefixed gives the old "v: " form.
func testLogFormat(t *testing.T, s *testenv.Stack) {
	const stamp = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	// Each run's handler differs, so that its steps run rather than come
	// from the cache.
	dockerfile := "FROM " + s.Base + " AS watchdog\nRUN echo fwatchdog > /fwatchdog\n" +
		"FROM " + s.Base + "\nRUN echo handler > /handler && echo %s > /format\nCOPY --from=watchdog /fwatchdog /usr/bin/fwatchdog\n"
	for format, want := range map[string][]string{
		"": {
			`^` + stamp + ` \[stage-1 3/4\] COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog$`,
			`^` + stamp + ` \[stage-1 3/4\] COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog \d+\.\d\ds$`,
			`^` + stamp + ` handler$`, // what RUN cat printed
		},
		"prefixed": {
			`^v: ` + stamp + ` \[stage-1 3/4\] COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog$`,
			`^v: ` + stamp + ` \[stage-1 3/4\] COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog \d+\.\ds$`,
			`^l: ` + stamp + ` handler$`,
		},
	} {
		b := startBuilder(t, s, map[string]string{"log_format": format})
		image := s.Reg.Addr + "/log-format:" + map[string]string{"": "plain", "prefixed": "prefixed"}[format]
		body := testenv.BuildTar(t, testenv.Dir("context/"), testenv.File("context/Dockerfile", fmt.Sprintf(dockerfile, time.Now().Format(time.RFC3339Nano))+"RUN cat /handler\n"),
			testenv.ConfigEntry(t, map[string]any{"image": image}))
		res := testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(payloadSecret(t), body, true))
		results := testenv.ReadNDJSON(t, res.Body)
		log := testenv.LogText(results)
		if final := results[len(results)-1]; final.Status != progress.Success {
			t.Fatalf("log_format=%q: %+v\n%s", format, final, log)
		}
		for _, re := range want {
			if !regexp.MustCompile(`(?m)` + re).MatchString(log) {
				t.Errorf("log_format=%q: no line matches %s in\n%s", format, re, log)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
			prefixed := regexp.MustCompile(`^[vslw]: ` + stamp + ` `).MatchString(line)
			plain := regexp.MustCompile(`^` + stamp + ` `).MatchString(line)
			if format == "" && !plain || format == "prefixed" && !prefixed {
				t.Errorf("log_format=%q: line %q", format, line)
			}
		}
	}
}

// testCapturedRequest replays the exact bytes faas-cli sent and checks the
// pushed image holds the sealed secret's value.
func testCapturedRequest(t *testing.T, s *testenv.Stack) {
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
	if want := manifestDigest(t, s.Reg.Addr, "sealed-test", "0.1"); final.Digest != want {
		t.Fatalf("final line's digest %q, the registry's %q", final.Digest, want)
	}
	if !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[stage-0 2/3\] RUN mkdir`).MatchString(testenv.LogText(results)) {
		t.Fatalf("no step lines in log:\n%s", testenv.LogText(results))
	}

	const secret = "sk-live-my-secret-key"
	if got := testenv.ImageFile(t, s.Reg, "sealed-test", "0.1", "home/app/api_key.txt"); strings.TrimSpace(string(got)) != secret {
		t.Fatalf("api_key.txt in the pushed image = %q, want %q", got, secret)
	}
	if got := testenv.ImageFile(t, s.Reg, "sealed-test", "0.1", "home/app/greeting.txt"); strings.TrimSpace(string(got)) != "hi-there" {
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
	for _, hit := range testenv.FindInTree(t, s.BK.Root, []byte(secret)) {
		if !strings.Contains(hit, "/snapshots/") {
			t.Errorf("plaintext secret in buildkitd state outside the image's own layer: %s", hit)
		}
	}
}

// payloadSecret is the HMAC key the builders in these tests are given.
func payloadSecret(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/payload.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(data)
}

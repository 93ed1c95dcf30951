package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/e2e/internal/harness"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
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
	*harness.Solves
	url      string
	workDir  string
	secrets  string
	settings map[string]string
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
		// Every body goes through work_dir, so that the checks that it
		// is left empty (and holds no plaintext) look at something.
		"spool_memory_bytes": "0",
		"results_dir":        t.TempDir(),
		"build_timeout":      "5m",
		"keepalive_interval": "2s",
	}
	maps.Copy(settings, extra)
	url, solves := harness.Serve(t, settings)
	return &buildFn{Solves: solves, url: url, workDir: workDir, secrets: secretsDir, settings: settings}
}

// workDirEntries is what build-fn's work_dir holds now.
func (b *buildFn) workDirEntries(t *testing.T) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(b.workDir)
	if err != nil {
		t.Fatal(err)
	}
	return entries
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
	if entries := b.workDirEntries(t); len(entries) != 0 {
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

// testRefusals sends one bad request per case and checks the status code,
// a JSON error naming the problem, no solve started, no image pushed and
// nothing left in the work directory.
func testRefusals(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, map[string]string{"max_request_bytes": "65536", "max_context_bytes": "8192"})
	image := s.Reg.Addr + "/refused:1"
	cfg := testenv.ConfigEntry(t, map[string]any{"image": image})
	dockerfile := testenv.File("context/Dockerfile", "FROM "+s.Base+"\n")
	good := testenv.BuildTar(t, testenv.Dir("context"), dockerfile, cfg)

	otherKey, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := secrets.Seal(otherKey.Public, map[string][]byte{"k": []byte("v")})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		body   []byte
		header func([]byte) http.Header
		code   int
		msg    string
	}{
		{"no signature", good, func([]byte) http.Header { return http.Header{} }, 401, "missing X-Build-Signature"},
		{"malformed signature", good, func([]byte) http.Header {
			return http.Header{"X-Build-Signature": {"sha1=abc"}}
		}, 401, "malformed"},
		{"wrong signature", good, func(body []byte) http.Header {
			return testenv.SignedHeader(payloadSecret(t), append([]byte("x"), body...), true)
		}, 401, "does not match"},
		{"path traversal", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("context/../../escape", "x"), cfg), nil, 400, "escape"},
		{"symlink escape", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.Symlink("context/etc", "/etc"), cfg), nil, 400, "context/etc"},
		{"context too large", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("context/big", strings.Repeat("x", 10000)), cfg), nil, 413, "context/big"},
		{"body too large", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("context/huge", strings.Repeat("x", 70000)), cfg), nil, 413, "limit"},
		{"bad config JSON", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, testenv.File("com.openfaas.docker.config", "{image:")), nil, 400, "com.openfaas.docker.config"},
		{"unknown key_id", testenv.BuildTar(t, testenv.Dir("context"), dockerfile, cfg, testenv.File("com.openfaas.secrets", string(foreign))), nil, 400, otherKeyID(t, otherKey.Public)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			header := testenv.SignedHeader(payloadSecret(t), c.body, true)
			if c.header != nil {
				header = c.header(c.body)
			}
			before := b.Runs.Load()
			res := testenv.Post(t, b.url+"/build", c.body, header)
			if testenv.Status(res) != c.code {
				t.Fatalf("status %d, want %d", testenv.Status(res), c.code)
			}
			if msg := testenv.ErrorBody(t, res); !strings.Contains(msg, c.msg) {
				t.Fatalf("error %q does not mention %q", msg, c.msg)
			}
			if b.Runs.Load() != before {
				t.Fatal("a refused request reached BuildKit")
			}
			if entries := b.workDirEntries(t); len(entries) != 0 {
				t.Fatalf("refused request left files behind: %v", entries)
			}
		})
	}
	if testenv.TagExists(t, s.Reg, "refused", "1") {
		t.Fatal("a refused request pushed an image")
	}
}

func otherKeyID(t *testing.T, pub []byte) string {
	id, err := secrets.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testAtCapacity: with max_inflight=1 and no queue a second build gets
// 429 with Retry-After while the first runs (a streaming client as its
// stream's line), and readiness turns false.
func testAtCapacity(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, map[string]string{"max_inflight": "1", "max_queued": "0"})
	slow := testenv.BuildTar(t, testenv.Dir("context"),
		testenv.File("context/Dockerfile", "FROM "+s.Base+"\nRUN sleep 4 && echo slow-"+time.Now().Format("150405.000")+"\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/slow:1"}))

	type answer struct {
		res *http.Response
		err error
	}
	first := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, b.url+"/build", strings.NewReader(string(slow)))
		req.Header = testenv.SignedHeader(payloadSecret(t), slow, true)
		res, err := http.DefaultClient.Do(req)
		first <- answer{res, err}
	}()
	b.waitSolves(t, 1)

	fast := testenv.BuildTar(t, testenv.Dir("context"), testenv.File("context/Dockerfile", "FROM "+s.Base+"\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/fast:1"}))
	for _, streaming := range []bool{true, false} {
		res := testenv.Post(t, b.url+"/build", fast, testenv.SignedHeader(payloadSecret(t), fast, streaming))
		if testenv.Status(res) != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
			t.Fatalf("streaming %v: status %d Retry-After %q, want 429 with Retry-After", streaming, testenv.Status(res), res.Header.Get("Retry-After"))
		}
		if msg := testenv.ErrorBody(t, res); !strings.Contains(msg, "Concurrent request limit exceeded") {
			t.Fatalf("429 message %q", msg)
		}
	}
	ready, err := http.Get(b.url + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	ready.Body.Close()
	if ready.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready = %d at capacity, want 503", ready.StatusCode)
	}
	if b.Runs.Load() != 1 {
		t.Fatal("the refused build reached BuildKit")
	}

	a := <-first
	if a.err != nil {
		t.Fatalf("the first build: %v", a.err)
	}
	r := a.res
	defer r.Body.Close()
	results := testenv.ReadNDJSON(t, r.Body)
	if final := results[len(results)-1]; final.Status != progress.Success {
		t.Fatalf("first build %+v", final)
	}
	// The slot is free again.
	res := testenv.Post(t, b.url+"/build", fast, testenv.SignedHeader(payloadSecret(t), fast, true))
	if results := testenv.ReadNDJSON(t, res.Body); results[len(results)-1].Status != progress.Success {
		t.Fatalf("build after capacity freed: %+v", results[len(results)-1])
	}
}

// testClientDisconnect: a client that goes away cancels the solve and frees
// its slot, so the next build runs.
func testClientDisconnect(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, map[string]string{"max_inflight": "1"})
	slow := testenv.BuildTar(t, testenv.Dir("context"),
		testenv.File("context/Dockerfile", "FROM "+s.Base+"\nRUN sleep 60\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/abandoned:1"}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.url+"/build", strings.NewReader(string(slow)))
	req.Header = testenv.SignedHeader(payloadSecret(t), slow, true)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b.waitSolves(t, 1)
	cancel()
	res.Body.Close()

	fast := testenv.BuildTar(t, testenv.Dir("context"), testenv.File("context/Dockerfile", "FROM "+s.Base+"\n"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/after-disconnect:1"}))
	deadline := time.Now().Add(testenv.HangGuard)
	for {
		res := testenv.Post(t, b.url+"/build", fast, testenv.SignedHeader(payloadSecret(t), fast, true))
		if res.StatusCode == http.StatusOK {
			results := testenv.ReadNDJSON(t, res.Body)
			if final := results[len(results)-1]; final.Status != progress.Success {
				t.Fatalf("build after disconnect: %+v", final)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: slot still taken %s after the client left (status %d)", testenv.HangGuard, res.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if testenv.TagExists(t, s.Reg, "abandoned", "1") {
		t.Fatal("the abandoned build was pushed")
	}
	if entries := b.workDirEntries(t); len(entries) != 0 {
		t.Fatalf("work dir not cleaned: %v", entries)
	}
}

// waitSolves waits for n solves to have started.
func (b *buildFn) waitSolves(t *testing.T, n int32) {
	t.Helper()
	testenv.WaitFor(t, fmt.Sprintf("%d solves to start", n), func() error {
		if got := b.Runs.Load(); got != n {
			return fmt.Errorf("%d started", got)
		}
		return nil
	})
}

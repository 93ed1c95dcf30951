package hardening

import (
	"archive/tar"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fnbuilder/fnbuilder/e2e/internal/harness"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// keys are one builder's payload secret and build-secrets key pair.
type keys struct {
	payload []byte
	pair    secrets.KeyPair
}

func newKeys(t *testing.T) keys {
	t.Helper()
	kp, err := secrets.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return keys{payload: []byte("payload-" + testenv.RandomHex(t, 16)), pair: kp}
}

func (k keys) seal(t *testing.T, values map[string]string) []byte {
	t.Helper()
	m := map[string][]byte{}
	for name, v := range values {
		m[name] = []byte(v)
	}
	env, err := secrets.Seal(k.pair.Public, m)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// builder is build-fn served in-process by the template's own server.
type builder struct {
	*harness.Solves
	url        string
	parent     string // holds workDir and resultsDir, and nothing else
	workDir    string
	resultsDir string
	keys       keys
}

// startBuilder serves build-fn with these settings over a fresh set of
// directories: parent/work (work_dir), parent/results, parent/secrets.
func startBuilder(t *testing.T, k keys, extra map[string]string) *builder {
	t.Helper()
	parent := t.TempDir()
	secretsDir := filepath.Join(parent, "secrets")
	workDir := filepath.Join(parent, "work")
	resultsDir := filepath.Join(parent, "results")
	for _, d := range []string{secretsDir, workDir, resultsDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(secretsDir, config.PayloadSecretName), k.payload, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secretsDir, config.BuildSecretsKeyName), k.pair.Private, 0o600); err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{
		"secret_mount_path":  secretsDir,
		"work_dir":           workDir,
		"results_dir":        resultsDir,
		"build_timeout":      "5m",
		"keepalive_interval": "2s",
		// No daemon: a request that got as far as BuildKit would fail
		// loudly, and the counter below would see it.
		"buildkit_url":  "unix://" + filepath.Join(parent, "no-buildkitd.sock"),
		"build_retries": "1",
	}
	maps.Copy(settings, extra)
	url, solves := harness.Serve(t, settings)
	return &builder{Solves: solves, url: url, parent: parent, workDir: workDir, resultsDir: resultsDir, keys: k}
}

// stream posts a signed build body and follows its NDJSON reply.
func (b *builder) stream(t *testing.T, body []byte) *testenv.Stream {
	t.Helper()
	return testenv.Follow(t, testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(b.keys.payload, body, true)))
}

// streamRun builds FROM the base with one RUN step, pushed as
// REG/image, and follows it until its log shows waitFor.
func (b *builder) streamRun(t *testing.T, s *stack, run, image, waitFor string) *testenv.Stream {
	t.Helper()
	st := b.stream(t, buildTar(t, "FROM "+s.Base+"\nRUN "+run+"\n", s.Reg.Addr+"/"+image))
	st.WaitLog(t, waitFor)
	return st
}

// workDirEmpty fails the test when a request left anything in work_dir.
func (b *builder) workDirEmpty(t *testing.T) {
	t.Helper()
	if err := b.workDirLeft(t); err != nil {
		t.Fatal(err)
	}
}

// waitWorkDirEmpty waits for work_dir to empty: a request's spooled body
// is removed just after its reply is written.
func (b *builder) waitWorkDirEmpty(t *testing.T) {
	t.Helper()
	testenv.WaitFor(t, "work_dir to empty", func() error { return b.workDirLeft(t) })
}

// workDirLeft names what is in work_dir, if anything.
func (b *builder) workDirLeft(t *testing.T) error {
	t.Helper()
	entries, err := os.ReadDir(b.workDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		return nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return fmt.Errorf("work_dir not empty: %v", names)
}

// ready reports GET /ready's status.
func (b *builder) ready(t *testing.T) int {
	t.Helper()
	res, err := http.Get(b.url + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// slotFree checks readiness and that a request is not turned away.
func slotFree(t *testing.T, b *builder) {
	t.Helper()
	testenv.WaitFor(t, "the slot to be freed", func() error {
		if code := b.ready(t); code != http.StatusOK {
			return fmt.Errorf("/ready %d", code)
		}
		return nil
	})
}

// stack is one registry and one rootless buildkitd with a busybox base.
type stack struct{ *testenv.Stack }

func startStack(t *testing.T) *stack {
	t.Helper()
	return &stack{testenv.StartStack(t, "", testenv.BuildKitOptions{})}
}

// builderOn starts build-fn wired to the stack's daemons.
func (s *stack) builderOn(t *testing.T, extra map[string]string) *builder {
	t.Helper()
	settings := map[string]string{
		"buildkit_url":        s.BK.Addr,
		"insecure_registries": s.Reg.Addr,
	}
	for k, v := range extra {
		settings[k] = v
	}
	return startBuilder(t, newKeys(t), settings)
}

// special is an entry type only the attack cases send.
func special(name string, typ byte) testenv.TarEntry {
	return testenv.TarEntry{Header: tar.Header{Name: name, Mode: 0o644, Typeflag: typ, Devmajor: 1, Devminor: 3}}
}

// buildTar is a valid request: a Dockerfile and a config for image.
func buildTar(t testing.TB, dockerfile, image string, extra ...testenv.TarEntry) []byte {
	t.Helper()
	entries := []testenv.TarEntry{testenv.Dir("context/"), testenv.File("context/Dockerfile", dockerfile)}
	entries = append(entries, extra...)
	entries = append(entries, testenv.ConfigEntry(t, map[string]any{"image": image}))
	return testenv.BuildTar(t, entries...)
}

// final reads a whole stream and returns its last line and the log text.
func final(t *testing.T, res *http.Response) (progress.Result, string) {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	results := testenv.ReadNDJSON(t, res.Body)
	if len(results) == 0 {
		t.Fatal("empty NDJSON stream")
	}
	return results[len(results)-1], testenv.LogText(results)
}

// errorBody decodes a refusal's JSON body; a refusal here must also say
// it is JSON.
func errorBody(t *testing.T, res *http.Response) string {
	t.Helper()
	want := "application/json"
	if res.Header.Get("X-Fnbuilder-Status") != "" {
		want = "application/x-ndjson" // a streaming client's refusal: its stream's one line
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, want) {
		t.Errorf("refusal Content-Type %q, want %s", ct, want)
	}
	return testenv.ErrorBody(t, res)
}

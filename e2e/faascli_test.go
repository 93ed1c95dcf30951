package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/config"
	sealfn "github.com/fnbuilder/fnbuilder/seal-fn"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// faasCLI is the real faas-cli 0.18.12 (../shared/tools/faas-cli), named by
// FAAS_CLI: the module proxy does not serve it, so the test cannot build it.
func faasCLI(t *testing.T) string { return testenv.FaasCLI(t) }

// cliRun is what one faas-cli run printed and how it ended.
type cliRun struct {
	out  string // stdout and stderr
	code int
}

func runFaasCLI(t *testing.T, dir string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, faasCLI(t), args...)
	cmd.Dir = dir
	// No telemetry, no update checks, no docker config from $HOME.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NO_COLOR=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("faas-cli %s: %v", strings.Join(args, " "), err)
	}
	return cliRun{out: out.String(), code: code}
}

// project writes a faas-cli project: functions fn-1..fn-n, each a
// Dockerfile that hashes its build secret into the image, with the
// template faas-cli insists on even for lang: dockerfile.
func project(t *testing.T, s *testenv.Stack, n int, secrets bool, tag string) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, body string) { testenv.WriteFiles(t, dir, map[string]string{name: body}) }
	write("template/dockerfile/template.yml", "language: dockerfile\nfprocess: cat\n")
	write(".secrets/api_key.txt", "sk-faas-cli-"+tag)
	var stack strings.Builder
	stack.WriteString("version: 1.0\nprovider:\n  name: openfaas\n  gateway: http://127.0.0.1:8080\nfunctions:\n")
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("fn-%d", i)
		dockerfile := "FROM " + s.Base + "\nRUN echo " + name + " > /name\n"
		if secrets {
			dockerfile += "RUN --mount=type=secret,id=api_key sha256sum /run/secrets/api_key | cut -d' ' -f1 > /secret.sha\n"
		}
		write(name+"/Dockerfile", dockerfile)
		fmt.Fprintf(&stack, "  %s:\n    lang: dockerfile\n    handler: ./%s\n    image: %s/faas-cli-%s:%s\n", name, name, s.Reg.Addr, name, tag)
		if secrets {
			stack.WriteString("    build_secrets:\n      api_key: .secrets/api_key.txt\n")
		}
	}
	write("stack.yaml", stack.String())
	return dir
}

func writePayload(t *testing.T, dir string, secret []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "payload.txt"), append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFaasCLI publishes with the real faas-cli 0.18.12 to build-fn.
func TestFaasCLI(t *testing.T) {
	s := startStack(t)

	// A team publishing a stack of functions at once, with build secrets,
	// on a builder that runs two builds at a time: the rest wait their
	// turn instead of crashing faas-cli with a 429.
	t.Run("publish --parallel 6 with build secrets at max_inflight 2", func(t *testing.T) {
		b := startBuilder(t, s, map[string]string{"max_inflight": "2"})
		tag := fmt.Sprint(time.Now().UnixNano())
		dir := project(t, s, 6, true, tag)
		writePayload(t, dir, payloadSecret(t))
		run := runFaasCLI(t, dir, "publish", "-f", "stack.yaml", "--remote-builder", b.url, "--payload-secret", "payload.txt", "--parallel", "6")
		if run.code != 0 || strings.Contains(run.out, "panic:") {
			t.Fatalf("faas-cli exit %d:\n%s", run.code, run.out)
		}
		sum := sha256.Sum256([]byte("sk-faas-cli-" + tag))
		for i := 1; i <= 6; i++ {
			repo := fmt.Sprintf("faas-cli-fn-%d", i)
			if !testenv.TagExists(t, s.Reg, repo, tag) {
				t.Fatalf("%s:%s was not pushed; faas-cli said:\n%s", repo, tag, run.out)
			}
			if got := strings.TrimSpace(string(testenv.ImageFile(t, s.Reg, repo, tag, "secret.sha"))); got != hex.EncodeToString(sum[:]) {
				t.Errorf("%s:%s holds secret hash %q", repo, tag, got)
			}
		}
		if n := b.Runs.Load(); n != 6 {
			t.Errorf("%d builds ran, want 6", n)
		}
	})

	// A refusal reaches the user with its reason, and faas-cli exits
	// non-zero without a panic — with build secrets (faas-cli 0.18.12 panics
	// on any non-200 answer then) and without (it prints only the status).
	t.Run("a wrong payload secret is explained", func(t *testing.T) {
		b := startBuilder(t, s, nil)
		for _, secrets := range []bool{true, false} {
			dir := project(t, s, 1, secrets, "refused")
			writePayload(t, dir, []byte("not-the-builders-payload-secret"))
			run := runFaasCLI(t, dir, "publish", "-f", "stack.yaml", "--remote-builder", b.url, "--payload-secret", "payload.txt")
			t.Logf("build secrets %v: faas-cli exit %d:\n%s", secrets, run.code, run.out)
			if run.code == 0 || strings.Contains(run.out, "panic:") || !strings.Contains(run.out, "X-Build-Signature does not match") {
				t.Errorf("build secrets %v: exit %d, want non-zero with the reason and no panic:\n%s", secrets, run.code, run.out)
			}
		}
		if n := b.Runs.Load(); n != 0 {
			t.Errorf("%d builds ran", n)
		}
	})

	// Build arguments from every place faas-cli takes them — stack.yaml's
	// build_args, --build-arg, and --build-option through the template's
	// build_options (faas-cli sends those as ADDITIONAL_PACKAGE) — reach
	// the build, through `up` (the build path: no platforms sent) and
	// `up --publish`.
	t.Run("up with build_args, --build-arg and --build-option", func(t *testing.T) {
		b := startBuilder(t, s, nil)
		for _, mode := range []string{"up", "up --publish"} {
			tag := strings.ReplaceAll(mode, " --", "-") + "-" + testenv.RandomHex(t, 4)
			dir := t.TempDir()
			testenv.WriteFiles(t, dir, map[string]string{
				"template/dockerfile/template.yml": "language: dockerfile\nfprocess: cat\nbuild_options:\n  - name: dev\n    packages: [make, git]\n",
				"fn/Dockerfile": "FROM " + s.Base + "\nARG FROM_STACK\nARG FROM_FLAG\nARG ADDITIONAL_PACKAGE\n" +
					"RUN echo \"stack=$FROM_STACK flag=$FROM_FLAG packages=$ADDITIONAL_PACKAGE\" > /args\n",
				"stack.yaml": "version: 1.0\nprovider:\n  name: openfaas\n  gateway: http://127.0.0.1:8080\nfunctions:\n" +
					"  fn:\n    lang: dockerfile\n    handler: ./fn\n    image: " + s.Reg.Addr + "/faas-cli-up:" + tag + "\n" +
					"    build_args:\n      FROM_STACK: stack.yaml value\n",
			})
			writePayload(t, dir, payloadSecret(t))
			args := append(strings.Fields(mode), "-f", "stack.yaml", "--remote-builder", b.url, "--payload-secret", "payload.txt",
				"--build-arg", "FROM_FLAG=flag value", "--build-option", "dev", "--skip-deploy")
			run := runFaasCLI(t, dir, args...)
			if run.code != 0 || strings.Contains(run.out, "panic:") {
				t.Fatalf("faas-cli %s: exit %d:\n%s", mode, run.code, run.out)
			}
			got := strings.TrimSpace(string(testenv.ImageFile(t, s.Reg, "faas-cli-up", tag, "args")))
			if want := "stack=stack.yaml value flag=flag value packages=git make"; got != want {
				t.Errorf("faas-cli %s: the build saw %q, want %q", mode, got, want)
			}
		}
	})
}

// TestFaasCLISecrets: keys and envelopes made by faas-cli, fnb and seal-fn
// are the same thing.
func TestFaasCLISecrets(t *testing.T) {
	fnb := testenv.BuildFnb(t)
	dir := t.TempDir()
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	cli := faasCLI(t)

	// faas-cli's key, sealed by fnb, opened by faas-cli.
	run(cli, "secret", "keygen", "-o", "cli-key")
	run(fnb, "seal", "cli-key.pub", "--from-literal", "a=from-fnb", "-o", "by-fnb")
	if out := run(cli, "secret", "unseal", "cli-key", "--in", "by-fnb", "--key", "a"); strings.TrimSpace(out) != "from-fnb" {
		t.Errorf("faas-cli unsealed fnb's envelope as %q", out)
	}
	// fnb's key, sealed by faas-cli, opened by fnb.
	run(fnb, "keygen", "-o", "fnb-key")
	run(cli, "secret", "seal", "fnb-key.pub", "--from-literal", "b=from-faas-cli", "-o", "by-cli")
	if out := run(fnb, "unseal", "--private-key", "fnb-key", "by-cli"); !strings.Contains(out, "b=from-faas-cli") {
		t.Errorf("fnb unsealed faas-cli's envelope as %q", out)
	}
	// seal-fn, over HTTP, for faas-cli's key; opened by faas-cli.
	pub, err := os.ReadFile(filepath.Join(dir, "cli-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sealFn(t))
	defer srv.Close()
	envelope := postJSON(t, srv.URL, fmt.Sprintf(`{"secrets":{"c":"from-seal-fn"},"public_key":%q}`, strings.TrimSpace(string(pub))))
	if err := os.WriteFile(filepath.Join(dir, "by-seal-fn"), envelope, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(cli, "secret", "unseal", "cli-key", "--in", "by-seal-fn", "--key", "c"); strings.TrimSpace(out) != "from-seal-fn" {
		t.Errorf("faas-cli unsealed seal-fn's envelope as %q", out)
	}
}

// sealFn is seal-fn's handler, with no key of its own.
func sealFn(t *testing.T) http.Handler {
	t.Helper()
	h, err := sealfn.New(config.FromMap(map[string]string{"secret_mount_path": t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func postJSON(t *testing.T, url, body string) []byte {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %v: %s", url, res.StatusCode, err, data)
	}
	return data
}

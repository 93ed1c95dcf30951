// Package stack is the end-to-end test of the local OpenFaaS stack
// (cmd/fnb-stack): the path a newcomer's `make demo` takes, for real — a
// rootless buildkitd, a registry, NATS Streaming, the OpenFaaS CE gateway,
// two queue-workers, Prometheus and fnb-provider, then the four functions,
// then an async build with a sealed secret, a deploy and an invocation —
// and then `down`, after which no process, network namespace, bridge,
// iptables rule or mount may be left.
//
// It needs root and the tools of hack/install.sh; it fails, never skips,
// when either is missing. The gateway's ports are fixed, so one stack runs
// per machine: a stack already up (make up) is stopped for the test and
// brought back afterwards.
package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/e2e/internal/harness"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const (
	activeMarker = "/run/fnbuilder-stack.active"
	// Serialises this test across concurrent `go test` runs on one machine.
	e2eLock     = "/run/fnbuilder-stack.e2e.lock"
	builderRoot = "http://127.0.0.1:8088"
	installHint = "run `bash hack/install.sh` (make up runs it)"
	// Stack directories of this test: /tmp, short enough for unix sockets
	// and traversable by the rootless build user.
	tmpPrefix = "fnbstack-e2e-"
)

func TestLocalStack(t *testing.T) {
	bin, repo, dir := prepareStack(t)

	// 1. up, from nothing.
	t0 := time.Now()
	out := run(t, bin, repo, 20*time.Minute, "up", "--dir", dir)
	firstUp := time.Since(t0)
	t.Logf("first up: %s", firstUp.Round(100*time.Millisecond))
	for _, want := range []string{"http://127.0.0.1:8080", builderRoot, filepath.Join(dir, "secrets", "basic-auth-password"),
		"https://127.0.0.1:5001", filepath.Join(dir, "tls", "ca.pem"), filepath.Join(dir, "registry", "users", "fnb-push.json")} {
		if !strings.Contains(out, want) {
			t.Errorf("up's summary does not mention %s:\n%s", want, out)
		}
	}

	// 2. The main job: async build with a sealed secret, callback, deploy, invoke.
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "greeting_key")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(secret)
	fingerprint := hex.EncodeToString(sum[:])[:16]
	t1 := time.Now()
	out = run(t, bin, repo, 15*time.Minute, "demo", "--dir", dir, "--secret-file", secretFile)
	t.Logf("demo: %s", time.Since(t1).Round(100*time.Millisecond))
	answer := "sha256(greeting_key)[:16] = " + fingerprint
	if !strings.Contains(out, "│ "+answer) {
		t.Fatalf("the deployed function's answer does not carry the secret's fingerprint %q:\n%s", answer, out)
	}
	for _, want := range []string{"202 Accepted, X-Call-Id", "callback after", "X-Function-Status 200", "deploy-fn created hello-secret"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Invoked again, through the gateway, by the test itself.
	body := httpGet(t, "http://127.0.0.1:8080/function/hello-secret")
	if !strings.Contains(body, answer) {
		t.Errorf("GET /function/hello-secret = %q, want it to contain %q", body, answer)
	}

	// 3. build-fn at the root of its own origin, as faas-cli --remote-builder
	// uses it: GET /publickey and a streamed POST /build with a sealed secret.
	t.Run("remote-builder root", func(t *testing.T) {
		checkRemoteBuilder(t, repo, dir)
	})
	// 4. Concurrent builds cannot see or kill each other's processes.
	t.Run("process sandbox", func(t *testing.T) {
		checkProcessSandbox(t, dir)
	})
	// 5. The registry: HTTPS from the stack's CA and users only, and clear
	// failures when it presents another CA, refuses the password or is down.
	t.Run("registry over HTTPS with users", func(t *testing.T) { checkRegistryShape(t, dir) })
	t.Run("registry refusals", func(t *testing.T) { checkRegistryRefusals(t, bin, repo, dir) })

	run(t, bin, repo, time.Minute, "status", "--dir", dir)

	// 6. down leaves nothing behind.
	pids := pidRecords(t, dir)
	if len(pids) < 10 {
		t.Errorf("only %d PID files before down, want every daemon's: %v", len(pids), pids)
	}
	t2 := time.Now()
	out = run(t, bin, repo, 5*time.Minute, "down", "--dir", dir)
	if strings.Contains(out, "had to clean up") {
		t.Errorf("down had to clean up after a component (a bug in that component):\n%s", out)
	}
	t.Logf("down: %s", time.Since(t2).Round(100*time.Millisecond))
	assertClean(t, dir, pids)

	// 7. A second up is fast (measured, not asserted), and down is clean again.
	t3 := time.Now()
	run(t, bin, repo, 10*time.Minute, "up", "--dir", dir)
	secondUp := time.Since(t3)
	t.Logf("second up: %s (first: %s)", secondUp.Round(100*time.Millisecond), firstUp.Round(100*time.Millisecond))
	// The provider brings recorded functions back on its own.
	if body := waitGet(t, "http://127.0.0.1:8080/function/hello-secret", time.Minute); !strings.Contains(body, answer) {
		t.Errorf("after down and up, hello-secret answers %q, want %q", body, answer)
	}
	if body := waitGet(t, builderRoot+"/publickey", 30*time.Second); !strings.Contains(body, `"public_key"`) {
		t.Errorf("after down and up, %s/publickey = %q", builderRoot, body)
	}
	// 8. The plain-HTTP registry is there for whoever wants it.
	t.Run("plain-HTTP registry", func(t *testing.T) { checkPlainHTTP(t, bin, repo, dir) })
	pids = pidRecords(t, dir)
	if out := run(t, bin, repo, 5*time.Minute, "down", "--dir", dir); strings.Contains(out, "had to clean up") {
		t.Errorf("second down had to clean up after a component:\n%s", out)
	}
	assertClean(t, dir, pids)
}

// checkRemoteBuilder drives build-fn's root address with go-sdk, as
// faas-cli publish --remote-builder does.
func checkRemoteBuilder(t *testing.T, repo, dir string) {
	pubJSON := httpGet(t, builderRoot+"/publickey")
	var pub struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal([]byte(pubJSON), &pub); err != nil || pub.PublicKey == "" {
		t.Fatalf("GET %s/publickey = %q: %v", builderRoot, pubJSON, err)
	}
	payload, err := os.ReadFile(filepath.Join(dir, "secrets", "payload-secret"))
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "req.tar")
	image := "127.0.0.1:5001/examples/hello-secret:remote-builder"
	if err := builder.MakeTar(tarPath, filepath.Join(repo, "examples", "hello-secret"), &builder.BuildConfig{
		Image:     image,
		BuildArgs: map[string]string{"BUILD_ID": "remote-builder-" + strconv.FormatInt(time.Now().UnixNano(), 36)},
	}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(builderRoot)
	b := builder.NewFunctionBuilder(u, &http.Client{Timeout: 10 * time.Minute},
		builder.WithHmacAuth(strings.TrimSpace(string(payload))),
		builder.WithBuildSecretsKey([]byte(pub.PublicKey)))
	stream, err := b.BuildWithSecretsStream(tarPath, map[string]string{"greeting_key": "from the remote-builder test"})
	if err != nil {
		t.Fatalf("go-sdk BuildWithSecretsStream to %s: %v", builderRoot, err)
	}
	defer stream.Close()
	results := testenv.Collect(t, stream)
	last, lines := results[len(results)-1], 0
	for _, r := range results {
		lines += len(r.Log)
	}
	if last.Status != builder.BuildSuccess || last.Image != image {
		t.Fatalf("streamed build through %s ended with %+v", builderRoot, last)
	}
	t.Logf("streamed build through %s: %d log lines, %s", builderRoot, lines, last.Image)
}

// assertClean checks what `make down` promises.
func assertClean(t *testing.T, dir string, pids map[string]daemon.Record) {
	t.Helper()
	for name, r := range pids {
		if r.Alive() {
			t.Errorf("after down: %s (PID %d) still runs", name, r.PID)
		}
		// Its process group too (children of rootlesskit, containerd...).
		if members := daemon.GroupMembers(r.PID); len(members) > 0 {
			t.Errorf("after down: process group of %s (%d) still has %v", name, r.PID, members)
		}
	}
	for _, pid := range daemon.PIDs() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(dir+"/")) && pid != os.Getpid() {
			if st, err := daemon.Stat(pid); err == nil && st.State != "Z" {
				t.Errorf("after down: process %d still refers to the stack: %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			}
		}
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Errorf("ip netns list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "fnb-") {
			t.Errorf("after down: network namespace %q", line)
		}
	}
	if err := exec.Command("ip", "link", "show", "fnb0").Run(); err == nil {
		t.Errorf("after down: bridge fnb0 exists")
	}
	out, err = exec.Command("iptables", "-w", "5", "-S").CombinedOutput()
	if err != nil {
		t.Errorf("iptables -S: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " FNB-") || strings.HasPrefix(line, "-N FNB-") {
			t.Errorf("after down: iptables %q", line)
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, dir) {
			t.Errorf("after down: mount %q", line)
		}
	}
	if b, err := os.ReadFile(activeMarker); err == nil && strings.TrimSpace(string(b)) == dir {
		t.Errorf("after down: %s still names %s", activeMarker, dir)
	}
}

func pidRecords(t *testing.T, dir string) map[string]daemon.Record {
	t.Helper()
	out := map[string]daemon.Record{}
	files, err := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no PID files in %s: %v", filepath.Join(dir, "pids"), err)
	}
	for _, f := range files {
		r, ok := daemon.ReadRecord(f)
		if !ok {
			t.Fatalf("%s: not a PID record", f)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".pid")] = r
	}
	return out
}

func activeStack() string {
	b, err := os.ReadFile(activeMarker)
	if err != nil {
		return ""
	}
	dir := strings.TrimSpace(string(b))
	// Only if one of its daemons still runs.
	files, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	for _, f := range files {
		if r, ok := daemon.ReadRecord(f); ok && r.Alive() {
			return dir
		}
	}
	return ""
}

func buildStackCLI(t *testing.T, repo string) string {
	bin := filepath.Join(t.TempDir(), "fnb-stack")
	testenv.GoBuild(t, repo, nil, "-o", bin, "./cmd/fnb-stack")
	return bin
}

// run runs fnb-stack and fails the test, with its output, when it fails.
func run(t *testing.T, bin, repo string, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := runErr(bin, repo, timeout, args...)
	t.Logf("$ fnb-stack %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		hint := ""
		if strings.Contains(out, "missing:") {
			hint = "\n" + installHint
		}
		t.Fatalf("fnb-stack %s: %v%s", strings.Join(args, " "), err, hint)
	}
	return out
}

func runErr(bin, repo string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "FNB_STACK_DIR=")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return buf.String(), err
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// waitGet retries GET until it answers 200.
func waitGet(t *testing.T, url string, timeout time.Duration) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			err = fmt.Errorf("%s: %s", resp.Status, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// dumpLogs prints the tail of every daemon's and function's log.
func dumpLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	fnLogs, _ := filepath.Glob(filepath.Join(dir, "provider", "logs", "*.log"))
	for _, p := range append(logs, fnLogs...) {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Logf("--- %s (tail) ---\n%s", p, b)
	}
}

// prepareStack is where every test of this package starts: root, the
// machine-wide lock, fnb-stack built from the checkout, every tool there
// (or the test fails naming them), room for a stack (one that is up is
// stopped and brought back afterwards) and a fresh stack directory.
func prepareStack(t *testing.T) (bin, repo, dir string) {
	if os.Geteuid() != 0 {
		t.Fatalf("the local stack needs root (containerd, network namespaces, iptables); CI runs as root. Run: sudo go test ./e2e/stack/")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	// The stack's ports and bridge are per machine.
	harness.LockMachine(t, e2eLock, 30*time.Minute)
	bin = buildStackCLI(t, repo)
	run(t, bin, repo, time.Minute, "check")
	makeRoomForStack(t, bin, repo)
	return bin, repo, freshStackDir(t, bin, repo)
}

// makeRoomForStack stops a stack that is up (the gateway's ports and the
// bridge are per machine) and brings it back after the test; one left by
// an interrupted run of these tests is removed.
func makeRoomForStack(t *testing.T, bin, repo string) {
	other := activeStack()
	switch {
	case other == "":
	case strings.HasPrefix(other, "/tmp/"+tmpPrefix) || strings.HasPrefix(other, filepath.Join(os.TempDir(), tmpPrefix)):
		t.Logf("!!! a stack left by an earlier, interrupted test run is up from %s: stopping and removing it", other)
		run(t, bin, repo, 5*time.Minute, "down", "--dir", other)
		os.RemoveAll(other)
	default:
		t.Logf("!!! a local stack is up from %s: stopping it for this test; it is brought back afterwards", other)
		run(t, bin, repo, 5*time.Minute, "down", "--dir", other)
		t.Cleanup(func() {
			t.Logf("bringing the stack in %s back up", other)
			if out, err := runErr(bin, repo, 15*time.Minute, "up", "--dir", other); err != nil {
				t.Errorf("could not bring %s back up: %v\n%s", other, err, out)
			}
		})
	}
}

// freshStackDir makes an empty stack directory and, at cleanup, brings
// whatever runs from it down; a failed test keeps it, with its logs shown.
func freshStackDir(t *testing.T, bin, repo string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", tmpPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the rootless build user traverses it
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := runErr(bin, repo, 5*time.Minute, "down", "--dir", dir); err != nil {
			t.Errorf("cleanup: fnb-stack down: %v\n%s", err, out)
		}
		if t.Failed() {
			dumpLogs(t, dir)
			t.Logf("stack dir kept for inspection: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/cluster"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// function is a faas-cli project holding one lang: dockerfile function.
type function struct {
	dir, name string
	secrets   []string // build secret ids, each in the file of the same name
}

// newFunction writes a project: the handler folder with its Dockerfile, a
// file per build secret, and the template faas-cli insists on even for
// lang: dockerfile.
func newFunction(t *testing.T, name, dockerfile string, secrets map[string]string) *function {
	t.Helper()
	f := &function{dir: t.TempDir(), name: name}
	files := map[string]string{
		name + "/Dockerfile":               dockerfile,
		"template/dockerfile/template.yml": "language: dockerfile\nfprocess: cat\n",
	}
	for id, value := range secrets {
		files[id] = value
		f.secrets = append(f.secrets, id)
	}
	for p, body := range files {
		full := filepath.Join(f.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// stackFile writes a stack file naming image and returns its name.
func (f *function) stackFile(image string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1.0\nprovider:\n  name: openfaas\n  gateway: http://127.0.0.1:8080\nfunctions:\n  %s:\n    lang: dockerfile\n    handler: ./%s\n    image: %s\n", f.name, f.name, image)
	if len(f.secrets) > 0 {
		b.WriteString("    build_secrets:\n")
		for _, id := range f.secrets {
			fmt.Fprintf(&b, "      %s: ./%s\n", id, id)
		}
	}
	name := "stack-" + strings.NewReplacer("/", "-", ":", "-").Replace(image) + ".yaml"
	return name, os.WriteFile(filepath.Join(f.dir, name), []byte(b.String()), 0o644)
}

// publishRun is one `faas-cli publish --remote-builder` running.
type publishRun struct {
	image string
	out   *lockedBuffer
	done  chan struct{}
	code  int
	err   error
}

// startPublish runs faas-cli publish of image against build-fn's Service,
// with extra flags (--build-arg ...). It does not fail the test, so that
// other goroutines may call it.
func (e *env) startPublish(t *testing.T, f *function, image string, extra ...string) (*publishRun, error) {
	stack, err := f.stackFile(image)
	if err != nil {
		return nil, err
	}
	args := append([]string{"publish", "-f", stack, "--remote-builder", e.url, "--payload-secret", e.payload}, extra...)
	ctx, cancel := e.context(t, 10*time.Minute)
	cmd := exec.CommandContext(ctx, e.cli, args...)
	cmd.Dir = f.dir
	// No update checks, no docker config from $HOME.
	cmd.Env = append(os.Environ(), "HOME="+f.dir, "NO_COLOR=1")
	p := &publishRun{image: image, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("faas-cli: %w", err)
	}
	go func() {
		defer close(p.done)
		defer cancel()
		err := cmd.Wait()
		if exit, ok := err.(*exec.ExitError); ok {
			p.code = exit.ExitCode()
		} else if err != nil {
			p.code, p.err = -1, err
		}
	}()
	return p, nil
}

// tryPublish runs faas-cli publish to its end: its output and exit code.
func (e *env) tryPublish(t *testing.T, f *function, image string, extra ...string) (string, int, error) {
	p, err := e.startPublish(t, f, image, extra...)
	if err != nil {
		return "", 0, err
	}
	<-p.done
	return p.out.String(), p.code, p.err
}

// publish is tryPublish that fails the test when faas-cli cannot run.
func (e *env) publish(t *testing.T, f *function, image string, extra ...string) (string, int) {
	t.Helper()
	out, code, err := e.tryPublish(t, f, image, extra...)
	if err != nil {
		t.Fatalf("faas-cli publish %s: %v\n%s", image, err, out)
	}
	return out, code
}

// background is startPublish that fails the test when faas-cli cannot start.
func (e *env) background(t *testing.T, f *function, image string, extra ...string) *publishRun {
	t.Helper()
	p, err := e.startPublish(t, f, image, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitOutput waits until faas-cli printed text (a build log line).
func (p *publishRun) waitOutput(t *testing.T, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(p.out.String(), text) {
		select {
		case <-p.done:
			t.Fatalf("faas-cli publish %s ended (exit %d) without printing %q:\n%s", p.image, p.code, text, p.out)
		case <-deadline:
			t.Fatalf("faas-cli publish %s printed no %q within %s:\n%s", p.image, text, timeout, p.out)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// wait waits for faas-cli to end.
func (p *publishRun) wait(t *testing.T) (string, int) {
	t.Helper()
	<-p.done
	if p.err != nil {
		t.Fatalf("faas-cli publish %s: %v\n%s", p.image, p.err, p.out)
	}
	return p.out.String(), p.code
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// image is a reference in the cluster's registry.
func image(repo, tag string) string { return cluster.RegistryAddr + "/" + repo + ":" + tag }

// pushed asks the registry whether repo:tag is there.
func (e *env) pushed(t *testing.T, repo, tag string) bool {
	t.Helper()
	return testenv.TagExists(t, e.reg, repo, tag)
}

// requirePushed fails unless faas-cli succeeded and the registry has the
// image: a success without the image is the false success faas-cli reports
// for a stream cut short.
func (e *env) requirePushed(t *testing.T, repo, tag, out string, code int) {
	t.Helper()
	pushed := e.pushed(t, repo, tag)
	switch {
	case code == 0 && !pushed:
		t.Fatalf("faas-cli reported success for %s but the registry has no such image (a false success):\n%s", image(repo, tag), out)
	case code != 0:
		t.Fatalf("faas-cli publish %s: exit %d:\n%s", image(repo, tag), code, out)
	}
}

// replicaOrder is build-fn's order of the replicas for an image (its
// rendezvous hashing over stack.yaml's buildkit_url), preferred first.
func replicaOrder(img string) []string {
	var builders []*buildkit.Builder
	for i := 0; i < cluster.BuildkitReplicas; i++ {
		builders = append(builders, buildkit.New(buildkit.Daemon{Address: cluster.BuildkitReplicaURL(i)}, buildkit.Registries{}))
	}
	var order []string
	for _, b := range buildkit.NewPool(builders...).Order(img) {
		order = append(order, b.Address())
	}
	return order
}

// repoOn is a fresh repository name that build-fn sends to replica i first.
func repoOn(t *testing.T, prefix string, i int) string {
	t.Helper()
	id := testenv.RandomHex(t, 4)
	for k := 0; k < 1000; k++ {
		repo := fmt.Sprintf("e2e/%s-%s-%d", prefix, id, k)
		if replicaOrder(image(repo, "x"))[0] == cluster.BuildkitReplicaURL(i) {
			return repo
		}
	}
	t.Fatalf("no repository name found for replica %d", i)
	return ""
}

var buildingOn = regexp.MustCompile(`building on (tcp://\S+)`)

// builtOn is the replica a faas-cli run's last build attempt ran on.
func builtOn(out string) string {
	m := buildingOn.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// kubectl runs kubectl as the admin and fails the test when it fails.
func (e *env) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.kubectlErr(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) kubectlErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := e.context(t, 8*time.Minute)
	defer cancel()
	out, err := e.c.Kubectl(ctx, args...)
	return string(out), err
}

// buildkitPod is replica i's pod name.
func buildkitPod(i int) string { return fmt.Sprintf("%s-%d", cluster.BuildkitRelease, i) }

// podField is a jsonpath of replica i's pod.
func (e *env) podField(t *testing.T, i int, jsonpath string) string {
	t.Helper()
	return strings.TrimSpace(e.kubectl(t, "-n", cluster.BuildkitNamespace, "get", "pod", buildkitPod(i), "-o", "jsonpath="+jsonpath))
}

// waitReplicasReady waits until the StatefulSet's pods are all Ready with
// its current revision.
func (e *env) waitReplicasReady(t *testing.T) {
	t.Helper()
	e.kubectl(t, "-n", cluster.BuildkitNamespace, "rollout", "status", "statefulset/"+cluster.BuildkitRelease, "--timeout=5m")
}

// nonce makes each build's context new, so that a build step really runs.
func nonce(t *testing.T) string { return testenv.RandomHex(t, 8) }

// ctx is a context for short client calls.
func (e *env) ctx(t *testing.T) (context.Context, context.CancelFunc) {
	return e.context(t, time.Minute)
}

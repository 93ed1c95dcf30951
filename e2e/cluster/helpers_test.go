package cluster

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/cluster"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// function is a faas-cli project holding one lang: dockerfile function.
type function = testenv.FaasCLIProject

// newFunction writes a project (testenv.NewFaasCLIProject).
func newFunction(t *testing.T, name, dockerfile string, secrets map[string]string) *function {
	return testenv.NewFaasCLIProject(t, name, dockerfile, secrets)
}

// startPublish runs faas-cli publish of image against build-fn's Service,
// with extra flags (--build-arg ...). It does not fail the test, so that
// other goroutines may call it.
func (e *env) startPublish(t *testing.T, f *function, image string, extra ...string) (*testenv.Publishing, error) {
	ctx, cancel := e.context(t, 10*time.Minute)
	p, err := f.StartPublish(ctx, e.cli, e.url, e.payload, image, extra...)
	if err != nil {
		cancel()
		return nil, err
	}
	go func() { p.Wait(); cancel() }()
	return p, nil
}

// tryPublish runs faas-cli publish to its end: its output and exit code.
func (e *env) tryPublish(t *testing.T, f *function, image string, extra ...string) (string, int, error) {
	p, err := e.startPublish(t, f, image, extra...)
	if err != nil {
		return "", 0, err
	}
	return p.Wait()
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
func (e *env) background(t *testing.T, f *function, image string, extra ...string) *testenv.Publishing {
	t.Helper()
	p, err := e.startPublish(t, f, image, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wait is Publishing.Wait that fails the test when faas-cli could not run.
func wait(t *testing.T, p *testenv.Publishing) (string, int) {
	t.Helper()
	out, code, err := p.Wait()
	if err != nil {
		t.Fatalf("faas-cli publish %s: %v\n%s", p.Image, err, out)
	}
	return out, code
}

// waitOutput waits until faas-cli printed text (a build log line).
func waitOutput(t *testing.T, p *testenv.Publishing, text string, timeout time.Duration) {
	t.Helper()
	ended := make(chan int, 1)
	go func() { _, code, _ := p.Wait(); ended <- code }()
	deadline := time.After(timeout)
	for !strings.Contains(p.Output(), text) {
		select {
		case code := <-ended:
			t.Fatalf("faas-cli publish %s ended (exit %d) without printing %q:\n%s", p.Image, code, text, p.Output())
		case <-deadline:
			t.Fatalf("faas-cli publish %s printed no %q within %s:\n%s", p.Image, text, timeout, p.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
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

// repoOn is a fresh repository name that build-fn sends to replica i first.
func repoOn(t *testing.T, prefix string, i int) string {
	t.Helper()
	id := testenv.RandomHex(t, 4)
	for k := 0; k < 1000; k++ {
		repo := fmt.Sprintf("e2e/%s-%s-%d", prefix, id, k)
		if cluster.ReplicaOrder(image(repo, "x"))[0] == cluster.BuildkitReplicaURL(i) {
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

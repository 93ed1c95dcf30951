package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SharedTool is one of the real binaries the module proxy does not serve
// (../shared/tools: faas-cli 0.18.12, of-watchdog 0.11.6), named by the
// variable env that .ci/run and make test set; without it the test fails
// naming the variable.
func SharedTool(t testing.TB, env, what string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is not set: point it at the real %s (../shared/tools; .ci/run and make test set it)", env, what)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(abs); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s=%s is not an executable: %v", env, p, err)
	}
	return abs
}

// FaasCLI is the real faas-cli 0.18.12, from FAAS_CLI.
func FaasCLI(t testing.TB) string { return SharedTool(t, "FAAS_CLI", "faas-cli 0.18.12") }

// FaasCLIProject is a faas-cli project holding one lang: dockerfile
// function: the handler folder with its Dockerfile, a file per build
// secret, and the template faas-cli insists on even for lang: dockerfile.
type FaasCLIProject struct {
	Dir, Function string
	secrets       []string // build secret ids, each in the file of the same name
}

// NewFaasCLIProject writes a project in a new temporary directory.
func NewFaasCLIProject(t testing.TB, function, dockerfile string, secrets map[string]string) *FaasCLIProject {
	t.Helper()
	p := &FaasCLIProject{Dir: t.TempDir(), Function: function}
	files := map[string]string{
		function + "/Dockerfile":           dockerfile,
		"template/dockerfile/template.yml": "language: dockerfile\nfprocess: cat\n",
	}
	for id, value := range secrets {
		files[id] = value
		p.secrets = append(p.secrets, id)
	}
	WriteFiles(t, p.Dir, files)
	return p
}

// stackFile writes a stack file naming image and returns its name.
func (p *FaasCLIProject) stackFile(image string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1.0\nprovider:\n  name: openfaas\n  gateway: http://127.0.0.1:8080\nfunctions:\n  %s:\n    lang: dockerfile\n    handler: ./%s\n    image: %s\n",
		p.Function, p.Function, image)
	if len(p.secrets) > 0 {
		b.WriteString("    build_secrets:\n")
		for _, id := range p.secrets {
			fmt.Fprintf(&b, "      %s: ./%s\n", id, id)
		}
	}
	name := "stack-" + strings.NewReplacer("/", "-", ":", "-").Replace(image) + ".yaml"
	return name, os.WriteFile(filepath.Join(p.Dir, name), []byte(b.String()), 0o644)
}

// Publishing is one `faas-cli publish --remote-builder` running.
type Publishing struct {
	Image string
	out   SyncBuffer
	done  chan struct{}
	code  int
	err   error
}

// StartPublish runs `cli publish` of image to the remote builder at url,
// with extra flags (--build-arg ...), until ctx ends. It does not fail the
// test, so that any goroutine may call it.
func (p *FaasCLIProject) StartPublish(ctx context.Context, cli, url, payloadSecret, image string, extra ...string) (*Publishing, error) {
	stack, err := p.stackFile(image)
	if err != nil {
		return nil, err
	}
	args := append([]string{"publish", "-f", stack, "--remote-builder", url, "--payload-secret", payloadSecret}, extra...)
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Dir = p.Dir
	// No update checks, no docker config from $HOME.
	cmd.Env = append(os.Environ(), "HOME="+p.Dir, "NO_COLOR=1")
	run := &Publishing{Image: image, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &run.out, &run.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("faas-cli: %w", err)
	}
	go func() {
		defer close(run.done)
		err := cmd.Wait()
		if exit, ok := err.(*exec.ExitError); ok {
			run.code = exit.ExitCode()
		} else if err != nil {
			run.code, run.err = -1, err
		}
	}()
	return run, nil
}

// Output is what faas-cli printed so far.
func (r *Publishing) Output() string { return r.out.String() }

// Wait waits for faas-cli to end: its output, its exit code, and an error
// when it could not run at all.
func (r *Publishing) Wait() (string, int, error) {
	<-r.done
	return r.out.String(), r.code, r.err
}

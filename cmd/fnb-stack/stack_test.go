package main

// Unit tests of the pieces that need no daemon; e2e/stack runs the whole
// stack for real.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSecretFingerprint(t *testing.T) {
	// printf 'hello' | sha256sum | cut -c1-16
	if got := secretFingerprint([]byte("hello")); got != "2cf24dba5fb0a30e" {
		t.Errorf("fingerprint = %s", got)
	}
}

// Every secret a function mounts is one the stack creates, build-fn's TLS
// settings point at mounted secrets, and build-fn pushes with the registry
// credentials (HTTPS, the default) or over plain HTTP (--plain-http-registry).
func TestFunctionDeployments(t *testing.T) {
	s := &Stack{Dir: t.TempDir()}
	for _, fn := range functionNames {
		d := s.functionDeployment(fn)
		if d.Service != fn || d.Image != functionImage(fn) {
			t.Errorf("%s: deployment %s %s", fn, d.Service, d.Image)
		}
		for _, sec := range d.Secrets {
			if !slices.Contains(functionSecrets, sec) {
				t.Errorf("%s mounts secret %s, which the stack never creates", fn, sec)
			}
		}
		for k, v := range d.EnvVars {
			if name, ok := strings.CutPrefix(v, secretsMount); ok && !slices.Contains(d.Secrets, name) {
				t.Errorf("%s: %s=%s names a secret it does not mount", fn, k, v)
			}
		}
	}
	b := s.functionDeployment("build-fn")
	for _, k := range []string{"buildkit_url", "buildkit_tls_ca", "buildkit_tls_cert", "buildkit_tls_key", "gateway_url"} {
		if b.EnvVars[k] == "" {
			t.Errorf("build-fn has no %s", k)
		}
	}
	// Under of-watchdog: a streamed build outlives build_timeout on every
	// timeout on its path, and the watchdog never counts requests itself.
	build, err := time.ParseDuration(b.EnvVars["build_timeout"])
	if err != nil || build <= 0 {
		t.Fatalf("build-fn build_timeout=%q: %v", b.EnvVars["build_timeout"], err)
	}
	for _, k := range []string{"exec_timeout", "read_timeout", "write_timeout"} {
		if d, err := time.ParseDuration(b.EnvVars[k]); err != nil || d <= build {
			t.Errorf("build-fn %s=%q, want above build_timeout %s", k, b.EnvVars[k], build)
		}
	}
	if b.EnvVars["max_inflight"] != "" || b.EnvVars["max_builds"] == "" || b.EnvVars["ready_path"] != "/ready" {
		t.Errorf("build-fn max_inflight %q max_builds %q ready_path %q", b.EnvVars["max_inflight"], b.EnvVars["max_builds"], b.EnvVars["ready_path"])
	}
	if !slices.Contains(b.Secrets, "registry-config") || b.EnvVars["insecure_registries"] != "" {
		t.Errorf("build-fn with the HTTPS registry: secrets %v, insecure_registries %q", b.Secrets, b.EnvVars["insecure_registries"])
	}
	if err := os.WriteFile(s.path("registry-mode"), []byte("http\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b := s.functionDeployment("build-fn"); slices.Contains(b.Secrets, "registry-config") || b.EnvVars["insecure_registries"] != registryAddr {
		t.Errorf("build-fn with the plain-HTTP registry: secrets %v, insecure_registries %q", b.Secrets, b.EnvVars["insecure_registries"])
	}
}

// The example the demo builds mounts the secret the demo seals, and
// builds from the base the stack pushes.
func TestExampleMatchesDemo(t *testing.T) {
	df, err := os.ReadFile(filepath.Join("..", "..", "examples", "hello-secret", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FROM " + baseImage(), "--mount=type=secret,id=" + demoSecretName, "ARG BUILD_ID"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("examples/hello-secret/Dockerfile lacks %q", want)
		}
	}
	if strings.Contains(string(df), "# syntax=") {
		t.Error("examples/hello-secret/Dockerfile has a # syntax= line: BuildKit would pull a frontend image")
	}
}

func TestParseAckWait(t *testing.T) {
	for in, want := range map[string]time.Duration{"5s": 5 * time.Second, " 20m ": 20 * time.Minute, "1s": time.Second} {
		if got, err := parseAckWait(in); err != nil || got != want {
			t.Errorf("parseAckWait(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0s", "500ms", "1.5s", "-5s", "5"} {
		if got, err := parseAckWait(in); err == nil {
			t.Errorf("parseAckWait(%q) = %v, want an error", in, got)
		}
	}
}

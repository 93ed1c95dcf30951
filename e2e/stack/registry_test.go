package stack

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// stackRegistry is the stack's registry as the tests reach it: HTTPS from
// the stack's CA, as the push user.
func stackRegistry(t *testing.T, dir string) *testenv.Registry {
	t.Helper()
	return &testenv.Registry{Registry: daemon.Registry{Addr: stackReg, Dir: filepath.Join(dir, "registry"), CA: filepath.Join(dir, "tls", "ca.pem")}, User: "fnb-push"}
}

// checkRegistryShape: the stack's registry answers only over HTTPS from the
// stack's CA, and only to its users.
func checkRegistryShape(t *testing.T, dir string) {
	c, err := daemon.Registry{Addr: stackReg, CA: filepath.Join(dir, "tls", "ca.pem")}.Client()
	if err != nil {
		t.Fatal(err)
	}
	for url, want := range map[string]int{"https://" + stackReg + "/v2/": http.StatusUnauthorized, "http://" + stackReg + "/v2/": http.StatusBadRequest} {
		res, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("anonymous GET %s: %s, want %d", url, res.Status, want)
		}
	}
	if !testenv.TagExists(t, stackRegistry(t, dir), "examples/hello-secret", "remote-builder") {
		t.Error("the push user does not see the image build-fn pushed")
	}
}

// checkRegistryRefusals replaces the stack's registry, on its address, by
// one with a certificate from another CA, then by one with the stack's CA
// but other users, then by nothing: each build through build-fn ends failed,
// naming the cause, the permanent ones without a retry; then the stack's
// registry comes back (fnb-stack restart registry) and the next build works.
func checkRegistryRefusals(t *testing.T, bin, repo, dir string) {
	payload := readStackSecret(t, dir, "payload-secret")
	pub, err := secrets.DecodePublicKey([]byte(httpGet(t, builderRoot+"/publickey")))
	if err != nil {
		t.Fatal(err)
	}
	build := func(name string) progress.Result {
		sealed, err := secrets.Seal(pub, map[string][]byte{"token": []byte("refusal-" + name)})
		if err != nil {
			t.Fatal(err)
		}
		body := buildTar(t, map[string][]byte{"Dockerfile": []byte("FROM " + baseImage + "\nRUN --mount=type=secret,id=token wc -c /run/secrets/token > /n\n")},
			builder.BuildConfig{Image: stackReg + "/e2e/refused:" + name}, nil, sealed)
		st := testenv.Follow(t, testenv.Post(t, builderRoot+"/build", body, testenv.SignedHeader(signature.Key(payload), body, true)))
		start := time.Now()
		res := st.Final(t, 3*time.Minute)
		t.Logf("%s: %s after %s: %s", name, res.Status, time.Since(start).Round(time.Millisecond), res.Error)
		return res
	}
	stackCA, err := daemon.LoadCA(mustRead(t, filepath.Join(dir, "tls", "ca.pem")), mustRead(t, filepath.Join(dir, "tls", "ca-key.pem")))
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := daemon.NewCA("not the stack's CA")
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := daemon.ReadRecord(filepath.Join(dir, "pids", "registry.pid")); !ok || !r.Stop(10*time.Second) {
		t.Fatalf("the stack's registry did not stop (record %+v)", r)
	}
	t.Cleanup(func() { runErr(bin, repo, 5*time.Minute, "restart", "--dir", dir, "registry") })
	for _, c := range []struct {
		name string
		ca   *daemon.CA
		want []string
	}{
		{"unknown-ca", otherCA, []string{"x509", "unknown authority"}},
		{"wrong-password", stackCA, []string{"401 Unauthorized"}},
	} {
		stop := impostor(t, c.ca)
		res := build(c.name)
		stop()
		for _, w := range c.want {
			if res.Status != progress.Failed || !strings.Contains(res.Error, w) {
				t.Errorf("%s: %s %q, want failed saying %q", c.name, res.Status, res.Error, w)
			}
		}
		if strings.Contains(res.Error, "transient error") {
			t.Errorf("%s: a permanent error was retried: %s", c.name, res.Error)
		}
	}
	if res := build("registry-down"); res.Status != progress.Failed || !strings.Contains(res.Error, "connection refused") {
		t.Errorf("registry down: %s %q, want failed saying connection refused", res.Status, res.Error)
	}
	run(t, bin, repo, 5*time.Minute, "restart", "--dir", dir, "registry")
	waitGet(t, builderRoot+"/ready", 10*time.Second) // 200: the refused builds' slots are free
	if res := build("after"); res.Status != progress.Success {
		t.Fatalf("the build after the refusals: %+v", res)
	}
	if !testenv.TagExists(t, stackRegistry(t, dir), "e2e/refused", "after") || testenv.TagExists(t, stackRegistry(t, dir), "e2e/refused", "unknown-ca") {
		t.Error("the registry does not hold exactly the build that succeeded")
	}
}

// impostor serves a registry on the stack registry's address with a
// certificate from ca and users of its own; stop ends it.
func impostor(t *testing.T, ca *daemon.CA) (stop func()) {
	dir := t.TempDir()
	r := daemon.Registry{Addr: stackReg, Dir: dir, CA: filepath.Join(dir, "ca.pem")}
	if err := daemon.WriteFileAtomic(r.CA, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Secure(ca, "someone-else"); err != nil {
		t.Fatal(err)
	}
	spec := r.Spec()
	spec.LogPath = filepath.Join(dir, "registry.log")
	p, err := daemon.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return func() { p.Stop(10 * time.Second) }
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkPlainHTTP: up --plain-http-registry restarts the registry, buildkitd
// and the provider in that mode and redeploys build-fn; a build then pushes
// over plain HTTP, which anyone may read.
func checkPlainHTTP(t *testing.T, bin, repo, dir string) {
	out := run(t, bin, repo, 10*time.Minute, "up", "--dir", dir, "--plain-http-registry")
	if n := strings.Count(out, "with other settings (registry=https, want registry=http)"); n != 3 || !strings.Contains(out, "plain HTTP, no users") {
		t.Errorf("up --plain-http-registry restarted %d daemons for the mode, want 3 (registry, buildkitd, provider):\n%s", n, out)
	}
	payload := readStackSecret(t, dir, "payload-secret")
	body := buildTar(t, map[string][]byte{"Dockerfile": []byte("FROM " + baseImage + "\nRUN echo plain > /mode\n")},
		builder.BuildConfig{Image: stackReg + "/e2e/plain:1"}, nil, nil)
	st := testenv.Follow(t, testenv.Post(t, builderRoot+"/build", body, testenv.SignedHeader(signature.Key(payload), body, true)))
	if res := st.Final(t, 3*time.Minute); res.Status != progress.Success {
		t.Fatalf("build with the plain-HTTP registry: %+v\n%s", res, st.LogText())
	}
	if got := testenv.ImageFile(t, &testenv.Registry{Registry: daemon.Registry{Addr: stackReg}}, "e2e/plain", "1", "/mode"); strings.TrimSpace(string(got)) != "plain" {
		t.Errorf("/mode over plain HTTP = %q", got)
	}
}

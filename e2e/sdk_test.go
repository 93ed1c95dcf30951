package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// sdkBuilder is go-sdk v0.2.22's client, set up as faas-cli sets it up.
func sdkBuilder(t *testing.T, b *buildFn) *sdkClient {
	t.Helper()
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(vectors, "faas-cli-sealed-test/key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return &sdkClient{builder.NewFunctionBuilder(u, http.DefaultClient,
		builder.WithHmacAuth(string(payloadSecret(t))),
		builder.WithBuildSecretsKey(pub))}
}

type sdkClient struct{ *builder.FunctionBuilder }

// sdkTar writes a build tar with go-sdk's own MakeTar.
func sdkTar(t *testing.T, dockerfile string, cfg builder.BuildConfig) string {
	t.Helper()
	ctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "req.tar")
	if err := builder.MakeTar(tarPath, ctx, &cfg); err != nil {
		t.Fatal(err)
	}
	return tarPath
}

// testGoSDKStream builds through BuildWithSecretsStream with a step that
// prints the secret: the stream must show it redacted, and no file on the
// builder's, buildkitd's or the registry's disk may hold it.
func testGoSDKStream(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, nil)
	const secret = "tok-9f8e7d6c5b4a-never-on-disk"
	image := s.Reg.Addr + "/sdk-stream:1"
	tarPath := sdkTar(t, "FROM "+s.Base+"\n"+
		"ARG WHO\n"+
		// The Dockerfile holds only the secret's hash: it must not put the
		// plaintext on disk itself.
		"RUN --mount=type=secret,id=token echo \"token is $(cat /run/secrets/token)\" && "+
		"test \"$(sha256sum < /run/secrets/token | cut -d' ' -f1)\" = \""+sha256hex(secret)+"\" && "+
		"echo \"built by $WHO\" > /built\n",
		builder.BuildConfig{Image: image, BuildArgs: map[string]string{"WHO": "go-sdk"}, Platforms: []string{"linux/amd64"}})

	stream, err := sdkBuilder(t, b).BuildWithSecretsStream(tarPath, map[string]string{"token": secret})
	if err != nil {
		t.Fatal(err)
	}
	results := testenv.Collect(t, stream)
	if len(results) < 2 {
		t.Fatalf("got %d results, want progress then a final line", len(results))
	}
	final := results[len(results)-1]
	var log strings.Builder
	for _, r := range results {
		log.WriteString(strings.Join(r.Log, "\n") + "\n")
	}
	if final.Status != builder.BuildSuccess || final.Image != image {
		t.Fatalf("final %+v\n%s", final, log.String())
	}
	if strings.Contains(log.String(), secret) {
		t.Fatalf("secret in streamed log:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "token is "+secrets.Mask) {
		t.Fatalf("the step's output is missing or not redacted:\n%s", log.String())
	}
	if got := testenv.ImageFile(t, s.Reg, "sdk-stream", "1", "built"); strings.TrimSpace(string(got)) != "built by go-sdk" {
		t.Fatalf("/built = %q", got)
	}
	for _, root := range []string{b.workDir, s.BK.Root, s.Reg.Root} {
		if hits := testenv.FindInTree(t, root, []byte(secret)); len(hits) > 0 {
			t.Fatalf("plaintext secret on disk: %v", hits)
		}
	}
}

// testGoSDKFailure: a failing RUN gives a 500 with a "failed" JSON body to a
// buffered client, and go-sdk reports the status code.
func testGoSDKFailure(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, nil)
	image := s.Reg.Addr + "/sdk-fail:1"
	tarPath := sdkTar(t, "FROM "+s.Base+"\nRUN echo about to fail && exit 3\n", builder.BuildConfig{Image: image})
	_, err := sdkBuilder(t, b).Build(tarPath)
	if err == nil || !strings.Contains(err.Error(), "status code 500") {
		t.Fatalf("go-sdk Build error = %v, want status code 500", err)
	}

	body, _ := os.ReadFile(tarPath)
	res := testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(payloadSecret(t), body, true))
	results := testenv.ReadNDJSON(t, res.Body)
	final := results[len(results)-1]
	if final.Status != progress.Failed || !strings.Contains(final.Error, "exit code: 3") {
		t.Fatalf("final %+v, want failed with the exit code", final)
	}
	if testenv.TagExists(t, s.Reg, "sdk-fail", "1") {
		t.Fatal("a failed build pushed an image")
	}
}

// testGoSDKRefusal: go-sdk's BuildWithStream shows why a build was
// refused (here, a wrong payload secret) instead of a bare status code.
func testGoSDKRefusal(t *testing.T, s *testenv.Stack) {
	b := startBuilder(t, s, nil)
	u, err := url.Parse(b.url)
	if err != nil {
		t.Fatal(err)
	}
	client := builder.NewFunctionBuilder(u, http.DefaultClient, builder.WithHmacAuth("not-the-payload-secret"))
	tarPath := sdkTar(t, "FROM "+s.Base+"\n", builder.BuildConfig{Image: s.Reg.Addr + "/sdk-refused:1"})
	stream, err := client.BuildWithStream(tarPath)
	if err != nil {
		t.Fatalf("BuildWithStream: %v (the refusal should arrive in the stream)", err)
	}
	results := testenv.Collect(t, stream)
	if last := results[len(results)-1]; last.Status != builder.BuildFailed || !strings.Contains(last.Error, "X-Build-Signature does not match") {
		t.Fatalf("last result %+v, want failed with the reason", last)
	}
	if n := b.Runs.Load(); n != 0 {
		t.Fatalf("%d builds ran", n)
	}
}

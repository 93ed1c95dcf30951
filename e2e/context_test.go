package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/builder"

	"github.com/fnbuilder/fnbuilder/internal/progress"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestContextFromTar builds contexts served straight from the request tar
// on a real rootless buildkitd: what real clients send (go-sdk's MakeTar
// with a .dockerignore; a Dockerfile outside the root with its own ignore
// file, symlinks and hard links), and a rebuild that must transfer only
// the file whose bytes changed. Its registry listens on a port of its own,
// so it needs no fixed-port lock.
func TestContextFromTar(t *testing.T) {
	s := testenv.StartStack(t, "", testenv.BuildKitOptions{})
	b := startBuilder(t, s, nil)
	t.Run("go-sdk MakeTar with a .dockerignore", func(t *testing.T) { testMakeTarDockerignore(t, s, b) })
	t.Run("dockerfile key, symlinks and hard links", func(t *testing.T) { testDockerfileKeyAndLinks(t, s, b) })
	t.Run("a rebuild transfers only the changed file", func(t *testing.T) { testIncrementalRebuild(t, s, b) })
}

// build posts a signed tar and fails the test unless the build succeeds.
func (b *buildFn) build(t *testing.T, body []byte) {
	t.Helper()
	res := testenv.Post(t, b.url+"/build", body, testenv.SignedHeader(payloadSecret(t), body, true))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, testenv.ErrorBody(t, res))
	}
	results := testenv.ReadNDJSON(t, res.Body)
	if final := results[len(results)-1]; final.Status != progress.Success {
		t.Fatalf("build %+v\n%s", final, testenv.LogText(results))
	}
}

func testMakeTarDockerignore(t *testing.T, s *testenv.Stack, b *buildFn) {
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		"Dockerfile":    "FROM " + s.Base + "\nCOPY . /ctx\n",
		".dockerignore": "secret.txt\n*.log\n!keep.log\n",
		"secret.txt":    "not for the image",
		"debug.log":     "not for the image either",
		"keep.log":      "kept",
		"src/main.go":   "package main\n",
	})
	tarPath := filepath.Join(t.TempDir(), "req.tar")
	if err := builder.MakeTar(tarPath, dir, &builder.BuildConfig{Image: s.Reg.Addr + "/ignore:1"}); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	b.build(t, body)
	for path, want := range map[string]string{"ctx/src/main.go": "package main\n", "ctx/keep.log": "kept"} {
		if got := string(testenv.ImageFile(t, s.Reg, "ignore", "1", path)); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	for _, path := range []string{"ctx/secret.txt", "ctx/debug.log"} {
		if _, found := testenv.LookupImageFile(t, s.Reg, "ignore", "1", path); found {
			t.Errorf("%s is in the image, though .dockerignore excludes it", path)
		}
	}
	if opened := b.Opened(s.Reg.Addr + "/ignore:1"); slices.Contains(opened, "secret.txt") {
		t.Errorf("BuildKit was sent secret.txt: %v", opened)
	}
}

func testDockerfileKeyAndLinks(t *testing.T, s *testenv.Stack, b *buildFn) {
	const data = "the linked bytes\n"
	dockerfile := "FROM " + s.Base + "\nCOPY . /ctx\n" +
		"RUN readlink /ctx/link > /link.txt && cat /ctx/data/hard > /hard.txt && cat /ctx/link > /through-link.txt\n"
	body := testenv.BuildTar(t,
		testenv.Dir("context/"),
		testenv.File("context/build/Dockerfile.prod", dockerfile),
		testenv.File("context/build/Dockerfile.prod.dockerignore", "not-for-prod.txt\n"),
		testenv.File("context/not-for-prod.txt", "excluded by the Dockerfile's own ignore file"),
		testenv.File("context/data/a.txt", data),
		testenv.Symlink("context/link", "data/a.txt"),
		testenv.Hardlink("context/data/hard", "context/data/a.txt"),
		testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/links:1", "dockerfile": "build/Dockerfile.prod"}),
	)
	b.build(t, body)
	for path, want := range map[string]string{"link.txt": "data/a.txt\n", "hard.txt": data, "through-link.txt": data, "ctx/data/a.txt": data} {
		if got := string(testenv.ImageFile(t, s.Reg, "links", "1", path)); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if _, found := testenv.LookupImageFile(t, s.Reg, "links", "1", "ctx/not-for-prod.txt"); found {
		t.Error("ctx/not-for-prod.txt is in the image, though build/Dockerfile.prod.dockerignore excludes it")
	}
}

// testIncrementalRebuild sends a context with a 2 MiB file, then the same
// bytes again with one small file changed and every client mtime new (as
// faas-cli copies its files afresh before each build): BuildKit must ask
// for that one file only, and build the new bytes.
func testIncrementalRebuild(t *testing.T, s *testenv.Stack, b *buildFn) {
	big := make([]byte, 2<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM " + s.Base + "\nCOPY . /ctx\n"
	request := func(tag, small string, mtime time.Time) []byte {
		entries := []testenv.TarEntry{
			testenv.Dir("context/"),
			testenv.File("context/Dockerfile", dockerfile),
			testenv.File("context/big.bin", string(big)),
			testenv.File("context/small.txt", small),
		}
		for i := range entries {
			entries[i].Header.ModTime = mtime
		}
		return testenv.BuildTar(t, append(entries, testenv.ConfigEntry(t, map[string]any{"image": s.Reg.Addr + "/rebuild:" + tag}))...)
	}
	first, second := "version-1 "+hex.EncodeToString(big[:4]), "version-2 "+hex.EncodeToString(big[4:8])
	b.build(t, request("1", first, time.Unix(1700000000, 0)))
	b.build(t, request("2", second, time.Unix(1700001000, 0)))
	// build-fn itself reads the Dockerfile once per build, for its syntax
	// line; the rest is what BuildKit asked to be sent.
	sent := func(image string) []string {
		opened := b.Opened(image)
		if i := slices.Index(opened, "Dockerfile"); i >= 0 {
			opened = slices.Delete(opened, i, i+1)
		}
		return opened
	}
	if got := sent(s.Reg.Addr + "/rebuild:1"); !slices.Equal(got, []string{"Dockerfile", "big.bin", "small.txt"}) {
		t.Errorf("first build sent %v, want every file", got)
	}
	if got := sent(s.Reg.Addr + "/rebuild:2"); !slices.Equal(got, []string{"small.txt"}) {
		t.Errorf("rebuild sent %v, want only small.txt", got)
	}
	if got := string(testenv.ImageFile(t, s.Reg, "rebuild", "2", "ctx/small.txt")); got != second {
		t.Errorf("the rebuilt image holds %q, want %q", got, second)
	}
	if got := testenv.ImageFile(t, s.Reg, "rebuild", "2", "ctx/big.bin"); !slices.Equal(got, big) || strings.Contains(string(got), "version") {
		t.Errorf("the rebuilt image's big.bin differs (%d bytes)", len(got))
	}
}

package buildkit

import (
	"os"
	"path/filepath"
	"testing"
)

// writeDockerfile puts a Dockerfile in dir, a build's context.
func writeDockerfile(t *testing.T, dir, dockerfile string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
}

// With a cache repository each build imports and exports its cache there;
// a failed export must not fail a build whose image is pushed.
func TestSolveOptCacheRepo(t *testing.T) {
	dir := t.TempDir()
	writeDockerfile(t, dir, "FROM scratch\n")
	b := New(Daemon{}, Registries{CacheRepo: "reg:5000/buildcache", Insecure: []string{"reg:5000"}})
	opt, _, err := b.solveOpt(Build{Context: Dir(dir), Tenant: "acme", Image: "reg:5000/acme/fn:1", Push: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(opt.CacheImports) != 1 || len(opt.CacheExports) != 1 {
		t.Fatalf("cache imports %v, exports %v: want one of each", opt.CacheImports, opt.CacheExports)
	}
	imp, exp := opt.CacheImports[0], opt.CacheExports[0]
	if imp.Type != "registry" || exp.Type != "registry" || imp.Attrs["ref"] != exp.Attrs["ref"] {
		t.Errorf("import %v, export %v: want the same registry ref", imp, exp)
	}
	for k, want := range map[string]string{"mode": "max", "ignore-error": "true", "registry.insecure": "true"} {
		if got := exp.Attrs[k]; got != want {
			t.Errorf("cache export %s = %q, want %q", k, got, want)
		}
	}
	if _, ok := imp.Attrs["ignore-error"]; ok {
		t.Errorf("cache import has ignore-error (an export attribute): %v", imp.Attrs)
	}
	opt, _, err = b.solveOpt(Build{Context: Dir(dir), Tenant: "acme", Image: "reg:5000/acme/fn:1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(opt.CacheImports)+len(opt.CacheExports) != 0 {
		t.Errorf("a build that does not push uses the cache repository: %v %v", opt.CacheImports, opt.CacheExports)
	}
}

// Contexts reach the frontend as context:NAME attributes, the way
// `docker buildx build --build-context` passes them.
func TestSolveOptNamedContexts(t *testing.T) {
	dir := t.TempDir()
	writeDockerfile(t, dir, "FROM golang:1.26-alpine\n")
	b := New(Daemon{}, Registries{})
	opt, _, err := b.solveOpt(Build{Context: Dir(dir), Tenant: "acme",
		Contexts: map[string]string{"golang:1.26-alpine": "docker-image://reg:5000/golang:1.26-alpine"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := opt.FrontendAttrs["context:golang:1.26-alpine"]; got != "docker-image://reg:5000/golang:1.26-alpine" {
		t.Errorf("context:golang:1.26-alpine = %q; attrs %v", got, opt.FrontendAttrs)
	}
	opt, _, err = b.solveOpt(Build{Context: Dir(dir), Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	for k := range opt.FrontendAttrs {
		if len(k) > 8 && k[:8] == "context:" {
			t.Errorf("no Contexts, yet %s is set", k)
		}
	}
}

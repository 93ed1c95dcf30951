package buildkit

import (
	"os"
	"path/filepath"
	"testing"
)

// Contexts reach the frontend as context:NAME attributes, the way
// `docker buildx build --build-context` passes them.
func TestSolveOptNamedContexts(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM golang:1.26-alpine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
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

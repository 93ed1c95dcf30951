package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// GoBuild runs `go build args...` in dir with env added to the test's,
// failing the test with go's output.
func GoBuild(t testing.TB, dir string, env []string, args ...string) {
	t.Helper()
	gobin := daemon.Find("go")
	if gobin == "" {
		t.Fatal("go not found ($PATH, /usr/local/go/bin)")
	}
	cmd := exec.Command(gobin, append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// BuildFnb builds the fnb command from this checkout into a temporary
// directory and returns the binary's path.
func BuildFnb(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fnb")
	GoBuild(t, "", nil, "-o", bin, "github.com/fnbuilder/fnbuilder/cmd/fnb")
	return bin
}

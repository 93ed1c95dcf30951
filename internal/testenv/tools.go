package testenv

import (
	"os"
	"path/filepath"
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

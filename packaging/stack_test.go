package packaging

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openfaas/go-sdk/stack"

	"github.com/fnbuilder/fnbuilder/internal/config"
)

// The functions stack.yaml must deploy, each a folder of the root module.
var wantFunctions = []string{"build-fn", "deploy-fn", "publickey-fn", "seal-fn"}

// Functions that can be called asynchronously and must carry the OpenFaaS
// Pro queue-worker's retry annotations.
var retriedFunctions = []string{"build-fn", "deploy-fn"}

const secretMount = "/var/openfaas/secrets/"

// parseStack parses stack.yaml as faas-cli does (go-sdk's parser, with
// environment substitution).
func parseStack(t *testing.T, root string) *stack.Services {
	t.Helper()
	services, err := stack.ParseYAMLFile(filepath.Join(root, "stack.yaml"), "", "", true)
	if err != nil {
		t.Fatalf("stack.yaml: %v", err)
	}
	return services
}

func TestStackFile(t *testing.T) {
	root := repoRoot(t)
	services := parseStack(t, root)
	if services.Version != "1.0" {
		t.Errorf("version %q, want 1.0", services.Version)
	}
	if services.Provider.GatewayURL == "" {
		t.Error("provider.gateway is empty")
	}
	var names []string
	for name := range services.Functions {
		names = append(names, name)
	}
	sort.Strings(names)
	if !slices.Equal(names, wantFunctions) {
		t.Errorf("functions %v, want %v", names, wantFunctions)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := settingsTableCells(string(readme))

	for _, name := range names {
		fn := services.Functions[name]
		t.Run(name, func(t *testing.T) {
			checkStackFunction(t, root, name, fn, documented)
		})
	}
}

func checkStackFunction(t *testing.T, root, name string, fn stack.Function, documented map[string]bool) {
	if fn.Image == "" || strings.Contains(fn.Image, "${") {
		t.Errorf("image %q: want a full image name after substitution", fn.Image)
	}

	// The template: faas-cli looks it up as ./template/<lang>/template.yml.
	tmpl, err := stack.ParseYAMLForLanguageTemplate(filepath.Join(root, "template", fn.Language, "template.yml"))
	if err != nil {
		t.Fatalf("lang %q: %v", fn.Language, err)
	}
	if tmpl.Language != fn.Language || tmpl.FProcess != "./handler" {
		t.Errorf("template/%s/template.yml: language %q fprocess %q", fn.Language, tmpl.Language, tmpl.FProcess)
	}
	if _, err := os.Stat(filepath.Join(root, "template", fn.Language, "Dockerfile")); err != nil {
		t.Errorf("template %s has no Dockerfile: %v", fn.Language, err)
	}

	// The handler is the module root (the template builds from it) and
	// FUNCTION names the function's own folder.
	handler := filepath.Join(root, fn.Handler)
	if _, err := os.Stat(filepath.Join(handler, "go.mod")); err != nil {
		t.Errorf("handler %q is not the module root: %v", fn.Handler, err)
	}
	folder := fn.BuildArgs["FUNCTION"]
	if folder != name {
		t.Errorf("build_args.FUNCTION = %q, want the function's folder %q", folder, name)
	}
	if _, err := os.Stat(filepath.Join(handler, folder, "handler.go")); err != nil {
		t.Errorf("FUNCTION %q: no %s/handler.go under the handler: %v", folder, folder, err)
	}

	// Every secret is documented, and every secret file an env var points
	// at is a secret the function mounts.
	for _, s := range fn.Secrets {
		if !documented[s] {
			t.Errorf("secret %q is not in README.md's settings tables", s)
		}
	}
	for key, value := range fn.Environment {
		if rest, ok := strings.CutPrefix(value, secretMount); ok && !slices.Contains(fn.Secrets, rest) {
			t.Errorf("environment %s=%s: %q is not in the function's secrets %v", key, value, rest, fn.Secrets)
		}
	}

	checkTimeouts(t, fn)
	if slices.Contains(retriedFunctions, name) {
		checkRetries(t, fn)
	}
}

// settingsTableCells returns the backticked names in README.md's tables.
func settingsTableCells(readme string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(readme, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "|") {
			continue
		}
		parts := strings.Split(line, "`")
		for i := 1; i < len(parts); i += 2 {
			names[parts[i]] = true
		}
	}
	return names
}

// checkTimeouts: a build may last build_timeout, so neither of-watchdog nor
// the template server may cut it short. Durations are parsed the way the
// functions parse them (whole seconds or Go durations).
func checkTimeouts(t *testing.T, fn stack.Function) {
	cfg := config.FromMap(fn.Environment)
	durations := map[string]time.Duration{}
	for _, key := range []string{"build_timeout", "exec_timeout", "read_timeout", "write_timeout"} {
		if fn.Environment[key] == "" {
			continue
		}
		d, err := cfg.Duration(key, 0)
		if err != nil || d <= 0 {
			t.Errorf("environment %s=%q: want a positive duration (%v)", key, fn.Environment[key], err)
			continue
		}
		durations[key] = d
	}
	build, ok := durations["build_timeout"]
	if !ok {
		return
	}
	for _, key := range []string{"exec_timeout", "write_timeout"} {
		d, ok := durations[key]
		if !ok {
			t.Errorf("build_timeout=%s but no %s: of-watchdog's 30s default would cut builds", build, key)
		} else if d < build {
			t.Errorf("%s=%s is shorter than build_timeout=%s", key, d, build)
		}
	}
	if exec, write := durations["exec_timeout"], durations["write_timeout"]; write < exec {
		t.Errorf("write_timeout=%s < exec_timeout=%s: the reply would be cut before the watchdog's own timeout", write, exec)
	}
}

func checkRetries(t *testing.T, fn stack.Function) {
	if fn.Annotations == nil {
		t.Fatal("no annotations: want the OpenFaaS Pro retry annotations")
	}
	a := *fn.Annotations
	if n, err := strconv.Atoi(a["com.openfaas.retry.attempts"]); err != nil || n < 1 {
		t.Errorf("com.openfaas.retry.attempts=%q: want a positive integer", a["com.openfaas.retry.attempts"])
	}
	codes := strings.Split(a["com.openfaas.retry.codes"], ",")
	for _, want := range []string{"429", "502", "503", "504"} {
		if !slices.Contains(codes, want) {
			t.Errorf("com.openfaas.retry.codes=%q lacks %s", a["com.openfaas.retry.codes"], want)
		}
	}
	for _, code := range codes {
		if n, err := strconv.Atoi(code); err != nil || n < 400 || n > 599 {
			t.Errorf("com.openfaas.retry.codes: %q is not an HTTP error status", code)
		}
	}
	minWait, errMin := time.ParseDuration(a["com.openfaas.retry.min_wait"])
	maxWait, errMax := time.ParseDuration(a["com.openfaas.retry.max_wait"])
	if errMin != nil || errMax != nil || minWait <= 0 || maxWait < minWait {
		t.Errorf("com.openfaas.retry.min_wait=%q max_wait=%q: want Go durations, 0 < min <= max",
			a["com.openfaas.retry.min_wait"], a["com.openfaas.retry.max_wait"])
	}
}

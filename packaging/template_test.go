package packaging

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/openfaas/go-sdk/builder"
	"github.com/openfaas/go-sdk/stack"
)

const (
	templateLang = "fnbuilder-go"
	templatePkg  = "./template/" + templateLang
)

// buildTemplateMain builds the template's main for function name, as the
// Dockerfile does, and returns the binary's path.
func buildTemplateMain(t *testing.T, root, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "handler")
	run(t, root, nil, goTool(t), "build", "-ldflags", "-X main.function="+name, "-o", bin, templatePkg)
	return bin
}

func TestTemplateMainBuildsEachFunction(t *testing.T) {
	root := repoRoot(t)
	for _, name := range wantFunctions {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			buildTemplateMain(t, root, name)
		})
	}
}

// A binary built for no function, or an unknown one, must not start: it
// exits non-zero and names the functions it knows, which are stack.yaml's.
func TestTemplateMainRefusesUnknownFunction(t *testing.T) {
	root := repoRoot(t)
	services := parseStack(t, root)
	for _, name := range []string{"no-such-fn", ""} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			bin := buildTemplateMain(t, root, name)
			stdout, stderr, err := runResult(t.TempDir(), nil, bin)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("handler built for %q: err %v, want a non-zero exit\nstdout: %s\nstderr: %s", name, err, stdout, stderr)
			}
			if name != "" && !strings.Contains(stderr, fmt.Sprintf("%q", name)) {
				t.Errorf("message does not name %q: %s", name, stderr)
			}
			if !strings.Contains(stderr, "main.function") && !strings.Contains(stderr, "FUNCTION") {
				t.Errorf("message does not say how to choose a function: %s", stderr)
			}
			for fn := range services.Functions {
				if !strings.Contains(stderr, fn) {
					t.Errorf("message does not list %s: %s", fn, stderr)
				}
			}
			if want := "want one of: " + strings.Join(wantFunctions, ", "); name != "" && !strings.Contains(stderr, want) {
				t.Errorf("message lists other functions than stack.yaml's:\n%s\nwant %q", stderr, want)
			}
		})
	}
}

// TestTemplateDockerfileInFaasCliLayout lays out build/<fn>/ with go-sdk's
// builder.CreateBuildContext, the code faas-cli 0.18 runs, then plays the
// Dockerfile's build stage on it: its COPY instructions (honouring the
// .dockerignore) and its RUN commands, which gofmt-check, test and build the
// function. No container runtime and no base image is needed; what is
// skipped is only `apk add` and `go mod download` (network, cache warm-up).
func TestTemplateDockerfileInFaasCliLayout(t *testing.T) {
	root := repoRoot(t)
	services := parseStack(t, root)
	tmpl, err := stack.ParseYAMLForLanguageTemplate(filepath.Join(root, "template", templateLang, "template.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range wantFunctions {
		fn, ok := services.Functions[name]
		if !ok {
			t.Fatalf("stack.yaml has no %s", name)
		}
		// Serial: the first build fills the cache for -trimpath builds.
		t.Run(name, func(t *testing.T) {
			ctx, err := builder.CreateBuildContext(name, filepath.Join(root, fn.Handler), fn.Language, nil,
				builder.WithTemplateDir(filepath.Join(root, "template")),
				builder.WithBuildDir(t.TempDir()))
			if err != nil {
				t.Fatalf("CreateBuildContext: %v", err)
			}
			for _, p := range []string{"Dockerfile", "main.go", "template.yml", "function/go.mod", "function/" + name + "/handler.go"} {
				if _, err := os.Stat(filepath.Join(ctx, p)); err != nil {
					t.Errorf("faas-cli layout has no %s: %v", p, err)
				}
			}
			if _, err := os.Stat(filepath.Join(ctx, "function", "template")); err == nil {
				t.Error("faas-cli copied template/ into function/; main.go's place in the module is then ambiguous")
			}
			df := parseDockerfile(t, filepath.Join(ctx, "Dockerfile"))
			rootfs := t.TempDir()
			buildArgs := map[string]string{
				"FUNCTION":       fn.BuildArgs["FUNCTION"],
				"TARGETOS":       runtime.GOOS,
				"TARGETARCH":     runtime.GOARCH,
				"TARGETPLATFORM": runtime.GOOS + "/" + runtime.GOARCH,
				"BUILDPLATFORM":  runtime.GOOS + "/" + runtime.GOARCH,
			}
			playBuildStage(t, df.stage(t, "build"), ctx, rootfs, buildArgs)
			if t.Failed() {
				return
			}
			checkShipStage(t, df, rootfs, tmpl.FProcess)
			if !t.Failed() {
				checkStarts(t, filepath.Join(rootfs, "go/src/handler/handler"), name)
			}
		})
	}
}

type instruction struct {
	cmd  string // upper case
	args string
}

type stage struct {
	from, name   string
	instructions []instruction
}

type dockerfile struct{ stages []stage }

func (d dockerfile) stage(t *testing.T, name string) stage {
	t.Helper()
	for _, s := range d.stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return stage{}
}

// parseDockerfile reads instructions, joining continuation lines and
// dropping comments, as the Dockerfile frontend does for these forms.
func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var df dockerfile
	var logical strings.Builder
	flush := func() {
		line := strings.TrimSpace(logical.String())
		logical.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{}
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					s.name = f[i+1]
					i++
				default:
					s.from = f[i]
				}
			}
			df.stages = append(df.stages, s)
			return
		}
		if len(df.stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile: %s before FROM", in.cmd)
			}
			return
		}
		last := &df.stages[len(df.stages)-1]
		last.instructions = append(last.instructions, in)
	}
	for _, raw := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(raw)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(strings.TrimRight(raw, " \t"), `\`); ok {
			logical.WriteString(cont + " ")
			continue
		}
		logical.WriteString(raw)
		flush()
	}
	flush()
	return df
}

// playBuildStage applies the stage's ARG, ENV, WORKDIR, COPY and RUN to a
// directory standing for the image's filesystem.
func playBuildStage(t *testing.T, s stage, ctx, rootfs string, buildArgs map[string]string) {
	t.Helper()
	ignore := dockerignore(t, ctx)
	vars := map[string]string{}
	expand := func(v string) string { return os.Expand(v, func(k string) string { return vars[k] }) }
	workdir := "/"
	for _, in := range s.instructions {
		switch in.cmd {
		case "ARG":
			name, def, hasDef := strings.Cut(in.args, "=")
			if v, ok := buildArgs[name]; ok {
				vars[name] = v
			} else if hasDef {
				vars[name] = strings.Trim(def, `"`)
			}
		case "ENV":
			name, value, ok := strings.Cut(in.args, "=")
			if !ok {
				t.Fatalf("ENV %s: use the NAME=value form", in.args)
			}
			vars[name] = strings.Trim(expand(value), `"`)
		case "WORKDIR":
			workdir = filepath.Join(workdir, expand(in.args))
			if err := os.MkdirAll(filepath.Join(rootfs, workdir), 0o755); err != nil {
				t.Fatal(err)
			}
		case "COPY":
			f := strings.Fields(in.args)
			var paths []string
			for _, a := range f {
				if strings.HasPrefix(a, "--from") {
					t.Fatalf("COPY %s: the build stage copies only from the context", in.args)
				}
				if !strings.HasPrefix(a, "--") {
					paths = append(paths, expand(a))
				}
			}
			if len(paths) < 2 {
				t.Fatalf("COPY %s: want sources and a destination", in.args)
			}
			dest := paths[len(paths)-1]
			if !filepath.IsAbs(dest) {
				dest = filepath.Join(workdir, dest)
			}
			destIsDir := strings.HasSuffix(paths[len(paths)-1], "/") || len(paths) > 2
			for _, src := range paths[:len(paths)-1] {
				copyFromContext(t, ctx, src, filepath.Join(rootfs, dest), destIsDir, ignore)
			}
		case "RUN":
			// RUN's own flags (--mount=type=cache,...) are BuildKit's; here
			// the host's Go caches stand in for the cache mounts.
			cmd := in.args
			for strings.HasPrefix(cmd, "--") {
				_, cmd, _ = strings.Cut(cmd, " ")
				cmd = strings.TrimSpace(cmd)
			}
			if strings.HasPrefix(cmd, "apk ") || strings.Contains(cmd, "go mod download") {
				t.Logf("skipped (network): RUN %s", cmd)
				continue
			}
			env := []string{}
			for k, v := range vars {
				env = append(env, k+"="+v)
			}
			run(t, filepath.Join(rootfs, workdir), env, "sh", "-c", cmd)
		default:
			t.Fatalf("build stage: %s is not played by this test; extend it", in.cmd)
		}
	}
}

func dockerignore(t *testing.T, ctx string) *patternmatcher.PatternMatcher {
	t.Helper()
	var patterns []string
	if f, err := os.Open(filepath.Join(ctx, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatalf(".dockerignore: %v", err)
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	return pm
}

// copyFromContext copies src (relative to the context; a directory's
// contents, as COPY does) to dest, leaving out what .dockerignore excludes.
func copyFromContext(t *testing.T, ctx, src, dest string, destIsDir bool, ignore *patternmatcher.PatternMatcher) {
	t.Helper()
	srcPath := filepath.Join(ctx, filepath.FromSlash(strings.TrimSuffix(src, "/")))
	fi, err := os.Stat(srcPath)
	if err != nil {
		t.Fatalf("COPY %s: not in the build context: %v", src, err)
	}
	if !fi.IsDir() {
		if destIsDir {
			dest = filepath.Join(dest, fi.Name())
		}
		copyFile(t, srcPath, dest)
		return
	}
	err = filepath.WalkDir(srcPath, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(ctx, p)
		if excluded, err := ignore.MatchesOrParentMatches(filepath.ToSlash(rel)); err != nil {
			return err
		} else if excluded {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		inner, _ := filepath.Rel(srcPath, p)
		target := filepath.Join(dest, inner)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		copyFile(t, p, target)
		return nil
	})
	if err != nil {
		t.Fatalf("COPY %s: %v", src, err)
	}
}

func copyFile(t *testing.T, src, dest string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dest, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkShipStage checks the final image against what of-watchdog and the
// template need, and that what it copies from the build stage was built.
func checkShipStage(t *testing.T, df dockerfile, buildRootfs, fprocess string) {
	t.Helper()
	ship := df.stages[len(df.stages)-1]
	env := map[string]string{}
	var user string
	var cmd []string
	var copied []string
	for _, in := range ship.instructions {
		switch in.cmd {
		case "ENV":
			k, v, _ := strings.Cut(in.args, "=")
			env[k] = strings.Trim(v, `"`)
		case "USER":
			user = in.args
		case "CMD":
			if err := json.Unmarshal([]byte(in.args), &cmd); err != nil {
				t.Errorf("CMD %s: want the exec (JSON) form: %v", in.args, err)
			}
		case "COPY":
			f := strings.Fields(in.args)
			if slices.Contains(f, "--from=build") {
				var paths []string
				for _, a := range f {
					if !strings.HasPrefix(a, "--") {
						paths = append(paths, a)
					}
				}
				copied = append(copied, paths[:len(paths)-1]...)
			}
		}
	}
	want := map[string]string{
		"fprocess":     fprocess,
		"mode":         "http",
		"upstream_url": "http://127.0.0.1:8082",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("ship stage ENV %s=%q, want %q", k, env[k], v)
		}
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("ship stage USER %q, want the non-root app", user)
	}
	if !slices.Equal(cmd, []string{"./fwatchdog"}) {
		t.Errorf("CMD %q, want [./fwatchdog]", cmd)
	}
	if len(copied) == 0 {
		t.Error("ship stage copies nothing from the build stage")
	}
	for _, p := range copied {
		fi, err := os.Stat(filepath.Join(buildRootfs, p))
		if err != nil {
			t.Errorf("ship stage copies %s, which the build stage did not produce: %v", p, err)
		} else if fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", p)
		}
	}
	if wd := df.stages[0]; !strings.HasPrefix(wd.from, "ghcr.io/openfaas/of-watchdog:") {
		t.Errorf("first stage %q, want ghcr.io/openfaas/of-watchdog", wd.from)
	}
}

// checkStarts runs the handler the build stage produced and waits for it to
// start serving name: FUNCTION reached -X main.function. Port 8082 may be
// taken on this machine; failing to listen after choosing the function
// proves the same.
func checkStarts(t *testing.T, bin, name string) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "secret_mount_path="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		for range lines {
		}
		_ = cmd.Wait()
	}()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("handler for %s exited before serving", name)
			}
			if strings.Contains(line, "serving "+name+" ") || strings.Contains(line, "address already in use") {
				return
			}
			t.Fatalf("handler built with FUNCTION=%s says: %s", name, line)
		case <-timeout:
			t.Fatalf("handler for %s printed nothing in 20s", name)
		}
	}
}

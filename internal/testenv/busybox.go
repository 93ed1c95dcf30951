package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
)

// BusyboxRepo is the repository PushBusybox pushes to (tag "latest").
const BusyboxRepo = "busybox"

// busyboxDockerfile has no "# syntax=" line and only FROM scratch: the
// build must work offline with the built-in dockerfile.v0 frontend.
const busyboxDockerfile = `FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD ["/bin/sh"]
`

// PushBusybox builds the base image for the test builds and pushes it as
// REG/busybox:latest, which it returns: Debian's static busybox as
// /bin/busybox with a /bin symlink for every applet (sh, cat, echo,
// mkdir, ...), a world-writable /tmp, and a minimal /etc/passwd and
// /etc/group (root, nobody).
func PushBusybox(t testing.TB, bk *BuildKit, reg *Registry) string {
	t.Helper()
	bb := ""
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			bb = p
			break
		}
	}
	if bb == "" {
		t.Fatalf("testenv: busybox not found (Debian package busybox-static): run hack/install.sh")
	}
	applets, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("testenv: %s --list: %v", bb, err)
	}

	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := copyFile(bb, filepath.Join(rootfs, "bin", "busybox"), 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil && !os.IsExist(err) {
			t.Fatalf("testenv: %v", err)
		}
	}
	files := map[string]string{
		"rootfs/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"rootfs/etc/group":  "root:x:0:\nnogroup:x:65534:\n",
		"Dockerfile":        busyboxDockerfile,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	ref := reg.Addr + "/" + BusyboxRepo + ":latest"
	BuildPush(t, bk, dir, ref, nil)
	return ref
}

// BuildPush builds contextDir/Dockerfile on bk with the built-in
// dockerfile.v0 frontend and pushes the image to ref (plain HTTP allowed).
// It returns the pushed image's digest. A failed build fails the test with
// the build's log.
func BuildPush(t testing.TB, bk *BuildKit, contextDir, ref string, buildArgs map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	builder := buildkit.New(buildkit.Daemon{Address: bk.Addr}, buildkit.Registries{Insecure: []string{"*"}})
	var log strings.Builder
	digest, err := builder.Push(ctx, buildkit.Build{Context: buildkit.Dir(contextDir), Image: ref, BuildArgs: buildArgs, Push: true},
		func(lines []string) { log.WriteString(strings.Join(lines, "\n") + "\n") })
	if err != nil {
		out := log.String()
		if len(out) > 8000 {
			out = "...\n" + out[len(out)-8000:]
		}
		t.Fatalf("testenv: build %s -> %s: %v\n--- build log ---\n%s", contextDir, ref, err, out)
	}
	return digest
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

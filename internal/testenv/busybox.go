package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/tonistiigi/fsutil"
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
	c, err := client.New(ctx, bk.Addr)
	if err != nil {
		t.Fatalf("testenv: buildkit client: %v", err)
	}
	defer c.Close()
	local, err := fsutil.NewFS(contextDir)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	attrs := map[string]string{"filename": "Dockerfile"}
	keys := make([]string, 0, len(buildArgs))
	for k := range buildArgs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs["build-arg:"+k] = buildArgs[k]
	}

	ch := make(chan *client.SolveStatus)
	var (
		wg  sync.WaitGroup
		log strings.Builder
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[string]bool{}
		for st := range ch {
			for _, v := range st.Vertexes {
				key := v.Digest.String()
				if v.Completed != nil {
					key += "/done"
				}
				if !seen[key] {
					seen[key] = true
					state := "start"
					if v.Completed != nil {
						state = "done"
					}
					fmt.Fprintf(&log, "[%s] %s\n", state, v.Name)
				}
				if v.Error != "" {
					fmt.Fprintf(&log, "ERROR %s: %s\n", v.Name, v.Error)
				}
			}
			for _, l := range st.Logs {
				log.Write(l.Data)
			}
		}
	}()
	resp, err := c.Solve(ctx, nil, client.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": local, "dockerfile": local},
		Exports: []client.ExportEntry{{
			Type:  client.ExporterImage,
			Attrs: map[string]string{"name": ref, "push": "true", "registry.insecure": "true"},
		}},
	}, ch)
	wg.Wait()
	if err != nil {
		out := log.String()
		if len(out) > 8000 {
			out = "...\n" + out[len(out)-8000:]
		}
		t.Fatalf("testenv: build %s -> %s: %v\n--- build log ---\n%s", contextDir, ref, err, out)
	}
	return resp.ExporterResponse["containerimage.digest"]
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

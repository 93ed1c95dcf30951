package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
)

// Busybox is the recipe of the base image every local build starts from:
// Debian's static busybox as /bin/busybox with a /bin symlink per applet
// (sh, cat, ...), a world-writable /tmp, and a minimal /etc/passwd and
// /etc/group. FROM scratch and no "# syntax=" line: it builds offline with
// BuildKit's built-in frontend.
type Busybox struct {
	path    string
	applets []string
	// Inputs is a digest of everything the image is made from: the same
	// inputs make the same image.
	Inputs string
}

var busyboxFiles = map[string]string{
	"Dockerfile":        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"/bin/sh\"]\n",
	"rootfs/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
	"rootfs/etc/group":  "root:x:0:\nnogroup:x:65534:\n",
}

// FindBusybox finds Debian's static busybox and its applets.
func FindBusybox() (*Busybox, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		list, err := exec.Command(p, "--list").Output()
		if err != nil {
			return nil, fmt.Errorf("%s --list: %v", p, err)
		}
		sum, err := FileSHA256(p)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		fmt.Fprintf(h, "%s\n%s", sum, list)
		for _, name := range slices.Sorted(maps.Keys(busyboxFiles)) {
			fmt.Fprintf(h, "%s\n%s", name, busyboxFiles[name])
		}
		return &Busybox{path: p, applets: strings.Fields(string(list)), Inputs: hex.EncodeToString(h.Sum(nil))}, nil
	}
	return nil, errors.New("busybox not found (Debian busybox-static): run hack/install.sh")
}

// WriteContext writes the image's build context (Dockerfile and rootfs/)
// into dir, which must not exist yet or be empty.
func (b *Busybox) WriteContext(dir string) error {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "root", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := Install(b.path, filepath.Join(rootfs, "bin", "busybox")); err != nil {
		return err
	}
	for _, a := range b.applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	for name, content := range busyboxFiles {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// BuildPush builds and pushes one image and returns its digest; a failure
// carries the end of the build's log.
func BuildPush(ctx context.Context, b *buildkit.Builder, build buildkit.Build) (string, error) {
	return BuildPushLog(ctx, b, build, io.Discard)
}

// BuildPushLog is BuildPush that also writes the whole build log to w.
func BuildPushLog(ctx context.Context, b *buildkit.Builder, build buildkit.Build, w io.Writer) (string, error) {
	var log strings.Builder
	build.Push = true
	digest, err := b.Run(ctx, build, func(lines []string) {
		text := strings.Join(lines, "\n") + "\n"
		log.WriteString(text)
		io.WriteString(w, text)
	})
	if err == nil && digest == "" {
		err = errors.New("no digest in the exporter response")
	}
	if err != nil {
		out := log.String()
		if len(out) > 6000 {
			out = "...\n" + out[len(out)-6000:]
		}
		return "", fmt.Errorf("build %s on %s: %w\n--- build log ---\n%s", build.Image, b.Address(), err, out)
	}
	return digest, nil
}

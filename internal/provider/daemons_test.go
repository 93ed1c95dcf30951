package provider

// Helpers for provider_e2e_test.go: they start the real daemons the test needs
// (containerd, Debian's docker-registry) in temp dirs, and build and push a
// tiny busybox function image without docker. A missing binary fails the
// test, naming hack/install-provider.sh; nothing here skips.

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const installHint = "run hack/install-provider.sh"

// mustFind returns the first executable among candidates (absolute paths, or
// names daemon.Find looks up), or fails the test.
func mustFind(t *testing.T, what string, candidates ...string) string {
	t.Helper()
	for _, c := range candidates {
		if !filepath.IsAbs(c) {
			c = daemon.Find(c)
		}
		if fi, err := os.Stat(c); c != "" && err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return c
		}
	}
	t.Fatalf("%s not found (looked for %v): %s", what, candidates, installHint)
	return ""
}

// startContainerd starts Debian's containerd (or $FNB_TEST_CONTAINERD) with
// the configuration `fnb-provider containerd` uses: its own root, state,
// socket and config, nothing shared with a system containerd. It returns
// the socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	bin := mustFind(t, "containerd", os.Getenv("FNB_TEST_CONTAINERD"), "/usr/bin/containerd", "containerd")
	mustFind(t, "containerd-shim-runc-v2", filepath.Join(filepath.Dir(bin), "containerd-shim-runc-v2"), "containerd-shim-runc-v2")
	mustFind(t, "runc", "runc")
	// Short paths: the socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "fnbctd")
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "containerd.sock")
	cfgPath := filepath.Join(dir, "config.toml")
	p, err := daemon.Start(context.Background(), daemon.Spec{
		Name:    "containerd",
		Args:    []string{bin, "--config", cfgPath},
		Env:     daemon.BaseEnv("PATH=" + daemon.ChildPath(filepath.Dir(bin))),
		LogPath: filepath.Join(dir, "containerd.log"),
		Prepare: func() error {
			return os.WriteFile(cfgPath, []byte(runtime.DaemonConfig(filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket)), 0o600)
		},
		ReadyTimeout: 30 * time.Second,
		Ready: func(ctx context.Context, _ int64) error {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", socket)
			if err == nil {
				conn.Close()
			}
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Cleanups run last-in first-out: the provider's are done.
		if !p.Stop(15 * time.Second) {
			t.Logf("containerd did not stop on SIGTERM: killed")
		}
		if err := daemon.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	return socket
}

// pushFunctionImage builds a one-layer OCI image holding Debian's static
// busybox and /www/index.html, whose command is a busybox shell script, and
// pushes it to ref on reg.
func pushFunctionImage(t *testing.T, reg *testenv.Registry, ref, index, script string) {
	t.Helper()
	bb := mustFind(t, "static busybox (Debian busybox-static)", "/bin/busybox", "/usr/bin/busybox")
	out, _ := exec.Command("file", "-L", bb).Output()
	if len(out) > 0 && !bytes.Contains(out, []byte("statically linked")) {
		t.Fatalf("%s is not statically linked (%s): install busybox-static; %s", bb, strings.TrimSpace(string(out)), installHint)
	}
	bbBytes, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	exe := testenv.File("bin/busybox", string(bbBytes))
	exe.Header.Mode = 0o755
	tmp := testenv.Dir("tmp/")
	tmp.Header.Mode = 0o1777
	layerBytes := testenv.BuildTar(t, testenv.Dir("bin/"), exe, testenv.Dir("www/"), testenv.File("www/index.html", index), tmp)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{
		Cmd: []string{"/bin/busybox", "sh", "-c", script},
		Env: []string{"PATH=/bin"},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := remote.Write(r, img, append(reg.RemoteOptions(t), remote.WithContext(ctx))...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

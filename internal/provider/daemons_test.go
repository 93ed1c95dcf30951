package provider

// Helpers for provider_e2e_test.go: they start the real daemons the test needs
// (containerd, Debian's docker-registry) in temp dirs, and build and push a
// tiny busybox function image without docker. A missing binary fails the
// test, naming hack/install-provider.sh; nothing here skips.

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
)

const installHint = "run hack/install-provider.sh"

// mustFind returns the first executable among candidates (absolute paths or
// names looked up in $PATH and the sbin dirs), or fails the test.
func mustFind(t *testing.T, what string, candidates ...string) string {
	t.Helper()
	for _, c := range candidates {
		if filepath.IsAbs(c) {
			if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				return c
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
		for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
			p := filepath.Join(d, c)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p
			}
		}
	}
	t.Fatalf("%s not found (looked for %v): %s", what, candidates, installHint)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// daemon is a child process in its own process group, logging to a file.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startDaemon(t *testing.T, name, logPath string, cmd *exec.Cmd) *daemon {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("%s log: %v", name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	d := &daemon{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); f.Close(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the daemon's process group, then SIGKILL.
func (d *daemon) stop(t *testing.T) {
	if d.exited() {
		return
	}
	pgid := d.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		t.Logf("%s did not stop on SIGTERM; killing", d.name)
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.done
	}
}

func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// registry is Debian's docker-registry (distribution 2.8) on a free
// loopback port, storing under a temp dir.
type registry struct {
	Addr string
	d    *daemon
}

func startRegistry(t *testing.T) *registry {
	t.Helper()
	bin := mustFind(t, "docker-registry", "docker-registry")
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "storage"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	r := &registry{Addr: addr, d: startDaemon(t, "docker-registry", filepath.Join(dir, "registry.log"), cmd)}
	waitFor(t, 20*time.Second, "docker-registry on "+addr, func() error {
		if r.d.exited() {
			t.Fatalf("docker-registry exited: %v\n%s", r.d.err, r.d.tail())
		}
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return r
}

// containerdDaemon is a private containerd: its own root, state, socket
// and config, nothing shared with a system containerd.
type containerdDaemon struct {
	Socket string
	d      *daemon
}

// startContainerd starts Debian's containerd (or $FNB_TEST_CONTAINERD) with
// the configuration `fnb-provider containerd` uses.
func startContainerd(t *testing.T) *containerdDaemon {
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
	cfg := runtime.DaemonConfig(filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	c := &containerdDaemon{Socket: socket}
	c.d = startDaemon(t, "containerd", filepath.Join(dir, "containerd.log"), cmd)
	t.Cleanup(func() {
		// After the daemon stopped (cleanups run last-in first-out, so the
		// daemon's own cleanup has run): unmount anything left under dir.
		c.d.stop(t)
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	waitFor(t, 30*time.Second, "containerd socket "+socket, func() error {
		if c.d.exited() {
			t.Fatalf("containerd exited: %v\n%s", c.d.err, c.d.tail())
		}
		conn, err := net.Dial("unix", socket)
		if err != nil {
			return err
		}
		conn.Close()
		return nil
	})
	return c
}

// mounts returns the mount points (field 5 of /proc/self/mountinfo) that
// contain substr.
func mounts(t *testing.T, substr string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.Contains(line, substr) {
			out = append(out, f[4])
		}
	}
	return out
}

func unmountUnder(t *testing.T, dir string) {
	ms := mounts(t, dir)
	for i := len(ms) - 1; i >= 0; i-- {
		if err := syscall.Unmount(ms[i], syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", ms[i], err)
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// pushFunctionImage builds a one-layer OCI image holding Debian's static
// busybox and /www/index.html, whose command is a busybox shell script, and
// pushes it to ref over plain HTTP.
func pushFunctionImage(t *testing.T, ref, index, script string) {
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
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, typ byte, data []byte) {
		h := &tar.Header{Name: name, Mode: mode, Typeflag: typ, Size: int64(len(data)), ModTime: time.Unix(0, 0)}
		if typ == tar.TypeDir {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ != tar.TypeDir {
			if _, err := tw.Write(data); err != nil {
				t.Fatal(err)
			}
		}
	}
	add("bin/", 0o755, tar.TypeDir, nil)
	add("bin/busybox", 0o755, tar.TypeReg, bbBytes)
	add("www/", 0o755, tar.TypeDir, nil)
	add("www/index.html", 0o644, tar.TypeReg, []byte(index))
	add("tmp/", 0o1777, tar.TypeDir, nil)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layerBytes := buf.Bytes()
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
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
)

// RootlessUser is the non-root user (created by hack/install.sh, with
// /etc/subuid and /etc/subgid ranges) that runs rootless buildkitd.
const RootlessUser = "fnbuilder"

// rootlessUser is RootlessUser; tests of the fallback change it.
var rootlessUser = RootlessUser

// Buildkit modes, for BuildKitOptions.Mode and FNB_BUILDKIT_MODE.
const (
	ModeRootless = "rootless"
	ModeRoot     = "root"
)

const (
	readyTimeout = 30 * time.Second
	stopGrace    = 20 * time.Second
)

// BuildKitOptions configure StartBuildKit.
type BuildKitOptions struct {
	// InsecureRegistries are host:port names reached over plain HTTP
	// (a Registry's Addr).
	InsecureRegistries []string
	// Mode forces ModeRootless or ModeRoot (then failing to start is
	// fatal). Empty means $FNB_BUILDKIT_MODE, and if that is empty too:
	// rootless first, root if rootless does not start.
	Mode string
	// Debug runs buildkitd with --debug (also when FNB_BUILDKIT_DEBUG=1).
	Debug bool
}

// BuildKit is a running buildkitd.
type BuildKit struct {
	// Addr is unix:///.../buildkitd.sock.
	Addr string
	// Root is buildkitd's state dir (--root).
	Root string
	// Rootless says buildkitd runs under rootlesskit as RootlessUser.
	Rootless bool
	// Dir holds the config, socket, log and state; removed in t.Cleanup.
	Dir string
	// Config is the buildkitd.toml in use.
	Config string
	// LogPath receives the daemon's stdout and stderr (appended across restarts).
	LogPath string

	mu      sync.Mutex
	proc    *proc
	args    []string // full command line
	env     []string
	cred    *syscall.Credential
	cleanup onceCleanup
}

// StartBuildKit starts buildkitd — rootless under rootlesskit as
// RootlessUser when it can, as root otherwise (see BuildKitOptions.Mode) —
// and waits until it lists its workers. It is stopped and its state removed
// in t.Cleanup.
func StartBuildKit(t testing.TB, opts BuildKitOptions) *BuildKit {
	t.Helper()
	bin := mustTool(t, "buildkitd")
	mode := opts.Mode
	if mode == "" {
		mode = os.Getenv("FNB_BUILDKIT_MODE")
	}
	if os.Getenv("FNB_BUILDKIT_DEBUG") == "1" {
		opts.Debug = true
	}
	switch mode {
	case ModeRootless, ModeRoot:
		if mode == ModeRootless {
			mustTool(t, "rootlesskit")
			mustTool(t, "newuidmap")
		}
		mustTool(t, "runc")
		b, err := newBuildKit(bin, opts, mode == ModeRootless)
		if err != nil {
			t.Fatalf("testenv: buildkitd (%s mode, forced) did not start: %v", mode, err)
		}
		b.register(t)
		return b
	case "":
	default:
		t.Fatalf("testenv: FNB_BUILDKIT_MODE=%q: want %q or %q", mode, ModeRootless, ModeRoot)
	}

	mustTool(t, "runc")
	var why error
	switch {
	case findTool("rootlesskit") == "":
		why = errors.New("rootlesskit not found: run hack/install.sh")
	case findTool("newuidmap") == "":
		why = errors.New("newuidmap (uidmap) not found: run hack/install.sh")
	default:
		b, err := newBuildKit(bin, opts, true)
		if err == nil {
			b.register(t)
			return b
		}
		why = err
	}
	t.Logf("testenv: !!!!!!!!!! ROOTLESS buildkitd DID NOT START — FALLING BACK TO ROOT MODE !!!!!!!!!!\n%v", why)
	b, err := newBuildKit(bin, opts, false)
	if err != nil {
		t.Fatalf("testenv: buildkitd did not start rootless nor as root.\nrootless: %v\nroot: %v", why, err)
	}
	b.register(t)
	return b
}

// register logs the mode and arranges the cleanup.
func (b *BuildKit) register(t testing.TB) {
	t.Helper()
	if b.Rootless {
		t.Logf("testenv: buildkitd running ROOTLESS (rootlesskit, user %s) at %s", RootlessUser, b.Addr)
	} else {
		t.Logf("testenv: buildkitd running as ROOT at %s", b.Addr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: --- %s (tail) ---\n%s", b.LogPath, logTail(b.LogPath, 6000))
		}
		b.cleanup.run()
	})
}

// newBuildKit lays out the directories and starts the daemon. On error
// everything it made is gone again.
func newBuildKit(bin string, opts BuildKitOptions, rootless bool) (*BuildKit, error) {
	// /tmp rather than $TMPDIR: the socket path must stay short (108 bytes)
	// and every component must be traversable by the rootless user.
	tmp := "/tmp"
	if fi, err := os.Stat(tmp); err != nil || !fi.IsDir() {
		tmp = os.TempDir()
	}
	dir, err := os.MkdirTemp(tmp, "fnbbk")
	if err != nil {
		return nil, err
	}
	b := &BuildKit{
		Dir:      dir,
		Root:     filepath.Join(dir, "state"),
		Addr:     "unix://" + filepath.Join(dir, "buildkitd.sock"),
		Config:   filepath.Join(dir, "buildkitd.toml"),
		LogPath:  filepath.Join(dir, "buildkitd.log"),
		Rootless: rootless,
	}
	b.cleanup.f = func() {
		b.mu.Lock()
		p := b.proc
		b.mu.Unlock()
		if p != nil {
			p.stop(stopGrace)
		}
		_ = removeAll(dir)
	}
	if err := b.setup(bin, opts); err != nil {
		b.cleanup.run()
		return nil, err
	}
	if err := b.start(); err != nil {
		b.cleanup.run()
		return nil, err
	}
	return b, nil
}

// setup makes the directories and config, and the command line.
func (b *BuildKit) setup(bin string, opts BuildKitOptions) error {
	dir := b.Dir
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	home := filepath.Join(dir, "home")
	run := filepath.Join(dir, "run")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{b.Root, 0o700}, {home, 0o700}, {run, 0o700}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return err
		}
	}
	if err := os.WriteFile(b.Config, []byte(buildkitdConfig(opts)), 0o644); err != nil {
		return err
	}

	daemon := []string{bin}
	if opts.Debug {
		daemon = append(daemon, "--debug")
	}
	env := []string{
		"PATH=" + childPath(),
		"HOME=" + home,
		"XDG_RUNTIME_DIR=" + run,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
	}
	if !b.Rootless {
		b.args = append(daemon, "--root", b.Root, "--addr", b.Addr, "--config", b.Config)
		// In its own PID and mount namespaces, so that killing buildkitd
		// also kills the build containers (runc puts them in their own
		// sessions) and no overlay mount outlives it. unshare passes
		// SIGTERM to buildkitd (PID 1 there) and waits for it.
		if us := findTool("unshare"); us != "" {
			b.args = append([]string{us, "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc"}, b.args...)
		}
		b.env = append(env, "USER=root", "LOGNAME=root")
		return nil
	}

	// Rootless: everything the daemon writes must belong to the user.
	name := rootlessUser
	if os.Geteuid() != 0 {
		// Already unprivileged: run rootlesskit as ourselves (needs our own subuid range).
		u, err := user.Current()
		if err != nil {
			return err
		}
		name = u.Username
	} else {
		u, err := user.Lookup(rootlessUser)
		if err != nil {
			return fmt.Errorf("user %s: %v: run hack/install.sh", rootlessUser, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		b.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		for _, p := range []string{dir, b.Root, home, run} {
			if err := os.Chown(p, int(uid), int(gid)); err != nil {
				return err
			}
		}
		if !accessibleBy(bin, b.cred.Uid, b.cred.Gid) {
			// e.g. $HOME=/root (0700): give the user a link to the binary.
			bin, err = linkOrCopy(bin, filepath.Join(dir, "bin"))
			if err != nil {
				return fmt.Errorf("making buildkitd reachable for %s: %v", rootlessUser, err)
			}
			daemon[0] = bin
		}
	}
	if err := checkSubIDs(name); err != nil {
		return err
	}
	b.args = append([]string{findTool("rootlesskit"),
		"--net=host", "--copy-up=/etc", "--copy-up=/run", "--disable-host-loopback",
		// A PID namespace, as the production container has: stopping
		// rootlesskit ends every build process with it. The build steps
		// keep BuildKit's process sandbox (each its own PID namespace).
		"--pidns",
		"--state-dir=" + filepath.Join(run, "rootlesskit"),
	}, daemon...)
	b.args = append(b.args, "--root", b.Root, "--addr", b.Addr, "--config", b.Config)
	b.env = append(env, "USER="+name, "LOGNAME="+name)
	return nil
}

func buildkitdConfig(opts BuildKitOptions) string {
	var s strings.Builder
	s.WriteString("# written by internal/testenv\n")
	s.WriteString("[worker.oci]\n  enabled = true\n  gc = false\n\n")
	s.WriteString("[worker.containerd]\n  enabled = false\n\n")
	seen := map[string]bool{}
	for _, r := range opts.InsecureRegistries {
		if r == "" || seen[r] {
			continue
		}
		seen[r] = true
		fmt.Fprintf(&s, "[registry.%q]\n  http = true\n  insecure = true\n\n", r)
	}
	return s.String()
}

// start runs the daemon and waits until it answers ListWorkers.
func (b *BuildKit) start() error {
	cmd := exec.Command(b.args[0], b.args[1:]...)
	cmd.Dir = b.Dir
	cmd.Env = b.env
	if b.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred}
	}
	// A socket left by a killed daemon would make the wait below succeed
	// on a stale file; buildkitd replaces it anyway.
	_ = os.Remove(strings.TrimPrefix(b.Addr, "unix://"))
	p, err := startProc("buildkitd", cmd, b.LogPath)
	if err != nil {
		return fmt.Errorf("start %s: %v", b.args[0], err)
	}
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()
	if err := b.waitReady(readyTimeout); err != nil {
		p.stop(5 * time.Second)
		return fmt.Errorf("%v\ncommand: %s\n--- %s (tail) ---\n%s", err, strings.Join(b.args, " "), b.LogPath, logTail(b.LogPath, 6000))
	}
	return nil
}

func (b *BuildKit) waitReady(timeout time.Duration) error {
	sock := strings.TrimPrefix(b.Addr, "unix://")
	deadline := time.Now().Add(timeout)
	var last error = errors.New("no socket yet")
	for {
		if b.proc.exited() {
			return fmt.Errorf("buildkitd exited: %v", b.proc.err)
		}
		if _, err := os.Stat(sock); err == nil {
			last = ping(b.Addr)
			if last == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("buildkitd not ready after %s: %v", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := client.New(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return err
	}
	if len(ws) == 0 {
		return errors.New("no workers")
	}
	return nil
}

// Client returns a BuildKit client for the daemon, closed in t.Cleanup.
func (b *BuildKit) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), b.Addr)
	if err != nil {
		t.Fatalf("testenv: buildkit client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ProcessMode is the process-mode label of buildkitd's OCI worker:
// "sandbox" when every build step gets its own PID namespace.
func ProcessMode(t testing.TB, b *BuildKit) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := b.Client(t).ListWorkers(ctx)
	if err != nil || len(ws) == 0 {
		t.Fatalf("testenv: buildkitd workers: %v (%d)", err, len(ws))
	}
	return ws[0].Labels["org.mobyproject.buildkit.worker.oci.process-mode"]
}

// Running reports whether the daemon process is alive.
func (b *BuildKit) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.proc != nil && !b.proc.exited()
}

// Stop sends SIGTERM to the daemon's process group and waits for it to
// exit (SIGKILL after 20 s). State is kept: Restart brings it back.
func (b *BuildKit) Stop(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	p := b.proc
	b.mu.Unlock()
	if p == nil {
		return
	}
	if !p.stop(stopGrace) && !p.exited() {
		t.Logf("testenv: buildkitd ignored SIGTERM for %s: killed", stopGrace)
	}
}

// Kill SIGKILLs the daemon's process group (as a crash would) and waits.
func (b *BuildKit) Kill(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	p := b.proc
	b.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Restart stops the daemon (if running) and starts it again, same mode,
// address, config and state.
func (b *BuildKit) Restart(t testing.TB) {
	t.Helper()
	b.Stop(t)
	if err := b.start(); err != nil {
		t.Fatalf("testenv: buildkitd restart: %v", err)
	}
}

// accessibleBy reports whether uid/gid can read and execute path (every
// parent directory searchable). Only the primary group is considered.
func accessibleBy(path string, uid, gid uint32) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	can := func(p string, need os.FileMode) bool {
		fi, err := os.Stat(p)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		perm := fi.Mode().Perm()
		switch {
		case st.Uid == uid:
			return perm&(need<<6) == need<<6
		case st.Gid == gid:
			return perm&(need<<3) == need<<3
		default:
			return perm&need == need
		}
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if !can(d, 0o1) {
			return false
		}
		if d == "/" {
			break
		}
	}
	return can(abs, 0o5)
}

// linkOrCopy hard-links (or copies) file into dir, world-readable.
func linkOrCopy(file, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(file))
	if err := os.Link(file, dst); err == nil {
		return dst, nil
	}
	in, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}

// checkSubIDs makes sure name has ranges in /etc/subuid and /etc/subgid, to
// give a clear error instead of rootlesskit's.
func checkSubIDs(name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return err
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("%v: run hack/install.sh", err)
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if who, _, ok := strings.Cut(line, ":"); ok && (who == name || who == u.Uid) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s has no range for %s: run hack/install.sh", f, name)
		}
	}
	return nil
}

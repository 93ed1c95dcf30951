package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Buildkit modes, for BuildKitOptions.Mode and FNB_BUILDKIT_MODE.
const (
	ModeRootless = "rootless"
	ModeRoot     = "root"
)

const stopGrace = 20 * time.Second

// BuildKitOptions configure StartBuildKit.
type BuildKitOptions struct {
	// InsecureRegistries are host:port names reached over plain HTTP
	// (a Registry's Addr).
	InsecureRegistries []string
	// Trust are HTTPS registries whose CA buildkitd trusts (given to it in
	// buildkitd.toml, as the local stack does).
	Trust []*Registry
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
	// Rootless says buildkitd runs under rootlesskit as daemon.RootlessUser.
	Rootless bool
	// Dir holds the config, socket, log and state; removed in t.Cleanup.
	Dir string
	// LogPath receives the daemon's stdout and stderr (appended across restarts).
	LogPath string

	recipe daemon.BuildKitd
	proc   *daemon.Process
}

// StartBuildKit starts buildkitd — rootless under rootlesskit when it can,
// as root otherwise (see BuildKitOptions.Mode) — and waits until it lists
// its workers. It is stopped and its state removed in t.Cleanup.
func StartBuildKit(t testing.TB, opts BuildKitOptions) *BuildKit {
	t.Helper()
	mode := opts.Mode
	if mode == "" {
		mode = os.Getenv("FNB_BUILDKIT_MODE")
	}
	opts.Debug = opts.Debug || os.Getenv("FNB_BUILDKIT_DEBUG") == "1"
	switch mode {
	case ModeRootless, ModeRoot:
		b, err := startBuildKit(opts, mode == ModeRootless)
		if err != nil {
			t.Fatalf("testenv: buildkitd (%s mode, forced) did not start: %v", mode, err)
		}
		return b.register(t)
	case "":
	default:
		t.Fatalf("testenv: FNB_BUILDKIT_MODE=%q: want %q or %q", mode, ModeRootless, ModeRoot)
	}
	b, why := startBuildKit(opts, true)
	if why == nil {
		return b.register(t)
	}
	t.Logf("testenv: !!!!!!!!!! ROOTLESS buildkitd DID NOT START — FALLING BACK TO ROOT MODE !!!!!!!!!!\n%v", why)
	b, err := startBuildKit(opts, false)
	if err != nil {
		t.Fatalf("testenv: buildkitd did not start rootless nor as root.\nrootless: %v\nroot: %v", why, err)
	}
	return b.register(t)
}

// startBuildKit starts one in a fresh directory, removed again on error.
func startBuildKit(opts BuildKitOptions, rootless bool) (*BuildKit, error) {
	// /tmp: the socket path must stay short (108 bytes) and every
	// component traversable by the rootless user.
	dir, err := os.MkdirTemp("/tmp", "fnbbk")
	if err != nil {
		return nil, err
	}
	r := daemon.BuildKitd{Dir: dir, Rootless: rootless, Debug: opts.Debug}
	for _, h := range opts.InsecureRegistries {
		r.Registries = append(r.Registries, daemon.RegistryAccess{Host: h, PlainHTTP: true})
	}
	for _, reg := range opts.Trust {
		r.Registries = append(r.Registries, daemon.RegistryAccess{Host: reg.Addr, CA: reg.CA})
	}
	b := &BuildKit{Addr: r.Addr(), Root: r.Root(), Rootless: rootless, Dir: dir, LogPath: filepath.Join(dir, "buildkitd.log"), recipe: r}
	if err := b.start(); err != nil {
		daemon.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

func (b *BuildKit) start() error {
	spec, err := b.recipe.Spec()
	if err != nil {
		return err
	}
	spec.LogPath, spec.ReadyTimeout = b.LogPath, 30*time.Second
	p, err := daemon.Start(context.Background(), spec)
	if err == nil {
		b.proc = p
	}
	return err
}

// register logs the mode and arranges the cleanup.
func (b *BuildKit) register(t testing.TB) *BuildKit {
	t.Helper()
	if b.Rootless {
		t.Logf("testenv: buildkitd running ROOTLESS (rootlesskit, user %s) at %s", daemon.RootlessUser, b.Addr)
	} else {
		t.Logf("testenv: buildkitd running as ROOT at %s", b.Addr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: --- %s (tail) ---\n%s", b.LogPath, daemon.Tail(b.LogPath, 6000))
		}
		b.Stop(t)
		if err := daemon.RemoveAll(b.Dir); err != nil {
			t.Logf("testenv: remove %s: %v", b.Dir, err)
		}
	})
	return b
}

// ProcessMode is buildkitd's worker process mode (buildkit.Builder's):
// "sandbox" when every build step gets its own PID namespace.
func ProcessMode(t testing.TB, b *BuildKit) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mode, err := buildkit.New(buildkit.Daemon{Address: b.Addr}, buildkit.Registries{}).ProcessMode(ctx)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return mode
}

// Running reports whether the daemon process is alive.
func (b *BuildKit) Running() bool { return !b.proc.Exited() }

// Stop sends SIGTERM to the daemon's process group and waits for it to
// exit (SIGKILL after 20 s). State is kept: Restart brings it back.
func (b *BuildKit) Stop(t testing.TB) {
	t.Helper()
	if !b.proc.Stop(stopGrace) {
		t.Logf("testenv: buildkitd did not stop within %s of SIGTERM (or was gone): killed", stopGrace)
	}
}

// Kill SIGKILLs the daemon's process group (as a crash would) and waits.
func (b *BuildKit) Kill(t testing.TB) {
	t.Helper()
	b.proc.Kill()
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

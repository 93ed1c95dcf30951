package daemon

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
)

// RootlessUser is the non-root user with /etc/subuid and /etc/subgid ranges
// (created by hack/install.sh) that runs rootless buildkitd.
const RootlessUser = "fnbuilder"

// BuildKitd is the recipe of buildkitd with everything in Dir: its state
// (root/), HOME and XDG dirs (home/, run/), buildkitd.toml, the socket
// buildkitd.sock and copies of the files it reads (tls/). Rootless, it runs
// under rootlesskit as User, who owns Dir; otherwise as root in its own PID
// and mount namespaces. Either way BuildKit keeps its process sandbox: each
// build step in its own PID namespace.
type BuildKitd struct {
	Dir      string
	Rootless bool
	// User runs rootless buildkitd (default RootlessUser). A caller that is
	// not root runs it as itself, with its own subordinate ID ranges.
	User string
	// TCP, when set, is a second listener (host:port) with mutual TLS.
	TCP       string
	ServerTLS *TLSFiles
	// Registries says how buildkitd reaches each registry.
	Registries []RegistryAccess
	GC, Debug  bool
	// Probe lists more clients that must reach the daemon before it is
	// ready (the TCP listener with its client certificate).
	Probe []buildkit.Daemon
}

// TLSFiles are PEM files: a CA, and a certificate with its key.
type TLSFiles struct{ CA, Cert, Key string }

// RegistryAccess is one registry host in buildkitd.toml: over plain HTTP,
// or over HTTPS trusting CA (a file; buildkitd gets its own copy).
type RegistryAccess struct {
	Host      string
	PlainHTTP bool
	CA        string
}

// Socket is the unix socket; Addr is its buildkit address.
func (b BuildKitd) Socket() string { return filepath.Join(b.Dir, "buildkitd.sock") }
func (b BuildKitd) Addr() string   { return "unix://" + b.Socket() }

// Root is buildkitd's state dir (--root).
func (b BuildKitd) Root() string { return filepath.Join(b.Dir, "root") }

func (b BuildKitd) path(elem ...string) string {
	return filepath.Join(append([]string{b.Dir}, elem...)...)
}

// Spec starts buildkitd; the caller adds LogPath (and PIDFile).
func (b BuildKitd) Spec() (Spec, error) {
	bin := Find("buildkitd")
	tools := []string{"buildkitd", "runc"}
	if b.Rootless {
		tools = append(tools, "rootlesskit", "newuidmap")
	}
	for _, t := range tools {
		if Find(t) == "" {
			return Spec{}, fmt.Errorf("%s not found (in %s, $PATH or /usr/sbin): run hack/install.sh", t, ToolsDir())
		}
	}
	home, run := b.path("home"), b.path("run")
	name, cred, err := b.runAs()
	if err != nil {
		return Spec{}, err
	}
	daemonBin := bin
	if cred != nil && !accessibleBy(bin, cred.Uid, cred.Gid) {
		daemonBin = b.path("bin", "buildkitd") // e.g. $HOME=/root (0700): a copy the user reaches
	}
	args := []string{daemonBin, "--root", b.Root(), "--config", b.path("buildkitd.toml"), "--addr", b.Addr()}
	if b.Debug {
		args = append(args, "--debug")
	}
	if b.TCP != "" {
		args = append(args, "--addr", "tcp://"+b.TCP, "--tlscacert", b.path("tls", "ca.pem"),
			"--tlscert", b.path("tls", "cert.pem"), "--tlskey", b.path("tls", "key.pem"))
	}
	if b.Rootless {
		// --pidns: stopping rootlesskit ends every build process with it.
		args = append([]string{Find("rootlesskit"), "--net=host", "--copy-up=/etc", "--copy-up=/run",
			"--disable-host-loopback", "--pidns", "--state-dir=" + filepath.Join(run, "rootlesskit")}, args...)
	} else if us := Find("unshare"); us != "" {
		// Its own PID and mount namespaces: killing buildkitd kills the
		// build containers too and no overlay mount outlives it. unshare
		// passes SIGTERM to buildkitd (PID 1 there) and waits for it.
		args = append([]string{us, "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc"}, args...)
	}
	return Spec{
		Name: "buildkitd",
		Args: args,
		Env: []string{"PATH=" + ChildPath(), "HOME=" + home, "USER=" + name, "LOGNAME=" + name, "XDG_RUNTIME_DIR=" + run,
			"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
			"XDG_CACHE_HOME=" + filepath.Join(home, ".cache")},
		Dir:     b.Dir,
		Cred:    cred,
		Prepare: func() error { return b.prepare(bin, daemonBin, name, cred) },
		Ready: func(ctx context.Context, _ int64) error {
			for _, d := range append([]buildkit.Daemon{{Address: b.Addr()}}, b.Probe...) {
				if err := buildkit.New(d, buildkit.Registries{}).Ping(ctx); err != nil {
					return err
				}
			}
			return nil
		},
	}, nil
}

// runAs is the user buildkitd runs as, with credentials when that is not us.
func (b BuildKitd) runAs() (string, *syscall.Credential, error) {
	if !b.Rootless {
		return "root", nil, nil
	}
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return "", nil, err
		}
		return u.Username, nil, checkSubIDs(u)
	}
	name := b.User
	if name == "" {
		name = RootlessUser
	}
	u, err := user.Lookup(name)
	if err != nil {
		return "", nil, fmt.Errorf("user %s: %v: run hack/install.sh", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return name, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, checkSubIDs(u)
}

// prepare lays Dir out, owned by the user buildkitd runs as, and clears
// what a killed instance left (rootlesskit refuses its old state dir).
func (b BuildKitd) prepare(bin, daemonBin, name string, cred *syscall.Credential) error {
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(b.Dir, 0o755); err != nil {
		return err
	}
	os.RemoveAll(b.path("run", "rootlesskit"))
	os.Remove(b.Socket())
	own := func(p string) error {
		if cred == nil {
			return nil
		}
		return os.Chown(p, int(cred.Uid), int(cred.Gid))
	}
	for _, d := range []string{b.Dir, b.Root(), b.path("home"), b.path("run"), b.path("tls")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := own(d); err != nil {
			return err
		}
	}
	files := map[string]string{}
	if t := b.ServerTLS; t != nil {
		files["ca.pem"], files["cert.pem"], files["key.pem"] = t.CA, t.Cert, t.Key
	}
	for _, r := range b.Registries {
		if r.CA != "" {
			files[registryCAName(r.Host)] = r.CA
		}
	}
	for dst, src := range files {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := WriteFileAtomic(b.path("tls", dst), data, 0o600); err != nil {
			return err
		}
		if err := own(b.path("tls", dst)); err != nil {
			return err
		}
	}
	if daemonBin != bin {
		if err := Install(bin, daemonBin); err != nil {
			return fmt.Errorf("making buildkitd reachable for %s: %w", name, err)
		}
	}
	return WriteFileAtomic(b.path("buildkitd.toml"), []byte(b.config()), 0o644)
}

func registryCAName(host string) string {
	return "registry-" + strings.NewReplacer(":", "_", "/", "_").Replace(host) + ".pem"
}

func (b BuildKitd) config() string {
	var s strings.Builder
	fmt.Fprintf(&s, "# written by internal/daemon\n[worker.oci]\n  enabled = true\n  gc = %v\n\n[worker.containerd]\n  enabled = false\n", b.GC)
	for _, r := range b.Registries {
		fmt.Fprintf(&s, "\n[registry.%q]\n", r.Host)
		if r.PlainHTTP {
			s.WriteString("  http = true\n  insecure = true\n")
		}
		if r.CA != "" {
			// http = false: buildkitd would speak plain HTTP to a loopback host.
			fmt.Fprintf(&s, "  http = false\n  ca = [%q]\n", b.path("tls", registryCAName(r.Host)))
		}
	}
	return s.String()
}

// accessibleBy reports whether uid/gid can read and execute path (every
// parent directory searchable). Only the primary group is considered.
func accessibleBy(path string, uid, gid uint32) bool {
	can := func(p string, need os.FileMode) bool {
		fi, err := os.Stat(p)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		switch perm := fi.Mode().Perm(); {
		case st.Uid == uid:
			return perm&(need<<6) == need<<6
		case st.Gid == gid:
			return perm&(need<<3) == need<<3
		default:
			return perm&need == need
		}
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if !can(d, 0o1) {
			return false
		}
		if d == "/" {
			break
		}
	}
	return can(path, 0o5)
}

// checkSubIDs makes sure u has ranges in /etc/subuid and /etc/subgid, to
// give a clear error instead of rootlesskit's.
func checkSubIDs(u *user.User) error {
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("%v: run hack/install.sh", err)
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if who, _, ok := strings.Cut(line, ":"); ok && (who == u.Username || who == u.Uid) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s has no range for %s: run hack/install.sh", f, u.Username)
		}
	}
	return nil
}

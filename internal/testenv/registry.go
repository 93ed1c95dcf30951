package testenv

import (
	"context"
	"maps"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Registry is a running registry (CNCF distribution 2.8, Debian's
// docker-registry) on loopback, started through daemon.Registry: plain
// HTTP, or, by StartSecureRegistry, the local stack's shape — HTTPS with a
// certificate from a CA of its own (CA) and one htpasswd user (User).
type Registry struct {
	daemon.Registry
	// Root is the storage root (filesystem driver).
	Root string
	// LogPath receives the registry's output.
	LogPath string
	// User logs in (its config.json is UserConfig(User)); "" for anyone.
	User string

	spec daemon.Spec
	proc *daemon.Process
	// passwords of the users SetPassword made, besides User.
	passwords map[string]string
}

// StartRegistry starts a plain-HTTP registry on a free loopback port with
// storage under t.TempDir() and deletes enabled. It is stopped in t.Cleanup.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "", false)
}

// StartSecureRegistry starts a registry that serves HTTPS with a
// certificate (IP SAN 127.0.0.1) from a CA of its own and lets in only one
// generated user.
func StartSecureRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "", true)
}

// startRegistry listens on fixed when it is set (captured requests whose
// signed bytes name the registry), failing if it is taken.
func startRegistry(t testing.TB, fixed string, secure bool) *Registry {
	t.Helper()
	if daemon.Find("docker-registry") == "" {
		t.Fatalf("testenv: docker-registry not found (looked in %s, $PATH, /usr/sbin, /sbin): run hack/install.sh", daemon.ToolsDir())
	}
	dir := t.TempDir()
	reg := &Registry{Registry: daemon.Registry{Dir: dir}, Root: filepath.Join(dir, "storage"), LogPath: filepath.Join(dir, "registry.log")}
	var ca *daemon.CA
	if secure {
		reg.CA, reg.User = filepath.Join(dir, "ca.pem"), "push"
		var err error
		if ca, err = daemon.LoadOrCreateCA(reg.CA, filepath.Join(dir, "ca-key.pem"), "testenv registry CA "+RandomHex(t, 4)); err != nil {
			t.Fatal(err)
		}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		reg.Addr = fixed
		if fixed == "" {
			reg.Addr = freeAddr(t)
		} else if err := daemon.CheckFree(fixed); err != nil {
			t.Fatalf("testenv: %v (is the local stack up? run make down)", err)
		}
		if secure {
			os.RemoveAll(filepath.Join(dir, "users")) // made for another address
			if _, err := reg.Secure(ca, reg.User); err != nil {
				t.Fatalf("testenv: registry certificate and user: %v", err)
			}
		}
		reg.spec = reg.Spec()
		reg.spec.LogPath, reg.spec.ReadyTimeout = reg.LogPath, 15*time.Second
		if lastErr = reg.start(); lastErr == nil {
			t.Cleanup(func() { reg.proc.Stop(10 * time.Second) })
			return reg
		} // most likely the port was taken in between: try another
	}
	t.Fatalf("testenv: docker-registry did not start: %v", lastErr)
	return nil
}

// freeAddr is a loopback address nobody listened on a moment ago.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (r *Registry) start() error {
	p, err := daemon.Start(context.Background(), r.spec)
	if err == nil {
		r.proc = p
	}
	return err
}

// Stop stops the registry, as an outage would; Restart brings it back.
func (r *Registry) Stop(t testing.TB) {
	t.Helper()
	r.proc.Stop(10 * time.Second)
}

// Restart starts the registry again on the same address and storage.
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	r.proc.Stop(10 * time.Second)
	if err := r.start(); err != nil {
		t.Fatalf("testenv: registry restart: %v", err)
	}
}

// SetPassword lets user in with password from now on (a rotation, or a
// new user), beside User and the other users it made, and restarts the
// registry on the same address to read its htpasswd again.
func (r *Registry) SetPassword(t testing.TB, user, password string) {
	t.Helper()
	if r.CA == "" || user == r.User {
		t.Fatal("testenv: SetPassword needs a registry with users (StartSecureRegistry) and another user than User, whom the helpers here log in as")
	}
	cfg, err := r.Login(r.User)
	if err != nil {
		t.Fatal(err)
	}
	own, err := cfg.GetAuthConfig(r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.passwords == nil {
		r.passwords = map[string]string{}
	}
	r.passwords[user] = password
	users := map[string]string{r.User: own.Password}
	maps.Copy(users, r.passwords)
	if err := daemon.WriteHtpasswd(filepath.Join(r.Dir, "htpasswd"), users); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
}

// DockerConfig is a config.json that logs User in (build-fn's
// registry-config), with password instead of the right one when it is set.
func (r *Registry) DockerConfig(t testing.TB, password string) []byte {
	t.Helper()
	if password != "" {
		return daemon.DockerConfig(r.Addr, r.User, password)
	}
	b, err := os.ReadFile(r.UserConfig(r.User))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RemoteOptions reach the registry with go-containerregistry, as User.
func (r *Registry) RemoteOptions(t testing.TB) []remote.Option {
	t.Helper()
	opts, err := r.Registry.RemoteOptions(r.User)
	if err != nil {
		t.Fatalf("testenv: registry client: %v", err)
	}
	return opts
}

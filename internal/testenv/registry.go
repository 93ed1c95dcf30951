package testenv

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Registry is a running plain-HTTP registry (CNCF distribution 2.8, Debian's
// docker-registry) on loopback.
type Registry struct {
	// Addr is 127.0.0.1:PORT, usable as an image reference host and in
	// buildkitd's [registry."Addr"] section.
	Addr string
	// Root is the storage root (filesystem driver).
	Root string
	// LogPath receives the registry's output.
	LogPath string
}

// URL returns http://Addr.
func (r *Registry) URL() string { return "http://" + r.Addr }

// StartRegistry starts a registry on a free loopback port with storage
// under t.TempDir() and deletes enabled. It is stopped in t.Cleanup.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "")
}

// startRegistry listens on fixed when it is set (captured requests whose
// signed bytes name the registry), failing if it is taken.
func startRegistry(t testing.TB, fixed string) *Registry {
	t.Helper()
	mustTool(t, "docker-registry")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "registry.log")
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr := fixed
		if addr == "" {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
		} else if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("testenv: %s is taken (is the local stack up? run make down): %v", addr, err)
		} else {
			l.Close()
		}
		r := daemon.Registry{Addr: addr, Dir: dir}
		spec := r.Spec()
		spec.LogPath, spec.ReadyTimeout = logPath, 15*time.Second
		p, err := daemon.Start(context.Background(), spec)
		if err != nil {
			lastErr = err // most likely the port was taken in between: try another
			continue
		}
		t.Cleanup(func() { p.Stop(10 * time.Second) })
		return &Registry{Addr: addr, Root: r.Storage(), LogPath: logPath}
	}
	t.Fatalf("testenv: docker-registry did not start: %v", lastErr)
	return nil
}

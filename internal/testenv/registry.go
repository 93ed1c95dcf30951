package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
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

	proc *proc
}

// URL returns http://Addr.
func (r *Registry) URL() string { return "http://" + r.Addr }

// StartRegistry starts a registry on a free loopback port with storage
// under t.TempDir() and deletes enabled. It is stopped in t.Cleanup.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "")
}

// StartRegistryAt starts the registry on a fixed address, for captured
// requests whose signed bytes name it. It fails if the address is taken.
func StartRegistryAt(t testing.TB, addr string) *Registry {
	t.Helper()
	return startRegistry(t, addr)
}

func startRegistry(t testing.TB, fixed string) *Registry {
	t.Helper()
	bin := mustTool(t, "docker-registry")
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	logPath := filepath.Join(dir, "registry.log")

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr := fixed
		if addr == "" {
			port, err := freePort()
			if err != nil {
				t.Fatalf("testenv: free port: %v", err)
			}
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		} else if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("testenv: %s is taken (is the local stack up? run make down): %v", addr, err)
		} else {
			l.Close()
		}
		cfg := filepath.Join(dir, "config.yml")
		yml := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, root, addr)
		if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		cmd := exec.Command(bin, "serve", cfg)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
		p, err := startProc("docker-registry", cmd, logPath)
		if err != nil {
			t.Fatalf("testenv: start %s: %v", bin, err)
		}
		reg := &Registry{Addr: addr, Root: root, LogPath: logPath, proc: p}
		if err := reg.waitReady(15 * time.Second); err != nil {
			p.stop(5 * time.Second)
			lastErr = err
			continue // most likely the port was taken in between: try another
		}
		t.Cleanup(func() { p.stop(10 * time.Second) })
		return reg
	}
	t.Fatalf("testenv: docker-registry did not start: %v\n--- %s (tail) ---\n%s", lastErr, logPath, logTail(logPath, 4000))
	return nil
}

func (r *Registry) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		if r.proc.exited() {
			return fmt.Errorf("docker-registry exited: %v", r.proc.err)
		}
		resp, err := c.Get(r.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

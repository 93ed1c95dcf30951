package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
)

// Registry is the recipe of Debian's docker-registry (CNCF distribution
// 2.8) listening on Addr, with its config.yml and storage/ in Dir.
type Registry struct {
	Addr string
	Dir  string
}

// Storage is the registry's filesystem root.
func (r Registry) Storage() string { return filepath.Join(r.Dir, "storage") }

// URL is where the registry answers.
func (r Registry) URL() string { return "http://" + r.Addr }

// Spec starts the registry; the caller adds LogPath (and PIDFile).
func (r Registry) Spec() Spec {
	bin, cfg := Find("docker-registry"), filepath.Join(r.Dir, "config.yml")
	return Spec{
		Name: "registry",
		Args: []string{bin, "serve", cfg},
		Env:  BaseEnv("OTEL_TRACES_EXPORTER=none"),
		Dir:  r.Dir,
		Prepare: func() error {
			if bin == "" {
				return errors.New("docker-registry not found (Debian docker-registry): run hack/install.sh")
			}
			if err := os.MkdirAll(r.Storage(), 0o755); err != nil {
				return err
			}
			return WriteFileAtomic(cfg, []byte(r.config()), 0o644)
		},
		Ready: HTTPReady(r.URL() + "/v2/"),
	}
}

func (r Registry) config() string {
	return fmt.Sprintf(`# written by internal/daemon
version: 0.1
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
`, r.Storage(), r.Addr)
}

// localHTTP never uses a proxy: everything the daemons serve is local.
var localHTTP = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// HTTPReady is a readiness check that wants a 200 from url.
func HTTPReady(url string) func(ctx context.Context, _ int64) error {
	return func(ctx context.Context, _ int64) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		res, err := localHTTP.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, res.Status)
		}
		return nil
	}
}

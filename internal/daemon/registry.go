package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
)

// Registry is the recipe of Debian's docker-registry (CNCF distribution
// 2.8) listening on Addr, with everything in Dir (config.yml, storage/).
// With CA set it serves HTTPS with Dir/tls/cert.pem, issued by that CA, and
// lets in only the users of Dir/htpasswd (bcrypt): Secure makes both, and a
// Docker config.json per user in Dir/users/. Without it, plain HTTP.
type Registry struct {
	Addr string
	Dir  string
	CA   string // PEM file of the CA; "" means plain HTTP
}

// Storage is the registry's filesystem root.
func (r Registry) Storage() string { return filepath.Join(r.Dir, "storage") }

// URL is where the registry answers.
func (r Registry) URL() string {
	if r.CA != "" {
		return "https://" + r.Addr
	}
	return "http://" + r.Addr
}

// UserConfig is the Docker config.json that logs user in.
func (r Registry) UserConfig(user string) string {
	return filepath.Join(r.Dir, "users", user+".json")
}

func (r Registry) path(elem ...string) string {
	return filepath.Join(append([]string{r.Dir}, elem...)...)
}

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
		Ready: r.ready,
	}
}

func (r Registry) config() string {
	var s strings.Builder
	fmt.Fprintf(&s, `# written by internal/daemon
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
	if r.CA != "" {
		fmt.Fprintf(&s, "  tls:\n    certificate: %s\n    key: %s\nauth:\n  htpasswd:\n    realm: fnbuilder\n    path: %s\n",
			r.path("tls", "cert.pem"), r.path("tls", "key.pem"), r.path("htpasswd"))
	}
	return s.String()
}

// ready wants the API root to answer: 200, or 401 when it asks for users.
func (r Registry) ready(ctx context.Context, _ int64) error {
	c, err := r.Client()
	if err != nil {
		return err
	}
	if r.CA == "" {
		return Get(ctx, c, r.URL()+"/v2/", http.StatusOK)
	}
	return Get(ctx, c, r.URL()+"/v2/", http.StatusOK, http.StatusUnauthorized)
}

// Client is an HTTP client for the registry: no proxy, and TLS's CA as
// the only root.
func (r Registry) Client() (*http.Client, error) {
	t := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if r.CA != "" {
		roots, err := certPool(r.CA)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	return &http.Client{Transport: t}, nil
}

func certPool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", caFile)
	}
	return roots, nil
}

// Secure makes what the HTTPS shape needs and is missing: a certificate
// from ca (which r.CA holds) for 127.0.0.1 and localhost, issued again
// when ca did not issue it (CA.IssueFiles); and the users, each with a random password,
// when any of them lacks its config.json or htpasswd is missing. It
// reports whether it made anything.
func (r Registry) Secure(ca *CA, users ...string) (bool, error) {
	made, err := ca.IssueFiles(r.path("tls", "cert.pem"), r.path("tls", "key.pem"), "registry", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
	if err != nil {
		return false, err
	}
	complete := fileThere(r.path("htpasswd"))
	for _, u := range users {
		complete = complete && fileThere(r.UserConfig(u))
	}
	if complete {
		return made, nil
	}
	passwords, configs := map[string]string{}, map[string][]byte{}
	for _, u := range users {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return false, err
		}
		passwords[u] = hex.EncodeToString(b)
		configs[r.UserConfig(u)] = DockerConfig(r.Addr, u, passwords[u])
	}
	if err := writeAll(0o600, configs); err != nil {
		return false, err
	}
	return true, WriteHtpasswd(r.path("htpasswd"), passwords)
}

func fileThere(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// writeAll writes each file (making its directory) through a rename.
func writeAll(mode os.FileMode, files map[string][]byte) error {
	for p, b := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := WriteFileAtomic(p, b, mode); err != nil {
			return err
		}
	}
	return nil
}

// Login is user's config.json, read.
func (r Registry) Login(user string) (*configfile.ConfigFile, error) {
	b, err := os.ReadFile(r.UserConfig(user))
	if err != nil {
		return nil, err
	}
	cfg := configfile.New(r.UserConfig(user))
	return cfg, cfg.LoadFromReader(bytes.NewReader(b))
}

// Builder is a BuildKit client on bk that pushes here as user (no login
// when user is ""), over plain HTTP when the registry has no CA.
func (r Registry) Builder(bk buildkit.Daemon, user string) (*buildkit.Builder, error) {
	var regs buildkit.Registries
	if r.CA == "" {
		regs.Insecure = []string{r.Addr}
	}
	if user != "" {
		if _, err := r.Login(user); err != nil {
			return nil, err // missing here is a mistake, not "no credentials"
		}
		regs.AuthPath = r.UserConfig(user)
	}
	return buildkit.New(bk, regs), nil
}

// Digest is the manifest digest ref's tag points to, asked as user.
func (r Registry) Digest(ctx context.Context, ref, user string) (string, error) {
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	opts, err := r.RemoteOptions(user)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(parsed, append(opts, remote.WithContext(ctx))...)
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// RemoteOptions reach the registry with go-containerregistry: its CA and,
// when user is set, as that user.
func (r Registry) RemoteOptions(user string) ([]remote.Option, error) {
	c, err := r.Client()
	if err != nil {
		return nil, err
	}
	opts := []remote.Option{remote.WithTransport(c.Transport)}
	if user == "" {
		return opts, nil
	}
	cfg, err := r.Login(user)
	if err != nil {
		return nil, err
	}
	a, err := cfg.GetAuthConfig(r.Addr)
	if err != nil {
		return nil, err
	}
	return append(opts, remote.WithAuth(&authn.Basic{Username: a.Username, Password: a.Password})), nil
}

// WriteHtpasswd writes the users and their passwords as an htpasswd file
// (bcrypt), readable by its owner only.
func WriteHtpasswd(path string, users map[string]string) error {
	var s strings.Builder
	for user, pass := range users {
		hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
		if err != nil {
			return err
		}
		fmt.Fprintf(&s, "%s:%s\n", user, hash)
	}
	return WriteFileAtomic(path, []byte(s.String()), 0o600)
}

// DockerConfig is a Docker config.json that logs user in to host: what
// build-fn reads from its registry-config secret, containerd's resolver
// from a file.
func DockerConfig(host, user, pass string) []byte {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	b, _ := json.MarshalIndent(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}}, "", "  ")
	return append(b, '\n')
}

// localHTTP never uses a proxy: everything the daemons serve is local.
var localHTTP = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// HTTPReady is a readiness check that wants a 200 from url.
func HTTPReady(url string) func(ctx context.Context, _ int64) error {
	return func(ctx context.Context, _ int64) error { return Get(ctx, localHTTP, url, http.StatusOK) }
}

// Get wants one of the statuses from url; another's error has the start
// of the body, which says why.
func Get(ctx context.Context, c *http.Client, url string, statuses ...int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if !slices.Contains(statuses, res.StatusCode) {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("GET %s: %s %s", url, res.Status, body)
	}
	return nil
}

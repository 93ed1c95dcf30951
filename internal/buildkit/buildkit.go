// Package buildkit runs one Dockerfile build on a BuildKit daemon: it
// assembles the SolveOpt in one place (frontend attributes, local mounts,
// the image exporter) and attaches the session's secrets and registry
// credentials from memory, next to it. Progress goes out as log lines.
package buildkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/identity"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"
)

// TLS names the client certificate files for a tcp:// daemon.
type TLS struct {
	CA, Cert, Key, ServerName string
}

// Daemon is how to reach one buildkitd.
type Daemon struct {
	// Address is unix:///path.sock or tcp://host:port.
	Address string
	TLS     *TLS
}

// Registries says how to push.
type Registries struct {
	// Insecure lists registry hosts (host:port) reached over plain HTTP or
	// with unverified TLS; "*" means all.
	Insecure []string
	// Auth is the Docker config.json with push credentials; nil means none.
	Auth *configfile.ConfigFile
	// CacheRepo, when set, is a repository (e.g. registry:5000/buildcache)
	// where each image repository's build cache is exported and imported
	// from, so a replica that never built an image still starts warm.
	CacheRepo string
}

// Build is one image build.
type Build struct {
	Context    Context
	Dockerfile string // relative to Context; "" means Dockerfile
	Image      string
	BuildArgs  map[string]string
	Labels     map[string]string
	Platforms  []string
	Target     string
	Push       bool
	// Secrets are handed to BuildKit from memory through the session; they
	// are never written to a file.
	Secrets map[string][]byte
	// SharedKey names the incremental copy of the context that BuildKit
	// keeps between builds (see SharedKey); "" shares the daemon's one
	// copy with every other client, as buildctl does.
	SharedKey string
}

// Builder runs builds on one daemon.
type Builder struct {
	daemon     Daemon
	registries Registries
}

// New makes a Builder. It does not connect: each build dials, so a daemon
// that restarts between builds is simply reached again.
func New(d Daemon, r Registries) *Builder {
	return &Builder{daemon: d, registries: r}
}

// Address is the daemon this builder uses.
func (b *Builder) Address() string { return b.daemon.Address }

func (b *Builder) dial(ctx context.Context) (*client.Client, error) {
	var opts []client.ClientOpt
	if t := b.daemon.TLS; t != nil {
		opts = append(opts, client.WithServerConfig(t.ServerName, t.CA))
		if t.Cert != "" {
			opts = append(opts, client.WithCredentials(t.Cert, t.Key))
		}
	}
	c, err := client.New(ctx, b.daemon.Address, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to buildkitd at %s: %w", b.daemon.Address, err)
	}
	return c, nil
}

// Ping checks that the daemon answers and has a worker.
func (b *Builder) Ping(ctx context.Context) error {
	c, err := b.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	workers, err := c.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("buildkitd at %s: %w", b.daemon.Address, err)
	}
	if len(workers) == 0 {
		return fmt.Errorf("buildkitd at %s has no workers", b.daemon.Address)
	}
	return nil
}

// Run solves the build and reports progress lines to logf until it ends.
func (b *Builder) Run(ctx context.Context, build Build, logf func([]string)) error {
	_, err := b.Push(ctx, build, logf)
	return err
}

// Push is Run that also returns the exported image's digest (empty when
// the build was not exported), for callers that compare or pin it.
func (b *Builder) Push(ctx context.Context, build Build, logf func([]string)) (string, error) {
	opt, err := b.solveOpt(build)
	if err != nil {
		return "", err
	}
	c, err := b.dial(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()

	if len(build.Secrets) > 0 {
		// BuildKit's build history keeps each step's output, and a step
		// may print a secret: drop this build's record (and so its log
		// blobs) once it ends, even if the operator left history on.
		opt.Ref = identity.NewID()
		defer forgetHistory(c, opt.Ref)
	}

	status := make(chan *client.SolveStatus)
	var digest string
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		res, err := c.Solve(ctx, nil, opt, status)
		if err == nil {
			digest = res.ExporterResponse["containerimage.digest"]
		}
		return err
	})
	eg.Go(func() error {
		display := newDisplay()
		for s := range status {
			if lines := display.lines(s); len(lines) > 0 {
				logf(lines)
			}
		}
		if lines := display.flush(); len(lines) > 0 {
			logf(lines)
		}
		return nil
	})
	err = eg.Wait()
	return digest, err
}

func forgetHistory(c *client.Client, ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = c.ControlClient().UpdateBuildHistory(ctx, &controlapi.UpdateBuildHistoryRequest{Ref: ref, Delete: true})
}

func (b *Builder) solveOpt(build Build) (client.SolveOpt, error) {
	if build.Context == nil {
		return client.SolveOpt{}, errors.New("build context: none given")
	}
	dockerfile := build.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	dockerfileFS, err := build.Context.Sub(filepath.Dir(dockerfile))
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("dockerfile: %w", err)
	}

	attrs := map[string]string{"filename": filepath.Base(dockerfile)}
	for k, v := range build.BuildArgs {
		attrs["build-arg:"+k] = v
	}
	for k, v := range build.Labels {
		attrs["label:"+k] = v
	}
	if len(build.Platforms) > 0 {
		attrs["platform"] = strings.Join(build.Platforms, ",")
	}
	if build.Target != "" {
		attrs["target"] = build.Target
	}

	export := map[string]string{"name": build.Image}
	if build.Push {
		export["push"] = "true"
		if b.insecure(build.Image) {
			export["registry.insecure"] = "true"
		}
	}

	var cacheImports, cacheExports []client.CacheOptionsEntry
	if repo := b.registries.CacheRepo; repo != "" && build.Push {
		ref := repo + ":" + cacheTag(build.Image)
		imp := map[string]string{"ref": ref}
		exp := map[string]string{"ref": ref, "mode": "max"}
		if b.insecure(ref) {
			imp["registry.insecure"] = "true"
			exp["registry.insecure"] = "true"
		}
		cacheImports = []client.CacheOptionsEntry{{Type: "registry", Attrs: imp}}
		cacheExports = []client.CacheOptionsEntry{{Type: "registry", Attrs: exp}}
	}

	return client.SolveOpt{
		CacheImports:  cacheImports,
		CacheExports:  cacheExports,
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts: map[string]fsutil.FS{
			"context":    build.Context,
			"dockerfile": dockerfileFS,
		},
		SharedKey: build.SharedKey,
		Exports:   []client.ExportEntry{{Type: client.ExporterImage, Attrs: export}},
		Session: []session.Attachable{
			secretsprovider.FromMap(build.Secrets),
			authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
				AuthConfigProvider: authprovider.LoadAuthConfig(b.authConfig()),
			}),
		},
	}, nil
}

func (b *Builder) authConfig() *configfile.ConfigFile {
	if b.registries.Auth != nil {
		return b.registries.Auth
	}
	return configfile.New("")
}

func (b *Builder) insecure(image string) bool {
	host := RegistryHost(image)
	for _, h := range b.registries.Insecure {
		if h == "*" || h == host {
			return true
		}
	}
	return false
}

// RegistryHost is the registry part of an image reference, with Docker
// Hub's default when the first path element is not a host.
func RegistryHost(image string) string {
	first, _, found := strings.Cut(image, "/")
	if !found || !strings.ContainsAny(first, ".:") && first != "localhost" {
		return "docker.io"
	}
	return first
}

// LoadAuth reads a Docker config.json; a missing file means no credentials.
func LoadAuth(path string) (*configfile.ConfigFile, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg := configfile.New(path)
	if err := cfg.LoadFromReader(f); err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", path, err)
	}
	return cfg, nil
}

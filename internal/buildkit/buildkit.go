// Package buildkit runs one Dockerfile build on a BuildKit daemon: it
// assembles the SolveOpt in one place (frontend attributes, local mounts,
// the image exporter) and attaches the session's secrets and registry
// credentials from memory, next to it. Progress goes out as log lines.
package buildkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
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

	"github.com/fnbuilder/fnbuilder/internal/buildlog"
	"github.com/fnbuilder/fnbuilder/internal/imageref"
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
	// AuthPath is the Docker config.json with the builder's registry
	// credentials. Every build reads it again (LoadAuth), so credentials
	// rotated in the file, or handed out anew by its credHelpers and
	// credsStore (docker-credential-<name> on PATH), need no restart. ""
	// or a missing file means none.
	AuthPath string
	// CacheRepo, when set, is a repository (e.g. registry:5000/buildcache)
	// where each image repository's build cache is exported and imported
	// from, so a replica that never built an image still starts warm.
	CacheRepo string
	// Guarded registries (host[:port]) serve a build only the images its
	// Pulls allow: those the builder serves tenants from, reaches
	// insecurely or keeps its cache on. The registries AuthPath holds
	// credentials for are guarded too, taken from each build's own read
	// of the file (guarded).
	Guarded []string
	// Frontends are the images a Dockerfile's "# syntax=" line may name,
	// in full form (docker.io/docker/dockerfile:1.x); any other line is
	// ignored and the built-in frontend builds.
	Frontends []string
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
	// Tenant keys every cache the build shares with others: cache mounts,
	// the incremental context copy, the registry cache tag.
	Tenant string
	// Pulls are the image-name prefixes the build may pull from guarded
	// registries; nil allows every image.
	Pulls []string
	// Contexts stand in for what the Dockerfile names, as `docker buildx
	// build --build-context NAME=VALUE`: FROM NAME then takes VALUE, e.g.
	// "docker-image://registry:5000/golang:1.26-alpine". For building the
	// production Dockerfiles where their base images cannot be pulled (the
	// offline cluster, internal/cluster); never set from a request.
	Contexts map[string]string
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

// Registries are the registry settings this builder uses.
func (b *Builder) Registries() Registries { return b.registries }

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
	c, err := b.connect(ctx)
	if err == nil {
		c.Close()
	}
	return err
}

// connect dials the daemon and checks, within ctx, that it answers and has
// a worker. The connection outlives ctx: a build may run on it.
func (b *Builder) connect(ctx context.Context) (*client.Client, error) {
	c, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	workers, err := c.ListWorkers(ctx)
	if err == nil && len(workers) == 0 {
		err = errors.New("no workers")
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("buildkitd at %s: %w", b.daemon.Address, err)
	}
	return c, nil
}

// ProcessModeLabel is the worker label that says whether build steps run
// in BuildKit's process sandbox ("sandbox": their own PID namespace) or
// share buildkitd's ("no-sandbox"), where one build can read another's
// processes, secrets included.
const ProcessModeLabel = "org.mobyproject.buildkit.worker.oci.process-mode"

// ProcessMode is the daemon's worker process mode; workers that disagree
// give the weaker one.
func (b *Builder) ProcessMode(ctx context.Context) (string, error) {
	c, err := b.dial(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	workers, err := c.ListWorkers(ctx)
	if err != nil {
		return "", fmt.Errorf("buildkitd at %s: %w", b.daemon.Address, err)
	}
	mode := ""
	for _, w := range workers {
		m := w.Labels[ProcessModeLabel]
		if m == "" {
			m = "unknown" // not an OCI worker: nothing says it is sandboxed
		}
		if mode == "" || m != "sandbox" {
			mode = m
		}
	}
	if mode == "" {
		return "", fmt.Errorf("buildkitd at %s has no workers", b.daemon.Address)
	}
	return mode, nil
}

// Run solves the build, reporting progress lines to logf until it ends,
// and returns the digest of the image's manifest, which a deploy pins.
func (b *Builder) Run(ctx context.Context, build Build, logf func([]string)) (string, error) {
	c, err := b.dial(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return b.runOn(ctx, c, build, logf)
}

// runOn solves the build on an open connection to this builder's daemon.
func (b *Builder) runOn(ctx context.Context, c *client.Client, build Build, logf func([]string)) (string, error) {
	opt, notes, err := b.solveOpt(build)
	if err != nil {
		return "", err
	}
	for _, n := range notes {
		logf([]string{buildlog.From(ctx).Status(time.Now(), n)})
	}

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
		display := newDisplay(buildlog.From(ctx))
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

// solveOpt assembles the build's SolveOpt; notes are lines for the
// build's log about choices made for it.
func (b *Builder) solveOpt(build Build) (_ client.SolveOpt, notes []string, _ error) {
	if build.Context == nil {
		return client.SolveOpt{}, nil, errors.New("build context: none given")
	}
	dockerfile := build.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	dockerfileFS, err := build.Context.Sub(filepath.Dir(dockerfile))
	if err != nil {
		return client.SolveOpt{}, nil, fmt.Errorf("dockerfile: %w", err)
	}

	attrs := map[string]string{"filename": filepath.Base(dockerfile)}
	for k, v := range build.BuildArgs {
		attrs["build-arg:"+k] = v
	}
	// Set last: a request's own BUILDKIT_* args are refused before this.
	attrs["build-arg:BUILDKIT_CACHE_MOUNT_NS"] = cacheMountNamespace(build)
	attrs["build-arg:BUILDKIT_SANDBOX_HOSTNAME"] = sandboxHostname(build)
	auth, err := LoadAuth(b.registries.AuthPath)
	if err != nil {
		return client.SolveOpt{}, nil, err
	}
	frontend, note := b.frontendImage(build)
	if frontend == "" {
		// Present, the key stops the built-in frontend from handing the
		// build to the image a "# syntax=" line names.
		attrs["cmdline"] = ""
	}
	if note != "" {
		notes = append(notes, note)
	}
	for k, v := range build.Labels {
		attrs["label:"+k] = v
	}
	for name, v := range build.Contexts {
		attrs["context:"+name] = v
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
		ref := repo + ":" + cacheTag(build)
		imp := map[string]string{"ref": ref}
		// The image is pushed before the cache: a cache that could not be
		// written (the registry refusing a blob that another build, with
		// the same steps, uploads at the same moment: seen on the cluster,
		// "provided digest did not match uploaded content") costs the next
		// build its warm start, and must not fail this one.
		exp := map[string]string{"ref": ref, "mode": "max", "ignore-error": "true"}
		if b.insecure(ref) {
			imp["registry.insecure"] = "true"
			exp["registry.insecure"] = "true"
		}
		cacheImports = []client.CacheOptionsEntry{{Type: "registry", Attrs: imp}}
		cacheExports = []client.CacheOptionsEntry{{Type: "registry", Attrs: exp}}
	}

	return client.SolveOpt{
		SharedKey:     sharedKey(build),
		SourcePolicy:  b.sourcePolicy(build, frontend, b.guarded(auth)),
		CacheImports:  cacheImports,
		CacheExports:  cacheExports,
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts: map[string]fsutil.FS{
			"context":    build.Context,
			"dockerfile": dockerfileFS,
		},
		Exports: []client.ExportEntry{{Type: client.ExporterImage, Attrs: export}},
		Session: []session.Attachable{
			secretsprovider.FromMap(build.Secrets),
			authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
				AuthConfigProvider: authprovider.LoadAuthConfig(auth),
			}),
		},
	}, notes, nil
}

func (b *Builder) insecure(image string) bool {
	host := imageref.Host(image)
	for _, h := range b.registries.Insecure {
		if h == "*" || h == host {
			return true
		}
	}
	return false
}

// LoadAuth reads a Docker config.json: build-fn checks it at start, and
// every build reads it again. "" or a missing file means no credentials;
// a file that cannot be read or parsed is an error naming it, which fails
// the build (nothing transient: the operator must fix the file).
func LoadAuth(path string) (*configfile.ConfigFile, error) {
	cfg := configfile.New(path)
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err == nil {
		err = cfg.LoadFromReader(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", path, err)
	}
	return cfg, nil
}

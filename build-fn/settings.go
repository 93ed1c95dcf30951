package function

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/buildlog"
	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/contextref"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/imageref"
	"github.com/fnbuilder/fnbuilder/internal/metrics"
	"github.com/fnbuilder/fnbuilder/internal/pipeline"
	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/signature"
	"github.com/fnbuilder/fnbuilder/internal/tenant"
)

// Defaults for the settings documented in README.md.
const (
	defaultBuildkitURL   = "unix:///run/buildkit/buildkitd.sock"
	defaultTimeout       = 30 * time.Minute
	defaultMaxBodyBytes  = 512 << 20
	defaultKeepAlive     = 15 * time.Second
	defaultRetries       = 3
	defaultRetryWait     = 2 * time.Second
	defaultResultsTTL    = 24 * time.Hour
	defaultMaxFetchBytes = 4 << 30
	defaultMaxQueued     = 100
	defaultQueueTimeout  = 10 * time.Minute
	// One body of max_request_bytes, or many smaller ones, at a time.
	defaultMaxUnverifiedBytes = 512 << 20
	defaultUploadTimeout      = 5 * time.Minute
	// Request bodies up to spool_memory_bytes stay in memory, never on
	// disk, while all of them together stay under spoolMemoryBodies times
	// that; the rest go to work_dir.
	defaultSpoolMemoryBytes = 4 << 20
	spoolMemoryBodies       = 8
	// Under of-watchdog, whose proxy can drop a stream answered too soon
	// after its body (internal/handlers/streamhold.go).
	defaultWatchdogStreamHold = 100 * time.Millisecond
)

// New builds build-fn's router from its settings, and starts watching
// whether its BuildKit keeps build steps in their process sandbox.
func New(cfg config.Config) (http.Handler, error) {
	opts, builders, err := options(cfg)
	if err != nil {
		return nil, err
	}
	shareUnsandboxed, err := cfg.Bool("allow_unsandboxed_concurrent_tenants", false)
	if err != nil {
		return nil, err
	}
	go watchSandbox(builders, opts.Slots, shareUnsandboxed)
	// Lives as long as the process, as the handler does.
	opts.Results.StartPruning()
	return Router(cfg, opts), nil
}

// Router routes build-fn's paths; tests call it to wrap the options.
func Router(cfg config.Config, opts handlers.BuildOptions) http.Handler {
	mux := http.NewServeMux()
	buildHandler := handlers.MakeBuildHandler(opts)
	publicKey := handlers.MakePublicKeyHandler(secrets.KeyRingLoader(cfg.PrivateKeyPaths()...))
	mux.HandleFunc("/build", buildHandler)
	mux.HandleFunc("/{$}", buildHandler) // the gateway's /function/build-fn and faas-cli <= 0.17.4
	mux.HandleFunc("/results/{id}", handlers.MakeResultHandler(opts))
	mux.HandleFunc("/publickey", publicKey)
	mux.HandleFunc("/public-key", publicKey) // the spelling in the docs
	mux.HandleFunc("/healthz", handlers.MakeHealthHandler())
	mux.HandleFunc("/ready", handlers.MakeReadyHandler(opts.Slots))
	mux.Handle("/metrics", opts.Metrics.Handler())
	return mux
}

// Options reads every build setting once.
func Options(cfg config.Config) (handlers.BuildOptions, error) {
	o, _, err := options(cfg)
	return o, err
}

func options(cfg config.Config) (o handlers.BuildOptions, builders []*buildkit.Builder, err error) {
	if o.DisableHMAC, err = cfg.Bool("disable_hmac", false); err != nil {
		return o, nil, err
	}
	maxInflight, err := maxBuilds(cfg)
	if err != nil {
		return o, nil, err
	}
	if o.Timeout, err = cfg.Duration("build_timeout", defaultTimeout); err != nil {
		return o, nil, err
	}
	if o.LogFormat, err = buildlog.ParseFormat(cfg.String("log_format", "")); err != nil {
		return o, nil, err
	}
	if o.KeepAlive, err = cfg.Duration("keepalive_interval", defaultKeepAlive); err != nil {
		return o, nil, err
	}
	if o.StreamHold, err = cfg.Duration("stream_hold", streamHold(cfg)); err != nil {
		return o, nil, err
	}
	if o.MaxBodyBytes, err = cfg.Int("max_request_bytes", defaultMaxBodyBytes); err != nil {
		return o, nil, err
	}
	if err := uploadLimits(cfg, &o); err != nil {
		return o, nil, err
	}
	limits := buildtar.DefaultLimits()
	if limits.MaxBytes, err = cfg.Int("max_context_bytes", limits.MaxBytes); err != nil {
		return o, nil, err
	}
	maxEntries, err := cfg.Int("max_context_entries", int64(limits.MaxEntries))
	if err != nil {
		return o, nil, err
	}
	limits.MaxEntries = int(maxEntries)

	if o.Tenants, err = cfg.Tenants(); err != nil {
		return o, nil, err
	}
	if builders, err = newBuilders(cfg, o.Tenants); err != nil {
		return o, nil, err
	}
	retries, err := cfg.Int("build_retries", defaultRetries)
	if err != nil {
		return o, nil, err
	}
	firstWait, err := cfg.Duration("retry_backoff", defaultRetryWait)
	if err != nil {
		return o, nil, err
	}
	o.Retry = pipeline.Backoff{Attempts: int(retries), First: firstWait, Max: 16 * firstWait}
	workDir := cfg.String("work_dir", os.TempDir())
	resultsTTL, err := cfg.Duration("results_ttl", defaultResultsTTL)
	if err != nil {
		return o, nil, err
	}
	if o.Results, err = results.New(cfg.String("results_dir", filepath.Join(os.TempDir(), "fnbuilder-results")), resultsTTL); err != nil {
		return o, nil, err
	}
	if o.MaxFetchBytes, err = cfg.Int("max_fetch_bytes", defaultMaxFetchBytes); err != nil {
		return o, nil, err
	}
	allowPrivateRedirects, err := cfg.Bool("allow_private_fetch_redirects", false)
	if err != nil {
		return o, nil, err
	}
	o.Fetch = contextref.NewClient(o.Timeout, allowPrivateRedirects)
	o.SpoolDir = workDir
	spoolMemory, err := cfg.Int("spool_memory_bytes", defaultSpoolMemoryBytes)
	if err != nil {
		return o, nil, err
	}
	if spoolMemory > 0 {
		o.SpoolMemory = signature.NewMemory(spoolMemory, spoolMemoryBodies*spoolMemory)
	}
	maxQueued, err := cfg.Int("max_queued", defaultMaxQueued)
	if err != nil {
		return o, nil, err
	}
	if o.QueueTimeout, err = cfg.Duration("queue_timeout", defaultQueueTimeout); err != nil {
		return o, nil, err
	}
	o.Slots = schedule.New(int(maxInflight), int(maxQueued))
	o.Metrics = metrics.New()
	o.Metrics.WatchQueue(o.Slots)
	o.Pipeline = &pipeline.Pipeline{
		Keys:          secrets.KeyRingLoader(cfg.PrivateKeyPaths()...),
		Runner:        pipeline.Retrying{Next: runner(builders), Backoff: o.Retry},
		Limits:        limits,
		Gateway:       deploy.Connect(cfg.GatewayURL(), cfg.GatewayCredentials),
		DeployBackoff: o.Retry,
		Deploy: deploy.Policy{
			ReservedSecrets:   cfg.BuilderSecrets(o.Tenants),
			ReservedFunctions: cfg.BuilderFunctions(),
			DefaultNamespace:  cfg.FunctionNamespace(),
		},
	}
	return o, builders, nil
}

// uploadLimits reads the bounds on bodies whose signature is not yet
// checked: their bytes together, and each one's time to arrive.
func uploadLimits(cfg config.Config, o *handlers.BuildOptions) error {
	maxUnverified, err := cfg.Int("max_unverified_bytes", defaultMaxUnverifiedBytes)
	if err != nil {
		return err
	}
	if maxUnverified > 0 && o.MaxBodyBytes > 0 && maxUnverified < o.MaxBodyBytes {
		return fmt.Errorf("setting max_unverified_bytes=%d is below max_request_bytes=%d: a body between the two could never be received", maxUnverified, o.MaxBodyBytes)
	}
	if o.UploadTimeout, err = cfg.Duration("upload_timeout", defaultUploadTimeout); err != nil {
		return err
	}
	if o.UploadTimeout < 0 {
		return fmt.Errorf("setting upload_timeout=%s: must not be negative", o.UploadTimeout)
	}
	o.Unverified = handlers.NewUnverifiedBudget(maxUnverified)
	return nil
}

// streamHold is stream_hold's default: a hold only where of-watchdog runs
// in front of build-fn (it sets fprocess).
func streamHold(cfg config.Config) time.Duration {
	if cfg.String("fprocess", "") != "" {
		return defaultWatchdogStreamHold
	}
	return 0
}

// maxBuilds is how many builds run at once: max_builds, or max_inflight
// where no of-watchdog runs in front of build-fn. of-watchdog reads
// max_inflight from the same environment and would itself answer 429 to
// every request past it — /publickey, /results, health checks and the
// streaming clients build-fn would have queued — so under it that name
// is refused.
func maxBuilds(cfg config.Config) (int64, error) {
	if cfg.String("max_builds", "") != "" {
		return cfg.Int("max_builds", 0)
	}
	if cfg.String("max_inflight", "") != "" && cfg.String("fprocess", "") != "" {
		return 0, errors.New("setting max_inflight: of-watchdog reads it too and would refuse requests before build-fn sees them; set max_builds instead")
	}
	return cfg.Int("max_inflight", 0)
}

// newBuilders are the BuildKit replicas of buildkit_url, with the
// registry settings every build shares.
func newBuilders(cfg config.Config, tenants *tenant.Directory) ([]*buildkit.Builder, error) {
	var tls *buildkit.TLS
	if ca := cfg.String("buildkit_tls_ca", ""); ca != "" {
		tls = &buildkit.TLS{
			CA:         ca,
			Cert:       cfg.String("buildkit_tls_cert", ""),
			Key:        cfg.String("buildkit_tls_key", ""),
			ServerName: cfg.String("buildkit_tls_server_name", ""),
		}
	}
	insecure := cfg.List("insecure_registries", nil)
	if all, err := cfg.Bool("insecure", false); err != nil {
		return nil, err
	} else if all {
		insecure = append(insecure, "*")
	}
	// Every build reads the file again; one that is wrong at start is a
	// setting error.
	authPath := registryConfigPath(cfg)
	if _, err := buildkit.LoadAuth(authPath); err != nil {
		return nil, err
	}
	var frontends []string
	for _, image := range cfg.List("frontend_images", nil) {
		name := imageref.Normalize(image)
		if name == "" {
			return nil, fmt.Errorf("setting frontend_images: %q is not an image reference", image)
		}
		frontends = append(frontends, name)
	}
	cacheRepo := cfg.String("cache_repo", "")
	regs := buildkit.Registries{
		Insecure:  insecure,
		AuthPath:  authPath,
		CacheRepo: cacheRepo,
		Guarded:   guardedRegistries(insecure, cacheRepo, tenants),
		Frontends: frontends,
	}
	var builders []*buildkit.Builder
	for _, addr := range cfg.List("buildkit_url", []string{defaultBuildkitURL}) {
		builders = append(builders, buildkit.New(buildkit.Daemon{Address: addr, TLS: tls}, regs))
	}
	return builders, nil
}

// runner is one buildkitd, or a pool when buildkit_url lists several.
func runner(builders []*buildkit.Builder) pipeline.Runner {
	if len(builders) == 1 {
		return builders[0]
	}
	return buildkit.NewPool(builders...)
}

// guardedRegistries are those on which a tenant pulls only its own and the
// shared base images, as far as settings fixed at start name them: every
// registry the builder reaches specially (insecure), keeps its cache on,
// or serves tenants from. Those it holds credentials for are added by
// each build from its own read of config.json (buildkit.Registries).
// Elsewhere (public registries) pulls are not the builder's to grant.
func guardedRegistries(insecure []string, cacheRepo string, tenants *tenant.Directory) []string {
	var hosts []string
	for _, h := range insecure {
		if h != "*" {
			hosts = append(hosts, h)
		}
	}
	if cacheRepo != "" {
		hosts = append(hosts, imageref.Host(cacheRepo))
	}
	for _, t := range tenants.Tenants() {
		for _, prefix := range t.Pullable() {
			hosts = append(hosts, imageref.Host(prefix))
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// registryConfigPath is the Docker config.json with push credentials, read
// for every build: the registry_config_path setting, else the
// registry-config secret, else the Pro builder's
// /home/app/.docker/config.json.
func registryConfigPath(cfg config.Config) string {
	if p := cfg.String("registry_config_path", ""); p != "" {
		return p
	}
	if p := cfg.SecretPath("registry-config"); fileExists(p) {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".docker", "config.json")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

package function

import (
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/build"
	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/buildtar"
	"github.com/fnbuilder/fnbuilder/internal/config"
	"github.com/fnbuilder/fnbuilder/internal/deploy"
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/metrics"
	"github.com/fnbuilder/fnbuilder/internal/results"
	"github.com/fnbuilder/fnbuilder/internal/signature"
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
	// Request bodies up to spoolMemoryPerBody stay in memory, never on
	// disk, while all of them together stay under spoolMemoryTotal; the
	// rest go to work_dir.
	spoolMemoryPerBody = 4 << 20
	spoolMemoryTotal   = 32 << 20
)

// New builds build-fn's router from its settings.
func New(cfg config.Config) (http.Handler, error) {
	opts, err := Options(cfg)
	if err != nil {
		return nil, err
	}
	return Router(cfg, opts), nil
}

// Router routes build-fn's paths; tests call it to wrap the options.
func Router(cfg config.Config, opts handlers.BuildOptions) http.Handler {
	mux := http.NewServeMux()
	build := handlers.MakeBuildHandler(opts)
	publicKey := handlers.MakePublicKeyHandler(cfg.KeyRing)
	mux.HandleFunc("/build", build)
	mux.HandleFunc("/{$}", build) // the gateway's /function/build-fn and faas-cli <= 0.17.4
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
	var o handlers.BuildOptions
	var err error
	if o.DisableHMAC, err = cfg.Bool("disable_hmac", false); err != nil {
		return o, err
	}
	maxInflight, err := cfg.Int("max_inflight", 0)
	if err != nil {
		return o, err
	}
	if o.Timeout, err = cfg.Duration("build_timeout", defaultTimeout); err != nil {
		return o, err
	}
	if o.KeepAlive, err = cfg.Duration("keepalive_interval", defaultKeepAlive); err != nil {
		return o, err
	}
	if o.MaxBodyBytes, err = cfg.Int("max_request_bytes", defaultMaxBodyBytes); err != nil {
		return o, err
	}
	limits := buildtar.DefaultLimits()
	if limits.MaxBytes, err = cfg.Int("max_context_bytes", limits.MaxBytes); err != nil {
		return o, err
	}
	maxEntries, err := cfg.Int("max_context_entries", int64(limits.MaxEntries))
	if err != nil {
		return o, err
	}
	limits.MaxEntries = int(maxEntries)

	runner, err := newRunner(cfg)
	if err != nil {
		return o, err
	}
	retries, err := cfg.Int("build_retries", defaultRetries)
	if err != nil {
		return o, err
	}
	firstWait, err := cfg.Duration("retry_backoff", defaultRetryWait)
	if err != nil {
		return o, err
	}
	o.Retry = build.Backoff{Attempts: int(retries), First: firstWait, Max: 16 * firstWait}
	workDir := cfg.String("work_dir", os.TempDir())
	resultsTTL, err := cfg.Duration("results_ttl", defaultResultsTTL)
	if err != nil {
		return o, err
	}
	if o.Results, err = results.New(cfg.String("results_dir", filepath.Join(os.TempDir(), "fnbuilder-results")), resultsTTL); err != nil {
		return o, err
	}
	if o.MaxFetchBytes, err = cfg.Int("max_fetch_bytes", defaultMaxFetchBytes); err != nil {
		return o, err
	}
	o.Fetch = &http.Client{Timeout: o.Timeout}
	payloadPath := cfg.PayloadSecretPath()
	o.PayloadSecret = func() ([]byte, error) { return os.ReadFile(payloadPath) }
	o.SpoolDir = workDir
	o.SpoolMemory = signature.NewMemory(spoolMemoryPerBody, spoolMemoryTotal)
	o.Slots = handlers.NewSlots(int(maxInflight))
	o.Metrics = metrics.New()
	o.Pipeline = &build.Pipeline{
		Keys:          cfg.KeyRing,
		Runner:        build.Retrying{Next: runner, Backoff: o.Retry},
		Limits:        limits,
		Gateway:       func() (deploy.Gateway, error) { return deploy.NewGateway(cfg) },
		DeployBackoff: o.Retry,
	}
	return o, nil
}

// newRunner is one buildkitd, or a pool when buildkit_url lists several.
func newRunner(cfg config.Config) (build.Runner, error) {
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
	auth, err := buildkit.LoadAuth(registryConfigPath(cfg))
	if err != nil {
		return nil, err
	}
	regs := buildkit.Registries{Insecure: insecure, Auth: auth, CacheRepo: cfg.String("cache_repo", "")}
	addrs := cfg.List("buildkit_url", []string{defaultBuildkitURL})
	if len(addrs) == 1 {
		return buildkit.New(buildkit.Daemon{Address: addrs[0], TLS: tls}, regs), nil
	}
	var builders []*buildkit.Builder
	for _, addr := range addrs {
		builders = append(builders, buildkit.New(buildkit.Daemon{Address: addr, TLS: tls}, regs))
	}
	return buildkit.NewPool(builders...), nil
}

// registryConfigPath is the Docker config.json with push credentials: the
// registry_config_path setting, else the registry-config secret, else the
// Pro builder's /home/app/.docker/config.json.
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

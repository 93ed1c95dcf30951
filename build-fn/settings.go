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
	"github.com/fnbuilder/fnbuilder/internal/handlers"
	"github.com/fnbuilder/fnbuilder/internal/metrics"
)

// Defaults for the settings documented in README.md.
const (
	defaultBuildkitURL  = "unix:///run/buildkit/buildkitd.sock"
	defaultTimeout      = 30 * time.Minute
	defaultMaxBodyBytes = 512 << 20
	defaultKeepAlive    = 15 * time.Second
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

	runner, err := newBuilder(cfg)
	if err != nil {
		return o, err
	}
	workDir := cfg.String("work_dir", os.TempDir())
	payloadPath := cfg.PayloadSecretPath()
	o.PayloadSecret = func() ([]byte, error) { return os.ReadFile(payloadPath) }
	o.SpoolDir = workDir
	o.Slots = handlers.NewSlots(int(maxInflight))
	o.Metrics = metrics.New()
	o.Pipeline = &build.Pipeline{Keys: cfg.KeyRing, Runner: runner, Limits: limits, WorkDir: workDir}
	return o, nil
}

func newBuilder(cfg config.Config) (*buildkit.Builder, error) {
	daemon := buildkit.Daemon{Address: cfg.String("buildkit_url", defaultBuildkitURL)}
	if ca := cfg.String("buildkit_tls_ca", ""); ca != "" {
		daemon.TLS = &buildkit.TLS{
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
	return buildkit.New(daemon, buildkit.Registries{Insecure: insecure, Auth: auth}), nil
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

package provider

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/openfaas/faas-provider/auth"
	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/provider/network"
	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
	"github.com/fnbuilder/fnbuilder/internal/provider/state"
	"github.com/fnbuilder/fnbuilder/internal/provider/supervisor"
)

// Config is everything the provider is told at start-up.
type Config struct {
	// StateDir holds deployments, secrets (unless SecretsDir is set),
	// function logs, CNI state and per-function run files.
	StateDir string
	// SecretsDir holds the secret files; "" means StateDir/secrets.
	SecretsDir string

	ContainerdSocket    string
	ContainerdNamespace string
	// InsecureRegistries are pulled from over plain HTTP ("127.0.0.1:5000").
	InsecureRegistries []string
	// RegistryCA is a PEM file of CA certificates trusted, beside the
	// system's, for pulls over HTTPS; RegistryAuth a Docker config.json
	// with pull credentials. "" means none.
	RegistryCA, RegistryAuth string

	CNIBinDir   string
	Bridge      string
	Subnet      netip.Prefix
	Gateway     netip.Addr
	NetNSPrefix string
	ChainPrefix string

	// UpstreamTimeout bounds one function invocation through the proxy.
	UpstreamTimeout time.Duration
	// ReconcileInterval is how often dead tasks are looked for and restarted.
	ReconcileInterval time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL when stopping a task.
	StopGrace time.Duration

	// BasicAuth, when set, protects /system/* and /healthz.
	BasicAuth *auth.BasicAuthCredentials

	Version, SHA string
}

// DefaultConfig is the configuration fnb-provider starts from.
func DefaultConfig() Config {
	return Config{
		StateDir:            "/var/lib/fnbuilder-provider",
		ContainerdSocket:    "/run/fnbuilder/containerd/containerd.sock",
		ContainerdNamespace: "fnbuilder",
		InsecureRegistries:  []string{"127.0.0.1:5000", "localhost:5000"},
		CNIBinDir:           "/usr/lib/cni",
		Bridge:              "fnb0",
		Subnet:              netip.MustParsePrefix("10.62.0.0/24"),
		Gateway:             netip.MustParseAddr("10.62.0.1"),
		NetNSPrefix:         "fnb-",
		ChainPrefix:         "FNB",
		UpstreamTimeout:     60 * time.Second,
		ReconcileInterval:   10 * time.Second,
		StopGrace:           5 * time.Second,
		Version:             "dev",
	}
}

func (c Config) networkConfig() network.Config {
	return network.Config{
		Bridge:      c.Bridge,
		Subnet:      c.Subnet,
		Gateway:     c.Gateway,
		CNIBinDir:   c.CNIBinDir,
		StateDir:    filepath.Join(c.StateDir, "cni"),
		NetNSPrefix: c.NetNSPrefix,
		ChainPrefix: c.ChainPrefix,
		NetworkName: "fnbuilder",
	}
}

func (c Config) runtimeOptions() runtime.Options {
	return runtime.Options{
		Socket:             c.ContainerdSocket,
		Namespace:          c.ContainerdNamespace,
		InsecureRegistries: c.InsecureRegistries,
		RegistryCA:         c.RegistryCA,
		RegistryAuth:       c.RegistryAuth,
		LogDir:             c.logDir(),
	}
}

func (c Config) logDir() string { return filepath.Join(c.StateDir, "logs") }

// Provider is a running provider: its functions reconciled, its handler
// ready to serve.
type Provider struct {
	cfg     Config
	unlock  func()
	rt      *runtime.Runtime
	sup     *supervisor.Supervisor
	handler http.Handler

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// Start connects to containerd, sets up the bridge and firewall, brings
// every recorded function back to its desired state (adopting running
// tasks) and starts the periodic reconcile. Functions that cannot be
// brought back are logged, not fatal.
func Start(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("provider: state dir is required")
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 60 * time.Second
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = 10 * time.Second
	}
	if err := network.CheckTools(); err != nil {
		return nil, err
	}
	nw, err := network.New(cfg.networkConfig())
	if err != nil {
		return nil, err
	}
	unlock, err := state.Lock(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	store, err := state.Open(cfg.StateDir, cfg.SecretsDir)
	if err != nil {
		unlock()
		return nil, err
	}
	rt, err := runtime.Connect(ctx, cfg.runtimeOptions())
	if err != nil {
		unlock()
		return nil, err
	}
	sup := supervisor.New(store, rt, nw, supervisor.Options{
		Namespace: Namespace,
		StopGrace: cfg.StopGrace,
	})
	if err := nw.Setup(ctx); err != nil {
		rt.Close()
		unlock()
		return nil, err
	}
	if err := sup.Reconcile(ctx); err != nil {
		log.Printf("reconcile at start: %v", err)
	}

	p := &Provider{cfg: cfg, unlock: unlock, rt: rt, sup: sup}
	p.handler = NewRouter(types.FaaSHandlers{
		FunctionProxy:   MakeProxyHandler(sup, cfg.UpstreamTimeout),
		FunctionLister:  MakeFunctionListHandler(sup),
		DeployFunction:  MakeDeployHandler(sup),
		UpdateFunction:  MakeUpdateHandler(sup),
		DeleteFunction:  MakeDeleteHandler(sup),
		FunctionStatus:  MakeFunctionGetHandler(sup),
		ScaleFunction:   MakeReplicasHandler(sup),
		Secrets:         MakeSecretsHandler(store, sup),
		Logs:            MakeLogsHandler(cfg.logDir()),
		ListNamespaces:  MakeNamespacesHandler(),
		MutateNamespace: MakeNamespaceHandler(),
		Health:          MakeHealthHandler(rt),
		Info:            MakeInfoHandler(cfg.Version, cfg.SHA),
	}, cfg.BasicAuth)

	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p.stop = stop
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		sup.Run(loopCtx, cfg.ReconcileInterval)
	}()
	return p, nil
}

// Handler is the provider's HTTP API.
func (p *Provider) Handler() http.Handler { return p.handler }

// Close stops the periodic reconcile and lets go of containerd. The
// functions keep running; a later Start adopts them.
func (p *Provider) Close() error {
	p.stop()
	p.wg.Wait()
	err := p.rt.Close()
	p.unlock()
	return err
}

// Listen opens a TCP listener on each host at port.
func Listen(hosts []string, port int) ([]net.Listener, error) {
	var ls []net.Listener
	for _, h := range hosts {
		l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			for _, o := range ls {
				o.Close()
			}
			return nil, fmt.Errorf("listen: %w", err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Serve answers on the listeners until ctx ends, then shuts down
// gracefully. It returns the first listener failure, or nil.
func (p *Provider) Serve(ctx context.Context, listeners []net.Listener) error {
	srv := &http.Server{
		Handler:           p.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       p.cfg.UpstreamTimeout,
		WriteTimeout:      p.cfg.UpstreamTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		go func(l net.Listener) {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(l)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil && err == nil {
		err = serr
	}
	return err
}

// Teardown removes everything the provider made on the host: tasks,
// containers and images (through containerd), network namespaces, CNI
// state, the bridge, the iptables chains and per-function run files. With
// purge the deployment records, secrets and logs go too. It goes on past
// errors, and is safe to run again. When containerd's socket does not exist
// there is nothing to remove there, and that part is skipped. It refuses to
// run while a provider uses the state dir.
func Teardown(ctx context.Context, cfg Config, purge bool) error {
	var errs []error
	nw, err := network.New(cfg.networkConfig())
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg.StateDir); err == nil {
		unlock, err := state.Lock(cfg.StateDir)
		if err != nil {
			return fmt.Errorf("%w: stop it first", err)
		}
		defer unlock()
	}
	store := state.At(cfg.StateDir, cfg.SecretsDir)
	var rt *runtime.Runtime
	if _, err := os.Stat(cfg.ContainerdSocket); errors.Is(err, fs.ErrNotExist) {
		log.Printf("teardown: %s does not exist: no containerd to remove containers from", cfg.ContainerdSocket)
	} else {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		opts := cfg.runtimeOptions()
		opts.LogDir = "" // starts no task: needs no log dir
		rt, err = runtime.Connect(cctx, opts)
		cancel()
		if err != nil {
			errs = append(errs, err)
			rt = nil
		} else {
			defer rt.Close()
		}
	}
	if err := supervisor.Teardown(ctx, store, rt, nw, cfg.StopGrace, purge); err != nil {
		errs = append(errs, err)
	}
	if purge {
		// Only what is left empty: the state dir may hold the containerd
		// root of `fnb-provider containerd`.
		os.Remove(filepath.Join(cfg.StateDir, "provider.lock"))
		os.Remove(cfg.StateDir)
	}
	return errors.Join(errs...)
}

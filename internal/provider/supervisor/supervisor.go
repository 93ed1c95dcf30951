// Package supervisor keeps each deployed function's container in the state
// its record asks for: it ties the state store, the network and the
// containerd runtime together for deploy, update, scale, delete, the
// reconcile at start-up (and every few seconds after), and teardown.
// Each function has at most one replica.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/provider/network"
	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
	"github.com/fnbuilder/fnbuilder/internal/provider/state"
)

var (
	// ErrNotFound: no such function (or secret).
	ErrNotFound = errors.New("not found")
	// ErrExists: the function (or secret) already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: the request cannot be carried out as given.
	ErrInvalid = errors.New("invalid request")
	// ErrInUse: a secret is still mounted by functions.
	ErrInUse = errors.New("in use")
)

// Options configure a Supervisor.
type Options struct {
	// Namespace is the one OpenFaaS namespace functions live in.
	Namespace string
	// StopGrace is how long a task gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// ProbeTimeout bounds one readiness probe.
	ProbeTimeout time.Duration
	// Logf receives what the supervisor does on its own (reconcile).
	Logf func(format string, args ...any)
}

// Supervisor owns the functions.
type Supervisor struct {
	opts   Options
	store  *state.Store
	rt     *runtime.Runtime
	net    *network.Network
	runDir string

	locks sync.Map // function name → *sync.Mutex

	mu        sync.RWMutex
	endpoints map[string]netip.Addr // functions whose task was started
	probes    map[string]probe

	prober *http.Client
}

type probe struct {
	at    time.Time
	ready bool
}

// New builds a Supervisor; it changes nothing until Setup or a request.
func New(store *state.Store, rt *runtime.Runtime, nw *network.Network, opts Options) *Supervisor {
	if opts.StopGrace <= 0 {
		opts.StopGrace = 5 * time.Second
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = time.Second
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	return &Supervisor{
		opts:      opts,
		store:     store,
		rt:        rt,
		net:       nw,
		runDir:    filepath.Join(store.Dir(), "run"),
		endpoints: map[string]netip.Addr{},
		probes:    map[string]probe{},
		prober: &http.Client{
			Timeout: opts.ProbeTimeout,
			Transport: &http.Transport{
				Proxy:             nil, // functions are never behind a proxy
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (s *Supervisor) lock(name string) func() {
	m, _ := s.locks.LoadOrStore(name, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func (s *Supervisor) setEndpoint(name string, ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ip.IsValid() {
		s.endpoints[name] = ip
	} else {
		delete(s.endpoints, name)
	}
	delete(s.probes, name)
}

// Run reconciles every interval until ctx ends: functions whose task died
// are started again.
func (s *Supervisor) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.reconcile(ctx, true); err != nil && ctx.Err() == nil {
				s.opts.Logf("reconcile: %v", err)
			}
		}
	}
}

// Reconcile brings every recorded function to its desired state (adopting
// running tasks, re-creating missing namespaces and containers) and removes
// containers and namespaces that belong to no record.
func (s *Supervisor) Reconcile(ctx context.Context) error {
	return s.reconcile(ctx, false)
}

// reconcile is Reconcile; light skips functions whose task runs where it
// was started (the periodic pass: one containerd call per function, no
// CNI CHECK).
func (s *Supervisor) reconcile(ctx context.Context, light bool) error {
	recs, err := s.store.Functions()
	if err != nil {
		return err
	}
	var errs []error
	known := map[string]bool{}
	for _, rec := range recs {
		known[rec.Name()] = true
		if err := s.reconcileOne(ctx, rec.Name(), light); err != nil {
			errs = append(errs, err)
		}
	}
	containers, err := s.rt.Containers(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for id, fn := range containers {
		if !known[fn] {
			errs = append(errs, s.removeOrphan(ctx, fn, id))
		}
	}
	nss, err := s.net.NetNSNames()
	if err != nil {
		errs = append(errs, err)
	}
	for _, fn := range nss {
		if !known[fn] {
			errs = append(errs, s.removeOrphan(ctx, fn, ""))
		}
	}
	return errors.Join(errs...)
}

func (s *Supervisor) reconcileOne(ctx context.Context, name string, light bool) error {
	defer s.lock(name)()
	rec, err := s.store.Function(name)
	if errors.Is(err, state.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	if light && s.settled(ctx, rec) {
		return nil
	}
	if err := s.converge(ctx, &rec); err != nil {
		return fmt.Errorf("function %s: %w", name, err)
	}
	return nil
}

func (s *Supervisor) removeOrphan(ctx context.Context, fn, containerID string) error {
	defer s.lock(fn)()
	if _, err := s.store.Function(fn); err == nil {
		return nil // deployed meanwhile
	}
	s.opts.Logf("removing leftovers of function %s (no deployment record)", fn)
	var errs []error
	if containerID != "" {
		errs = append(errs, s.rt.Remove(ctx, containerID, s.opts.StopGrace))
	}
	errs = append(errs, s.net.Detach(ctx, fn), os.RemoveAll(filepath.Join(s.runDir, fn)))
	s.setEndpoint(fn, netip.Addr{})
	return errors.Join(errs...)
}

// settled reports whether rec needs no work: scaled to zero with no task
// endpoint, or a running task that this supervisor started or adopted.
func (s *Supervisor) settled(ctx context.Context, rec state.Function) bool {
	s.mu.RLock()
	_, started := s.endpoints[rec.Name()]
	s.mu.RUnlock()
	if rec.Replicas == 0 {
		return !started
	}
	ts, err := s.rt.Task(ctx, rec.Name())
	return started && err == nil && ts.Running
}

// converge makes the runtime match rec; the caller holds rec's lock.
func (s *Supervisor) converge(ctx context.Context, rec *state.Function) error {
	name := rec.Name()
	exists, err := s.rt.Exists(ctx, name)
	if err != nil {
		return err
	}
	if rec.Replicas == 0 {
		// Scaled to zero: no task; container and namespace stay for a quick
		// scale-up with the same address.
		s.setEndpoint(name, netip.Addr{})
		return s.rt.Stop(ctx, name, s.opts.StopGrace)
	}
	ip, fresh, err := s.net.Attach(ctx, name)
	if err != nil {
		return err
	}
	if fresh && exists {
		// The task (if any) still sits in the namespace that was replaced.
		if err := s.rt.Stop(ctx, name, s.opts.StopGrace); err != nil {
			return err
		}
	}
	if rec.IP != ip.String() {
		rec.IP = ip.String()
		if err := s.store.SaveFunction(*rec); err != nil {
			return err
		}
	}
	hosts, err := s.writeHosts(name, ip)
	if err != nil {
		return err
	}
	if !exists {
		spec, err := containerSpec(rec.Deployment, s.net.NetNSPath(name), hosts, s.store.SecretPath)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		for _, sec := range rec.Deployment.Secrets {
			if !s.store.SecretExists(sec) {
				return fmt.Errorf("%w: secret %s does not exist", ErrInvalid, sec)
			}
		}
		if err := s.rt.EnsureImage(ctx, spec.Image); err != nil {
			return err
		}
		if err := s.rt.Create(ctx, spec); err != nil {
			return err
		}
	}
	if err := s.rt.Start(ctx, name); err != nil {
		return err
	}
	s.setEndpoint(name, ip)
	return nil
}

// writeHosts writes the /etc/hosts the function's container mounts.
func (s *Supervisor) writeHosts(name string, ip netip.Addr) (string, error) {
	dir := filepath.Join(s.runDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("hosts file: %w", err)
	}
	p := filepath.Join(dir, "hosts")
	content := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", ip, name)
	// Rewritten in place: the container bind-mounts this inode.
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return "", fmt.Errorf("hosts file: %w", err)
	}
	return p, nil
}

// pull fetches an image; a reference that does not parse or an image the
// registry does not have is the caller's mistake.
func (s *Supervisor) pull(ctx context.Context, ref string) error {
	err := s.rt.Pull(ctx, ref)
	if errors.Is(err, runtime.ErrImageNotFound) || errors.Is(err, runtime.ErrBadReference) {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return err
}

func (s *Supervisor) checkSecrets(d types.FunctionDeployment) error {
	for _, sec := range d.Secrets {
		if !s.store.SecretExists(sec) {
			return fmt.Errorf("%w: secret %q does not exist (create it with POST /system/secrets first)", ErrInvalid, sec)
		}
	}
	if _, err := containerSpec(d, "", "", s.store.SecretPath); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// Deploy creates a new function with one replica. It pulls the image and
// starts the task before it returns; readiness follows on its own. On
// failure nothing of the function is left.
func (s *Supervisor) Deploy(ctx context.Context, d types.FunctionDeployment) error {
	defer s.lock(d.Service)()
	if _, err := s.store.Function(d.Service); err == nil {
		return fmt.Errorf("function %s: %w", d.Service, ErrExists)
	}
	if err := s.checkSecrets(d); err != nil {
		return err
	}
	if err := s.pull(ctx, d.Image); err != nil {
		return err
	}
	// Leftovers from a crash are replaced, not adopted.
	if err := s.rt.Remove(ctx, d.Service, s.opts.StopGrace); err != nil {
		return err
	}
	rec := state.Function{Deployment: d, Replicas: 1, CreatedAt: time.Now().UTC()}
	if err := s.store.SaveFunction(rec); err != nil {
		return err
	}
	if err := s.converge(ctx, &rec); err != nil {
		s.opts.Logf("deploy %s failed, rolling back: %v", d.Service, err)
		cleanup := context.WithoutCancel(ctx)
		s.rt.Remove(cleanup, d.Service, s.opts.StopGrace)
		s.net.Detach(cleanup, d.Service)
		s.store.DeleteFunction(d.Service)
		os.RemoveAll(filepath.Join(s.runDir, d.Service))
		s.setEndpoint(d.Service, netip.Addr{})
		return err
	}
	return nil
}

// Update replaces an existing function's container with one built from d,
// keeping its replica count, address and creation time. The function is
// down between the old task's stop and the new one's start.
func (s *Supervisor) Update(ctx context.Context, d types.FunctionDeployment) error {
	defer s.lock(d.Service)()
	rec, err := s.store.Function(d.Service)
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("function %s: %w", d.Service, ErrNotFound)
	}
	if err != nil {
		return err
	}
	if err := s.checkSecrets(d); err != nil {
		return err
	}
	if err := s.pull(ctx, d.Image); err != nil {
		return err
	}
	s.setEndpoint(d.Service, netip.Addr{})
	if err := s.rt.Remove(ctx, d.Service, s.opts.StopGrace); err != nil {
		return err
	}
	rec.Deployment = d
	if err := s.store.SaveFunction(rec); err != nil {
		return err
	}
	if rec.Replicas == 0 {
		return nil // created on scale-up
	}
	return s.converge(ctx, &rec)
}

// Delete stops and removes a function and everything made for it.
func (s *Supervisor) Delete(ctx context.Context, name string) error {
	defer s.lock(name)()
	if _, err := s.store.Function(name); errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("function %s: %w", name, ErrNotFound)
	} else if err != nil {
		return err
	}
	s.setEndpoint(name, netip.Addr{})
	if err := s.rt.Remove(ctx, name, s.opts.StopGrace); err != nil {
		return err
	}
	if err := s.net.Detach(ctx, name); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(s.runDir, name)); err != nil {
		return fmt.Errorf("remove run dir of %s: %w", name, err)
	}
	return s.store.DeleteFunction(name)
}

// Scale sets the desired replicas. More than one is treated as one: this
// provider runs a single task per function.
func (s *Supervisor) Scale(ctx context.Context, name string, replicas uint64) error {
	defer s.lock(name)()
	rec, err := s.store.Function(name)
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return err
	}
	if replicas > 1 {
		replicas = 1
	}
	if rec.Replicas != replicas {
		rec.Replicas = replicas
		if err := s.store.SaveFunction(rec); err != nil {
			return err
		}
	}
	return s.converge(ctx, &rec)
}

// List returns the status of every function.
func (s *Supervisor) List(ctx context.Context) ([]types.FunctionStatus, error) {
	recs, err := s.store.Functions()
	if err != nil {
		return nil, err
	}
	out := make([]types.FunctionStatus, 0, len(recs))
	for _, rec := range recs {
		out = append(out, s.status(ctx, rec))
	}
	return out, nil
}

// Get returns one function's status.
func (s *Supervisor) Get(ctx context.Context, name string) (types.FunctionStatus, error) {
	rec, err := s.store.Function(name)
	if errors.Is(err, state.ErrNotFound) {
		return types.FunctionStatus{}, fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return types.FunctionStatus{}, err
	}
	return s.status(ctx, rec), nil
}

func (s *Supervisor) status(ctx context.Context, rec state.Function) types.FunctionStatus {
	d := rec.Deployment
	st := types.FunctionStatus{
		Name:                   d.Service,
		Image:                  d.Image,
		Namespace:              s.opts.Namespace,
		EnvProcess:             d.EnvProcess,
		EnvVars:                d.EnvVars,
		Constraints:            d.Constraints,
		Secrets:                d.Secrets,
		Labels:                 d.Labels,
		Annotations:            d.Annotations,
		Limits:                 d.Limits,
		Requests:               d.Requests,
		ReadOnlyRootFilesystem: d.ReadOnlyRootFilesystem,
		Replicas:               rec.Replicas,
		CreatedAt:              rec.CreatedAt,
	}
	if rec.Replicas > 0 && s.ready(ctx, rec.Name()) {
		st.AvailableReplicas = 1
	}
	return st
}

// ready reports whether the function's task runs and answers: an HTTP
// GET /_/health that gets any response below 500 (the watchdogs answer
// 503 until their function is up), or, for servers that do not speak
// HTTP there, a TCP connect to :8080. Results are cached for a second.
func (s *Supervisor) ready(ctx context.Context, name string) bool {
	s.mu.RLock()
	ip, ok := s.endpoints[name]
	p, cached := s.probes[name]
	s.mu.RUnlock()
	if !ok {
		return false
	}
	if cached && time.Since(p.at) < time.Second {
		return p.ready
	}
	ts, err := s.rt.Task(ctx, name)
	ready := err == nil && ts.Running && s.probe(ctx, ip)
	s.mu.Lock()
	if cur, ok := s.endpoints[name]; ok && cur == ip {
		s.probes[name] = probe{at: time.Now(), ready: ready}
	}
	s.mu.Unlock()
	return ready
}

func (s *Supervisor) probe(ctx context.Context, ip netip.Addr) bool {
	addr := netip.AddrPortFrom(ip, 8080).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_/health", nil)
	if err != nil {
		return false
	}
	resp, err := s.prober.Do(req)
	if err == nil {
		resp.Body.Close()
		return resp.StatusCode < 500
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false // nothing listens
	}
	// Something listens but did not answer HTTP.
	c, err := net.DialTimeout("tcp", addr, s.opts.ProbeTimeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Resolve returns the address of a function whose task was started.
func (s *Supervisor) Resolve(name string) (netip.Addr, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ip, ok := s.endpoints[name]
	if !ok {
		return netip.Addr{}, fmt.Errorf("function %s: no running replica: %w", name, ErrNotFound)
	}
	return ip, nil
}

// SecretUsers lists the functions that mount secret name.
func (s *Supervisor) SecretUsers(name string) ([]string, error) {
	recs, err := s.store.Functions()
	if err != nil {
		return nil, err
	}
	var users []string
	for _, rec := range recs {
		for _, sec := range rec.Deployment.Secrets {
			if sec == name {
				users = append(users, rec.Name())
				break
			}
		}
	}
	return users, nil
}

// Teardown stops and deletes every container, image and namespace, the
// bridge, the iptables chains and the CNI state, and the per-function run
// files. The deployment records and secrets stay (a later start re-creates
// the functions) unless purge is set. It continues past errors and can run
// any number of times; rt may be nil when containerd is not reachable.
func Teardown(ctx context.Context, store *state.Store, rt *runtime.Runtime, nw *network.Network, grace time.Duration, purge bool) error {
	var errs []error
	if rt != nil {
		if err := rt.RemoveAll(ctx, grace); err != nil {
			errs = append(errs, err)
		}
	}
	if err := nw.Teardown(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(filepath.Join(store.Dir(), "run")); err != nil {
		errs = append(errs, err)
	}
	if purge {
		for _, d := range []string{filepath.Join(store.Dir(), "functions"), store.SecretsDir(), filepath.Join(store.Dir(), "logs")} {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

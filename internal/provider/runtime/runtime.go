// Package runtime runs function images as containerd containers: it pulls
// (over plain HTTP for the registries named insecure), creates one container
// per function from an explicit Spec, and starts and stops its single task.
// It knows nothing about HTTP or OpenFaaS requests.
package runtime

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/cli/cli/config/configfile"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FunctionLabel marks the containers this package created; its value is the
// function name.
const FunctionLabel = "com.fnbuilder.function"

var (
	// ErrNotFound is returned for a container that does not exist.
	ErrNotFound = errors.New("container not found")
	// ErrImageNotFound is returned when the registry does not have an image.
	ErrImageNotFound = errors.New("image not found")
	// ErrBadReference is returned for an image reference that does not parse.
	ErrBadReference = errors.New("invalid image reference")
)

// Normalize turns an image reference as users write it ("alpine",
// "127.0.0.1:5000/fn/hello") into the full form containerd stores
// ("docker.io/library/alpine:latest", "127.0.0.1:5000/fn/hello:latest").
func Normalize(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrBadReference, ref, err)
	}
	return named.String(), nil
}

// Options configure a Runtime.
type Options struct {
	// Socket is containerd's gRPC socket path.
	Socket string
	// Namespace is the containerd namespace all containers live in.
	Namespace string
	// InsecureRegistries are registry hosts ("127.0.0.1:5000") pulled from
	// over plain HTTP.
	InsecureRegistries []string
	// RegistryCA is a PEM file of CAs trusted beside the system's over
	// HTTPS; RegistryAuth a Docker config.json with pull credentials.
	RegistryCA, RegistryAuth string
	// LogDir receives one "<id>.log" per container with its stdout and stderr.
	LogDir string
}

// Runtime is a connection to containerd scoped to one namespace.
type Runtime struct {
	client   *containerd.Client
	ns       string
	insecure []string
	hosts    []docker.RegistryOpt // CA and credentials of the registries
	logDir   string
}

// Connect dials containerd and checks that it answers.
func Connect(ctx context.Context, opts Options) (*Runtime, error) {
	if opts.Namespace == "" {
		return nil, errors.New("runtime: empty containerd namespace")
	}
	client, err := containerd.New(opts.Socket, containerd.WithDefaultNamespace(opts.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", opts.Socket, err)
	}
	r := &Runtime{client: client, ns: opts.Namespace, insecure: opts.InsecureRegistries, logDir: opts.LogDir}
	if r.hosts, err = registryOpts(opts); err != nil {
		client.Close()
		return nil, err
	}
	if _, err := r.Version(ctx); err != nil {
		client.Close()
		return nil, err
	}
	if r.logDir != "" {
		if err := os.MkdirAll(r.logDir, 0o700); err != nil {
			client.Close()
			return nil, fmt.Errorf("create log dir: %w", err)
		}
	}
	return r, nil
}

// Close releases the connection; containers and tasks keep running.
func (r *Runtime) Close() error { return r.client.Close() }

// Version returns containerd's version string.
func (r *Runtime) Version(ctx context.Context) (string, error) {
	v, err := r.client.Version(r.with(ctx))
	if err != nil {
		return "", fmt.Errorf("containerd version: %w", err)
	}
	return v.Version, nil
}

func (r *Runtime) with(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.ns)
}

func (r *Runtime) resolver() remotes.Resolver {
	plain := func(host string) (bool, error) { return slices.Contains(r.insecure, host), nil }
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(append(r.hosts, docker.WithPlainHTTP(plain))...),
	})
}

// registryOpts trust opts.RegistryCA beside the system's CAs and log in
// with the credentials of opts.RegistryAuth, both read once at start.
func registryOpts(opts Options) ([]docker.RegistryOpt, error) {
	var out []docker.RegistryOpt
	var authOpts []docker.AuthorizerOpt
	if opts.RegistryCA != "" {
		pem, err := os.ReadFile(opts.RegistryCA)
		if err != nil {
			return nil, fmt.Errorf("registry CA: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry CA %s: no PEM certificate", opts.RegistryCA)
		}
		t := docker.DefaultHTTPTransport(nil)
		t.TLSClientConfig = &tls.Config{RootCAs: roots}
		c := &http.Client{Transport: t}
		out, authOpts = append(out, docker.WithClient(c)), append(authOpts, docker.WithAuthClient(c))
	}
	if opts.RegistryAuth != "" {
		f, err := os.Open(opts.RegistryAuth)
		if err != nil {
			return nil, fmt.Errorf("registry credentials: %w", err)
		}
		defer f.Close()
		cfg := configfile.New(opts.RegistryAuth)
		if err := cfg.LoadFromReader(f); err != nil {
			return nil, fmt.Errorf("registry credentials %s: %w", opts.RegistryAuth, err)
		}
		creds := func(host string) (string, string, error) {
			a, err := cfg.GetAuthConfig(host)
			return a.Username, a.Password, err
		}
		out = append(out, docker.WithAuthorizer(docker.NewDockerAuthorizer(append(authOpts, docker.WithAuthCreds(creds))...)))
	}
	return out, nil
}

// Pull fetches and unpacks ref, replacing any earlier copy of the same name.
func (r *Runtime) Pull(ctx context.Context, ref string) error {
	ctx = r.with(ctx)
	full, err := Normalize(ref)
	if err != nil {
		return err
	}
	if _, err := r.client.Pull(ctx, full, containerd.WithPullUnpack, containerd.WithResolver(r.resolver())); err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("pull %s: %w: %v", full, ErrImageNotFound, err)
		}
		return fmt.Errorf("pull %s: %w", full, err)
	}
	return nil
}

// EnsureImage pulls ref unless it is already present and unpacked.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	full, err := Normalize(ref)
	if err != nil {
		return err
	}
	img, err := r.client.GetImage(r.with(ctx), full)
	if err == nil {
		if ok, err := img.IsUnpacked(r.with(ctx), ""); err == nil && ok {
			return nil
		}
	}
	return r.Pull(ctx, ref)
}

// Mount is a bind mount from the host into the container.
type Mount struct {
	Source, Destination string
	ReadOnly            bool
}

// Spec is everything the runtime needs to create a function's container.
type Spec struct {
	ID       string
	Image    string
	Hostname string
	// Env entries ("K=V") are added to, and override, the image's own.
	Env []string
	// NetNS is the path of the network namespace to join.
	NetNS  string
	Mounts []Mount
	// MemoryLimit in bytes; 0 for none.
	MemoryLimit int64
	// CPUQuota and CPUPeriod (microseconds) cap CPU time; 0 for none.
	CPUQuota  int64
	CPUPeriod uint64
	// ReadOnlyRoot mounts the root filesystem read-only, with a tmpfs on /tmp.
	ReadOnlyRoot bool
	// Labels are containerd container labels (not OCI annotations).
	Labels map[string]string
}

// Create creates the container for spec; the image must be present
// (EnsureImage). An existing container with the same ID is an error.
func (r *Runtime) Create(ctx context.Context, spec Spec) error {
	ctx = r.with(ctx)
	full, err := Normalize(spec.Image)
	if err != nil {
		return err
	}
	img, err := r.client.GetImage(ctx, full)
	if err != nil {
		return fmt.Errorf("image %s: %w", spec.Image, err)
	}
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithEnv(spec.Env),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: spec.NetNS}),
	}
	if spec.Hostname != "" {
		opts = append(opts, oci.WithHostname(spec.Hostname))
	}
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		o := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			o = append(o, "ro")
		} else {
			o = append(o, "rw")
		}
		mounts = append(mounts, specs.Mount{Type: "bind", Source: m.Source, Destination: m.Destination, Options: o})
	}
	if spec.ReadOnlyRoot {
		opts = append(opts, oci.WithRootFSReadonly())
		mounts = append(mounts, specs.Mount{Type: "tmpfs", Source: "tmpfs", Destination: "/tmp",
			Options: []string{"nosuid", "nodev", "mode=1777", "size=64m"}})
	}
	if len(mounts) > 0 {
		opts = append(opts, oci.WithMounts(mounts))
	}
	if spec.MemoryLimit > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(spec.MemoryLimit)))
	}
	if spec.CPUQuota > 0 {
		opts = append(opts, oci.WithCPUCFS(spec.CPUQuota, spec.CPUPeriod))
	}
	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	_, err = r.client.NewContainer(ctx, spec.ID,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(spec.ID+"-rootfs", img),
		containerd.WithNewSpec(opts...),
		containerd.WithContainerLabels(labels),
	)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	return nil
}

// Exists reports whether container id exists.
func (r *Runtime) Exists(ctx context.Context, id string) (bool, error) {
	_, err := r.load(r.with(ctx), id)
	return err == nil, ignoreNotFound(err)
}

// ignoreNotFound is err unless it says there is no such container.
func ignoreNotFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// load loads container id; ErrNotFound when there is none.
func (r *Runtime) load(ctx context.Context, id string) (containerd.Container, error) {
	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	return c, nil
}

// TaskState is what is known of a container's task.
type TaskState struct {
	Running bool
	Pid     uint32
	// Status is containerd's status ("running", "stopped", …) or "" without a task.
	Status string
}

// Task returns the state of container id's task. A missing container is
// ErrNotFound; a container without a task is a zero TaskState.
func (r *Runtime) Task(ctx context.Context, id string) (TaskState, error) {
	ctx = r.with(ctx)
	c, err := r.load(ctx, id)
	if err != nil {
		return TaskState{}, err
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return TaskState{}, nil
	}
	if err != nil {
		return TaskState{}, fmt.Errorf("task of %s: %w", id, err)
	}
	st, err := t.Status(ctx)
	if err != nil {
		return TaskState{}, fmt.Errorf("task status of %s: %w", id, err)
	}
	return TaskState{Running: st.Status == containerd.Running, Pid: t.Pid(), Status: string(st.Status)}, nil
}

// Start starts container id's task, first removing a task that has exited.
// A running task is left alone.
func (r *Runtime) Start(ctx context.Context, id string) error {
	ctx = r.with(ctx)
	c, err := r.load(ctx, id)
	if err != nil {
		return err
	}
	if t, err := c.Task(ctx, nil); err == nil {
		st, err := t.Status(ctx)
		if err == nil && (st.Status == containerd.Running || st.Status == containerd.Paused) {
			return nil
		}
		if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete exited task of %s: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("task of %s: %w", id, err)
	}
	creator := cio.NullIO
	if r.logDir != "" {
		creator = cio.LogFile(filepath.Join(r.logDir, id+".log"))
	}
	t, err := c.NewTask(ctx, creator)
	if err != nil {
		return fmt.Errorf("create task of %s: %w", id, err)
	}
	if err := t.Start(ctx); err != nil {
		t.Delete(ctx, containerd.WithProcessKill)
		return fmt.Errorf("start task of %s: %w", id, err)
	}
	return nil
}

// Stop ends container id's task: SIGTERM, then SIGKILL after grace. A
// container without a task, or no container at all, is not an error.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	ctx = r.with(ctx)
	c, err := r.load(ctx, id)
	if c == nil {
		return ignoreNotFound(err)
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("task of %s: %w", id, err)
	}
	st, err := t.Status(ctx)
	if err != nil {
		return fmt.Errorf("task status of %s: %w", id, err)
	}
	if st.Status == containerd.Running || st.Status == containerd.Paused {
		exited, err := t.Wait(ctx)
		if err != nil {
			return fmt.Errorf("wait for task of %s: %w", id, err)
		}
		if err := t.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("SIGTERM task of %s: %w", id, err)
		}
		select {
		case <-exited:
		case <-time.After(grace):
			if err := t.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("SIGKILL task of %s: %w", id, err)
			}
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("task of %s did not exit after SIGKILL", id)
			case <-ctx.Done():
				return ctx.Err()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task of %s: %w", id, err)
	}
	return nil
}

// Remove stops the task and deletes container id with its snapshot.
// A missing container is not an error.
func (r *Runtime) Remove(ctx context.Context, id string, grace time.Duration) error {
	if err := r.Stop(ctx, id, grace); err != nil {
		return err
	}
	ctx = r.with(ctx)
	c, err := r.load(ctx, id)
	if c == nil {
		return ignoreNotFound(err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}

// Containers lists the IDs of the containers this package created, by
// function name.
func (r *Runtime) Containers(ctx context.Context) (map[string]string, error) {
	ctx = r.with(ctx)
	cs, err := r.client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := map[string]string{}
	for _, c := range cs {
		info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID(), err)
		}
		if fn, ok := info.Labels[FunctionLabel]; ok {
			out[c.ID()] = fn
		}
	}
	return out, nil
}

// RemoveAll deletes every container (with its task) and image in the
// namespace, then the namespace itself, for teardown. It does not stop at
// the first error.
func (r *Runtime) RemoveAll(ctx context.Context, grace time.Duration) error {
	ctx = r.with(ctx)
	var errs []error
	cs, err := r.client.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs {
		if err := r.Remove(ctx, c.ID(), grace); err != nil {
			errs = append(errs, err)
		}
	}
	is := r.client.ImageService()
	imgs, err := is.List(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("list images: %w", err))
	}
	for i, img := range imgs {
		var opts []images.DeleteOpt
		if i == len(imgs)-1 {
			// Let the last delete wait for garbage collection, so the
			// content is gone when teardown returns.
			opts = append(opts, images.SynchronousDelete())
		}
		if err := is.Delete(ctx, img.Name, opts...); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete image %s: %w", img.Name, err))
		}
	}
	if len(errs) == 0 {
		if err := r.client.NamespaceService().Delete(ctx, r.ns); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete containerd namespace %s: %w", r.ns, err))
		}
		// containerd 1.6's runc shim keeps runc state in a per-namespace
		// directory it never removes; by now it is empty (os.Remove does
		// not remove a directory that is not).
		os.Remove(filepath.Join("/run/containerd/runc", r.ns))
	}
	return errors.Join(errs...)
}

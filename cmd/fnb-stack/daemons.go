package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bkclient "github.com/moby/buildkit/client"
)

// baseEnv is the environment every daemon starts from: no proxies, no
// stray OpenFaaS settings from the caller's shell.
func (s *Stack) baseEnv(extra ...string) []string {
	return append([]string{
		"PATH=" + s.childPath(),
		"HOME=/root",
		"LANG=C.UTF-8",
	}, extra...)
}

func (s *Stack) registryDaemon() daemon {
	dir := s.path("registry")
	cfgPath := filepath.Join(dir, "config.yml")
	return daemon{
		Name:    "registry",
		What:    "the image registry (docker-registry)",
		Args:    []string{s.tool("docker-registry"), "serve", cfgPath},
		Env:     s.baseEnv("OTEL_TRACES_EXPORTER=none"),
		Listens: []string{registryAddr},
		Prepare: func() error {
			if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o755); err != nil {
				return err
			}
			cfg := fmt.Sprintf(`# written by fnb-stack
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
http:
  addr: %s
`, filepath.Join(dir, "storage"), registryAddr)
			return writeFileAtomic(cfgPath, []byte(cfg), 0o644)
		},
		Ready: func(ctx context.Context, _ int64) error {
			return httpOK(ctx, "http://"+registryAddr+"/v2/", "", "")
		},
	}
}

func (s *Stack) natsDaemon() daemon {
	addr := net.JoinHostPort(natsHost, natsPort)
	return daemon{
		Name: "nats",
		What: "NATS Streaming, the async queue",
		Args: []string{s.tool("nats-streaming-server"), "-a", natsHost, "-p", natsPort,
			"--cluster_id", natsCluster, "--store", "memory"},
		Env:     s.baseEnv(),
		Listens: []string{addr},
		Ready: func(ctx context.Context, from int64) error {
			if err := tcpOpen(ctx, addr); err != nil {
				return err
			}
			if from > 0 && !strings.Contains(logSince(s.logPath("nats"), from), "Streaming Server is ready") {
				return errors.New("streaming server not ready yet")
			}
			return nil
		},
	}
}

func (s *Stack) prometheusDaemon() daemon {
	dir := s.path("prometheus")
	cfgPath := filepath.Join(dir, "prometheus.yml")
	return daemon{
		Name: "prometheus",
		What: "Prometheus (the gateway needs it to list functions)",
		Args: []string{s.tool("prometheus"),
			"--config.file=" + cfgPath,
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--storage.tsdb.retention.time=2d",
			"--web.listen-address=" + prometheusAddr},
		Env:     s.baseEnv(),
		Dir:     dir,
		Listens: []string{prometheusAddr},
		Prepare: func() error {
			if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
				return err
			}
			cfg := fmt.Sprintf(`# written by fnb-stack: scrapes the gateway's metrics
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
  - job_name: gateway
    static_configs:
      - targets: ["127.0.0.1:%s"]
`, gatewayMetrics)
			return writeFileAtomic(cfgPath, []byte(cfg), 0o644)
		},
		Ready: func(ctx context.Context, _ int64) error {
			return httpOK(ctx, "http://"+prometheusAddr+"/-/ready", "", "")
		},
	}
}

// providerFlags are shared by `fnb-provider containerd`, `serve` and
// `teardown`, so that teardown removes exactly what serve made.
func (s *Stack) providerFlags() []string {
	return []string{
		"-state-dir", s.providerState(),
		"-containerd-socket", s.containerdSocket(),
		"-containerd-namespace", ctrdNamespace,
		"-bridge", bridgeName,
		"-subnet", bridgeSubnet,
		"-gateway", bridgeIP,
		"-netns-prefix", netnsPrefix,
		"-chain-prefix", chainPrefix,
		"-stop-grace", "3s",
	}
}

func (s *Stack) containerdDaemon() daemon {
	sock := s.containerdSocket()
	return daemon{
		Name: "containerd",
		What: "containerd, the provider's private container runtime",
		Args: append([]string{filepath.Join(s.binDir(), "fnb-provider"), "containerd",
			"-containerd-bin", s.tool("containerd")}, s.providerFlags()...),
		Env: s.baseEnv(),
		Ready: func(ctx context.Context, _ int64) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", sock)
			if err != nil {
				return err
			}
			return c.Close()
		},
	}
}

func (s *Stack) providerDaemon() daemon {
	args := append([]string{filepath.Join(s.binDir(), "fnb-provider"), "serve"}, s.providerFlags()...)
	args = append(args,
		"-port", strings.TrimPrefix(providerAddr, "127.0.0.1:"),
		"-listen", "127.0.0.1",
		"-insecure-registries", registryAddr,
		"-upstream-timeout", "15m")
	return daemon{
		Name:         "provider",
		What:         "fnb-provider, the faas-provider running functions on containerd",
		Args:         args,
		Env:          s.baseEnv(),
		Listens:      []string{providerAddr},
		ReadyTimeout: 3 * time.Minute, // at start it brings recorded functions back
		Ready: func(ctx context.Context, _ int64) error {
			return httpOK(ctx, "http://"+providerAddr+"/healthz", "", "")
		},
	}
}

func (s *Stack) gatewayDaemon() daemon {
	d := daemon{
		Name: "gateway",
		What: "the OpenFaaS CE gateway",
		Args: []string{s.tool("gateway")},
		Env: s.baseEnv(
			"functions_provider_url=http://"+providerAddr+"/",
			"direct_functions=false",
			"faas_nats_address="+natsHost,
			"faas_nats_port="+natsPort,
			"faas_nats_cluster_name="+natsCluster,
			"basic_auth=true",
			"secret_mount_path="+s.secretsDir(),
			"read_timeout=15m",
			"write_timeout=15m",
			"upstream_timeout=15m",
			"faas_prometheus_host=127.0.0.1",
			"faas_prometheus_port="+strings.TrimPrefix(prometheusAddr, "127.0.0.1:"),
		),
		Listens: []string{":" + gatewayPort, ":" + gatewayMetrics},
		Ready: func(ctx context.Context, _ int64) error {
			return httpOK(ctx, gatewayURL+"/healthz", "", "")
		},
	}
	// The UI is served from ./assets of the gateway's source.
	if src := filepath.Join(filepath.Dir(s.Tools), "src", "gateway"); dirExists(filepath.Join(src, "assets")) {
		d.Dir = src
	}
	return d
}

func (s *Stack) queueWorkerDaemon(n int) daemon {
	name := fmt.Sprintf("queue-worker-%d", n)
	host := fmt.Sprintf("fnb-qw-%d", n)
	return daemon{
		Name: name,
		What: "an OpenFaaS queue-worker (runs async invocations)",
		// Its NATS client id is faas-worker-<hostname>: each replica gets
		// its own hostname in its own UTS namespace.
		Args: []string{filepath.Join(s.binDir(), "fnb-stack"), "uts-exec", host, s.tool("queue-worker")},
		Env: s.baseEnv(
			"faas_nats_address="+natsHost,
			"faas_nats_port="+natsPort,
			"faas_nats_cluster_name="+natsCluster,
			"faas_gateway_address=127.0.0.1",
			"faas_gateway_port="+gatewayPort,
			// By default longer than the gateway's upstream_timeout: a build
			// is never delivered twice because it outlived its ack.
			"ack_wait="+s.AckWait.String(),
			"faas_print_body=false",
		),
		Settings:   "ack_wait=" + s.AckWait.String(),
		Cloneflags: syscall.CLONE_NEWUTS,
		Ready: func(ctx context.Context, from int64) error {
			if strings.Contains(logSince(s.logPath(name), from), "Listening on [") {
				return nil
			}
			return errors.New("not subscribed to NATS yet")
		},
	}
}

// buildkitdDaemon is rootless buildkitd under rootlesskit as the
// fnbuilder user, on a unix socket (for fnb-stack) and on the bridge
// address with mutual TLS (for build-fn).
func (s *Stack) buildkitdDaemon() daemon {
	var cred *syscall.Credential
	if u, err := user.Lookup(rootlessUser); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	dir := s.buildkitDir()
	root, home, run, tlsDir := filepath.Join(dir, "root"), filepath.Join(dir, "home"), filepath.Join(dir, "run"), filepath.Join(dir, "tls")
	cfgPath := filepath.Join(dir, "buildkitd.toml")
	prepare := func() error {
		if cred == nil {
			return fmt.Errorf("user %s does not exist: run hack/install.sh", rootlessUser)
		}
		// Everything the daemon writes belongs to the rootless user.
		for _, d := range []string{dir, root, home, run, tlsDir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
		// rootlesskit refuses a state dir left by a killed instance.
		os.RemoveAll(filepath.Join(run, "rootlesskit"))
		os.Remove(s.buildkitSocket())
		for src, dst := range map[string]string{"ca.pem": "ca.pem", "server.pem": "cert.pem", "server-key.pem": "key.pem"} {
			b, err := os.ReadFile(s.path("tls", src))
			if err != nil {
				return err
			}
			p := filepath.Join(tlsDir, dst)
			if err := writeFileAtomic(p, b, 0o600); err != nil {
				return err
			}
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
		cfg := fmt.Sprintf(`# written by fnb-stack
[worker.oci]
  enabled = true
  gc = true

[worker.containerd]
  enabled = false

[registry.%q]
  http = true
  insecure = true
`, registryAddr)
		return writeFileAtomic(cfgPath, []byte(cfg), 0o644)
	}
	args := []string{s.tool("rootlesskit"),
		"--net=host", "--copy-up=/etc", "--copy-up=/run", "--disable-host-loopback",
		// Its own PID namespace: stopping rootlesskit ends every build
		// process with it.
		"--pidns",
		"--state-dir=" + filepath.Join(run, "rootlesskit"),
		filepath.Join(s.binDir(), "buildkitd"),
		"--root", root,
		"--config", cfgPath,
		"--addr", s.buildkitAddr(),
		"--addr", "tcp://" + buildkitTCPAddr,
		"--tlscacert", filepath.Join(tlsDir, "ca.pem"),
		"--tlscert", filepath.Join(tlsDir, "cert.pem"),
		"--tlskey", filepath.Join(tlsDir, "key.pem"),
	}
	return daemon{
		Name: "buildkitd",
		What: "rootless buildkitd (rootlesskit, user " + rootlessUser + ")",
		Args: args,
		Env: []string{
			"PATH=" + s.childPath(),
			"HOME=" + home,
			"USER=" + rootlessUser,
			"LOGNAME=" + rootlessUser,
			"XDG_RUNTIME_DIR=" + run,
			"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
			"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
			"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
		},
		Dir:     dir,
		Cred:    cred,
		Listens: []string{buildkitTCPAddr},
		Prepare: prepare,
		Ready: func(ctx context.Context, _ int64) error {
			if err := pingBuildkit(ctx, s.buildkitAddr(), nil); err != nil {
				return fmt.Errorf("unix socket: %w", err)
			}
			if err := pingBuildkit(ctx, "tcp://"+buildkitTCPAddr, s.buildkitTLSOpts()); err != nil {
				return fmt.Errorf("tcp://%s with mutual TLS: %w", buildkitTCPAddr, err)
			}
			return nil
		},
	}
}

// buildkitTLSOpts are build-fn's client credentials.
func (s *Stack) buildkitTLSOpts() []bkclient.ClientOpt {
	return []bkclient.ClientOpt{
		bkclient.WithServerConfig(bridgeIP, s.secretPath("buildkit-tls-ca")),
		bkclient.WithCredentials(s.secretPath("buildkit-tls-cert"), s.secretPath("buildkit-tls-key")),
	}
}

func pingBuildkit(ctx context.Context, addr string, opts []bkclient.ClientOpt) error {
	c, err := bkclient.New(ctx, addr, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return err
	}
	if len(ws) == 0 {
		return errors.New("no workers")
	}
	return nil
}

func (s *Stack) forwardDaemon() daemon {
	return daemon{
		Name: "builder-forward",
		What: "the loopback forwarder to build-fn's root (faas-cli --remote-builder)",
		Args: []string{filepath.Join(s.binDir(), "fnb-stack"), "forward", "--dir", s.Dir,
			"--listen", builderAddr, "--function", "build-fn"},
		Env:     s.baseEnv(),
		Listens: []string{builderAddr},
		Ready: func(ctx context.Context, _ int64) error {
			return tcpOpen(ctx, builderAddr)
		},
	}
}

// httpClient never uses a proxy: everything the stack talks to is local.
var httpClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// httpOK GETs url (with basic auth when user is set) and wants a 200.
func httpOK(ctx context.Context, url, user, pass string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func tcpOpen(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

func (s *Stack) registryDaemon() daemon.Member {
	c := daemon.Member{Spec: s.registry().Spec(), What: "the image registry (docker-registry)", Listens: []string{registryAddr}}
	c.Settings = "registry=" + s.registryMode()
	return c
}

func (s *Stack) natsDaemon() daemon.Member {
	addr := net.JoinHostPort(natsHost, natsPort)
	return daemon.Member{
		Spec: daemon.Spec{
			Name: "nats",
			Args: []string{daemon.Find("nats-streaming-server"), "-a", natsHost, "-p", natsPort,
				"--cluster_id", natsCluster, "--store", "memory"},
			Env: daemon.BaseEnv(),
			Ready: func(ctx context.Context, from int64) error {
				if err := daemon.DialReady("tcp", addr)(ctx, from); err != nil {
					return err
				}
				if from > 0 && !strings.Contains(daemon.Since(s.logPath("nats"), from), "Streaming Server is ready") {
					return errors.New("streaming server not ready yet")
				}
				return nil
			},
		},
		What:    "NATS Streaming, the async queue",
		Listens: []string{addr},
	}
}

func (s *Stack) prometheusDaemon() daemon.Member {
	dir := s.path("prometheus")
	cfgPath := filepath.Join(dir, "prometheus.yml")
	return daemon.Member{
		Spec: daemon.Spec{
			Name: "prometheus",
			Args: []string{daemon.Find("prometheus"), "--config.file=" + cfgPath,
				"--storage.tsdb.path=" + filepath.Join(dir, "data"), "--storage.tsdb.retention.time=2d",
				"--web.listen-address=" + prometheusAddr},
			Env: daemon.BaseEnv(),
			Dir: dir,
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
				return daemon.WriteFileAtomic(cfgPath, []byte(cfg), 0o644)
			},
			Ready: daemon.HTTPReady("http://" + prometheusAddr + "/-/ready"),
		},
		What:    "Prometheus (the gateway needs it to list functions)",
		Listens: []string{prometheusAddr},
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

func (s *Stack) containerdDaemon() daemon.Member {
	return daemon.Member{
		Spec: daemon.Spec{
			Name: "containerd",
			Args: append([]string{filepath.Join(s.binDir(), "fnb-provider"), "containerd",
				"-containerd-bin", daemon.Find("containerd")}, s.providerFlags()...),
			Env:   daemon.BaseEnv(),
			Ready: daemon.DialReady("unix", s.containerdSocket()),
		},
		What: "containerd, the provider's private container runtime",
	}
}

func (s *Stack) providerDaemon() daemon.Member {
	args := append([]string{filepath.Join(s.binDir(), "fnb-provider"), "serve"}, s.providerFlags()...)
	if s.plainHTTPRegistry() {
		args = append(args, "-insecure-registries", registryAddr)
	} else {
		args = append(args, "-insecure-registries", "", "-registry-ca", s.registry().CA, "-registry-auth", s.registry().UserConfig(pullUser))
	}
	return daemon.Member{
		Spec: daemon.Spec{
			Name:         "provider",
			Args:         append(args, "-port", strings.TrimPrefix(providerAddr, "127.0.0.1:"), "-listen", "127.0.0.1", "-upstream-timeout", "15m"),
			Settings:     "registry=" + s.registryMode(),
			Env:          daemon.BaseEnv(),
			ReadyTimeout: 3 * time.Minute, // at start it brings recorded functions back
			Ready:        daemon.HTTPReady("http://" + providerAddr + "/healthz"),
		},
		What:    "fnb-provider, the faas-provider running functions on containerd",
		Listens: []string{providerAddr},
	}
}

func (s *Stack) gatewayDaemon() daemon.Member {
	c := daemon.Member{
		Spec: daemon.Spec{
			Name: "gateway",
			Args: []string{daemon.Find("gateway")},
			Env: daemon.BaseEnv(append(natsEnv(),
				"functions_provider_url=http://"+providerAddr+"/",
				"direct_functions=false",
				"basic_auth=true",
				"secret_mount_path="+s.secretsDir(),
				"read_timeout=15m",
				"write_timeout=15m",
				"upstream_timeout=15m",
				"faas_prometheus_host=127.0.0.1",
				"faas_prometheus_port="+strings.TrimPrefix(prometheusAddr, "127.0.0.1:"),
			)...),
			Ready: daemon.HTTPReady(gatewayURL + "/healthz"),
		},
		What:    "the OpenFaaS CE gateway",
		Listens: []string{":" + gatewayPort, ":" + gatewayMetrics},
	}
	// The UI is served from ./assets of the gateway's source.
	if src := filepath.Join(filepath.Dir(daemon.ToolsDir()), "src", "gateway"); fileExists(filepath.Join(src, "assets")) {
		c.Dir = src
	}
	return c
}

func (s *Stack) queueWorkerDaemon(n int) daemon.Member {
	name := fmt.Sprintf("queue-worker-%d", n)
	return daemon.Member{
		Spec: daemon.Spec{
			Name: name,
			// Its NATS client id is faas-worker-<hostname>: each replica gets
			// its own hostname in its own UTS namespace.
			Args: []string{filepath.Join(s.binDir(), "fnb-stack"), "uts-exec", fmt.Sprintf("fnb-qw-%d", n), daemon.Find("queue-worker")},
			Env: daemon.BaseEnv(append(natsEnv(),
				"faas_gateway_address=127.0.0.1",
				"faas_gateway_port="+gatewayPort,
				// By default longer than the gateway's upstream_timeout: a build
				// is never delivered twice because it outlived its ack.
				"ack_wait="+s.AckWait.String(),
				"faas_print_body=false",
			)...),
			Settings:   "ack_wait=" + s.AckWait.String(),
			Cloneflags: syscall.CLONE_NEWUTS,
			Ready: func(ctx context.Context, from int64) error {
				if strings.Contains(daemon.Since(s.logPath(name), from), "Listening on [") {
					return nil
				}
				return errors.New("not subscribed to NATS yet")
			},
		},
		What: "an OpenFaaS queue-worker (runs async invocations)",
	}
}

// natsEnv is how the gateway and the queue-workers reach NATS Streaming.
func natsEnv() []string {
	return []string{"faas_nats_address=" + natsHost, "faas_nats_port=" + natsPort, "faas_nats_cluster_name=" + natsCluster}
}

// buildkitdDaemon is rootless buildkitd under rootlesskit as the fnbuilder
// user, on a unix socket (for fnb-stack) and on the bridge address with
// mutual TLS (for build-fn), keeping BuildKit's process sandbox.
func (s *Stack) buildkitdDaemon() daemon.Member {
	spec, err := daemon.BuildKitd{
		Dir:        s.path("buildkit"),
		Rootless:   true,
		TCP:        buildkitTCPAddr,
		ServerTLS:  &daemon.TLSFiles{CA: s.path("tls", "ca.pem"), Cert: s.path("tls", "server.pem"), Key: s.path("tls", "server-key.pem")},
		Registries: []daemon.RegistryAccess{s.registryAccess()},
		GC:         true,
		Probe:      []buildkit.Daemon{s.buildkitTCP()},
	}.Spec()
	if err != nil {
		spec = daemon.Spec{Name: "buildkitd", Args: []string{"buildkitd"}, Prepare: func() error { return err }}
	}
	spec.Settings = "registry=" + s.registryMode()
	return daemon.Member{Spec: spec, What: "rootless buildkitd (rootlesskit, user " + daemon.RootlessUser + ")", Listens: []string{buildkitTCPAddr}}
}

// buildkitTCP is buildkitd as build-fn reaches it, with its client certificate.
func (s *Stack) buildkitTCP() buildkit.Daemon {
	return buildkit.Daemon{Address: "tcp://" + buildkitTCPAddr, TLS: &buildkit.TLS{
		CA: s.secretPath("buildkit-tls-ca"), Cert: s.secretPath("buildkit-tls-cert"), Key: s.secretPath("buildkit-tls-key"), ServerName: bridgeIP}}
}

func (s *Stack) forwardDaemon() daemon.Member {
	return daemon.Member{
		Spec: daemon.Spec{
			Name: "builder-forward",
			Args: []string{filepath.Join(s.binDir(), "fnb-stack"), "forward", "--dir", s.Dir,
				"--listen", builderAddr, "--function", "build-fn"},
			Env:   daemon.BaseEnv(),
			Ready: daemon.HTTPReady("http://" + builderAddr + "/healthz"),
		},
		What:    "the loopback forwarder to build-fn's root (faas-cli --remote-builder)",
		Listens: []string{builderAddr},
	}
}

// httpClient never uses a proxy: everything the stack talks to is local.
var httpClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/openfaas/faas-provider/auth"

	"github.com/fnbuilder/fnbuilder/internal/provider"
)

// options is the command line, each flag with an environment fallback.
type options struct {
	cfg    provider.Config
	port   int
	listen []string

	basicAuth    bool
	basicAuthDir string

	purge         bool   // teardown
	containerdBin string // containerd
}

// env returns the first set variable among names, or def.
func env(def string, names ...string) string {
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok && v != "" {
			return v
		}
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, f)
	}
	return out
}

func parseOptions(cmd string, args []string) (options, error) {
	d := provider.DefaultConfig()
	fs := flag.NewFlagSet("fnb-provider "+cmd, flag.ContinueOnError)
	var (
		o                                 options
		listen, insecure, subnet, gateway string
		port                              string
	)
	fs.StringVar(&port, "port", env("8081", "FNB_PROVIDER_PORT"), "TCP port of the provider API (env FNB_PROVIDER_PORT)")
	fs.StringVar(&listen, "listen", env("127.0.0.1", "FNB_PROVIDER_LISTEN"),
		"comma-separated addresses to listen on; the gateway reaches the provider on loopback. Adding the bridge gateway address or 0.0.0.0 exposes the API to the functions, so set -basic-auth then (env FNB_PROVIDER_LISTEN)")
	fs.StringVar(&o.cfg.StateDir, "state-dir", env(d.StateDir, "FNB_PROVIDER_STATE_DIR"), "state directory: deployments, secrets, logs, CNI state (env FNB_PROVIDER_STATE_DIR)")
	fs.StringVar(&o.cfg.SecretsDir, "secrets-dir", env("", "FNB_PROVIDER_SECRETS_DIR"), "where function secrets are stored, one file each, mode 0600 (default STATE_DIR/secrets; env FNB_PROVIDER_SECRETS_DIR)")
	fs.StringVar(&o.cfg.ContainerdSocket, "containerd-socket", env(d.ContainerdSocket, "FNB_CONTAINERD_SOCKET"), "containerd socket (env FNB_CONTAINERD_SOCKET)")
	fs.StringVar(&o.cfg.ContainerdNamespace, "containerd-namespace", env(d.ContainerdNamespace, "FNB_CONTAINERD_NAMESPACE"), "containerd namespace (env FNB_CONTAINERD_NAMESPACE)")
	fs.StringVar(&insecure, "insecure-registries", env(strings.Join(d.InsecureRegistries, ","), "FNB_INSECURE_REGISTRIES"), "comma-separated registry hosts pulled from over plain HTTP (env FNB_INSECURE_REGISTRIES)")
	fs.StringVar(&o.cfg.RegistryCA, "registry-ca", env("", "FNB_REGISTRY_CA"), "PEM file of CA certificates trusted, beside the system's, when pulling over HTTPS (env FNB_REGISTRY_CA)")
	fs.StringVar(&o.cfg.RegistryAuth, "registry-auth", env("", "FNB_REGISTRY_AUTH"), "Docker config.json with pull credentials (env FNB_REGISTRY_AUTH)")
	fs.StringVar(&o.cfg.CNIBinDir, "cni-bin-dir", env(d.CNIBinDir, "FNB_CNI_BIN_DIR"), "CNI plugin directory (env FNB_CNI_BIN_DIR)")
	fs.StringVar(&o.cfg.Bridge, "bridge", env(d.Bridge, "FNB_BRIDGE"), "bridge name (env FNB_BRIDGE)")
	fs.StringVar(&subnet, "subnet", env(d.Subnet.String(), "FNB_SUBNET"), "functions' IPv4 subnet (env FNB_SUBNET)")
	fs.StringVar(&gateway, "gateway", env("", "FNB_BRIDGE_IP"), "the bridge's (host's) address in the subnet (default: the subnet's first address; env FNB_BRIDGE_IP)")
	fs.StringVar(&o.cfg.NetNSPrefix, "netns-prefix", env(d.NetNSPrefix, "FNB_NETNS_PREFIX"), "network namespace name prefix (env FNB_NETNS_PREFIX)")
	fs.StringVar(&o.cfg.ChainPrefix, "chain-prefix", env(d.ChainPrefix, "FNB_CHAIN_PREFIX"), "iptables chain prefix: PREFIX-FORWARD, PREFIX-INPUT (env FNB_CHAIN_PREFIX)")
	fs.DurationVar(&o.cfg.UpstreamTimeout, "upstream-timeout", durationEnv(d.UpstreamTimeout, "FNB_UPSTREAM_TIMEOUT", "upstream_timeout"), "longest function invocation (env FNB_UPSTREAM_TIMEOUT)")
	fs.DurationVar(&o.cfg.ReconcileInterval, "reconcile-interval", d.ReconcileInterval, "how often dead tasks are restarted")
	fs.DurationVar(&o.cfg.StopGrace, "stop-grace", d.StopGrace, "time between SIGTERM and SIGKILL when a task is stopped")
	fs.BoolVar(&o.basicAuth, "basic-auth", env("false", "basic_auth") == "true", "require basic auth on /system/* and /healthz (env basic_auth=true)")
	fs.StringVar(&o.basicAuthDir, "basic-auth-dir", env("/var/secrets", "secret_mount_path"), "directory with basic-auth-user and basic-auth-password (env secret_mount_path)")
	if cmd == "teardown" {
		fs.BoolVar(&o.purge, "purge", false, "also delete deployment records, secrets and logs")
	}
	if cmd == "containerd" {
		fs.StringVar(&o.containerdBin, "containerd-bin", env("/usr/bin/containerd", "FNB_CONTAINERD_BIN"), "containerd binary to run (env FNB_CONTAINERD_BIN)")
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}

	var err error
	if o.port, err = strconv.Atoi(port); err != nil || o.port < 1 || o.port > 65535 {
		return o, fmt.Errorf("-port %q: not a TCP port", port)
	}
	o.listen = splitList(listen)
	if len(o.listen) == 0 {
		return o, fmt.Errorf("-listen: no address")
	}
	o.cfg.InsecureRegistries = splitList(insecure)
	if o.cfg.Subnet, err = netip.ParsePrefix(subnet); err != nil {
		return o, fmt.Errorf("-subnet: %w", err)
	}
	o.cfg.Subnet = o.cfg.Subnet.Masked()
	if gateway == "" {
		o.cfg.Gateway = o.cfg.Subnet.Addr().Next()
	} else if o.cfg.Gateway, err = netip.ParseAddr(gateway); err != nil {
		return o, fmt.Errorf("-gateway: %w", err)
	}
	if o.cfg.StateDir, err = filepath.Abs(o.cfg.StateDir); err != nil {
		return o, err
	}
	if o.basicAuth {
		reader := auth.ReadBasicAuthFromDisk{SecretMountPath: o.basicAuthDir}
		creds, err := reader.Read()
		if err != nil {
			return o, fmt.Errorf("basic auth: %w", err)
		}
		o.cfg.BasicAuth = creds
	}
	o.cfg.Version = version
	o.cfg.SHA = commit
	return o, nil
}

func durationEnv(def time.Duration, names ...string) time.Duration {
	v := env("", names...)
	if v == "" {
		return def
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	// OpenFaaS components also accept plain seconds.
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	return def
}

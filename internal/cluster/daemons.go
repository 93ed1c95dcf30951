package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// daemonNames in start order; Down stops them in reverse (the kubelet
// first of all, as it restarts what is stopped under it). kube-proxy
// reports healthy only once the kubelet has registered the node.
var daemonNames = []string{"registry", "etcd", "containerd", "kube-apiserver", "kube-controller-manager",
	"kube-scheduler", "kubelet", "kube-proxy"}

// tools the cluster needs; hack/install-cluster.sh installs them.
var clusterTools = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
	"containerd", "containerd-shim-runc-v2", "runc", "coredns"}

// MissingTools names what hack/install-cluster.sh has not installed.
func MissingTools() []string {
	var missing []string
	for _, t := range clusterTools {
		if Bin(t) == "" {
			missing = append(missing, filepath.Join(BinDir(), t))
		}
	}
	for _, t := range []string{"etcd", "docker-registry", "iptables", "ip"} {
		if daemon.Find(t) == "" {
			missing = append(missing, t)
		}
	}
	if _, err := os.Stat(filepath.Join(CNIBinDir, "bridge")); err != nil {
		missing = append(missing, filepath.Join(CNIBinDir, "bridge"))
	}
	return missing
}

// env is every daemon's environment: containerd finds its shim on PATH.
func env() []string {
	home := os.Getenv("HOME")
	if home == "" {
		home = "/root"
	}
	return []string{"PATH=" + daemon.ChildPath(BinDir()), "HOME=" + home, "LANG=C.UTF-8"}
}

// Registry is the cluster's plain-HTTP registry on the bridge address.
func (c Cluster) Registry() daemon.Registry {
	return daemon.Registry{Addr: RegistryAddr, Dir: c.path("registry")}
}

// Spec is how to start one of the cluster's daemons (daemonNames).
func (c Cluster) Spec(name string) (daemon.Spec, error) {
	var s daemon.Spec
	switch name {
	case "registry":
		s = c.Registry().Spec()
	case "etcd":
		s = daemon.Spec{
			Args: []string{daemon.Find("etcd"), "--name", "fnbuilder", "--data-dir", c.path("etcd"),
				"--listen-client-urls", "http://" + EtcdClientAddr, "--advertise-client-urls", "http://" + EtcdClientAddr,
				// All three, or etcd also listens on its default peer port.
				"--listen-peer-urls", "http://" + EtcdPeerAddr, "--initial-advertise-peer-urls", "http://" + EtcdPeerAddr,
				"--initial-cluster", "fnbuilder=http://" + EtcdPeerAddr, "--listen-metrics-urls", "http://" + EtcdMetricsAddr},
			Ready: daemon.HTTPReady("http://" + EtcdClientAddr + "/health"),
		}
	case "containerd":
		s = daemon.Spec{
			Args:  []string{Bin("containerd"), "--config", c.containerdConfig()},
			Ready: daemon.DialReady("unix", c.ContainerdSocket()),
		}
	case "kube-apiserver":
		s = daemon.Spec{
			Args: []string{Bin("kube-apiserver"), "--etcd-servers=http://" + EtcdClientAddr,
				"--bind-address=" + BridgeIP, "--advertise-address=" + BridgeIP, "--secure-port=" + port(APIServerPort),
				"--service-cluster-ip-range=" + ServiceCIDR,
				"--client-ca-file=" + c.CAFile(), "--tls-cert-file=" + c.CertFile("apiserver"), "--tls-private-key-file=" + c.KeyFile("apiserver"),
				"--kubelet-client-certificate=" + c.CertFile("apiserver-kubelet-client"),
				"--kubelet-client-key=" + c.KeyFile("apiserver-kubelet-client"),
				// logs and exec dial the node's address, not its name (no DNS for it here).
				"--kubelet-preferred-address-types=InternalIP",
				"--service-account-issuer=https://kubernetes.default.svc." + ClusterDomain,
				"--service-account-key-file=" + c.ServiceAccountPub(), "--service-account-signing-key-file=" + c.ServiceAccountKey(),
				"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
				// The chart's securityMode privileged.
				"--allow-privileged=true",
				"--cert-dir=" + c.path("apiserver")},
			Ready:        c.apiserverReady,
			ReadyTimeout: 90 * time.Second,
		}
	case "kube-controller-manager":
		kc := c.Kubeconfig("controller-manager")
		s = daemon.Spec{
			Args: []string{Bin("kube-controller-manager"), "--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc,
				"--authorization-kubeconfig=" + kc, "--bind-address=127.0.0.1", "--secure-port=" + port(ControllerManagerPort),
				"--leader-elect=false", "--use-service-account-credentials",
				"--service-account-private-key-file=" + c.ServiceAccountKey(),
				// kube-root-ca.crt in every namespace, for service-account volumes.
				"--root-ca-file=" + c.CAFile(),
				"--cluster-signing-cert-file=" + c.CAFile(), "--cluster-signing-key-file=" + c.KeyFile("ca"),
				"--service-cluster-ip-range=" + ServiceCIDR,
				// Pod addresses come from the CNI configuration, not the node.
				"--controllers=*,-nodeipam"},
			Ready: healthzReady(fmt.Sprintf("https://127.0.0.1:%d/healthz", ControllerManagerPort)),
		}
	case "kube-scheduler":
		kc := c.Kubeconfig("scheduler")
		s = daemon.Spec{
			Args: []string{Bin("kube-scheduler"), "--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc,
				"--authorization-kubeconfig=" + kc, "--bind-address=127.0.0.1", "--secure-port=" + port(SchedulerPort),
				"--leader-elect=false"},
			Ready: healthzReady(fmt.Sprintf("https://127.0.0.1:%d/healthz", SchedulerPort)),
		}
	case "kube-proxy":
		s = daemon.Spec{
			Args:  []string{Bin("kube-proxy"), "--config=" + c.kubeProxyConfig()},
			Ready: daemon.HTTPReady("http://" + KubeProxyHealthzAddr + "/healthz"),
		}
	case "kubelet":
		s = daemon.Spec{
			Args: []string{Bin("kubelet"), "--config=" + c.kubeletConfig(), "--kubeconfig=" + c.Kubeconfig("kubelet"),
				"--hostname-override=" + NodeName, "--node-ip=" + BridgeIP,
				"--root-dir=" + c.kubeletDir(), "--cert-dir=" + c.path("kubelet-pki")},
			Ready: daemon.HTTPReady(fmt.Sprintf("http://127.0.0.1:%d/healthz", KubeletHealthzPort)),
		}
	default:
		return s, fmt.Errorf("cluster: no daemon %q", name)
	}
	s.Name = name
	if s.Env == nil {
		s.Env = env()
	}
	if s.Args[0] == "" {
		return s, fmt.Errorf("cluster: %s not found: run hack/install-cluster.sh", name)
	}
	return s, nil
}

// apiserverReady asks /readyz as the admin.
func (c Cluster) apiserverReady(ctx context.Context, _ int64) error {
	client, err := c.AdminClient()
	if err != nil {
		return err
	}
	return daemon.Get(ctx, client, APIServerURL+"/readyz", http.StatusOK)
}

// AdminClient talks to the apiserver as the cluster's admin.
func (c Cluster) AdminClient() (*http.Client, error) {
	caPEM, err := os.ReadFile(c.CAFile())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("cluster CA: no certificate")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile("admin"), c.KeyFile("admin"))
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, nil
}

// healthzReady: the controller-manager and the scheduler serve /healthz
// (always allowed) with a certificate they make themselves; this only asks
// a loopback port whether the daemon is up.
func healthzReady(url string) func(context.Context, int64) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return func(ctx context.Context, _ int64) error { return daemon.Get(ctx, client, url, http.StatusOK) }
}

// Running reports whether every daemon of the cluster runs: make cluster
// (or an earlier e2e/cluster run) brought it up.
func (c Cluster) Running() bool {
	for _, name := range daemonNames {
		if _, ok := c.Daemons(nil).Running(name); !ok {
			return false
		}
	}
	return true
}

// adoptRunRecords moves the PID records that fnb-cluster kept in run/
// before it used daemon.Group into pids/ (the same Record), so that a
// cluster an older checkout left up is still found and taken down.
func (c Cluster) adoptRunRecords() {
	old, _ := filepath.Glob(c.path("run", "*.pid"))
	for _, p := range old {
		to := c.Daemons(nil).PIDPath(strings.TrimSuffix(filepath.Base(p), ".pid"))
		if os.MkdirAll(filepath.Dir(to), 0o755) == nil {
			os.Rename(p, to)
		}
	}
	os.Remove(c.path("run"))
}

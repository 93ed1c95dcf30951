// Package cluster is a single-node Kubernetes on this machine, for
// make cluster and e2e/cluster: where everything lives, its certificates,
// its configuration files and its daemons (started through internal/daemon).
// docs/cluster-notes.md says why each setting is there.
package cluster

import (
	"os"
	"path/filepath"
	"strconv"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Addresses. All clear of the local stack (fnb0, 10.62.0.0/24, 5000/5001,
// 4222, 8080-8083, 8088, 9090, 1234) and of a system Kubernetes' defaults.
const (
	BridgeName   = "fnbk0"
	BridgeIP     = "10.63.0.1"
	BridgePrefix = 24
	PodSubnet    = "10.63.0.0/24"
	ServiceCIDR  = "10.96.0.0/16"
	// APIServiceIP is the kubernetes Service, DNSServiceIP CoreDNS's.
	APIServiceIP = "10.96.0.1"
	DNSServiceIP = "10.96.0.10"
	NodeName     = "fnbk-node"
	// The registry, the apiserver and the kubelet listen on the bridge
	// address: the host and the pods reach them at the same address.
	RegistryAddr = BridgeIP + ":5300"
	// The module cache, served to build-fn's image build while it runs: a
	// fixed port keeps its RUN steps cached (templateimage.Builder.Goproxy).
	GoproxyAddr   = BridgeIP + ":5301"
	APIServerPort = 16443
	KubeletPort   = 10350
	// Loopback only.
	EtcdClientAddr        = "127.0.0.1:23790"
	EtcdPeerAddr          = "127.0.0.1:23800"
	EtcdMetricsAddr       = "127.0.0.1:23810"
	KubeletHealthzPort    = 10348
	ControllerManagerPort = 10357
	SchedulerPort         = 10359
	KubeProxyHealthzAddr  = "127.0.0.1:10356"
	KubeProxyMetricsAddr  = "127.0.0.1:10349"
	ClusterDomain         = "cluster.local"
)

// APIServerURL is where every client reaches the apiserver.
var APIServerURL = "https://" + BridgeIP + ":" + strconv.Itoa(APIServerPort)

// Cluster is one cluster's directory: state, logs, PID records, certificates.
type Cluster struct {
	Dir string
	// Pause is the static cmd/fnb-pause binary, the pods' sandbox image.
	Pause string
	// Repo is the checkout: charts/buildkit.
	Repo string
}

func (c Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// PKIDir holds the CA, every certificate and the kubeconfigs.
func (c Cluster) PKIDir() string { return c.path("pki") }

// Kubeconfig is the kubeconfig of one client: admin, kubelet,
// controller-manager, scheduler or kube-proxy.
func (c Cluster) Kubeconfig(client string) string { return c.path("pki", client+".kubeconfig") }

// Daemons is the cluster's daemons, a daemon.Group in its directory
// (pids/, logs/); progress lines go to logf (nil: nowhere).
func (c Cluster) Daemons(logf func(format string, a ...any)) daemon.Group {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return daemon.Group{Dir: c.Dir, Logf: logf}
}

// ContainerdSocket is the CRI endpoint of the cluster's own containerd.
func (c Cluster) ContainerdSocket() string { return c.path("containerd", "containerd.sock") }

// BinDir is where hack/install-cluster.sh puts the cluster's binaries,
// apart from daemon.ToolsDir so that Debian's containerd and runc, which the
// local stack uses, are not shadowed.
func BinDir() string {
	return filepath.Join(filepath.Dir(daemon.ToolsDir()), "cluster", "bin")
}

// Bin is one of them; "" when it is missing.
func Bin(name string) string {
	p := filepath.Join(BinDir(), name)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return p
	}
	return ""
}

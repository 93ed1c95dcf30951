package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Paths of the node's state.
func (c Cluster) containerdDir() string    { return c.path("containerd") }
func (c Cluster) containerdConfig() string { return c.path("containerd", "config.toml") }
func (c Cluster) registryHostsDir() string { return c.path("containerd", "certs.d") }
func (c Cluster) runcRoot() string         { return c.path("containerd", "runc") }

// shimSocketDir holds the runc shims' sockets. containerd refuses a path
// longer than 42 characters (a unix socket's path is short), which
// DIR/containerd/s is for a DIR over 29: a short one of its own, per
// cluster directory, under /run.
func (c Cluster) shimSocketDir() string {
	sum := sha256.Sum256([]byte(c.Dir))
	return "/run/fnbk-" + hex.EncodeToString(sum[:4])
}
func (c Cluster) cniConfDir() string      { return c.path("cni", "net.d") }
func (c Cluster) cniDataDir() string      { return c.path("cni", "ipam") }
func (c Cluster) kubeletDir() string      { return c.path("kubelet") }
func (c Cluster) kubeletConfig() string   { return c.path("kubelet.yaml") }
func (c Cluster) kubeProxyConfig() string { return c.path("kube-proxy.yaml") }

// PauseImage is the sandbox image containerd runs in every pod: FROM
// scratch, built by this package, pinned so that it is never pulled away.
const PauseImage = RegistryAddr + "/pause:3.10"

// CNIBinDir holds Debian's containernetworking-plugins.
const CNIBinDir = "/usr/lib/cni"

// WriteConfigs writes containerd's, the kubelet's, kube-proxy's and the CNI
// configuration, and containerd's access to the plain-HTTP registry.
func (c Cluster) WriteConfigs() error {
	files := map[string]string{
		c.containerdConfig(): c.containerdTOML(),
		filepath.Join(c.registryHostsDir(), RegistryAddr, "hosts.toml"): registryHostsTOML(),
		filepath.Join(c.cniConfDir(), "10-fnbuilder.conflist"):          c.cniConflist(),
		c.kubeletConfig():   c.kubeletYAML(),
		c.kubeProxyConfig(): c.kubeProxyYAML(),
	}
	for path, text := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := daemon.WriteFileAtomic(path, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// containerdTOML is containerd v2's configuration (version 4). Every socket,
// directory and namespace is the cluster's own (docs/cluster-notes.md).
func (c Cluster) containerdTOML() string {
	d := c.containerdDir()
	return fmt.Sprintf(`# written by internal/cluster
version = 4
root = %[1]q
state = %[2]q
# Not the machine's /etc/containerd/conf.d.
imports = []
# NRI's socket is machine-wide; nothing here traces.
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.internal.v1.tracing']

[plugins]
  # From version 3 on the sockets are here: a top-level [grpc] is ignored
  # and containerd would take /run/containerd/containerd.sock.
  [plugins.'io.containerd.server.v1.grpc']
    address = %[3]q
  [plugins.'io.containerd.server.v1.ttrpc']
    address = %[4]q
  [plugins.'io.containerd.server.v1.debug']
    address = ''
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = %[5]q
  [plugins.'io.containerd.internal.v1.opt']
    path = %[6]q
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %[7]q
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = %[8]q
  # containerd 2 pulls for the CRI through the transfer service.
  [plugins.'io.containerd.transfer.v1.local']
    config_path = %[8]q
  [plugins.'io.containerd.cri.v1.runtime']
    # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj to
    # the kubelet's -998 for the pause container, so never below ours.
    restrict_oom_score_adj = true
    # Pod network namespaces under our state dir, not /run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        # runc >= 1.2 for user namespaces with idmapped mounts.
        BinaryName = %[9]q
        Root = %[10]q
        SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[11]q]
      conf_dir = %[12]q
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
`, filepath.Join(d, "root"), filepath.Join(d, "state"), c.ContainerdSocket(), c.ContainerdSocket()+".ttrpc",
		c.shimSocketDir(), filepath.Join(d, "opt"), PauseImage, c.registryHostsDir(), filepath.Join(BinDir(), "runc"),
		c.runcRoot(), CNIBinDir, c.cniConfDir())
}

func registryHostsTOML() string {
	return fmt.Sprintf(`# written by internal/cluster: the cluster's registry speaks plain HTTP
server = "http://%[1]s"
[host."http://%[1]s"]
  capabilities = ["pull", "resolve"]
`, RegistryAddr)
}

// cniConflist: the bridge and host-local (own data dir), then portmap.
func (c Cluster) cniConflist() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "fnbuilder-cluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, BridgeName, c.cniDataDir(), PodSubnet, BridgeIP)
}

func (c Cluster) kubeletYAML() string {
	return fmt.Sprintf(`# written by internal/cluster
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[3]d
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %[4]s
# Only the apiserver's system:masters certificate reaches the kubelet.
authorization:
  mode: AlwaysAllow
tlsCertFile: %[5]s
tlsPrivateKeyFile: %[6]s
# cgroups v1 and no systemd on this machine kind.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[7]s
imageServiceEndpoint: unix://%[7]s
clusterDNS: [%[8]q]
clusterDomain: %[9]s
resolvConf: /etc/resolv.conf
# The disk is shared with other work: evict only when it is nearly full.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "5%%"
  imagefs.available: "5%%"
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
serializeImagePulls: false
`, BridgeIP, KubeletPort, KubeletHealthzPort, c.CAFile(), c.CertFile("kubelet-serving"), c.KeyFile("kubelet-serving"),
		c.ContainerdSocket(), DNSServiceIP, ClusterDomain)
}

func (c Cluster) kubeProxyYAML() string {
	return fmt.Sprintf(`# written by internal/cluster
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
clusterCIDR: %s
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: %s
metricsBindAddress: %s
# NodePorts on the bridge address only, not on the machine's interfaces.
nodePortAddresses: [%q]
conntrack:
  # Leave the machine's conntrack sysctls alone.
  maxPerCore: 0
`, c.Kubeconfig("kube-proxy"), PodSubnet, NodeName, BridgeIP, KubeProxyHealthzAddr, KubeProxyMetricsAddr,
		BridgeIP+"/32")
}

// port formats a port number for a flag.
func port(p int) string { return strconv.Itoa(p) }

package cluster

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"gopkg.in/yaml.v3"
)

func TestWriteConfigs(t *testing.T) {
	c := Cluster{Dir: t.TempDir()}
	if err := c.WriteConfigs(); err != nil {
		t.Fatal(err)
	}

	// containerd: every socket and directory is the cluster's own, at the
	// keys version 4 reads (a top-level [grpc] would be ignored).
	var ctrd map[string]any
	b, err := os.ReadFile(c.containerdConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := toml.Unmarshal(b, &ctrd); err != nil {
		t.Fatalf("containerd config: %v\n%s", err, b)
	}
	if _, ok := ctrd["grpc"]; ok {
		t.Error("containerd config has a top-level [grpc], which version 4 ignores")
	}
	get := func(keys ...string) any {
		var v any = ctrd
		for _, k := range keys {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		}
		return v
	}
	// containerd refuses a longer one, and with it the CRI: the kubelet
	// then fails with "unknown service runtime.v1". t.TempDir() is longer
	// than the default directory.
	if dir, _ := get("plugins", "io.containerd.shim.v1.manager", "socket_dir").(string); len(dir) > 42 || len(dir) == 0 {
		t.Errorf("shim socket_dir %q: %d characters, containerd takes at most 42", dir, len(dir))
	}
	runtime := []string{"plugins", "io.containerd.cri.v1.runtime"}
	runc := append(append([]string{}, runtime...), "containerd", "runtimes", "runc", "options")
	for _, want := range []struct {
		keys []string
		val  any
	}{
		{[]string{"version"}, int64(4)},
		{[]string{"plugins", "io.containerd.server.v1.grpc", "address"}, c.ContainerdSocket()},
		{[]string{"plugins", "io.containerd.server.v1.ttrpc", "address"}, c.ContainerdSocket() + ".ttrpc"},
		{[]string{"plugins", "io.containerd.shim.v1.manager", "socket_dir"}, c.shimSocketDir()},
		{[]string{"plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"}, PauseImage},
		{[]string{"plugins", "io.containerd.cri.v1.images", "registry", "config_path"}, c.registryHostsDir()},
		{[]string{"plugins", "io.containerd.transfer.v1.local", "config_path"}, c.registryHostsDir()},
		{append(append([]string{}, runtime...), "restrict_oom_score_adj"), true},
		{append(append([]string{}, runtime...), "netns_mounts_under_state_dir"), true},
		{append(append([]string{}, runc...), "BinaryName"), filepath.Join(BinDir(), "runc")},
		{append(append([]string{}, runc...), "Root"), c.runcRoot()},
		{append(append([]string{}, runc...), "SystemdCgroup"), false},
		{append(append([]string{}, runtime...), "cni", "conf_dir"), c.cniConfDir()},
	} {
		if got := get(want.keys...); got != want.val {
			t.Errorf("containerd %s = %v, want %v", strings.Join(want.keys, "."), got, want.val)
		}
	}
	for _, k := range []string{"root", "state"} {
		if p, _ := ctrd[k].(string); !strings.HasPrefix(p, c.Dir+"/") {
			t.Errorf("containerd %s %q is not under the cluster's directory", k, p)
		}
	}
	if imports, ok := ctrd["imports"].([]any); !ok || len(imports) != 0 {
		t.Errorf("containerd imports %v, want none (not the machine's conf.d)", ctrd["imports"])
	}

	hosts, err := os.ReadFile(filepath.Join(c.registryHostsDir(), RegistryAddr, "hosts.toml"))
	if err != nil || !strings.Contains(string(hosts), `server = "http://`+RegistryAddr+`"`) {
		t.Errorf("registry hosts.toml: %v\n%s", err, hosts)
	}

	var cni struct {
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPAM   struct {
				DataDir string `json:"dataDir"`
				Ranges  [][]struct {
					Subnet, Gateway string
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	b, _ = os.ReadFile(filepath.Join(c.cniConfDir(), "10-fnbuilder.conflist"))
	if err := json.Unmarshal(b, &cni); err != nil || len(cni.Plugins) == 0 {
		t.Fatalf("CNI conflist: %v\n%s", err, b)
	}
	br := cni.Plugins[0]
	if br.Type != "bridge" || br.Bridge != BridgeName || br.IPAM.DataDir != c.cniDataDir() ||
		len(br.IPAM.Ranges) != 1 || br.IPAM.Ranges[0][0].Subnet != PodSubnet || br.IPAM.Ranges[0][0].Gateway != BridgeIP {
		t.Errorf("CNI bridge %+v", br)
	}

	var kubelet map[string]any
	b, _ = os.ReadFile(c.kubeletConfig())
	if err := yaml.Unmarshal(b, &kubelet); err != nil {
		t.Fatalf("kubelet config: %v\n%s", err, b)
	}
	for k, want := range map[string]any{
		"kind": "KubeletConfiguration", "cgroupDriver": "cgroupfs", "failCgroupV1": false, "readOnlyPort": 0,
		"port": KubeletPort, "containerRuntimeEndpoint": "unix://" + c.ContainerdSocket(), "clusterDomain": ClusterDomain,
	} {
		if kubelet[k] != want {
			t.Errorf("kubelet %s = %v, want %v", k, kubelet[k], want)
		}
	}
	if dns, _ := kubelet["clusterDNS"].([]any); len(dns) != 1 || dns[0] != DNSServiceIP {
		t.Errorf("kubelet clusterDNS %v, want [%s]", kubelet["clusterDNS"], DNSServiceIP)
	}
	if ev, _ := kubelet["evictionHard"].(map[string]any); ev["nodefs.available"] != "5%" {
		t.Errorf("kubelet evictionHard %v", kubelet["evictionHard"])
	}

	var proxy map[string]any
	b, _ = os.ReadFile(c.kubeProxyConfig())
	if err := yaml.Unmarshal(b, &proxy); err != nil {
		t.Fatalf("kube-proxy config: %v\n%s", err, b)
	}
	if proxy["mode"] != "iptables" || proxy["clusterCIDR"] != PodSubnet || proxy["hostnameOverride"] != NodeName {
		t.Errorf("kube-proxy config %v", proxy)
	}
	if npa, _ := proxy["nodePortAddresses"].([]any); len(npa) != 1 || npa[0] != BridgeIP+"/32" {
		t.Errorf("kube-proxy nodePortAddresses %v: NodePorts would open on every interface", proxy["nodePortAddresses"])
	}
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Up starts what is not running: the bridge, the registry, etcd,
// containerd, the control plane, kube-proxy and the kubelet, and waits for
// the node to be Ready. Daemons already running and answering are kept
// (daemon.Group), so a second Up only checks.
func (c Cluster) Up(ctx context.Context, out io.Writer) (buildFnURL string, err error) {
	if os.Geteuid() != 0 {
		return "", errors.New("cluster: needs root (containerd, the kubelet, iptables, a bridge)")
	}
	if fi, err := os.Stat(c.Pause); c.Pause == "" || err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("cluster: the pause binary %q (cmd/fnb-pause, built static) is missing", c.Pause)
	}
	if missing := MissingTools(); len(missing) > 0 {
		return "", fmt.Errorf("cluster: missing %s: run FNB_CLUSTER=1 hack/install.sh (or hack/install-cluster.sh)", strings.Join(missing, ", "))
	}
	t0 := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(out, "%6.1fs  %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, a...))
	}
	// A user-namespaced pod's root is an unprivileged uid on the host: it
	// must be able to walk down to its rootfs and volumes, or runc fails
	// "remount-propagation ... rootfs, flags=MS_PRIVATE: permission denied".
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return "", err
	}
	if err := c.EnsurePKI(); err != nil {
		return "", err
	}
	if err := c.WriteConfigs(); err != nil {
		return "", err
	}
	// The registry and the apiserver bind to the bridge address: it must
	// exist before the first pod does.
	if err := ensureBridge(); err != nil {
		return "", err
	}
	c.adoptRunRecords()
	for _, name := range daemonNames {
		s, err := c.Spec(name)
		if err != nil {
			return "", err
		}
		if err := c.Daemons(logf).Start(ctx, daemon.Member{Spec: s, What: "the cluster's " + name}); err != nil {
			return "", err
		}
	}
	if err := c.waitNodeReady(ctx, 2*time.Minute); err != nil {
		return "", err
	}
	logf("node %s Ready", NodeName)
	if err := c.PushImages(ctx, c.Pause, out); err != nil {
		return "", err
	}
	logf("images in %s", RegistryAddr)
	if err := c.deployCoreDNS(ctx); err != nil {
		return "", err
	}
	logf("CoreDNS ready at %s", DNSServiceIP)
	if err := c.installChart(ctx, c.Repo); err != nil {
		return "", err
	}
	logf("charts/buildkit: %d replicas Ready, mutual TLS", BuildkitReplicas)
	if buildFnURL, err = c.deployBuildFn(ctx, out); err != nil {
		return "", err
	}
	logf("build-fn ready at %s", buildFnURL)
	return buildFnURL, nil
}

// Kubectl runs kubectl as the admin (kubectl 1.34 of hack/install-cluster.sh,
// else the machine's).
func (c Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	bin := Bin("kubectl")
	if bin == "" {
		bin = daemon.Find("kubectl")
	}
	if bin == "" {
		return nil, errors.New("kubectl not found: run hack/install-cluster.sh")
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", c.Kubeconfig("admin")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

func (c Cluster) waitNodeReady(ctx context.Context, timeout time.Duration) error {
	err := daemon.Poll(ctx, timeout, 500*time.Millisecond, func() error {
		out, err := c.Kubectl(ctx, "get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && strings.TrimSpace(string(out)) != "True" {
			err = fmt.Errorf("Ready is %q", out)
		}
		return err
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("node %s: %w\n--- kubelet log (tail) ---\n%s", NodeName, err, daemon.Tail(c.Daemons(nil).LogPath("kubelet"), 3000))
	}
	return err
}

// ensureBridge creates the bridge with its address, unless it is there.
func ensureBridge() error {
	if exec.Command("ip", "link", "show", BridgeName).Run() == nil {
		return nil
	}
	for _, args := range [][]string{
		{"link", "add", BridgeName, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", BridgeIP, BridgePrefix), "dev", BridgeName},
		{"link", "set", BridgeName, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

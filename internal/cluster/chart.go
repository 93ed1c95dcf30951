package cluster

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// The chart's release, as stack.yaml's buildkit_url names it.
const (
	BuildkitNamespace = "openfaas"
	BuildkitRelease   = "buildkit"
	BuildkitReplicas  = 2
)

// BuildkitReplicaURL is replica i by its stable name behind the headless Service.
func BuildkitReplicaURL(i int) string {
	return fmt.Sprintf("tcp://%s-%d.%s-headless.%s.svc.%s:1234", BuildkitRelease, i, BuildkitRelease, BuildkitNamespace, ClusterDomain)
}

// ReplicaOrder is build-fn's order of the replicas for an image (its
// rendezvous hashing over stack.yaml's buildkit_url), preferred first.
func ReplicaOrder(image string) []string {
	var builders []*buildkit.Builder
	for i := 0; i < BuildkitReplicas; i++ {
		builders = append(builders, buildkit.New(buildkit.Daemon{Address: BuildkitReplicaURL(i)}, buildkit.Registries{}))
	}
	var order []string
	for _, b := range buildkit.NewPool(builders...).Order(image) {
		order = append(order, b.Address())
	}
	return order
}

// BuildkitServerName is the TLS name every replica's certificate carries.
const BuildkitServerName = BuildkitRelease + "." + BuildkitNamespace + ".svc." + ClusterDomain

// Buildkit TLS files: buildkitd's (the chart's Secret) and build-fn's client.
func (c Cluster) BuildkitCA() string         { return c.CertFile("buildkit-ca") }
func (c Cluster) BuildkitClientCert() string { return c.CertFile("buildkit-client") }
func (c Cluster) BuildkitClientKey() string  { return c.KeyFile("buildkit-client") }

// ensureBuildkitTLS issues what the chart README's recipe makes: a CA only
// for buildkitd and its clients, a server certificate naming the Service
// and every replica, and build-fn's client certificate.
func (c Cluster) ensureBuildkitTLS() error {
	ca, err := daemon.LoadOrCreateCA(c.BuildkitCA(), c.KeyFile("buildkit-ca"), "fnbuilder-cluster-buildkit-ca")
	if err != nil {
		return err
	}
	ns, name, d := BuildkitNamespace, BuildkitRelease, ClusterDomain
	hosts := []string{name, name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc." + d,
		"*." + name + "-headless." + ns + ".svc", "*." + name + "-headless." + ns + ".svc." + d, "localhost", "127.0.0.1"}
	for i := 0; i < BuildkitReplicas; i++ {
		hosts = append(hosts, fmt.Sprintf("%s-%d.%s-headless.%s.svc.%s", name, i, name, ns, d))
	}
	if _, err := ca.IssueFiles(c.CertFile("buildkit-server"), c.KeyFile("buildkit-server"), name, x509.ExtKeyUsageServerAuth, hosts...); err != nil {
		return err
	}
	_, err = ca.IssueFiles(c.BuildkitClientCert(), c.BuildkitClientKey(), "build-fn", x509.ExtKeyUsageClientAuth)
	return err
}

// secretManifest is a generic Secret of files (key = name in the Secret).
func secretManifest(namespace, name string, files map[string]string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: Opaque\ndata:\n", name, namespace)
	for key, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  %s: %s\n", key, base64.StdEncoding.EncodeToString(data))
	}
	return b.String(), nil
}

// installChart: charts/buildkit from the checkout, the image of PushImages,
// mutual TLS, 2 replicas, the cluster's plain-HTTP registry; helm waits for
// the pods to be Ready.
func (c Cluster) installChart(ctx context.Context, repo string) error {
	if err := c.ensureBuildkitTLS(); err != nil {
		return err
	}
	secret, err := secretManifest(BuildkitNamespace, "buildkit-daemon-certs", map[string]string{
		"ca.pem": c.BuildkitCA(), "cert.pem": c.CertFile("buildkit-server"), "key.pem": c.KeyFile("buildkit-server")})
	if err != nil {
		return err
	}
	ns := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", BuildkitNamespace)
	if err := c.apply(ctx, "buildkit-namespace", ns); err != nil {
		return err
	}
	if err := c.apply(ctx, "buildkit-daemon-certs", secret); err != nil {
		return err
	}
	reg := strings.ReplaceAll(RegistryAddr, ".", `\.`)
	args := []string{"upgrade", "--install", BuildkitRelease, filepath.Join(repo, "charts", "buildkit"),
		"--namespace", BuildkitNamespace,
		"--set", "image.repository=" + strings.TrimSuffix(BuildkitImage, ":v0.33.1-rootless"),
		"--set", "image.tag=v0.33.1-rootless",
		"--set", fmt.Sprintf("replicas=%d", BuildkitReplicas),
		"--set", "tls.enabled=true",
		"--set", "config.registries." + reg + ".http=true",
		"--set", "config.registries." + reg + ".insecure=true",
		"--wait", "--timeout", "5m"}
	_, err = c.Helm(ctx, args...)
	return err
}

// Helm runs helm as the admin, with its cache and configuration in the
// cluster's directory.
func (c Cluster) Helm(ctx context.Context, args ...string) ([]byte, error) {
	helm := daemon.Find("helm")
	if helm == "" {
		return nil, fmt.Errorf("helm not found: run hack/install-helm.sh")
	}
	cmd := exec.CommandContext(ctx, helm, append(args, "--kubeconfig", c.Kubeconfig("admin"))...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+c.path("helm", "cache"),
		"HELM_CONFIG_HOME="+c.path("helm", "config"), "HELM_DATA_HOME="+c.path("helm", "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

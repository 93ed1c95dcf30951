package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// client is one of the cluster's client certificates. Kubernetes reads the
// user from the common name and the groups from the organizations.
type client struct {
	name string
	cn   string
	orgs []string
}

var clients = []client{
	{name: "admin", cn: "fnbk-admin", orgs: []string{"system:masters"}},
	// The Node authorizer and NodeRestriction know a kubelet by this form.
	{name: "kubelet", cn: "system:node:" + NodeName, orgs: []string{"system:nodes"}},
	{name: "controller-manager", cn: "system:kube-controller-manager"},
	{name: "scheduler", cn: "system:kube-scheduler"},
	{name: "kube-proxy", cn: "system:kube-proxy"},
	// The apiserver's client to the kubelet (logs, exec, port-forward).
	{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
}

// kubeconfigClients get a kubeconfig each.
var kubeconfigClients = []string{"admin", "kubelet", "controller-manager", "scheduler", "kube-proxy"}

// CertFile and KeyFile of one certificate in PKIDir.
func (c Cluster) CertFile(name string) string { return filepath.Join(c.PKIDir(), name+".pem") }
func (c Cluster) KeyFile(name string) string  { return filepath.Join(c.PKIDir(), name+"-key.pem") }

// CAFile is the cluster CA's certificate.
func (c Cluster) CAFile() string { return c.CertFile("ca") }

// ServiceAccountKey and ServiceAccountPub sign and check service-account tokens.
func (c Cluster) ServiceAccountKey() string { return filepath.Join(c.PKIDir(), "sa.key") }
func (c Cluster) ServiceAccountPub() string { return filepath.Join(c.PKIDir(), "sa.pub") }

// EnsurePKI makes what is missing: the CA, the apiserver's and the
// kubelet's serving certificates, every client certificate, the
// service-account key pair and the kubeconfigs. What exists is kept, so a
// second `make cluster` keeps working with the same kubeconfig.
func (c Cluster) EnsurePKI() error {
	if err := os.MkdirAll(c.PKIDir(), 0o700); err != nil {
		return err
	}
	ca, err := daemon.LoadOrCreateCA(c.CAFile(), c.KeyFile("ca"), "fnbuilder-cluster-ca")
	if err != nil {
		return err
	}
	servers := []struct {
		name, cn string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", []string{BridgeIP, "127.0.0.1", APIServiceIP, "localhost", "kubernetes",
			"kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain}},
		{"kubelet-serving", NodeName, []string{BridgeIP, NodeName}},
	}
	for _, s := range servers {
		if _, err := ca.IssueFiles(c.CertFile(s.name), c.KeyFile(s.name), s.cn, x509.ExtKeyUsageServerAuth, s.hosts...); err != nil {
			return fmt.Errorf("certificate %s: %w", s.name, err)
		}
	}
	for _, cl := range clients {
		if _, err := ca.IssueFilesFor(c.CertFile(cl.name), c.KeyFile(cl.name), cl.cn, cl.orgs, x509.ExtKeyUsageClientAuth); err != nil {
			return fmt.Errorf("certificate %s: %w", cl.name, err)
		}
	}
	if err := c.ensureServiceAccountKey(); err != nil {
		return err
	}
	for _, name := range kubeconfigClients {
		if err := daemon.WriteFileAtomic(c.Kubeconfig(name), []byte(c.kubeconfig(name)), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (c Cluster) ensureServiceAccountKey() error {
	if _, err := os.Stat(c.ServiceAccountKey()); err == nil {
		if _, err := os.Stat(c.ServiceAccountPub()); err == nil {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := daemon.WriteFileAtomic(c.ServiceAccountKey(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return daemon.WriteFileAtomic(c.ServiceAccountPub(), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// kubeconfig names the files rather than embedding them: one source of truth.
func (c Cluster) kubeconfig(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fnbuilder
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: fnbuilder
  context:
    cluster: fnbuilder
    user: %s
current-context: fnbuilder
`, APIServerURL, c.CAFile(), name, c.CertFile(name), c.KeyFile(name), name)
}

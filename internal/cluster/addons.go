package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// coreDNSManifest: CoreDNS as the kube-dns Service at DNSServiceIP, from the
// cluster's registry. No forward plugin: nothing outside to forward to.
func coreDNSManifest() string {
	return fmt.Sprintf(`# written by internal/cluster
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes %[1]s in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
        loop
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
        - name: coredns
          image: %[2]s
          args: ["-conf", "/etc/coredns/Corefile"]
          ports:
            - {containerPort: 53, name: dns, protocol: UDP}
            - {containerPort: 53, name: dns-tcp, protocol: TCP}
          readinessProbe:
            httpGet: {path: /ready, port: 8181}
            periodSeconds: 5
          livenessProbe:
            httpGet: {path: /health, port: 8080}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: %[3]s
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
`, ClusterDomain, CoreDNSImage, DNSServiceIP)
}

// apply applies a manifest as the admin. Manifests may be Secrets (the
// payload secret, build-fn's private key, BuildKit's TLS keys): they are
// kept for root only, as secrets/ and pki/ are.
func (c Cluster) apply(ctx context.Context, name, manifest string) error {
	dir := c.path("manifests")
	p := filepath.Join(dir, name+".yaml")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// An older make cluster made it readable by all.
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if err := daemon.WriteFileAtomic(p, []byte(manifest), 0o600); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "apply", "-f", p)
	return err
}

// deployCoreDNS applies CoreDNS and waits for it.
func (c Cluster) deployCoreDNS(ctx context.Context) error {
	if err := c.apply(ctx, "coredns", coreDNSManifest()); err != nil {
		return err
	}
	out, err := c.Kubectl(ctx, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s")
	if err != nil {
		return fmt.Errorf("CoreDNS: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

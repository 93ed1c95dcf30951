package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	"github.com/fnbuilder/fnbuilder/internal/templateimage"
)

// build-fn runs in the cluster from the production image: template/
// fnbuilder-go's Dockerfile, built by the cluster's own BuildKit with
// internal/templateimage (stand-ins for its base images: nothing can be
// pulled here).
const (
	// GolangImage is the golang stand-in (bench builds Go with it too).
	GolangImage    = RegistryAddr + "/" + templateimage.GolangRepo
	BuildFnImage   = RegistryAddr + "/fnbuilder/build-fn:cluster"
	FunctionsNS    = "openfaas-fn"
	buildFnTenant  = "fnbuilder-cluster"
	secretMountDir = "/var/openfaas/secrets"
)

// buildBuildFn builds build-fn's production image on a buildkit replica,
// unless the registry has the image built from the same inputs. The build
// reaches this machine's module cache on the bridge.
func (c Cluster) buildBuildFn(ctx context.Context, out io.Writer) (built bool, err error) {
	svcIP, err := c.Kubectl(ctx, "-n", BuildkitNamespace, "get", "service", BuildkitRelease, "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return false, err
	}
	builder := buildkit.New(buildkit.Daemon{Address: "tcp://" + strings.TrimSpace(string(svcIP)) + ":1234",
		TLS: &buildkit.TLS{CA: c.BuildkitCA(), Cert: c.BuildkitClientCert(), Key: c.BuildkitClientKey(), ServerName: BuildkitServerName}},
		buildkit.Registries{Insecure: []string{RegistryAddr}})
	images, err := templateimage.Builder{
		Repo:     c.Repo,
		Registry: RegistryAddr,
		BuildKit: builder,
		Goproxy:  GoproxyAddr,
		Tenant:   buildFnTenant,
		Records:  c.path("images"),
		Logf:     lineLogf(out),
	}.Build(ctx, []templateimage.Function{{Name: "build-fn", Ref: BuildFnImage}})
	if err != nil {
		return false, err
	}
	return images["build-fn"].Built, nil
}

// PayloadSecret is the HMAC key faas-cli --payload-secret needs for build-fn.
func (c Cluster) PayloadSecret() string { return c.path("secrets", "payload-secret") }

func (c Cluster) buildSecretsKey() string { return c.path("secrets", "build-secrets-key") }

// ensureFunctionSecrets makes build-fn's payload secret and build-secrets
// key once; they are kept across up and down.
func (c Cluster) ensureFunctionSecrets() error {
	if err := os.MkdirAll(c.path("secrets"), 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(c.PayloadSecret()); err != nil {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		if err := daemon.WriteFileAtomic(c.PayloadSecret(), []byte(base64.StdEncoding.EncodeToString(b)), 0o600); err != nil {
			return err
		}
	}
	if _, err := os.Stat(c.buildSecretsKey()); err != nil {
		kp, err := secrets.GenerateKeyPair()
		if err != nil {
			return err
		}
		return secrets.WriteKeyFiles(c.buildSecretsKey(), kp)
	}
	return nil
}

// buildFnSecrets: each OpenFaaS secret of stack.yaml's build-fn as a
// Kubernetes Secret of the same name and key, as faas-netes makes them.
func (c Cluster) buildFnSecrets() map[string]string {
	return map[string]string{
		"payload-secret":    c.PayloadSecret(),
		"build-secrets-key": c.buildSecretsKey(),
		"buildkit-tls-ca":   c.BuildkitCA(),
		"buildkit-tls-cert": c.BuildkitClientCert(),
		"buildkit-tls-key":  c.BuildkitClientKey(),
	}
}

// buildFnManifest: the Deployment and Service faas-netes gives a function,
// with stack.yaml's environment for build-fn (registry and replicas of this
// cluster) and the Secrets projected at /var/openfaas/secrets.
func (c Cluster) buildFnManifest() string {
	var urls []string
	for i := 0; i < BuildkitReplicas; i++ {
		urls = append(urls, BuildkitReplicaURL(i))
	}
	env := [][2]string{
		{"buildkit_url", strings.Join(urls, ",")},
		{"buildkit_tls_server_name", BuildkitServerName},
		{"buildkit_tls_ca", secretMountDir + "/buildkit-tls-ca"},
		{"buildkit_tls_cert", secretMountDir + "/buildkit-tls-cert"},
		{"buildkit_tls_key", secretMountDir + "/buildkit-tls-key"},
		{"cache_repo", RegistryAddr + "/buildcache"},
		{"insecure_registries", RegistryAddr},
		{"max_builds", "2"}, {"max_queued", "50"}, {"queue_timeout", "10m"}, {"ready_path", "/ready"},
		{"build_timeout", "30m"}, {"exec_timeout", "31m"}, {"read_timeout", "31m"}, {"write_timeout", "31m10s"},
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# written by internal/cluster: the shape faas-netes gives a function
apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: build-fn
  namespace: %[1]s
  labels: {faas_function: build-fn}
spec:
  replicas: 1
  selector: {matchLabels: {faas_function: build-fn}}
  template:
    metadata:
      labels: {faas_function: build-fn}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      containers:
        - name: build-fn
          image: %[2]s
          imagePullPolicy: Always
          ports: [{containerPort: 8080, name: http, protocol: TCP}]
          # faas-netes (CE) probes both on the watchdog's /_/health, with
          # its chart's timings; /_/ready only with OpenFaaS Pro's
          # com.openfaas.ready.http.path annotation (docs/cluster-notes.md).
          readinessProbe:
            httpGet: {path: /_/health, port: 8080}
            initialDelaySeconds: 2
            periodSeconds: 2
            timeoutSeconds: 1
          livenessProbe:
            httpGet: {path: /_/health, port: 8080}
            initialDelaySeconds: 2
            periodSeconds: 2
            timeoutSeconds: 1
          volumeMounts: [{name: build-fn-projected-secrets, mountPath: %[3]s, readOnly: true}]
          env:
`, FunctionsNS, BuildFnImage, secretMountDir)
	for _, kv := range env {
		fmt.Fprintf(&b, "            - {name: %s, value: %q}\n", kv[0], kv[1])
	}
	b.WriteString("      volumes:\n        - name: build-fn-projected-secrets\n          projected:\n            sources:\n")
	for _, name := range []string{"payload-secret", "build-secrets-key", "buildkit-tls-ca", "buildkit-tls-cert", "buildkit-tls-key"} {
		fmt.Fprintf(&b, "              - secret: {name: %s, items: [{key: %s, path: %s}]}\n", name, name, name)
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: build-fn, namespace: %s, labels: {faas_function: build-fn}}
spec:
  selector: {faas_function: build-fn}
  ports: [{name: http, port: 8080, targetPort: 8080, protocol: TCP}]
`, FunctionsNS)
	return b.String()
}

// deployBuildFn builds (when needed) and deploys build-fn and returns the
// address the host reaches it at: its Service's ClusterIP.
func (c Cluster) deployBuildFn(ctx context.Context, out io.Writer) (string, error) {
	built, err := c.buildBuildFn(ctx, out)
	if err != nil {
		return "", err
	}
	if err := c.ensureFunctionSecrets(); err != nil {
		return "", err
	}
	if err := c.apply(ctx, "build-fn", c.buildFnManifest()); err != nil {
		return "", err
	}
	for name, file := range c.buildFnSecrets() {
		m, err := secretManifest(FunctionsNS, name, map[string]string{name: file})
		if err != nil {
			return "", err
		}
		if err := c.apply(ctx, "secret-"+name, m); err != nil {
			return "", err
		}
	}
	// A new image under the same tag: restart so that it is pulled.
	if built {
		if _, err := c.Kubectl(ctx, "-n", FunctionsNS, "rollout", "restart", "deployment/build-fn"); err != nil {
			return "", err
		}
	}
	if o, err := c.Kubectl(ctx, "-n", FunctionsNS, "rollout", "status", "deployment/build-fn", "--timeout=180s"); err != nil {
		return "", fmt.Errorf("build-fn: %w\n%s", err, o)
	}
	url, err := c.BuildFnURL(ctx)
	if err != nil {
		return "", err
	}
	// The pod is Ready once the watchdog is up, before build-fn listens; in
	// between the watchdog answers a streamed build 200 with an empty body,
	// which faas-cli takes for a success. /publickey answers only from
	// build-fn itself.
	if err := WaitServing(ctx, url, 2*time.Minute); err != nil {
		return "", fmt.Errorf("build-fn: %w", err)
	}
	return url, nil
}

// BuildFnURL is where the host reaches build-fn: its Service's ClusterIP,
// at the root of its own address.
func (c Cluster) BuildFnURL(ctx context.Context) (string, error) {
	ip, err := c.Kubectl(ctx, "-n", FunctionsNS, "get", "service", "build-fn", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(string(ip)) == "" {
		return "", errors.New("build-fn Service has no ClusterIP")
	}
	return "http://" + strings.TrimSpace(string(ip)) + ":8080/", nil
}

// WaitServing waits until build-fn at url serves: its GET /publickey,
// which build-fn answers itself, answers 200.
func WaitServing(ctx context.Context, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	return daemon.Poll(ctx, timeout, 500*time.Millisecond, func() error {
		return daemon.Get(ctx, client, strings.TrimSuffix(url, "/")+"/publickey", http.StatusOK)
	})
}

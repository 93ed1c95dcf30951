package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/secrets"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// build-fn runs in the cluster from the production image: template/
// fnbuilder-go's Dockerfile, built by the cluster's own BuildKit, with
// stand-ins for the three base images it names (nothing can be pulled here).
const (
	WatchdogImage  = RegistryAddr + "/openfaas/of-watchdog:0.11.3"
	AlpineImage    = RegistryAddr + "/library/alpine:3.22.2"
	GolangImage    = RegistryAddr + "/library/golang:1.26-alpine"
	BuildFnImage   = RegistryAddr + "/fnbuilder/build-fn:cluster"
	FunctionsNS    = "openfaas-fn"
	goproxyAddr    = BridgeIP + ":5302"
	buildFnTenant  = "fnbuilder-cluster"
	secretMountDir = "/var/openfaas/secrets"
)

// templateContexts: FROM names of template/fnbuilder-go/Dockerfile → stand-ins.
var templateContexts = map[string]string{
	"ghcr.io/openfaas/of-watchdog:0.11.3": "docker-image://" + WatchdogImage,
	"golang:1.26-alpine":                  "docker-image://" + GolangImage,
	"alpine:3.22.2":                       "docker-image://" + AlpineImage,
}

// sharedTool is one of ../shared/tools (faas-cli, of-watchdog): the
// variable the tests set, else beside the checkout.
func (c Cluster) sharedTool(env, name string) (string, error) {
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(filepath.Dir(c.Repo), "shared", "tools", name)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found (%s): set %s", name, p, env)
	}
	return p, nil
}

// Stand-in scripts: apk has nothing to install offline (the template asks
// for git and ca-certificates; the certificates are in the image), and
// Debian's busybox-static has no addgroup/adduser.
const (
	apkStandIn      = "#!/bin/sh\n# Offline stand-in for apk: what the template asks for is built in.\necho \"apk (offline stand-in) $*: nothing to do\"\n"
	addgroupStandIn = `#!/bin/sh
# Offline stand-in for busybox addgroup -S NAME.
eval name=\${$#}
gid=$(awk -F: 'BEGIN{m=100} $3>=m && $3<1000 {m=$3+1} END{print m}' /etc/group)
echo "$name:x:$gid:" >> /etc/group
`
	adduserStandIn = `#!/bin/sh
# Offline stand-in for busybox adduser -S -G GROUP NAME.
group=""; while [ $# -gt 1 ]; do case $1 in -G) group=$2; shift 2;; *) shift;; esac; done
name=$1
gid=$(awk -F: -v g="$group" '$1==g {print $3}' /etc/group)
uid=$(awk -F: 'BEGIN{m=100} $3>=m && $3<1000 {m=$3+1} END{print m}' /etc/passwd)
echo "$name:x:$uid:${gid:-$uid}:Linux User,,,:/home/$name:/sbin/nologin" >> /etc/passwd
mkdir -p /home/$name && chown $uid:${gid:-$uid} /home/$name
`
)

func alpineStandIn(tmp string) (rootfs, v1.Config, error) {
	r, _, err := busyboxImage(tmp)
	if err != nil {
		return nil, v1.Config{}, err
	}
	for path, text := range map[string]string{"sbin/apk": apkStandIn, "sbin/addgroup": addgroupStandIn, "sbin/adduser": adduserStandIn} {
		if err := r.content(tmp, path, text, 0o755); err != nil {
			return nil, v1.Config{}, err
		}
	}
	r.file("etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
	return r, v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: []string{"/bin/sh"}}, nil
}

func golangStandIn(tmp string) (rootfs, v1.Config, error) {
	r, _, err := alpineStandIn(tmp)
	if err != nil {
		return nil, v1.Config{}, err
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, v1.Config{}, fmt.Errorf("go env GOROOT: %v", err)
	}
	goroot, err := treeOf(strings.TrimSpace(string(out)))
	if err != nil {
		return nil, v1.Config{}, err
	}
	for p, e := range goroot {
		r["usr/local/go/"+p] = e
	}
	r.dir("go", 0o777, 0, 0)
	return r, v1.Config{
		Env:        []string{"GOPATH=/go", "GOTOOLCHAIN=local", "PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: "/go",
		Cmd:        []string{"/bin/sh"},
	}, nil
}

// pushTemplateBases pushes the three stand-ins.
func (c Cluster) pushTemplateBases(ctx context.Context, out io.Writer) error {
	watchdog, err := c.sharedTool("OF_WATCHDOG", "of-watchdog")
	if err != nil {
		return err
	}
	return pushAll(ctx, out, []image{
		{WatchdogImage, func(string) (rootfs, v1.Config, error) {
			r := rootfs{}
			r.file("fwatchdog", watchdog, 0o755)
			return r, v1.Config{}, nil
		}},
		{AlpineImage, alpineStandIn},
		{GolangImage, golangStandIn},
	})
}

// buildBuildFn builds build-fn's production image on a buildkit replica,
// unless the registry has the image built from the same context. Go modules
// come from this machine's module cache, served as a GOPROXY on the bridge
// while the build runs.
func (c Cluster) buildBuildFn(ctx context.Context, out io.Writer) (built bool, err error) {
	faasCLI, err := c.sharedTool("FAAS_CLI", "faas-cli")
	if err != nil {
		return false, err
	}
	// The context exactly as faas-cli lays it out (build/build-fn/).
	shrink := exec.CommandContext(ctx, faasCLI, "build", "--shrinkwrap", "-f", "stack.yaml", "--filter", "build-fn")
	shrink.Dir = c.Repo
	if b, err := shrink.CombinedOutput(); err != nil {
		return false, fmt.Errorf("faas-cli build --shrinkwrap: %v\n%s", err, b)
	}
	contextDir := filepath.Join(c.Repo, "build", "build-fn")
	inputs, err := treeDigest(contextDir)
	if err != nil {
		return false, err
	}
	record := c.path("images", "build-fn.json")
	var rec struct{ Inputs, Digest string }
	if b, err := os.ReadFile(record); err == nil && json.Unmarshal(b, &rec) == nil && rec.Inputs == inputs {
		if d, err := registryDigest(ctx, BuildFnImage); err == nil && d == rec.Digest {
			fmt.Fprintf(out, "image %s@%s up to date\n", BuildFnImage, d)
			return false, nil
		}
	}
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return false, fmt.Errorf("go env GOMODCACHE: %v", err)
	}
	download := exec.CommandContext(ctx, "go", "mod", "download")
	download.Dir = c.Repo
	if b, err := download.CombinedOutput(); err != nil {
		return false, fmt.Errorf("go mod download: %v\n%s", err, b)
	}
	stop, err := serveGoproxy(filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download"))
	if err != nil {
		return false, err
	}
	defer stop()
	svcIP, err := c.Kubectl(ctx, "-n", BuildkitNamespace, "get", "service", BuildkitRelease, "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return false, err
	}
	builder := buildkit.New(buildkit.Daemon{Address: "tcp://" + strings.TrimSpace(string(svcIP)) + ":1234",
		TLS: &buildkit.TLS{CA: c.BuildkitCA(), Cert: c.BuildkitClientCert(), Key: c.BuildkitClientKey(), ServerName: BuildkitServerName}},
		buildkit.Registries{Insecure: []string{RegistryAddr}})
	t0 := time.Now()
	digest, err := daemon.BuildPush(ctx, builder, buildkit.Build{
		Context:   buildkit.Dir(contextDir),
		Image:     BuildFnImage,
		BuildArgs: map[string]string{"FUNCTION": "build-fn", "GOPROXY": "http://" + goproxyAddr},
		Contexts:  templateContexts,
		Tenant:    buildFnTenant,
	})
	if err != nil {
		return false, err
	}
	rec.Inputs, rec.Digest = inputs, digest
	b, _ := json.Marshal(rec)
	if err := os.MkdirAll(filepath.Dir(record), 0o755); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "image %s@%s built from template/fnbuilder-go (%.0f s)\n", BuildFnImage, digest, time.Since(t0).Seconds())
	return true, daemon.WriteFileAtomic(record, b, 0o644)
}

// serveGoproxy serves a module cache's download dir (it is in GOPROXY
// layout) on the bridge until stop is called.
func serveGoproxy(dir string) (stop func(), err error) {
	l, err := net.Listen("tcp", goproxyAddr)
	if err != nil {
		return nil, fmt.Errorf("GOPROXY for the build: %w", err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return func() { srv.Close() }, nil
}

// treeDigest is a digest of the paths, modes and contents of a build
// context as BuildKit receives it: what its .dockerignore leaves out
// (local binaries, tests no function imports) cannot change the image.
func treeDigest(dir string) (string, error) {
	var patterns []string
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf(".dockerignore: %w", err)
		}
	}
	ignored, err := patternmatcher.New(patterns)
	if err != nil {
		return "", fmt.Errorf(".dockerignore: %w", err)
	}
	h := sha256.New()
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if skip, err := ignored.MatchesOrParentMatches(rel); err != nil {
			return err
		} else if skip {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %o\n", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
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
	if err := c.pushTemplateBases(ctx, out); err != nil {
		return "", err
	}
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

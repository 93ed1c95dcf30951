package packaging

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	bkconfig "github.com/moby/buildkit/cmd/buildkitd/config"
	"github.com/pelletier/go-toml/v2"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
)

const (
	chartDir    = "charts/buildkit"
	releaseName = "buildkit"
	namespace   = "openfaas"
	// A helm built with `go install` assumes Kubernetes 1.20; the chart
	// needs the pod appArmorProfile field (1.30), its default securityMode
	// (userns) user namespaces and procMount (on by default from 1.33).
	kubeVersion = "1.33.0"

	registryCADir = "/etc/buildkit/registry-ca"
)

// The securityMode values (values.yaml, README "Security modes").
const (
	modeUserns     = "userns"
	modePrivileged = "privileged"
	modeUnsafe     = "unsafe-shared-pid"
)

// What each image runs as and where: the rootless image's rootlesskit user
// and paths, and the rootful image's.
const (
	rootlessSocket   = "unix:///run/user/1000/buildkit/buildkitd.sock"
	rootlessCacheDir = "/home/user/.local/share/buildkit"
	rootfulSocket    = "unix:///run/buildkit/buildkitd.sock"
	rootfulCacheDir  = "/var/lib/buildkit"
	sandboxOffFlag   = "--oci-worker-no-process-sandbox"
)

// chartValues is the part of the chart's values the assertions compare
// the rendered objects with.
type chartValues struct {
	Replicas        int32 `yaml:"replicas"`
	MinReadySeconds int32 `yaml:"minReadySeconds"`
	Port            int32 `yaml:"port"`
	TLS             struct {
		Enabled    bool   `yaml:"enabled"`
		SecretName string `yaml:"secretName"`
	} `yaml:"tls"`
	Config struct {
		Registries map[string]struct {
			Mirrors  []string `yaml:"mirrors"`
			HTTP     *bool    `yaml:"http"`
			Insecure *bool    `yaml:"insecure"`
			CA       []string `yaml:"ca"`
		} `yaml:"registries"`
		RegistryCASecret string `yaml:"registryCASecret"`
		GC               struct {
			Enabled       bool   `yaml:"enabled"`
			ReservedSpace string `yaml:"reservedSpace"`
			MaxUsedSpace  string `yaml:"maxUsedSpace"`
			MinFreeSpace  string `yaml:"minFreeSpace"`
		} `yaml:"gc"`
	} `yaml:"config"`
	Persistence struct {
		Enabled bool   `yaml:"enabled"`
		Size    string `yaml:"size"`
	} `yaml:"persistence"`
}

// chartCase is one values file; the facts it must produce are spelt out
// here, not derived, so that a wrong values file fails too.
type chartCase struct {
	name        string
	valuesFile  string   // relative to the chart; "" for the defaults only
	set         []string // helm --set arguments
	kubeVersion string   // "" for kubeVersion
	mode        string
	image       string
	replicas    int32
	tls         bool
	persistence bool
	// insecureRegistry must appear in buildkitd.toml with http and insecure.
	insecureRegistry string
}

var chartCases = []chartCase{
	{name: "defaults", mode: modeUserns, image: "moby/buildkit:v0.33.1-rootless", replicas: 2},
	{
		name:             "multi-tls",
		valuesFile:       "values-multi-tls.yaml",
		mode:             modeUserns,
		image:            "moby/buildkit:v0.33.1-rootless",
		replicas:         3,
		tls:              true,
		persistence:      true,
		insecureRegistry: "registry.openfaas.svc.cluster.local:5000",
	},
	{
		// The guide's self-hosted registry: TLS from a private CA.
		name:       "private-registry",
		valuesFile: "values-private-registry.yaml",
		mode:       modeUserns,
		image:      "moby/buildkit:v0.33.1-rootless",
		replicas:   2,
		tls:        true,
	},
	{
		// For clusters older than 1.33: the rootful image, privileged.
		name:        "privileged",
		set:         []string{"securityMode=privileged", "tls.enabled=true"},
		kubeVersion: "1.30.0",
		mode:        modePrivileged,
		image:       "moby/buildkit:v0.33.1",
		replicas:    2,
		tls:         true,
	},
	{
		name:     "unsafe-shared-pid",
		set:      []string{"securityMode=unsafe-shared-pid", "image.tag=v0.33.1-rootless"},
		mode:     modeUnsafe,
		image:    "moby/buildkit:v0.33.1-rootless",
		replicas: 2,
	},
	{
		// An own build of the image: image.tag is used as it is.
		name:     "userns-own-image",
		set:      []string{"image.repository=registry.local:5000/buildkit", "image.tag=0.33.1-local"},
		mode:     modeUserns,
		image:    "registry.local:5000/buildkit:0.33.1-local",
		replicas: 2,
	},
}

func (c chartCase) kube() string {
	if c.kubeVersion != "" {
		return c.kubeVersion
	}
	return kubeVersion
}

// rootless reports whether the mode runs the rootless image.
func (c chartCase) rootless() bool { return c.mode != modePrivileged }

func (c chartCase) socket() string {
	if c.rootless() {
		return rootlessSocket
	}
	return rootfulSocket
}

func (c chartCase) cacheDir() string {
	if c.rootless() {
		return rootlessCacheDir
	}
	return rootfulCacheDir
}

// helm finds the helm binary: the tools dir first, then PATH. A missing helm
// is a failure, never a skip: the chart would otherwise go untested.
func helm(t *testing.T) string {
	t.Helper()
	p := filepath.Join(toolsBin(), "helm")
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Fatalf("helm not found in %s nor in PATH: run hack/install-helm.sh (it builds helm v3.22.0 with go install)", toolsBin())
	return ""
}

// helmEnv keeps helm away from the user's config, cache and repositories.
func helmEnv(t *testing.T) []string {
	dir := t.TempDir()
	return []string{
		"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data"),
	}
}

func (c chartCase) valuesArgs(root string) []string {
	var args []string
	if c.valuesFile != "" {
		args = append(args, "-f", filepath.Join(root, chartDir, c.valuesFile))
	}
	for _, s := range c.set {
		args = append(args, "--set", s)
	}
	return append(args, "--kube-version", c.kube())
}

// values merges the chart's values.yaml with the case's values file.
func (c chartCase) values(t *testing.T, root string) chartValues {
	t.Helper()
	var v chartValues
	files := []string{filepath.Join(root, chartDir, "values.yaml")}
	if c.valuesFile != "" {
		files = append(files, filepath.Join(root, chartDir, c.valuesFile))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Decoding a second file over the first overrides what it sets,
		// like helm's merge for the keys compared here.
		if err := yaml.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return v
}

// values.schema.json must turn a misspelt value into an error, not a
// silently ignored setting.
func TestChartSchemaRejectsUnknownValues(t *testing.T) {
	root := repoRoot(t)
	bin := helm(t)
	for _, set := range []string{"replica=3", "tls.enable=true", "config.gc.keepstorage=1GB", "podAntiAffinity=always",
		"securityMode=rootless", "securityMode=unsafe"} {
		out, stderr, err := runResult(root, helmEnv(t), bin, "template", releaseName, filepath.Join(root, chartDir),
			"--kube-version", kubeVersion, "--set", set)
		if err == nil {
			t.Errorf("helm template --set %s succeeded; want a schema error\n%s", set, out)
		} else if !strings.Contains(stderr, "schema") {
			t.Errorf("helm template --set %s failed without naming the schema:\n%s", set, stderr)
		}
	}
}

// rendered is what helm template produced, decoded into typed objects.
type rendered struct {
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	configMaps   []*corev1.ConfigMap
	pdbs         []*policyv1.PodDisruptionBudget
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStrict decodes every YAML document with client-go's scheme in strict
// mode: an unknown or misspelt field, a wrong type or a duplicate field fails.
func decodeStrict(t *testing.T, manifest string) rendered {
	t.Helper()
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var r rendered
	for i, doc := range docSeparator.Split(manifest, -1) {
		if isEmptyDoc(doc) {
			continue
		}
		obj, gvk, err := decoder.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Errorf("document %d: %v\n%s", i, err, doc)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			r.statefulSets = append(r.statefulSets, o)
		case *corev1.Service:
			r.services = append(r.services, o)
		case *corev1.ConfigMap:
			r.configMaps = append(r.configMaps, o)
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		default:
			t.Errorf("document %d: unexpected %s (%T); add an assertion for it", i, gvk, obj)
		}
		if m, ok := obj.(interface{ GetNamespace() string }); ok && m.GetNamespace() != "" && m.GetNamespace() != namespace {
			t.Errorf("document %d: namespace %q, want the release's (or none)", i, m.GetNamespace())
		}
	}
	return r
}

func isEmptyDoc(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// TestChart lints (strict) and renders the chart with each case's values,
// and checks what it renders.
func TestChart(t *testing.T) {
	root := repoRoot(t)
	bin := helm(t)
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			run(t, root, helmEnv(t), bin, append([]string{"lint", "--strict", filepath.Join(root, chartDir)}, c.valuesArgs(root)...)...)
			args := append([]string{"template", releaseName, filepath.Join(root, chartDir),
				"--namespace", namespace}, c.valuesArgs(root)...)
			manifest := run(t, root, helmEnv(t), bin, args...)
			r := decodeStrict(t, manifest)
			if t.Failed() {
				return
			}
			checkRendered(t, c, c.values(t, root), r)
		})
	}
}

// securityMode userns needs user namespaces and procMount (Kubernetes 1.33):
// an older cluster gets an error naming the way out, not a pod that never
// starts.
func TestChartUsernsNeedsKube133(t *testing.T) {
	root := repoRoot(t)
	out, stderr, err := runResult(root, helmEnv(t), helm(t), "template", releaseName, filepath.Join(root, chartDir),
		"--kube-version", "1.32.0")
	if err == nil {
		t.Fatalf("securityMode userns rendered for Kubernetes 1.32; want an error\n%s", out)
	}
	if !strings.Contains(stderr, "securityMode userns needs Kubernetes >= 1.33") || !strings.Contains(stderr, "privileged") {
		t.Errorf("error does not say what userns needs and what to use instead:\n%s", stderr)
	}
}

// The install notes warn loudly about unsafe-shared-pid, and only about it.
// helm template leaves NOTES.txt out, so a copy of the chart renders it into
// a ConfigMap through a named template.
func TestChartNotesWarnAboutUnsafeMode(t *testing.T) {
	root := repoRoot(t)
	chart := t.TempDir()
	run(t, root, nil, "cp", "-a", filepath.Join(root, chartDir)+"/.", chart)
	notes, err := os.ReadFile(filepath.Join(chart, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"_notes_under_test.tpl": `{{- define "test.notes" -}}` + string(notes) + `{{- end -}}`,
		"notes-under-test.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include \"test.notes\" . | toJson }}\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(chart, "templates", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"template", releaseName, chart, "--namespace", namespace,
				"--show-only", "templates/notes-under-test.yaml"}, c.valuesArgs(root)...)
			r := decodeStrict(t, run(t, root, helmEnv(t), helm(t), args...))
			if len(r.configMaps) != 1 {
				t.Fatalf("rendered %d notes ConfigMaps, want 1", len(r.configMaps))
			}
			text := r.configMaps[0].Data["notes"]
			warned := strings.Contains(text, "WARNING: securityMode=unsafe-shared-pid") &&
				strings.Contains(text, sandboxOffFlag) && strings.Contains(text, "secrets")
			if want := c.mode == modeUnsafe; warned != want {
				t.Errorf("securityMode %s: notes warn about the shared PID namespace: %v, want %v\n%s", c.mode, warned, want, text)
			}
			if !strings.Contains(text, "securityMode "+c.mode) || !strings.Contains(text, c.image) {
				t.Errorf("notes do not name the mode %s and the image %s:\n%s", c.mode, c.image, text)
			}
		})
	}
}

func checkRendered(t *testing.T, c chartCase, v chartValues, r rendered) {
	if len(r.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(r.statefulSets))
	}
	sts := r.statefulSets[0]
	if sts.Spec.Replicas == nil {
		t.Errorf("StatefulSet replicas unset, want %d", c.replicas)
	} else if *sts.Spec.Replicas != c.replicas {
		t.Errorf("StatefulSet replicas = %d, want %d", *sts.Spec.Replicas, c.replicas)
	}
	if sts.Spec.MinReadySeconds != v.MinReadySeconds || sts.Spec.MinReadySeconds == 0 {
		t.Errorf("StatefulSet minReadySeconds = %d, want the values' %d (> 0: a roll must wait for DNS)", sts.Spec.MinReadySeconds, v.MinReadySeconds)
	}
	pod := sts.Spec.Template.Spec
	podLabels := sts.Spec.Template.Labels
	if !selects(sts.Spec.Selector.MatchLabels, podLabels) || len(sts.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("StatefulSet selector %v does not select its pods %v", sts.Spec.Selector.MatchLabels, podLabels)
	}

	checkServices(t, c, v, sts, r.services)

	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1 (buildkitd)", len(pod.Containers))
	}
	ctr := pod.Containers[0]
	if ctr.Image != c.image {
		t.Errorf("image %q, want %q", ctr.Image, c.image)
	}
	checkSandbox(t, c, pod, ctr)
	if addr := fmt.Sprintf("tcp://0.0.0.0:%d", v.Port); !hasFlag(ctr.Args, "--addr", addr) {
		t.Errorf("args %q do not listen on %s", ctr.Args, addr)
	}
	// The probes' buildctl dials the image's own unix socket.
	if !hasFlag(ctr.Args, "--addr", c.socket()) {
		t.Errorf("args %q do not listen on %s, the socket the probes use", ctr.Args, c.socket())
	}
	probe := []string{"buildctl", "--addr", c.socket(), "debug", "workers"}
	for name, p := range map[string]*corev1.Probe{"readiness": ctr.ReadinessProbe, "liveness": ctr.LivenessProbe} {
		if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, probe) {
			t.Errorf("%s probe %+v, want exec %q", name, p, probe)
		}
	}
	if ctr.Resources.Requests.Memory().IsZero() || ctr.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want memory requests and limits", ctr.Resources)
	}

	checkTLS(t, c, v, pod, ctr)
	checkCache(t, c, v, sts, ctr)
	checkPDB(t, sts, r.pdbs)
	checkConfigMap(t, c, v, pod, ctr, r.configMaps)
}

func selects(selector, labels map[string]string) bool {
	for k, want := range selector {
		if labels[k] != want {
			return false
		}
	}
	return true
}

// hasFlag reports whether args hold flag followed by value.
func hasFlag(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return true
		}
	}
	return false
}

func checkServices(t *testing.T, c chartCase, v chartValues, sts *appsv1.StatefulSet, services []*corev1.Service) {
	var headless, regular *corev1.Service
	for _, s := range services {
		if s.Name == sts.Spec.ServiceName {
			headless = s
		} else {
			regular = s
		}
	}
	if headless == nil {
		t.Fatalf("no Service named %q, the StatefulSet's serviceName", sts.Spec.ServiceName)
	}
	if headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s: clusterIP %q, want None (headless, per-pod DNS)", headless.Name, headless.Spec.ClusterIP)
	}
	if regular == nil || regular.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("want a regular Service besides the headless %s, have %d Services", headless.Name, len(services))
	}
	if want := releaseName; regular.Name != want {
		t.Errorf("regular Service %q, want %q (stack.yaml's buildkit_url names it)", regular.Name, want)
	}
	containerPorts := map[string]int32{}
	for _, p := range sts.Spec.Template.Spec.Containers[0].Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	for _, s := range []*corev1.Service{headless, regular} {
		if !selects(s.Spec.Selector, sts.Spec.Template.Labels) || len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s selector %v does not select the pods", s.Name, s.Spec.Selector)
		}
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != v.Port || s.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
			t.Errorf("Service %s ports %+v, want TCP %d", s.Name, s.Spec.Ports, v.Port)
			continue
		}
		if target := s.Spec.Ports[0].TargetPort.String(); containerPorts[target] != v.Port {
			t.Errorf("Service %s targetPort %q is not the container's port %d", s.Name, target, v.Port)
		}
	}
}

// checkSandbox asserts the securityMode's pod: BuildKit's process sandbox
// everywhere but in unsafe-shared-pid, and what each mode needs for it.
func checkSandbox(t *testing.T, c chartCase, pod corev1.PodSpec, ctr corev1.Container) {
	sc := pod.SecurityContext
	if sc == nil {
		t.Fatal("no pod securityContext")
	}
	if got := slices.Contains(ctr.Args, sandboxOffFlag); got != (c.mode == modeUnsafe) {
		t.Errorf("securityMode %s: %s in args = %v, want %v (args %q)", c.mode, sandboxOffFlag, got, c.mode == modeUnsafe, ctr.Args)
	}
	if pod.HostPID || pod.HostNetwork || pod.HostIPC {
		t.Error("pod shares a host namespace")
	}
	// rootlesskit and runc unshare and mount: no seccomp or AppArmor filter.
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined {
		t.Errorf("pod seccompProfile %+v, want Unconfined", sc.SeccompProfile)
	}
	if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("pod appArmorProfile %+v, want Unconfined", sc.AppArmorProfile)
	}
	hostUsers := pod.HostUsers == nil || *pod.HostUsers
	if want := c.mode != modeUserns; hostUsers != want {
		t.Errorf("securityMode %s: pod hostUsers %v, want %v", c.mode, hostUsers, want)
	}
	csc := ctr.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	procMount := corev1.DefaultProcMount
	if csc.ProcMount != nil {
		procMount = *csc.ProcMount
	}
	if want := c.mode == modeUserns; (procMount == corev1.UnmaskedProcMount) != want {
		t.Errorf("securityMode %s: container procMount %s, want Unmasked: %v", c.mode, procMount, want)
	}
	privileged := csc.Privileged != nil && *csc.Privileged
	if want := c.mode == modePrivileged; privileged != want {
		t.Errorf("securityMode %s: container privileged %v, want %v", c.mode, privileged, want)
	}
	if csc.Capabilities != nil && len(csc.Capabilities.Add) > 0 {
		t.Errorf("container adds capabilities %v", csc.Capabilities.Add)
	}
	if csc.RunAsUser != nil || csc.RunAsGroup != nil {
		t.Errorf("container overrides the pod's user: %v/%v", csc.RunAsUser, csc.RunAsGroup)
	}
	if len(pod.InitContainers) != 0 {
		t.Errorf("init containers %d, want none", len(pod.InitContainers))
	}
	if !c.rootless() {
		if sc.RunAsUser == nil || *sc.RunAsUser != 0 || (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) {
			t.Errorf("privileged: pod runAsUser %v runAsNonRoot %v, want root", sc.RunAsUser, sc.RunAsNonRoot)
		}
		return
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 1000 || sc.RunAsGroup == nil || *sc.RunAsGroup != 1000 {
		t.Errorf("pod runAsUser/runAsGroup %v/%v, want 1000/1000 (the rootless image's user)", sc.RunAsUser, sc.RunAsGroup)
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod runAsNonRoot is not true")
	}
	// newuidmap/newgidmap are setuid: no_new_privs breaks rootlesskit.
	if csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation {
		t.Error("container sets allowPrivilegeEscalation=false, which breaks newuidmap")
	}
}

func volumeNamed(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

func mountAt(ctr corev1.Container, path string) *corev1.VolumeMount {
	for i := range ctr.VolumeMounts {
		if ctr.VolumeMounts[i].MountPath == path {
			return &ctr.VolumeMounts[i]
		}
	}
	return nil
}

func checkTLS(t *testing.T, c chartCase, v chartValues, pod corev1.PodSpec, ctr corev1.Container) {
	tlsFlags := []string{"--tlscacert", "--tlscert", "--tlskey"}
	if !c.tls {
		for _, f := range tlsFlags {
			if slices.Contains(ctr.Args, f) {
				t.Errorf("TLS off, yet args have %s", f)
			}
		}
		for _, vol := range pod.Volumes {
			if vol.Secret != nil && vol.Secret.SecretName == v.TLS.SecretName {
				t.Errorf("TLS off, yet the TLS Secret %s is mounted", v.TLS.SecretName)
			}
		}
		return
	}
	if v.TLS.SecretName == "" {
		t.Fatal("TLS on without tls.secretName")
	}
	var mount *corev1.VolumeMount
	for i, m := range ctr.VolumeMounts {
		if vol := volumeNamed(pod, m.Name); vol != nil && vol.Secret != nil && vol.Secret.SecretName == v.TLS.SecretName {
			mount = &ctr.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Fatalf("TLS on, but no volume of Secret %s is mounted", v.TLS.SecretName)
	}
	for flag, file := range map[string]string{"--tlscacert": "ca.pem", "--tlscert": "cert.pem", "--tlskey": "key.pem"} {
		if want := filepath.Join(mount.MountPath, file); !hasFlag(ctr.Args, flag, want) {
			t.Errorf("TLS on, args %q lack %s %s", ctr.Args, flag, want)
		}
	}
	vol := volumeNamed(pod, mount.Name)
	// buildkitd runs as uid 1000 and reads the key through the fsGroup.
	if mode := vol.Secret.DefaultMode; mode == nil || *mode&0o040 == 0 || *mode&0o004 != 0 {
		t.Errorf("TLS Secret defaultMode %v: want group-readable (fsGroup 1000), not world-readable", mode)
	}
	if sc := pod.SecurityContext; c.rootless() && (sc.FSGroup == nil || *sc.FSGroup != 1000) {
		t.Errorf("pod fsGroup %v, want 1000 so the rootless buildkitd can read the key", sc.FSGroup)
	}
}

func checkCache(t *testing.T, c chartCase, v chartValues, sts *appsv1.StatefulSet, ctr corev1.Container) {
	cacheDir := c.cacheDir()
	m := mountAt(ctr, cacheDir)
	if m == nil {
		t.Fatalf("nothing mounted at %s, the image's cache", cacheDir)
	}
	vol := volumeNamed(sts.Spec.Template.Spec, m.Name)
	var claims []string
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		claims = append(claims, pvc.Name)
	}
	if !c.persistence {
		if len(claims) != 0 {
			t.Errorf("persistence off, yet volumeClaimTemplates %v", claims)
		}
		if vol == nil || vol.EmptyDir == nil {
			t.Errorf("persistence off: %s should be an emptyDir, is %+v", cacheDir, vol)
		}
		return
	}
	if vol != nil {
		t.Errorf("persistence on, yet %s is the pod volume %+v, not a claim", cacheDir, vol)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || claims[0] != m.Name {
		t.Fatalf("persistence on: volumeClaimTemplates %v, want one named %q", claims, m.Name)
	}
	pvc := sts.Spec.VolumeClaimTemplates[0]
	if got := pvc.Spec.Resources.Requests.Storage().String(); got != v.Persistence.Size {
		t.Errorf("claim requests %s, want %s", got, v.Persistence.Size)
	}
	if !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteOnce) {
		t.Errorf("claim access modes %v, want ReadWriteOnce", pvc.Spec.AccessModes)
	}
}

func checkPDB(t *testing.T, sts *appsv1.StatefulSet, pdbs []*policyv1.PodDisruptionBudget) {
	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(pdbs))
	}
	pdb := pdbs[0]
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods", pdb.Spec.Selector)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}
}

func checkConfigMap(t *testing.T, c chartCase, v chartValues, pod corev1.PodSpec, ctr corev1.Container, cms []*corev1.ConfigMap) {
	if len(cms) != 1 {
		t.Fatalf("%d ConfigMaps, want 1 (buildkitd.toml)", len(cms))
	}
	text, ok := cms[0].Data["buildkitd.toml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no buildkitd.toml: %v", cms[0].Name, cms[0].Data)
	}
	// buildkitd --config must point at where the ConfigMap is mounted.
	var configPath string
	for i := 0; i+1 < len(ctr.Args); i++ {
		if ctr.Args[i] == "--config" {
			configPath = ctr.Args[i+1]
		}
	}
	m := mountAt(ctr, configPath)
	if configPath == "" || m == nil {
		t.Fatalf("--config %q is not a mount (mounts %+v)", configPath, ctr.VolumeMounts)
	}
	if vol := volumeNamed(pod, m.Name); vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != cms[0].Name ||
		(m.SubPath != "" && m.SubPath != "buildkitd.toml") {
		t.Errorf("--config %s is not the ConfigMap %s's buildkitd.toml", configPath, cms[0].Name)
	}

	checkSubIDs(t, c, pod, ctr, cms[0])

	cfg := decodeBuildkitdTOML(t, text)
	if c.insecureRegistry != "" {
		r, ok := cfg.Registries[c.insecureRegistry]
		if !ok || r.PlainHTTP == nil || !*r.PlainHTTP || r.Insecure == nil || !*r.Insecure {
			t.Errorf("buildkitd.toml: registry %q not plain-HTTP and insecure: %+v\n%s", c.insecureRegistry, r, text)
		}
	}
	if len(cfg.Registries) != len(v.Config.Registries) {
		t.Errorf("buildkitd.toml has %d registries, values %d\n%s", len(cfg.Registries), len(v.Config.Registries), text)
	}
	for host, want := range v.Config.Registries {
		got := cfg.Registries[host]
		if !slices.Equal(got.Mirrors, want.Mirrors) || !boolsEqual(got.PlainHTTP, want.HTTP) || !boolsEqual(got.Insecure, want.Insecure) {
			t.Errorf("registry %q: buildkitd.toml %+v, values %+v", host, got, want)
		}
		if len(got.RootCAs) != len(want.CA) {
			t.Errorf("registry %q: ca %v, values %v", host, got.RootCAs, want.CA)
		}
		for _, ca := range got.RootCAs {
			if !strings.HasPrefix(ca, registryCADir+"/") {
				continue
			}
			if v.Config.RegistryCASecret == "" {
				t.Errorf("registry %q: ca %s without config.registryCASecret", host, ca)
				continue
			}
			m := mountAt(ctr, registryCADir)
			if m == nil {
				t.Errorf("registry %q: ca %s, but nothing is mounted at %s", host, ca, registryCADir)
				continue
			}
			// The daemon reads it as its own uid (1000 when rootless).
			vol := volumeNamed(pod, m.Name)
			if vol == nil || vol.Secret == nil || vol.Secret.SecretName != v.Config.RegistryCASecret {
				t.Errorf("registry %q: %s is not the Secret %s", host, registryCADir, v.Config.RegistryCASecret)
			} else if mode := vol.Secret.DefaultMode; mode != nil && *mode&0o004 == 0 && (*mode&0o040 == 0 || pod.SecurityContext == nil || pod.SecurityContext.FSGroup == nil) {
				t.Errorf("registry %q: the CA Secret's mode %o is not readable by buildkitd", host, *mode)
			}
		}
	}
	oci := cfg.Workers.OCI
	if oci.Enabled == nil || !*oci.Enabled || oci.GC == nil || *oci.GC != v.Config.GC.Enabled {
		t.Errorf("[worker.oci] enabled=%v gc=%v, want enabled and gc=%v", oci.Enabled, oci.GC, v.Config.GC.Enabled)
	}
	for name, pair := range map[string][2]any{
		"reservedSpace": {oci.GCReservedSpace, v.Config.GC.ReservedSpace},
		"maxUsedSpace":  {oci.GCMaxUsedSpace, v.Config.GC.MaxUsedSpace},
		"minFreeSpace":  {oci.GCMinFreeSpace, v.Config.GC.MinFreeSpace},
	} {
		got, want := pair[0].(bkconfig.DiskSpace), pair[1].(string)
		if (want == "") != (got == bkconfig.DiskSpace{}) {
			t.Errorf("[worker.oci] %s = %+v, values %q", name, got, want)
		}
	}
}

// checkSubIDs: in securityMode userns the pod's user namespace holds only
// uids 0..65535, so rootlesskit's newuidmap must get its ranges from there
// (the image's 100000:65536 is refused). The ConfigMap's subuid and subgid
// must be mounted over the image's and give every id of the pod but root
// and buildkitd's own 1000 to the image's user.
func checkSubIDs(t *testing.T, c chartCase, pod corev1.PodSpec, ctr corev1.Container, cm *corev1.ConfigMap) {
	for _, name := range []string{"subuid", "subgid"} {
		m := mountAt(ctr, "/etc/"+name)
		text, inConfigMap := cm.Data[name]
		if c.mode != modeUserns {
			if m != nil || inConfigMap {
				t.Errorf("securityMode %s: /etc/%s is replaced (mount %v, ConfigMap key %v); only userns needs it", c.mode, name, m != nil, inConfigMap)
			}
			continue
		}
		if m == nil || m.SubPath != name || !inConfigMap {
			t.Errorf("userns: /etc/%s is not the ConfigMap's %s (mount %+v)", name, name, m)
			continue
		}
		if vol := volumeNamed(pod, m.Name); vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
			t.Errorf("userns: /etc/%s is mounted from %+v, not the ConfigMap %s", name, vol, cm.Name)
		}
		used := map[int]bool{}
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			var user string
			var start, count int
			f := strings.Split(line, ":")
			if len(f) == 3 {
				user = f[0]
				start, _ = strconv.Atoi(f[1])
				count, _ = strconv.Atoi(f[2])
			}
			if user != "user" || count <= 0 {
				t.Errorf("userns: %s line %q, want user:START:COUNT for the image's user", name, line)
				continue
			}
			for id := start; id < start+count; id++ {
				if id <= 0 || id >= 65536 || id == 1000 || used[id] {
					t.Fatalf("userns: %s range %q holds id %d: outside 1..65535, buildkitd's own 1000, or twice", name, line, id)
				}
				used[id] = true
			}
		}
		if len(used) != 65534 {
			t.Errorf("userns: %s gives %d ids, want the pod's 65534 besides 0 and 1000", name, len(used))
		}
	}
}

func boolsEqual(a, b *bool) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// decodeBuildkitdTOML decodes buildkitd.toml into buildkitd's own config
// type, rejecting keys buildkitd v0.33.1 does not know (buildkitd itself
// ignores them silently).
func decodeBuildkitdTOML(t *testing.T, text string) bkconfig.Config {
	t.Helper()
	var cfg bkconfig.Config
	dec := toml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			t.Fatalf("buildkitd.toml: keys buildkitd does not know:\n%s\n%s", strict.String(), text)
		}
		t.Fatalf("buildkitd.toml: %v\n%s", err, text)
	}
	// And as buildkitd loads it.
	if _, err := bkconfig.Load(strings.NewReader(text)); err != nil {
		t.Fatalf("buildkitd.toml: %v", err)
	}
	return cfg
}

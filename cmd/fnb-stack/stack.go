package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/cli"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/templateimage"
)

// Addresses. The gateway's :8080 and :8082 are hard-coded upstream; the
// rest is chosen to stay clear of the tests (their registry is 127.0.0.1:5000).
const (
	registryAddr    = "127.0.0.1:5001"
	natsHost        = "127.0.0.1"
	natsPort        = "4222"
	natsCluster     = "faas-cluster"
	gatewayURL      = "http://127.0.0.1:8080"
	gatewayPort     = "8080"
	gatewayMetrics  = "8082"
	providerAddr    = "127.0.0.1:8081"
	prometheusAddr  = "127.0.0.1:9090"
	builderAddr     = "127.0.0.1:8088" // build-fn at the root of its own origin, for faas-cli --remote-builder
	bridgeName      = "fnb0"
	bridgeIP        = "10.62.0.1"
	bridgeSubnet    = "10.62.0.0/24"
	netnsPrefix     = "fnb-"
	chainPrefix     = "FNB"
	ctrdNamespace   = "fnbuilder"
	buildkitTCPAddr = bridgeIP + ":1234"
	// The module cache, served to the function image builds while `up`
	// builds them: a fixed port keeps their RUN steps cached
	// (templateimage.Builder.Goproxy).
	goproxyAddr = bridgeIP + ":8083"
	// Functions reach the host (gateway, buildkitd) at the bridge address.
	gatewayFromFunctions = "http://" + bridgeIP + ":" + gatewayPort
	// activeMarker names the stack directory that is up: the ports and the
	// bridge are global, so only one stack runs per machine.
	activeMarker = "/run/fnbuilder-stack.active"
)

// Stack is one local stack: a directory holding its state, logs, PID files
// and credentials, and the checkout its images are built from.
type Stack struct {
	Dir  string
	Repo string // "" when the command needs no checkout
	// AckWait is the queue-workers' ack_wait (`up --ack-wait`).
	AckWait time.Duration
	// setRegistryMode, when set, is what up records as registryMode.
	setRegistryMode string
	out             io.Writer
	t0              time.Time
}

func openStack(dir, repo string, out io.Writer) (*Stack, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("fnb-stack needs root (containerd, network namespaces, iptables, the rootless build user)")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	s := &Stack{Dir: filepath.Clean(abs), AckWait: defaultAckWait, out: out, t0: time.Now()}
	if repo != "-" {
		if repo == "" {
			if s.Repo, err = cli.FindRepo("run fnb-stack from the repository or pass --repo"); err != nil {
				return nil, err
			}
		} else if s.Repo, err = filepath.Abs(repo); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Paths inside the stack directory.
func (s *Stack) path(elem ...string) string {
	return filepath.Join(append([]string{s.Dir}, elem...)...)
}
func (s *Stack) binDir() string             { return s.path("bin") }
func (s *Stack) logPath(name string) string { return s.group().LogPath(name) }
func (s *Stack) secretsDir() string         { return s.path("secrets") }
func (s *Stack) secretPath(name string) string {
	return filepath.Join(s.secretsDir(), name)
}
func (s *Stack) providerState() string { return s.path("provider") }
func (s *Stack) containerdSocket() string {
	return s.path("run", "containerd", "containerd.sock")
}
func (s *Stack) buildkitAddr() string { return "unix://" + s.path("buildkit", "buildkitd.sock") }

// group is the stack's daemons: pids/ and logs/ in the stack directory.
func (s *Stack) group() daemon.Group { return daemon.Group{Dir: s.Dir, Logf: s.logf} }

// logf prints one progress line with the time since the command started.
func (s *Stack) logf(format string, args ...any) {
	fmt.Fprintf(s.out, "[%5.1fs] %s\n", time.Since(s.t0).Seconds(), fmt.Sprintf(format, args...))
}

// errMissing names a missing tool and how to get it.
type errMissing struct{ what []string }

func (e errMissing) Error() string {
	return "missing: " + strings.Join(e.what, "; ") + "\n  install them with: bash hack/install.sh (make up runs it)"
}

// requiredTools lists every binary `up` runs, with the package or script
// that provides it.
var requiredTools = []struct{ name, from string }{
	{"buildkitd", "hack/install.sh (buildkit v0.33.1)"},
	{"gateway", "hack/install-openfaas.sh"},
	{"queue-worker", "hack/install-openfaas.sh"},
	{"nats-streaming-server", "hack/install-openfaas.sh"},
	{"prometheus", "Debian prometheus"},
	{"docker-registry", "Debian docker-registry"},
	{"containerd", "Debian containerd"},
	{"containerd-shim-runc-v2", "Debian containerd"},
	{"runc", "Debian runc"},
	{"rootlesskit", "Debian rootlesskit"},
	{"newuidmap", "Debian uidmap"},
	{"iptables", "Debian iptables"},
	{"ip", "Debian iproute2"},
	{"busybox", "Debian busybox-static"},
}

func (s *Stack) checkTools() error {
	var missing []string
	for _, t := range requiredTools {
		if daemon.Find(t.name) == "" {
			missing = append(missing, fmt.Sprintf("%s (from %s)", t.name, t.from))
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p+" (from Debian containernetworking-plugins)")
		}
	}
	if _, err := user.Lookup(daemon.RootlessUser); err != nil {
		missing = append(missing, "user "+daemon.RootlessUser+" with /etc/subuid and /etc/subgid ranges (for rootless buildkitd)")
	}
	if daemon.Find("go") == "" {
		missing = append(missing, "go (to build fnb-provider from this checkout)")
	}
	// The function images are built from template/ with the real faas-cli
	// and of-watchdog, which no registry here serves.
	for _, t := range [][2]string{{"FAAS_CLI", "faas-cli"}, {"OF_WATCHDOG", "of-watchdog"}} {
		if _, err := templateimage.SharedTool(s.Repo, t[0], t[1]); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) > 0 {
		return errMissing{missing}
	}
	return nil
}

// activeStack returns the stack directory recorded as up, if any.
func activeStack() string {
	b, err := os.ReadFile(activeMarker)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

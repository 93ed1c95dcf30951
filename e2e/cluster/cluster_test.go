// Package cluster is the end-to-end test of `make cluster` (cmd/fnb-cluster,
// internal/cluster): a real single-node Kubernetes 1.34 on containerd v2,
// charts/buildkit with 2 replicas, mutual TLS and BuildKit's process sandbox
// (securityMode userns), and build-fn from the production image (template/,
// the real of-watchdog) deployed as faas-netes would, driven by the real
// faas-cli (FAAS_CLI). One cluster serves every scenario:
//
//   - the chart as the cluster runs it: probes pass, user-namespaced pods
//     with an unmasked /proc, process mode "sandbox", mutual TLS;
//   - a build with a sealed build secret through build-fn's Service, a
//     repository built twice on the same replica;
//   - two concurrent builds on one replica, one reading the other's /proc;
//   - the replica serving a repository deleted mid-build, the next build of
//     that repository on the other one, and the PodDisruptionBudget holding
//     `kubectl drain` while the deleted replica is gone;
//   - a `helm upgrade` rolling the StatefulSet under builds, none failing.
//
// Assertions are on what reached the registry, never on faas-cli's exit code
// alone: faas-cli takes a stream that ends without a final line for a success
// (docs/cluster-notes.md).
//
// It needs root and the cluster's tools (FNB_CLUSTER=1 bash hack/install.sh;
// make test installs them); it fails, never skips, naming what is missing.
// A cluster already up (make cluster) is used as it is and left up;
// otherwise the test brings one up in FNB_CLUSTER_DIR (default
// /var/lib/fnbuilder-cluster) with the code make cluster runs and takes it
// down at the end, failed or not, checking that nothing is left behind.
// Its bridge, subnet and ports (fnbk0, 10.63.0.0/24, 5300, 16443, 2379x,
// 1034x-1035x) are not the local stack's, so e2e/stack may run at the same
// time; a lock file keeps two runs of this test apart.
package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/e2e/internal/harness"
	"github.com/fnbuilder/fnbuilder/internal/cluster"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const (
	// lockFile serialises this test across concurrent `go test` runs on
	// one machine: the cluster's addresses are per machine.
	lockFile = "/run/fnbuilder-cluster.e2e.lock"
	// ownedMarker, in the cluster's directory, says this test brought the
	// cluster up: a run interrupted before its cleanup left it, and the
	// next run takes it down.
	ownedMarker = "e2e-owned"
	defaultDir  = "/var/lib/fnbuilder-cluster"
	// teardownReserve is kept from the test's deadline for cluster-down.
	teardownReserve = 3 * time.Minute
)

// env is the cluster the scenarios share.
type env struct {
	c       cluster.Cluster
	bin     string // fnb-cluster, built from the checkout
	url     string // build-fn, at the root of its own address
	payload string // faas-cli --payload-secret
	reg     *testenv.Registry
	cli     string // the real faas-cli
}

func TestCluster(t *testing.T) {
	e := setUp(t)
	t.Run("ChartAsTheClusterRunsIt", e.testChart)
	t.Run("BuildSecretThroughService", e.testBuildSecret)
	t.Run("ProcSpyFindsNothing", e.testProcSpy)
	t.Run("ReplicaDeletedMidBuild", e.testReplicaDeleted)
	t.Run("HelmUpgradeRolls", e.testHelmUpgrade)
	t.Run("LivenessHeldThroughout", e.testLiveness)
}

// setUp finds or brings up the cluster, and arranges its tear-down.
func setUp(t *testing.T) *env {
	if os.Geteuid() != 0 {
		t.Fatal("the cluster needs root (containerd, the kubelet, iptables, a bridge); CI runs as root. Run: sudo go test ./e2e/cluster/")
	}
	cli := testenv.FaasCLI(t)
	// build-fn's image is built with it (the template's watchdog).
	testenv.SharedTool(t, "OF_WATCHDOG", "of-watchdog 0.11.6")
	if missing := cluster.MissingTools(); len(missing) > 0 {
		t.Fatalf("missing %s: run FNB_CLUSTER=1 bash hack/install.sh (make test does)", strings.Join(missing, ", "))
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	harness.LockMachine(t, lockFile, 20*time.Minute)
	bin := buildCLI(t, repo)
	dir := os.Getenv("FNB_CLUSTER_DIR")
	if dir == "" {
		dir = defaultDir
	}
	e := &env{c: cluster.Cluster{Dir: dir, Repo: repo, Pause: filepath.Join(filepath.Dir(bin), "fnb-pause")}, bin: bin, cli: cli}
	marker := filepath.Join(dir, ownedMarker)
	_, leftover := os.Stat(marker)
	if !e.c.Running() || leftover == nil {
		// A node's state left by a run that did not end (a stopped
		// machine, a killed test) would come back as restarted pods: the
		// test's cluster starts from none, as on a fresh machine.
		if _, err := os.Stat(dir); err == nil {
			if _, err := e.fnbCluster(t, teardownReserve, "down"); err != nil {
				t.Fatalf("fnb-cluster down (state left in %s): %v", dir, err)
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(marker, []byte("brought up by e2e/cluster\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// Registered before up, so that a failed up is taken down too.
		t.Cleanup(func() { e.down(t, marker) })
	} else {
		t.Logf("a cluster is up in %s (make cluster): used as it is and left up", dir)
		// up again puts the chart's values back (the roll changes one).
		t.Cleanup(func() {
			if _, err := e.fnbCluster(t, 10*time.Minute, "up"); err != nil {
				t.Errorf("cleanup: fnb-cluster up: %v", err)
			}
		})
	}
	t0 := time.Now()
	out, err := e.fnbCluster(t, 25*time.Minute, "up")
	if err != nil {
		t.Fatalf("fnb-cluster up: %v", err)
	}
	t.Logf("fnb-cluster up: %s", time.Since(t0).Round(100*time.Millisecond))
	e.parseUp(t, out)
	return e
}

// parseUp checks make cluster's four lines and keeps what they name.
func (e *env) parseUp(t *testing.T, out string) {
	got := map[string]string{}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		for _, key := range []string{"Kubeconfig", "build-fn", "Payload secret", "Registry"} {
			if v, ok := strings.CutPrefix(line, key+" "); ok {
				got[key] = v
				order = append(order, key)
			}
		}
	}
	if strings.Join(order, ",") != "Kubeconfig,build-fn,Payload secret,Registry" {
		t.Fatalf("fnb-cluster up printed %q, want the lines Kubeconfig, build-fn, Payload secret and Registry, in that order:\n%s", order, out)
	}
	if got["Kubeconfig"] != e.c.Kubeconfig("admin") {
		t.Errorf("Kubeconfig %s, want %s", got["Kubeconfig"], e.c.Kubeconfig("admin"))
	}
	if got["Registry"] != cluster.RegistryAddr {
		t.Errorf("Registry %s, want %s", got["Registry"], cluster.RegistryAddr)
	}
	for _, f := range []string{got["Kubeconfig"], got["Payload secret"]} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v (empty or missing)", f, err)
		}
	}
	if !strings.HasPrefix(got["build-fn"], "http://") || !strings.HasSuffix(got["build-fn"], ":8080/") {
		t.Fatalf("build-fn %q: want http://<ClusterIP>:8080/ (the root of its own address)", got["build-fn"])
	}
	e.url, e.payload = got["build-fn"], got["Payload secret"]
	// Keys and secrets, the Secret manifests among them, are root's only
	// (public keys aside).
	for _, sub := range []string{"manifests", "secrets", "pki"} {
		err := filepath.WalkDir(filepath.Join(e.c.Dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o077 != 0 && !d.IsDir() && !strings.HasSuffix(p, ".pub") {
				t.Errorf("%s: mode %v, readable by others than root", p, fi.Mode().Perm())
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", sub, err)
		}
	}
	e.reg = &testenv.Registry{Registry: e.c.Registry()}
}

// fnbCluster runs fnb-cluster -dir DIR args... from the checkout; its
// progress goes to the test log, its stdout is returned.
func (e *env) fnbCluster(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := e.context(t, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, append([]string{"-dir", e.c.Dir}, args...)...)
	cmd.Dir = e.c.Repo
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("$ fnb-cluster %s\n%s%s", strings.Join(args, " "), stderr.String(), stdout.String())
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", err, ctx.Err())
	}
	return stdout.String(), err
}

// context bounds one step by timeout and by the test's deadline, less what
// tear-down needs: a test that runs out of time fails and still cleans up.
func (e *env) context(t *testing.T, timeout time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - teardownReserve; left < timeout {
			timeout = max(left, 10*time.Second)
		}
	}
	return context.WithTimeout(context.Background(), timeout)
}

// down takes the cluster down and checks what make cluster-down promises:
// no process, mount, bridge or iptables chain left.
func (e *env) down(t *testing.T, marker string) {
	records := e.c.Daemons(nil).Records()
	if t.Failed() {
		e.dumpLogs(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), teardownReserve)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, "-dir", e.c.Dir, "down")
	cmd.Dir = e.c.Repo
	out, err := cmd.CombinedOutput()
	t.Logf("$ fnb-cluster down\n%s", out)
	if err != nil {
		t.Errorf("cleanup: fnb-cluster down: %v", err)
		return
	}
	for name, r := range records {
		if r.Alive() {
			t.Errorf("after down: %s (PID %d) still runs", name, r.PID)
		}
	}
	for _, pid := range daemon.PIDs() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err == nil && pid != os.Getpid() && bytes.Contains(b, []byte(e.c.Dir+"/")) {
			if st, err := daemon.Stat(pid); err == nil && st.State != "Z" {
				t.Errorf("after down: process %d still refers to the cluster: %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			}
		}
	}
	if left := daemon.MountsUnder(e.c.Dir); len(left) > 0 {
		t.Errorf("after down: %d mounts under %s: %v", len(left), e.c.Dir, left)
	}
	if exec.Command("ip", "link", "show", cluster.BridgeName).Run() == nil {
		t.Errorf("after down: bridge %s exists", cluster.BridgeName)
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			// No rules only where the table does not exist; an iptables
			// that cannot be asked fails the check.
			rules, err := cluster.IptablesRules(ipt, table)
			if err != nil {
				t.Errorf("after down: %v", err)
			}
			for _, line := range strings.Split(rules, "\n") {
				if strings.Contains(line, "KUBE-") {
					t.Errorf("after down: %s -t %s: %s", ipt, table, line)
				}
			}
		}
	}
	if !t.Failed() {
		os.Remove(marker)
	}
}

// dumpLogs shows the tail of every daemon's log and the pods' state.
func (e *env) dumpLogs(t *testing.T) {
	logs, _ := filepath.Glob(filepath.Join(e.c.Dir, "logs", "*.log"))
	for _, p := range logs {
		t.Logf("--- %s (tail) ---\n%s", p, daemon.Tail(p, 2000))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", cluster.FunctionsNS, "logs", "deployment/build-fn", "--tail=100"},
	} {
		out, err := e.c.Kubectl(ctx, args...)
		t.Logf("--- kubectl %s (%v) ---\n%s", strings.Join(args, " "), err, out)
	}
}

// buildCLI builds fnb-cluster and the static fnb-pause beside it, as make
// cluster does.
func buildCLI(t *testing.T, repo string) string {
	dir := t.TempDir()
	testenv.GoBuild(t, repo, nil, "-trimpath", "-o", dir+"/", "./cmd/fnb-cluster")
	testenv.GoBuild(t, repo, []string{"CGO_ENABLED=0"}, "-trimpath", "-o", dir+"/", "./cmd/fnb-pause")
	return filepath.Join(dir, "fnb-cluster")
}

package provider

// The end-to-end test: real containerd (Debian's, a private instance),
// real docker-registry, real CNI plugins, iptables and network namespaces.
// It starts everything itself, needs root, and fails — never skips — when
// a piece is missing: run hack/install-provider.sh.
//
// It uses its own bridge (fnbt0), subnet, namespace prefix (fnbt-), chain
// prefix (FNBT) and containerd namespace, so that it can run beside a
// provider of the local stack with the default names.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openfaas/faas-provider/types"
	"golang.org/x/sys/unix"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
	"github.com/fnbuilder/fnbuilder/internal/provider/state"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

const (
	e2eFunction = "e2e-echo"
	e2eSecret   = "e2e-token"
	e2eBridge   = "fnbt0"
	e2ePrefix   = "fnbt-"
	e2eChain    = "FNBT"
	e2eIndex    = "<h1>hello from fnbuilder</h1>\n"
)

// e2eScript is the function image's command: copy the mounted secrets and
// two environment variables where httpd serves them, then serve /www.
const e2eScript = `/bin/busybox mkdir -p /www/secrets
for f in /var/openfaas/secrets/*; do [ -f "$f" ] && /bin/busybox cp "$f" /www/secrets/; done
echo "$GREETING $fprocess" > /www/env.txt
exec /bin/busybox httpd -f -p 8080 -h /www`

func TestProviderEndToEnd(t *testing.T) {
	t0 := time.Now()
	phase := func(name string, start time.Time) { t.Logf("timing: %-34s %6.2fs", name, time.Since(start).Seconds()) }
	if os.Geteuid() != 0 {
		t.Fatalf("needs root (network namespaces, iptables, containerd): run as root after %s", installHint)
	}
	for _, tool := range []string{"ip", "bridge", "iptables", "runc"} {
		mustFind(t, tool, tool)
	}
	for _, p := range []string{"bridge", "host-local"} {
		mustFind(t, "CNI plugin "+p+" (Debian containernetworking-plugins)", filepath.Join("/usr/lib/cni", p))
	}
	assertClean(t, "before the test") // a leftover from a crashed run would hide bugs

	start := time.Now()
	ctdSocket := startContainerd(t)
	// The local stack's registry shape: HTTPS from a private CA, a user.
	reg := testenv.StartSecureRegistry(t)
	ref := reg.Addr + "/fnbuilder/" + e2eFunction + ":1"
	pushFunctionImage(t, reg, ref, e2eIndex, e2eScript)
	phase("containerd, registry, image push", start)

	stateDir := t.TempDir()
	cfg := DefaultConfig()
	cfg.StateDir = stateDir
	cfg.ContainerdSocket = ctdSocket
	cfg.ContainerdNamespace = "fnbuilder-e2e"
	cfg.InsecureRegistries = nil
	cfg.RegistryCA, cfg.RegistryAuth = reg.CA, reg.UserConfig(reg.User)
	cfg.Bridge = e2eBridge
	cfg.Subnet = netip.MustParsePrefix("10.62.250.0/24")
	cfg.Gateway = netip.MustParseAddr("10.62.250.1")
	cfg.NetNSPrefix = e2ePrefix
	cfg.ChainPrefix = e2eChain
	cfg.ReconcileInterval = time.Second
	cfg.StopGrace = 2 * time.Second
	cfg.UpstreamTimeout = 10 * time.Second
	// Registered after startContainerd, so it runs before containerd stops.
	t.Cleanup(func() {
		if err := Teardown(context.Background(), cfg, true); err != nil {
			t.Errorf("teardown in cleanup: %v", err)
		}
	})

	start = time.Now()
	pv := startProvider(t, cfg)
	phase("provider start (empty state)", start)
	c := pv.client

	// The network is set up before any function exists.
	if _, err := os.Stat("/sys/class/net/" + e2eBridge); err != nil {
		t.Fatalf("bridge %s missing after start: %v", e2eBridge, err)
	}
	if out, err := exec.Command("iptables", "-w", "5", "-S", e2eChain+"-FORWARD").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "-A FNBT-FORWARD -i fnbt0 -j DROP") {
		t.Fatalf("FNBT-FORWARD chain: %v\n%s", err, out)
	}

	secretValue := "s3cret-" + testenv.RandomHex(t, 8)
	c.do("POST", "/system/secrets", types.Secret{Name: e2eSecret, Value: secretValue}, http.StatusCreated)
	c.do("POST", "/system/secrets", types.Secret{Name: e2eSecret, Value: "again"}, http.StatusConflict)

	labels := map[string]string{"com.openfaas.scale.zero": "true"}
	annotations := map[string]string{"topic": "e2e"}
	deployment := types.FunctionDeployment{
		Service:     e2eFunction,
		Image:       ref,
		EnvProcess:  "cat",
		EnvVars:     map[string]string{"GREETING": "one"},
		Secrets:     []string{e2eSecret},
		Labels:      &labels,
		Annotations: &annotations,
		Limits:      &types.FunctionResources{Memory: "64Mi"},
	}

	// --- deploy -----------------------------------------------------------
	start = time.Now()
	c.do("POST", "/system/functions", deployment, http.StatusAccepted)
	phase("deploy (pull, netns, create, start)", start)
	c.do("POST", "/system/functions", deployment, http.StatusConflict)
	c.do("POST", "/system/functions", types.FunctionDeployment{Service: "e2e-missing", Image: reg.Addr + "/fnbuilder/missing:1"}, http.StatusBadRequest)
	c.waitReady(e2eFunction)
	phase("deploy until availableReplicas=1", start)

	c.expectBody("/function/"+e2eFunction+"/index.html", e2eIndex)
	c.expectBody("/function/"+e2eFunction+"/secrets/"+e2eSecret, secretValue)
	c.expectBody("/function/"+e2eFunction+"/env.txt", "one cat\n")
	c.expectBody("/function/"+e2eFunction+".openfaas-fn/index.html", e2eIndex)

	st := c.status(e2eFunction)
	if st.Image != ref || st.Namespace != Namespace || st.EnvProcess != "cat" || st.Replicas != 1 ||
		st.Labels == nil || (*st.Labels)["com.openfaas.scale.zero"] != "true" ||
		st.Annotations == nil || (*st.Annotations)["topic"] != "e2e" || st.CreatedAt.IsZero() {
		t.Fatalf("status after deploy: %+v", st)
	}

	rt := connectRuntime(t, cfg)
	pid := taskPid(t, rt)
	if got := memoryLimit(t, pid); got != 64<<20 {
		t.Errorf("memory limit of the task: %d bytes, want %d", got, 64<<20)
	}
	// The secret is a read-only mount; a new value shows through at once.
	secretInside := fmt.Sprintf("/proc/%d/root/var/openfaas/secrets/%s", pid, e2eSecret)
	if b, err := os.ReadFile(secretInside); err != nil || string(b) != secretValue {
		t.Fatalf("secret inside the container: %q, %v", b, err)
	}
	if mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid)); err != nil ||
		!regexp.MustCompile(`(?m)^\S+ \S+ \S+ \S+ /var/openfaas/secrets/`+e2eSecret+` ro[, ]`).Match(mi) {
		t.Fatalf("secret mount is not read-only (%v):\n%s", err, mi)
	}
	secretValue = "rotated-" + testenv.RandomHex(t, 8)
	c.do("PUT", "/system/secrets", types.Secret{Name: e2eSecret, Value: secretValue}, http.StatusOK)
	if b, err := os.ReadFile(secretInside); err != nil || string(b) != secretValue {
		t.Fatalf("secret inside the container after update: %q, %v", b, err)
	}
	netnsPath := filepath.Join("/run/netns", e2ePrefix+e2eFunction)
	if _, err := os.Stat(netnsPath); err != nil {
		t.Fatalf("network namespace: %v", err)
	}
	checkHostReachable(t, netnsPath, cfg.Gateway)

	// A second function: reachable from the host, not from the first.
	start = time.Now()
	// With a read-only root: its script cannot write to /www, httpd still serves.
	peer := types.FunctionDeployment{Service: "e2e-peer", Image: ref, ReadOnlyRootFilesystem: true}
	c.do("POST", "/system/functions", peer, http.StatusAccepted)
	c.waitReady(peer.Service)
	c.expectBody("/function/"+peer.Service+"/index.html", e2eIndex)
	if code, body := c.get("/function/" + peer.Service + "/env.txt"); code != http.StatusNotFound {
		t.Fatalf("read-only root: env.txt was written (%d %q)", code, body)
	}
	if ts, err := rt.Task(context.Background(), peer.Service); err != nil {
		t.Fatal(err)
	} else if mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", ts.Pid)); err != nil ||
		!regexp.MustCompile(`(?m)^\S+ \S+ \S+ \S+ / ro[, ]`).Match(mi) ||
		!regexp.MustCompile(`(?m)^\S+ \S+ \S+ \S+ /tmp rw[, ].* - tmpfs `).Match(mi) {
		t.Fatalf("read-only root with a writable /tmp expected (%v):\n%s", err, mi)
	}
	var peerRec struct{ IP string }
	if b, err := os.ReadFile(filepath.Join(stateDir, "functions", peer.Service+".json")); err != nil || json.Unmarshal(b, &peerRec) != nil || peerRec.IP == "" {
		t.Fatalf("peer record: %s, %v", b, err)
	}
	// Blocked twice over: by FNBT-FORWARD where br_netfilter passes bridged
	// frames to iptables, and by isolated bridge ports everywhere.
	if err := dialFromNetns(netnsPath, net.JoinHostPort(peerRec.IP, "8080")); err == nil {
		t.Fatalf("function connected to another function at %s:8080", peerRec.IP)
	}
	if out, err := exec.Command("bridge", "-d", "link", "show").CombinedOutput(); err != nil {
		t.Fatalf("bridge -d link show: %v\n%s", err, out)
	} else if ports := bridgePorts(string(out), e2eBridge); len(ports) != 2 {
		t.Fatalf("ports of %s: %d, want 2:\n%s", e2eBridge, len(ports), out)
	} else {
		for _, p := range ports {
			if !strings.Contains(p, "isolated on") {
				t.Fatalf("bridge port not isolated:\n%s", p)
			}
		}
	}
	c.do("DELETE", "/system/functions", types.DeleteFunctionRequest{FunctionName: peer.Service}, http.StatusOK)
	phase("second function: deploy, isolation, delete", start)

	// --- update -----------------------------------------------------------
	start = time.Now()
	updated := deployment
	updated.EnvVars = map[string]string{"GREETING": "two"}
	c.do("PUT", "/system/functions", updated, http.StatusAccepted)
	c.waitReady(e2eFunction)
	phase("update until ready", start)
	c.expectBody("/function/"+e2eFunction+"/env.txt", "two cat\n")
	c.expectBody("/function/"+e2eFunction+"/index.html", e2eIndex)
	c.do("PUT", "/system/functions", types.FunctionDeployment{Service: "e2e-nope", Image: ref}, http.StatusNotFound)

	// --- scale to zero and back --------------------------------------------
	start = time.Now()
	c.do("POST", "/system/scale-function/"+e2eFunction, types.ScaleServiceRequest{ServiceName: e2eFunction, Replicas: 0}, http.StatusAccepted)
	phase("scale to 0", start)
	if code, body := c.get("/function/" + e2eFunction + "/index.html"); code != http.StatusServiceUnavailable {
		t.Fatalf("invocation at 0 replicas: %d %q, want 503", code, body)
	}
	if fns := c.list(); len(fns) != 1 || fns[0].Replicas != 0 || fns[0].AvailableReplicas != 0 {
		t.Fatalf("list at 0 replicas: %+v", fns)
	}
	if ts, err := rt.Task(context.Background(), e2eFunction); err != nil || ts.Running {
		t.Fatalf("task at 0 replicas: %+v, %v", ts, err)
	}
	start = time.Now()
	c.do("POST", "/system/scale-function/"+e2eFunction, types.ScaleServiceRequest{ServiceName: e2eFunction, Replicas: 1}, http.StatusAccepted)
	c.waitReady(e2eFunction)
	phase("scale to 1 until ready", start)
	c.expectBody("/function/"+e2eFunction+"/index.html", e2eIndex)

	// --- provider restart: the running task is adopted ----------------------
	pid = taskPid(t, rt)
	start = time.Now()
	pv.stop()
	pv = startProvider(t, cfg)
	c = pv.client
	phase("provider restart (adopt)", start)
	if fns := c.list(); len(fns) != 1 || fns[0].Name != e2eFunction || fns[0].Replicas != 1 {
		t.Fatalf("list after restart: %+v", fns)
	}
	c.waitReady(e2eFunction)
	c.expectBody("/function/"+e2eFunction+"/env.txt", "two cat\n")
	if _, err := Start(context.Background(), cfg); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("a second provider on the same state dir: %v, want ErrLocked", err)
	}
	if err := Teardown(context.Background(), cfg, false); !errors.Is(err, state.ErrLocked) {
		t.Fatalf("teardown while the provider runs: %v, want ErrLocked", err)
	}
	if after := taskPid(t, rt); after != pid {
		t.Errorf("task pid %d after restart, was %d: the running task was replaced, not adopted", after, pid)
	}

	// --- a dead task is started again by the periodic reconcile ------------
	start = time.Now()
	if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
		t.Fatalf("kill task: %v", err)
	}
	testenv.WaitFor(t, "the killed task to be restarted", func() error {
		ts, err := rt.Task(context.Background(), e2eFunction)
		if err != nil || !ts.Running || ts.Pid == pid {
			return fmt.Errorf("task %+v, %v", ts, err)
		}
		return nil
	})
	c.waitReady(e2eFunction)
	c.expectBody("/function/"+e2eFunction+"/index.html", e2eIndex)
	phase("killed task restarted and ready", start)

	// --- secrets in use; delete ---------------------------------------------
	c.do("DELETE", "/system/secrets", types.Secret{Name: e2eSecret}, http.StatusConflict)
	start = time.Now()
	c.do("DELETE", "/system/functions", types.DeleteFunctionRequest{FunctionName: e2eFunction}, http.StatusOK)
	phase("delete", start)
	c.do("GET", "/system/function/"+e2eFunction, nil, http.StatusNotFound)
	if fns := c.list(); len(fns) != 0 {
		t.Fatalf("list after delete: %+v", fns)
	}
	if code, _ := c.get("/function/" + e2eFunction + "/index.html"); code != http.StatusServiceUnavailable {
		t.Fatalf("invocation after delete: %d, want 503", code)
	}
	if _, err := os.Stat(netnsPath); err == nil {
		t.Fatalf("%s still exists after delete", netnsPath)
	}
	if ok, err := rt.Exists(context.Background(), e2eFunction); err != nil || ok {
		t.Fatalf("container after delete: exists=%v, %v", ok, err)
	}
	c.do("DELETE", "/system/secrets", types.Secret{Name: e2eSecret}, http.StatusOK)

	// --- teardown with a function running -----------------------------------
	c.do("POST", "/system/secrets", types.Secret{Name: e2eSecret, Value: secretValue}, http.StatusCreated)
	c.do("POST", "/system/functions", deployment, http.StatusAccepted)
	c.waitReady(e2eFunction)
	pv.stop()
	rt.Close()
	start = time.Now()
	if err := Teardown(context.Background(), cfg, false); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	phase("teardown", start)
	if err := Teardown(context.Background(), cfg, false); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
	assertClean(t, "after teardown")
	for _, dir := range []string{stateDir, filepath.Dir(ctdSocket)} {
		if ms := daemon.MountsUnder(dir); len(ms) > 0 {
			t.Fatalf("mounts left under %s after teardown: %v", dir, ms)
		}
	}

	// --- records stay without purge: a new start re-creates everything ----
	// (the namespace, the container and the image, all removed above)
	start = time.Now()
	pv = startProvider(t, cfg)
	c = pv.client
	c.waitReady(e2eFunction)
	phase("start after teardown until ready", start)
	c.expectBody("/function/"+e2eFunction+"/secrets/"+e2eSecret, secretValue)
	c.expectBody("/function/"+e2eFunction+"/env.txt", "one cat\n")
	pv.stop()
	if err := Teardown(context.Background(), cfg, true); err != nil {
		t.Fatalf("teardown -purge: %v", err)
	}
	assertClean(t, "after teardown -purge")
	if entries, err := os.ReadDir(stateDir); err == nil {
		t.Fatalf("state dir left after teardown -purge: %v", entries)
	}
	if _, err := os.Stat(filepath.Join("/run/containerd/runc", cfg.ContainerdNamespace)); err == nil {
		t.Errorf("runc state dir of the namespace left after teardown")
	}
	phase("whole test", t0)
}

// assertClean fails if anything with the test's names exists on the host.
func assertClean(t *testing.T, when string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, e2ePrefix) {
			t.Fatalf("%s: network namespace %q exists (clean up: go run ./cmd/fnb-provider teardown -bridge %s -netns-prefix %s -chain-prefix %s)", when, line, e2eBridge, e2ePrefix, e2eChain)
		}
	}
	if err := exec.Command("ip", "link", "show", e2eBridge).Run(); err == nil {
		t.Fatalf("%s: bridge %s exists", when, e2eBridge)
	}
	for _, chain := range []string{e2eChain + "-FORWARD", e2eChain + "-INPUT"} {
		if err := exec.Command("iptables", "-w", "5", "-S", chain).Run(); err == nil {
			t.Fatalf("%s: iptables chain %s exists", when, chain)
		}
	}
	for _, chain := range []string{"FORWARD", "INPUT"} {
		out, _ := exec.Command("iptables", "-w", "5", "-S", chain).CombinedOutput()
		if strings.Contains(string(out), e2eChain+"-") {
			t.Fatalf("%s: %s still jumps to the provider's chain:\n%s", when, chain, out)
		}
	}
}

// testProvider is a provider serving on a free loopback port.
type testProvider struct {
	p      *Provider
	client *apiClient
	cancel context.CancelFunc
	done   chan error
	t      *testing.T
}

func startProvider(t *testing.T, cfg Config) *testProvider {
	t.Helper()
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start provider: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tp := &testProvider{p: p, cancel: cancel, done: make(chan error, 1), t: t}
	go func() { tp.done <- p.Serve(ctx, []net.Listener{l}) }()
	tp.client = &apiClient{t: t, base: "http://" + l.Addr().String(), http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}}
	t.Cleanup(tp.stop)
	return tp
}

func (tp *testProvider) stop() {
	if tp.cancel == nil {
		return
	}
	tp.cancel()
	tp.cancel = nil
	if err := <-tp.done; err != nil {
		tp.t.Errorf("serve: %v", err)
	}
	if err := tp.p.Close(); err != nil {
		tp.t.Errorf("close provider: %v", err)
	}
}

type apiClient struct {
	t    *testing.T
	base string
	http *http.Client
}

func (c *apiClient) send(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c *apiClient) do(method, path string, body any, want int) []byte {
	c.t.Helper()
	code, b := c.send(method, path, body)
	if code != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, want, b)
	}
	return b
}

func (c *apiClient) get(path string) (int, string) {
	c.t.Helper()
	code, b := c.send("GET", path, nil)
	return code, string(b)
}

func (c *apiClient) expectBody(path, want string) {
	c.t.Helper()
	code, body := c.get(path)
	if code != http.StatusOK || body != want {
		c.t.Fatalf("GET %s: %d %q, want 200 %q", path, code, body, want)
	}
}

func (c *apiClient) list() []types.FunctionStatus {
	c.t.Helper()
	var fns []types.FunctionStatus
	if err := json.Unmarshal(c.do("GET", "/system/functions", nil, http.StatusOK), &fns); err != nil {
		c.t.Fatal(err)
	}
	return fns
}

func (c *apiClient) status(name string) types.FunctionStatus {
	c.t.Helper()
	var st types.FunctionStatus
	if err := json.Unmarshal(c.do("GET", "/system/function/"+name, nil, http.StatusOK), &st); err != nil {
		c.t.Fatal(err)
	}
	return st
}

func (c *apiClient) waitReady(name string) {
	c.t.Helper()
	testenv.WaitFor(c.t, name+" availableReplicas=1", func() error {
		st := c.status(name)
		if st.AvailableReplicas != 1 {
			return fmt.Errorf("replicas %d, available %d", st.Replicas, st.AvailableReplicas)
		}
		return nil
	})
}

func connectRuntime(t *testing.T, cfg Config) *runtime.Runtime {
	t.Helper()
	rt, err := runtime.Connect(context.Background(), cfg.runtimeOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func taskPid(t *testing.T, rt *runtime.Runtime) uint32 {
	t.Helper()
	ts, err := rt.Task(context.Background(), e2eFunction)
	if err != nil || !ts.Running || ts.Pid == 0 {
		t.Fatalf("task of %s: %+v, %v", e2eFunction, ts, err)
	}
	return ts.Pid
}

// memoryLimit reads the cgroup v1 (or v2) memory limit of process pid.
func memoryLimit(t *testing.T, pid uint32) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var file string
		switch {
		case strings.Contains(","+f[1]+",", ",memory,"):
			file = filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes")
		case f[0] == "0" && f[1] == "":
			file = filepath.Join("/sys/fs/cgroup", f[2], "memory.max")
			if _, err := os.Stat(file); err != nil {
				continue
			}
		default:
			continue
		}
		v, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("memory limit: %v", err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			t.Fatalf("memory limit %q: %v", v, err)
		}
		return n
	}
	t.Fatalf("no memory cgroup for pid %d in\n%s", pid, b)
	return 0
}

// checkHostReachable connects, from inside the function's network
// namespace, to a listener on the bridge's (the host's) address.
func checkHostReachable(t *testing.T, netnsPath string, gw netip.Addr) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(gw.String(), "0"))
	if err != nil {
		t.Fatalf("listen on the bridge address: %v", err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "host\n")
			c.Close()
		}
	}()
	got, err := readFromNetns(netnsPath, l.Addr().String())
	if err != nil || got != "host\n" {
		t.Fatalf("from %s to the host at %s: %v %q", netnsPath, l.Addr(), err, got)
	}
	// The host's other addresses are off the subnet: no route leads there.
	port := l.Addr().(*net.TCPAddr).Port
	for _, other := range hostAddrs(t, gw) {
		l2, err := net.Listen("tcp", net.JoinHostPort(other, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		err = dialFromNetns(netnsPath, l2.Addr().String())
		l2.Close()
		if err == nil {
			t.Fatalf("from %s connected to %s: only the bridge address should be reachable", netnsPath, l2.Addr())
		}
	}
}

// bridgePorts splits `bridge -d link show` output into the entries of
// the ports of bridge br.
func bridgePorts(out, br string) []string {
	var ports []string
	for _, entry := range regexp.MustCompile(`(?m)^\d+: `).Split(out, -1) {
		if strings.Contains(entry, " master "+br+" ") {
			ports = append(ports, entry)
		}
	}
	return ports
}

// hostAddrs lists the host's IPv4 addresses other than loopback and gw.
func hostAddrs(t *testing.T, gw netip.Addr) []string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || !p.Addr().Is4() || p.Addr().IsLoopback() || p.Addr() == gw {
			continue
		}
		out = append(out, p.Addr().String())
	}
	return out
}

// readFromNetns dials addr from inside the network namespace at path and
// reads until EOF.
func readFromNetns(path, addr string) (string, error) {
	var got string
	err := inNetns(path, func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// dialFromNetns only connects, from inside the namespace at path.
func dialFromNetns(path, addr string) error {
	return inNetns(path, func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// inNetns runs f on a thread moved into the network namespace at path.
// The thread is never unlocked, so Go throws it away afterwards instead of
// reusing it in the wrong namespace.
func inNetns(path string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		ns, err := os.Open(path)
		if err != nil {
			ch <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns: %w", err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

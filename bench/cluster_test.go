package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/cluster"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// clusterDir is the cluster `make cluster` leaves up.
func clusterDir() string {
	if d := strings.TrimSpace(os.Getenv("FNB_CLUSTER_DIR")); d != "" {
		return d
	}
	return "/var/lib/fnbuilder-cluster"
}

// coldMain is a Go program whose build pulls the toolchain image and
// compiles a good part of the standard library: a build that a warm cache
// turns from tens of seconds into a pull of the final layers.
const coldMain = `package main

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
)

func main() {
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"tls": tls.VersionTLS13})
	_ = http.ListenAndServe(":8080", nil)
}
`

// clusterCold is the cold build on a fresh replica of the cluster, without
// and with build-fn's registry cache (cache_repo): faas-cli publish through
// build-fn's Service, on the replica build-fn routes the repository to,
// just after its pod was replaced (its emptyDir cache gone).
func (r *report) clusterCold(t *testing.T) {
	const without = "Cold build on a fresh replica of the cluster (make cluster), no registry cache: faas-cli publish → build-fn → buildkitd pod just replaced; a Go program built FROM the toolchain image"
	const with = "… the same, build-fn with cache_repo (the repository's cache exported by an earlier build)"
	c := cluster.Cluster{Dir: clusterDir()}
	if !c.Running() {
		r.add(without, "not measured: the cluster is not up in "+c.Dir+" (make cluster first)", "", "")
		return
	}
	cli := testenv.FaasCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	kubectl := func(args ...string) string {
		out, err := c.Kubectl(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	url, err := c.BuildFnURL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	repo := "bench/cold-" + testenv.RandomHex(t, 4)
	preferred := cluster.ReplicaOrder(cluster.RegistryAddr + "/" + repo + ":x")[0]
	replica := -1
	for i := 0; i < cluster.BuildkitReplicas; i++ {
		if cluster.BuildkitReplicaURL(i) == preferred {
			replica = i
		}
	}
	pod := fmt.Sprintf("%s-%d", cluster.BuildkitRelease, replica)
	project := testenv.NewFaasCLIProject(t, "cold", fmt.Sprintf("FROM %s AS build\nWORKDIR /src\nCOPY main.go .\nRUN go build -o /app main.go\n"+
		"FROM %s\nCOPY --from=build /app /app\nCMD [\"/app\"]\n", cluster.GolangImage, cluster.BusyboxImage), nil)
	if err := os.WriteFile(project.Dir+"/cold/main.go", []byte(coldMain), 0o644); err != nil {
		t.Fatal(err)
	}

	// build-fn with cache_repo set or not (kubectl set env rolls it).
	cacheRepo := func(on bool) {
		arg := "cache_repo-"
		if on {
			arg = "cache_repo=" + cluster.RegistryAddr + "/buildcache"
		}
		kubectl("-n", cluster.FunctionsNS, "set", "env", "deployment/build-fn", arg)
		kubectl("-n", cluster.FunctionsNS, "rollout", "status", "deployment/build-fn", "--timeout=3m")
		// The replaced pod serves while it drains, and the Service may
		// still send it a build: wait until it is gone.
		kubectl("-n", cluster.FunctionsNS, "wait", "--for=delete", "pod", "--timeout=3m", "-l", "faas_function=build-fn,pod-template-hash!="+
			kubectl("-n", cluster.FunctionsNS, "get", "pods", "-l", "faas_function=build-fn", "--field-selector=status.phase=Running",
				"--sort-by=.metadata.creationTimestamp", "-o", "jsonpath={.items[-1:].metadata.labels.pod-template-hash}"))
		if err := cluster.WaitServing(ctx, url, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// Deferred, so that it runs before cancel: build-fn is left with its
	// registry cache as make cluster set it.
	defer cacheRepo(true)
	// fresh replaces the repository's replica and waits until build-fn can
	// reach it by its name again.
	fresh := func() {
		kubectl("-n", cluster.BuildkitNamespace, "delete", "pod", pod)
		kubectl("-n", cluster.BuildkitNamespace, "rollout", "status", "statefulset/"+cluster.BuildkitRelease, "--timeout=5m")
		waitResolves(t, strings.TrimSuffix(strings.TrimPrefix(preferred, "tcp://"), ":1234"),
			kubectl("-n", cluster.BuildkitNamespace, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
	}
	publish := func(tag string) (time.Duration, string) {
		start := time.Now()
		p, err := project.StartPublish(ctx, cli, url, c.PayloadSecret(), cluster.RegistryAddr+"/"+repo+":"+tag)
		if err != nil {
			t.Fatal(err)
		}
		out, code, err := p.Wait()
		took := time.Since(start)
		if err != nil || code != 0 {
			t.Fatalf("faas-cli publish %s: exit %d, %v\n%s", tag, code, err, tail(out, 3000))
		}
		return took, out
	}
	onReplica := func(out string) bool { return strings.Contains(out, "building on "+preferred) }

	say("cluster: cold build without a registry cache on %s", pod)
	cacheRepo(false)
	fresh()
	cold, out := publish("nocache")
	if !onReplica(out) {
		r.add(without, "not measured: the build did not run on "+pod, "", "")
		return
	}
	say("cluster: cold build with cache_repo on %s", pod)
	cacheRepo(true)
	if _, out := publish("prime"); !strings.Contains(out, "exporting cache to registry") {
		t.Fatalf("the build that should fill the registry cache exported none:\n%s", tail(out, 3000))
	}
	fresh()
	warm, out := publish("cached")
	if !onReplica(out) {
		r.add(with, "not measured: the build did not run on "+pod, "", "")
		return
	}
	if strings.Contains(out, "importing cache manifest") && strings.Contains(out, "ERROR") {
		t.Fatalf("the fresh replica could not import the registry cache:\n%s", tail(out, 3000))
	}
	r.add(without, secs(cold), "", "")
	r.add(with, secs(warm), "no cache "+secs(cold), ratio(warm, cold))
}

// waitResolves waits until the cluster's DNS (CoreDNS, reached from the
// host through its Service address) answers ip for name: a replica's name
// resolves to its new pod only once that is Ready and CoreDNS knows it.
func waitResolves(t *testing.T, name, ip string) {
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, cluster.DNSServiceIP+":53")
	}}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := res.LookupHost(ctx, name)
		cancel()
		if err == nil && len(addrs) == 1 && addrs[0] == ip {
			return
		}
		if err == nil {
			err = fmt.Errorf("resolves to %v, not the new pod's %s", addrs, ip)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not resolve: %v", name, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/e2e/internal/harness"
	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/cluster"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// buildkitSelector selects the chart's pods.
const buildkitSelector = "app.kubernetes.io/name=buildkit,app.kubernetes.io/instance=" + cluster.BuildkitRelease

// testChart checks charts/buildkit as the cluster runs it: every replica
// Ready (its readiness probe passes), user-namespaced with an unmasked
// /proc, reporting BuildKit's process sandbox over mutual TLS, refusing a
// client without a certificate, and a PodDisruptionBudget over them.
func (e *env) testChart(t *testing.T) {
	for i := 0; i < cluster.BuildkitReplicas; i++ {
		pod := buildkitPod(i)
		for _, c := range []struct{ jsonpath, want string }{
			{`{.status.conditions[?(@.type=="Ready")].status}`, "True"}, // the readiness probe passes
			{"{.status.containerStatuses[0].restartCount}", "0"},        // the liveness probe never failed
			{"{.spec.hostUsers}", "false"},
			{"{.spec.containers[0].securityContext.procMount}", "Unmasked"},
			{"{.spec.securityContext.runAsNonRoot}", "true"},
			{"{.spec.containers[0].securityContext.privileged}", ""},
		} {
			if got := e.podField(t, i, c.jsonpath); got != c.want {
				t.Errorf("%s: %s = %q, want %q", pod, c.jsonpath, got, c.want)
			}
		}
		for _, probe := range []string{"readinessProbe", "livenessProbe"} {
			if e.podField(t, i, "{.spec.containers[0]."+probe+".exec.command}") == "" {
				t.Errorf("%s has no %s", pod, probe)
			}
		}
		addr := "tcp://" + e.podField(t, i, "{.status.podIP}") + ":1234"
		ctx, cancel := e.ctx(t)
		withCert := buildkit.New(buildkit.Daemon{Address: addr, TLS: &buildkit.TLS{CA: e.c.BuildkitCA(), Cert: e.c.BuildkitClientCert(),
			Key: e.c.BuildkitClientKey(), ServerName: cluster.BuildkitServerName}}, buildkit.Registries{})
		mode, err := withCert.ProcessMode(ctx)
		if err != nil || mode != "sandbox" {
			t.Errorf("%s over mutual TLS: process mode %q, %v; want sandbox", pod, mode, err)
		}
		noCert := buildkit.New(buildkit.Daemon{Address: addr, TLS: &buildkit.TLS{CA: e.c.BuildkitCA(), ServerName: cluster.BuildkitServerName}}, buildkit.Registries{})
		// buildkitd ends the handshake (the client sees a broken pipe or
		// "certificate required", depending on timing).
		if err := noCert.Ping(ctx); err == nil {
			t.Errorf("%s answered a client without a certificate; want the TLS handshake refused", pod)
		}
		cancel()
	}
	pdb := e.kubectl(t, "-n", cluster.BuildkitNamespace, "get", "pdb", cluster.BuildkitRelease, "-o", "jsonpath={.spec.maxUnavailable} {.status.expectedPods}")
	if pdb != fmt.Sprintf("1 %d", cluster.BuildkitReplicas) {
		t.Errorf("PodDisruptionBudget %s: maxUnavailable and expectedPods %q, want 1 %d", cluster.BuildkitRelease, pdb, cluster.BuildkitReplicas)
	}
}

// testBuildSecret publishes with the real faas-cli through build-fn's
// Service a function whose build reads a sealed build secret, twice: the
// image holds the secret's hash and not the secret, and both builds of the
// repository ran on the replica build-fn's routing prefers.
func (e *env) testBuildSecret(t *testing.T) {
	secret := "greeting-" + testenv.RandomHex(t, 16)
	f := newFunction(t, "greet", fmt.Sprintf(`FROM %s
ARG NONCE
RUN --mount=type=secret,id=greeting_key,required=true echo "$NONCE" > /nonce && sha256sum /run/secrets/greeting_key | cut -c1-64 > /greeting.sha256
`, cluster.BusyboxImage), map[string]string{"greeting_key": secret})
	repo := "e2e/greet-" + testenv.RandomHex(t, 4)
	want := cluster.ReplicaOrder(image(repo, "x"))[0]
	sum := sha256.Sum256([]byte(secret))
	for _, tag := range []string{"first", "second"} {
		out, code := e.publish(t, f, image(repo, tag), "--build-arg", "NONCE="+nonce(t))
		e.requirePushed(t, repo, tag, out, code)
		if got := strings.TrimSpace(string(testenv.ImageFile(t, e.reg, repo, tag, "/greeting.sha256"))); got != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: /greeting.sha256 = %q, want the secret's SHA-256: the build did not read the sealed secret", tag, got)
		}
		if hits := testenv.FindInImage(t, e.reg, repo, tag, []byte(secret)); len(hits) > 0 {
			t.Errorf("%s: the build secret is in the image: %v", tag, hits)
		}
		if on := builtOn(out); on != want {
			t.Errorf("%s built on %q, want %s (the repository's replica, stable name, over TLS)", tag, on, want)
		}
	}
}

// testProcSpy runs testenv's SandboxProbe through build-fn with faas-cli:
// a victim build holding a secret in a long step and, on the same replica
// at the same time, a spy build that reads and kills whatever it sees in
// /proc. In a pod with its own user namespace and an unmasked /proc each
// step has its own PID namespace: the spy finds only itself.
func (e *env) testProcSpy(t *testing.T) {
	p := harness.NewSandboxProbe(t)
	victimRepo, spyRepo := repoOn(t, "victim", 0), repoOn(t, "spy", 0)
	tag := testenv.RandomHex(t, 4)
	victim := newFunction(t, "victim", p.VictimDockerfile(cluster.BusyboxImage), map[string]string{harness.VictimSecretID: p.VictimSecret})
	spy := newFunction(t, "spy", p.SpyDockerfile(cluster.BusyboxImage), map[string]string{harness.SpySecretID: p.SpySecret})

	v := e.background(t, victim, image(victimRepo, tag))
	waitOutput(t, v, harness.VictimReady, 3*time.Minute)
	spyOut, spyCode := e.publish(t, spy, image(spyRepo, tag))
	victimOut, victimCode := wait(t, v)
	e.requirePushed(t, spyRepo, tag, spyOut, spyCode)
	e.requirePushed(t, victimRepo, tag, victimOut, victimCode)
	on := cluster.BuildkitReplicaURL(0)
	if builtOn(spyOut) != on || builtOn(victimOut) != on {
		t.Fatalf("victim built on %q, spy on %q: both should have run on %s", builtOn(victimOut), builtOn(spyOut), on)
	}
	p.Check(t, testenv.ImageFile(t, e.reg, spyRepo, tag, "/found"),
		testenv.ImageFile(t, e.reg, victimRepo, tag, "/overlap"),
		testenv.ImageFile(t, e.reg, victimRepo, tag, "/secret.sha256"))
}

// testReplicaDeleted deletes the replica that builds a repository while
// its build runs (on a cordoned node, so that it stays gone): build-fn
// retries the build on the other replica, and the next build of the
// repository goes there too. With that replica gone the
// PodDisruptionBudget refuses `kubectl drain` the other one.
func (e *env) testReplicaDeleted(t *testing.T) {
	e.waitReplicasReady(t)
	const gone, other = 0, 1
	repo := repoOn(t, "midway", gone)
	f := newFunction(t, "midway", fmt.Sprintf(`FROM %s
ARG NONCE
RUN echo "$NONCE" > /nonce && echo midway-step-started && sleep 20 && echo done > /done
`, cluster.BusyboxImage), nil)
	oldUID := e.podField(t, gone, "{.metadata.uid}")
	otherUID := e.podField(t, other, "{.metadata.uid}")

	first := e.background(t, f, image(repo, "first"), "--build-arg", "NONCE="+nonce(t))
	waitOutput(t, first, "building on "+cluster.BuildkitReplicaURL(gone), 2*time.Minute)
	waitOutput(t, first, "midway-step-started", 2*time.Minute)
	e.kubectl(t, "cordon", cluster.NodeName)
	t.Cleanup(func() {
		e.kubectl(t, "uncordon", cluster.NodeName)
		e.waitReplicasReady(t)
	})
	e.kubectl(t, "-n", cluster.BuildkitNamespace, "delete", "pod", buildkitPod(gone), "--grace-period=1", "--wait=false")
	t0 := time.Now()

	out, code := wait(t, first)
	t.Logf("the build whose replica was deleted ended %s later:\n%s", time.Since(t0).Round(time.Second), out)
	e.requirePushed(t, repo, "first", out, code)
	if on := builtOn(out); on != cluster.BuildkitReplicaURL(other) {
		t.Errorf("the interrupted build finished on %q, want %s", on, cluster.BuildkitReplicaURL(other))
	}
	if got := strings.TrimSpace(string(testenv.ImageFile(t, e.reg, repo, "first", "/done"))); got != "done" {
		t.Errorf("/done = %q: the pushed image is not the finished build", got)
	}

	out, code = e.publish(t, f, image(repo, "next"), "--build-arg", "NONCE="+nonce(t))
	e.requirePushed(t, repo, "next", out, code)
	if on := builtOn(out); on != cluster.BuildkitReplicaURL(other) {
		t.Errorf("the next build of %s ran on %q, want the other replica %s", repo, on, cluster.BuildkitReplicaURL(other))
	}

	// The deleted replica's successor waits, unscheduled, for the
	// cordoned node: the budget (maxUnavailable 1) is spent.
	if phase := e.podField(t, gone, "{.status.phase}"); phase != "Pending" {
		t.Errorf("%s is %q, want Pending on the cordoned node", buildkitPod(gone), phase)
	}
	drain, err := e.kubectlErr(t, "drain", cluster.NodeName, "--pod-selector="+buildkitSelector,
		"--delete-emptydir-data", "--grace-period=1", "--timeout=20s")
	if err == nil || !strings.Contains(drain, "disruption budget") {
		t.Errorf("kubectl drain with one replica gone: err %v, want a refusal by the disruption budget:\n%s", err, drain)
	}
	if uid, ready := e.podField(t, other, "{.metadata.uid}"), e.podField(t, other, `{.status.conditions[?(@.type=="Ready")].status}`); uid != otherUID || ready != "True" {
		t.Errorf("after the refused drain %s is %s, Ready %s; want the same pod (%s), Ready", buildkitPod(other), uid, ready, otherUID)
	}

	e.kubectl(t, "uncordon", cluster.NodeName)
	e.waitReplicasReady(t)
	if uid := e.podField(t, gone, "{.metadata.uid}"); uid == oldUID {
		t.Errorf("%s is still the deleted pod %s", buildkitPod(gone), uid)
	}
}

// testHelmUpgrade changes a value with `helm upgrade` while two clients
// build in a loop, one repository on each replica: the StatefulSet rolls
// one pod at a time, builds of the replica being replaced go to the other,
// and not one build fails or reports a success it did not push.
func (e *env) testHelmUpgrade(t *testing.T) {
	e.waitReplicasReady(t)
	before := map[int]string{}
	for i := 0; i < cluster.BuildkitReplicas; i++ {
		before[i] = e.podField(t, i, "{.metadata.uid}")
	}
	revision := e.kubectl(t, "-n", cluster.BuildkitNamespace, "get", "statefulset", cluster.BuildkitRelease, "-o", "jsonpath={.status.currentRevision}")

	type run struct {
		repo, tag, out, on string
		code               int
		at                 time.Time
	}
	var mu sync.Mutex
	var runs []run
	stop := make(chan struct{})
	var loops sync.WaitGroup
	for i := 0; i < cluster.BuildkitReplicas; i++ {
		repo := repoOn(t, "roll", i)
		// A project each: faas-cli lays out build/<function>/ in it.
		f := newFunction(t, "roll", fmt.Sprintf("FROM %s\nARG NONCE\nRUN echo \"$NONCE\" > /nonce\n", cluster.BusyboxImage), nil)
		loops.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tag := fmt.Sprintf("n%d", n)
				at := time.Now()
				// Not publish: t.Fatal is for the test's own goroutine.
				out, code, err := e.tryPublish(t, f, image(repo, tag), "--build-arg", "NONCE="+tag)
				if err != nil {
					out, code = err.Error(), -1
				}
				mu.Lock()
				runs = append(runs, run{repo: repo, tag: tag, out: out, on: builtOn(out), code: code, at: at})
				mu.Unlock()
			}
		})
	}
	time.Sleep(5 * time.Second) // builds before the roll, too
	t0 := time.Now()
	e.helm(t, "upgrade", cluster.BuildkitRelease, e.c.Repo+"/charts/buildkit", "--namespace", cluster.BuildkitNamespace,
		"--reuse-values", "--set", "podAnnotations.fnbuilder-e2e/roll="+testenv.RandomHex(t, 4))
	e.waitReplicasReady(t)
	rolled := time.Now()
	t.Logf("helm upgrade rolled %d replicas in %s", cluster.BuildkitReplicas, rolled.Sub(t0).Round(time.Second))
	time.Sleep(5 * time.Second) // and after it
	close(stop)
	loops.Wait()

	if rev := e.kubectl(t, "-n", cluster.BuildkitNamespace, "get", "statefulset", cluster.BuildkitRelease, "-o", "jsonpath={.status.currentRevision}"); rev == revision {
		t.Errorf("the StatefulSet's revision is still %s: the upgrade did not roll it", rev)
	}
	for i := 0; i < cluster.BuildkitReplicas; i++ {
		if uid := e.podField(t, i, "{.metadata.uid}"); uid == before[i] {
			t.Errorf("%s was not replaced by the roll", buildkitPod(i))
		}
	}
	during, movedOver := 0, 0
	for _, r := range runs {
		e.requirePushed(t, r.repo, r.tag, r.out, r.code)
		if r.at.After(t0) && r.at.Before(rolled) {
			during++
			if r.on != cluster.ReplicaOrder(image(r.repo, r.tag))[0] {
				movedOver++
			}
		}
	}
	t.Logf("%d builds, %d during the roll, %d of those on the other replica than their repository's", len(runs), during, movedOver)
	if during < 2*cluster.BuildkitReplicas || movedOver == 0 {
		t.Errorf("%d builds ran during the roll, %d moved to the other replica: the roll was not exercised", during, movedOver)
	}
}

// helm runs helm against the cluster and fails the test when it fails.
func (e *env) helm(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := e.context(t, 5*time.Minute)
	defer cancel()
	if _, err := e.c.Helm(ctx, args...); err != nil {
		t.Fatal(err)
	}
}

// testLiveness checks, after everything above, that no buildkitd's
// liveness probe failed: no event says so and no container restarted.
func (e *env) testLiveness(t *testing.T) {
	events := e.kubectl(t, "-n", cluster.BuildkitNamespace, "get", "events", "--field-selector", "reason=Unhealthy",
		"-o", `jsonpath={range .items[*]}{.involvedObject.name}: {.message}{"\n"}{end}`)
	for _, line := range strings.Split(events, "\n") {
		if strings.Contains(line, "Liveness probe failed") {
			t.Errorf("liveness probe failed: %s", line)
		}
	}
	for i := 0; i < cluster.BuildkitReplicas; i++ {
		if n := e.podField(t, i, "{.status.containerStatuses[0].restartCount}"); n != "0" {
			t.Errorf("%s restarted %s times", buildkitPod(i), n)
		}
	}
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// TestRouting: with two buildkitd daemons, an image repository always
// builds on the same one (and hits its warm cache), and on the other
// while that one is stopped.
func TestRouting(t *testing.T) {
	reg := testenv.StartRegistry(t)
	opts := testenv.BuildKitOptions{InsecureRegistries: []string{reg.Addr}}
	daemons := []*testenv.BuildKit{testenv.StartBuildKit(t, opts), testenv.StartBuildKit(t, opts)}
	base := testenv.PushBusybox(t, daemons[0], reg)

	regs := buildkit.Registries{Insecure: []string{reg.Addr}}
	pool := buildkit.NewPool(
		buildkit.New(buildkit.Daemon{Address: daemons[0].Addr}, regs),
		buildkit.New(buildkit.Daemon{Address: daemons[1].Addr}, regs))

	// One repository per daemon, found by the pool's own order.
	repoOn := map[string]string{}
	for i := 0; len(repoOn) < 2 && i < 100; i++ {
		image := fmt.Sprintf("%s/routed-%d:1", reg.Addr, i)
		addr := pool.Order(image)[0].Address()
		if _, ok := repoOn[addr]; !ok {
			repoOn[addr] = image
		}
	}
	if len(repoOn) != 2 {
		t.Fatalf("100 repositories all hash to one daemon: %v", repoOn)
	}

	contextDir := t.TempDir()
	dockerfile := "FROM " + base + "\nRUN echo warm-me > /warm && sleep 1\n"
	if err := os.WriteFile(filepath.Join(contextDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(image string) string {
		var log strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, err := pool.Run(ctx, buildkit.Build{Context: buildkit.Dir(contextDir), Image: image, Push: true},
			func(lines []string) { log.WriteString(strings.Join(lines, "\n") + "\n") })
		if err != nil {
			t.Fatalf("build %s: %v\n%s", image, err, log.String())
		}
		return log.String()
	}

	for _, d := range daemons {
		image := repoOn[d.Addr]
		for round := 1; round <= 2; round++ {
			log := build(image)
			if !strings.Contains(log, "building on "+d.Addr) {
				t.Fatalf("round %d of %s did not build on %s:\n%s", round, image, d.Addr, log)
			}
			if round == 2 && !strings.Contains(log, "RUN echo warm-me > /warm && sleep 1 CACHED") {
				t.Fatalf("rebuild on the same daemon missed its cache:\n%s", log)
			}
		}
	}

	// Stop the first daemon: its repository fails over to the second.
	daemons[0].Stop(t)
	log := build(repoOn[daemons[0].Addr])
	if !strings.Contains(log, daemons[0].Addr+" is not answering") || !strings.Contains(log, "building on "+daemons[1].Addr) {
		t.Fatalf("no failover to %s:\n%s", daemons[1].Addr, log)
	}
	// The second daemon's own repository is not disturbed.
	if log := build(repoOn[daemons[1].Addr]); !strings.Contains(log, "building on "+daemons[1].Addr) {
		t.Fatalf("the surviving daemon's repository moved:\n%s", log)
	}

	// Back up: the repository returns to its own daemon.
	daemons[0].Restart(t)
	if log := build(repoOn[daemons[0].Addr]); !strings.Contains(log, "building on "+daemons[0].Addr) {
		t.Fatalf("repository did not return to %s:\n%s", daemons[0].Addr, log)
	}
}

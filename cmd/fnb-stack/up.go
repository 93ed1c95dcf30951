package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Up starts whatever is not running, in dependency order, then builds the
// function images (skipped when unchanged) and deploys the functions.
// Everything it starts outlives it; `down` stops it.
func (s *Stack) Up() error {
	ctx := context.Background()
	unlock, err := s.group().Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.checkTools(); err != nil {
		return err
	}
	// Unix socket paths must fit in 108 bytes.
	if p := s.containerdSocket() + ".ttrpc"; len(p) > 100 {
		return fmt.Errorf("stack directory %s is too long: %s would not fit a unix socket path; choose a shorter FNB_STACK_DIR", s.Dir, p)
	}
	if other := activeStack(); other != "" && other != s.Dir {
		if len((&Stack{Dir: other}).group().Live()) > 0 {
			return fmt.Errorf("another stack is up from %s (the gateway's ports and the %s bridge are per machine): stop it first with `fnb-stack down --dir %s`", other, bridgeName, other)
		}
	}
	s.logf("stack            %s (up)", s.Dir)
	// Lock made it; daemon.Start makes logs/ and pids/, buildBinaries bin/.
	// The rootless build user must traverse it.
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(activeMarker, []byte(s.Dir+"\n"), 0o644); err != nil {
		return err
	}
	if s.setRegistryMode != "" {
		if err := os.WriteFile(s.path("registry-mode"), []byte(s.setRegistryMode+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := s.ensureCredentials(); err != nil {
		return err
	}
	if err := s.buildBinaries(ctx); err != nil {
		return err
	}

	if err := guardGateway(); err != nil {
		return fmt.Errorf("keeping the gateway's :%s and :%s off other interfaces: %w", gatewayPort, gatewayMetrics, err)
	}
	for _, d := range s.daemons() {
		if err := s.group().Start(ctx, d); err != nil {
			return fmt.Errorf("%w\n  (what started keeps running: `make down` stops it)", err)
		}
	}

	digests, err := s.buildImages(ctx)
	if err != nil {
		return err
	}
	if err := s.deployFunctions(ctx, digests); err != nil {
		return err
	}
	// build-fn at the root of its own origin, as faas-cli wants it.
	if err := s.group().Start(ctx, s.forwardDaemon()); err != nil {
		return err
	}
	s.printSummary()
	return nil
}

// daemons are the stack's daemons in dependency order (the provider
// creates the fnb0 bridge that buildkitd listens on); builder-forward
// starts after the functions are deployed.
func (s *Stack) daemons() []daemon.Member {
	return []daemon.Member{
		s.registryDaemon(),
		s.natsDaemon(),
		s.prometheusDaemon(),
		s.containerdDaemon(),
		s.providerDaemon(),
		s.gatewayDaemon(),
		s.buildkitdDaemon(),
		s.queueWorkerDaemon(1),
		s.queueWorkerDaemon(2),
	}
}

// Restart stops the named daemons (those that run) and starts them again,
// in dependency order, with up's settings. Unlike up it builds and deploys
// nothing, so builds running on build-fn are left alone.
func (s *Stack) Restart(names []string) error {
	ctx := context.Background()
	unlock, err := s.group().Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if active := activeStack(); active != s.Dir {
		return fmt.Errorf("the stack in %s is not up (%s names %q): use `fnb-stack up`", s.Dir, activeMarker, active)
	}
	all := append(s.daemons(), s.forwardDaemon())
	known := map[string]bool{}
	for _, d := range all {
		known[d.Name] = true
	}
	if len(names) == 0 || slices.ContainsFunc(names, func(n string) bool { return !known[n] }) {
		return fmt.Errorf("restart which daemon? one or more of: %s", strings.Join(slices.Sorted(maps.Keys(known)), ", "))
	}
	for _, d := range all {
		if slices.Contains(names, d.Name) {
			s.group().Stop(d.Name, 15*time.Second)
			if err := s.group().Start(ctx, d); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Stack) printSummary() {
	b, _ := s.readSecret("basic-auth-user")
	user, password, payload := strings.TrimSpace(string(b)), s.secretPath("basic-auth-password"), s.secretPath("payload-secret")
	fmt.Fprintf(s.out, `
fnbuilder's local stack is up (%.0fs). Everything listens on loopback; the gateway binds
:8080 and :8082 (hard-coded upstream) but iptables chain %s drops what comes for them
from other interfaces than lo and %s; buildkitd also listens on %s (mutual TLS, for build-fn).

`, time.Since(s.t0).Seconds(), guardChain, bridgeName, buildkitTCPAddr)
	for _, row := range [][2]string{
		{"Gateway", gatewayURL + "            (UI: " + gatewayURL + "/ui/)"},
		{"Credentials", "user " + user + ", password in " + password},
		{"", "faas-cli login -g " + gatewayURL + " -u " + user + " --password-stdin < " + password},
		{"Functions", gatewayURL + "/function/publickey-fn   (also seal-fn, build-fn, deploy-fn)"},
		{"", gatewayURL + "/async-function/build-fn  (async, X-Callback-Url)"},
		{"build-fn's root", "http://" + builderAddr + "   (faas-cli publish --remote-builder http://" + builderAddr + " --payload-secret " + payload + ")"},
		{"Payload secret", payload},
		{"Registry", s.registry().URL() + "   (images " + registryAddr + "/fnbuilder/*:dev)"},
		{"", s.registryNote()},
		{"NATS Streaming", "nats://" + natsHost + ":" + natsPort + " (cluster " + natsCluster + ")"},
		{"Prometheus", "http://" + prometheusAddr},
		{"Provider", "http://" + providerAddr},
		{"buildkitd", s.buildkitAddr() + " (rootless, user " + daemon.RootlessUser + ") and tcp://" + buildkitTCPAddr + " (mutual TLS)"},
		{"Logs, PID files", s.path("logs") + ", " + s.path("pids")},
	} {
		fmt.Fprintf(s.out, "  %-18s %s\n", row[0], row[1])
	}
	fmt.Fprint(s.out, `
Next: make demo    (build, deploy and invoke examples/hello-secret)
      make down    (stop everything)
`)
}

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/provider/network"
)

// Down stops every daemon by its PID file (process group, SIGTERM then
// SIGKILL), runs the provider's teardown (containers, network namespaces,
// bridge, iptables chains) while containerd still runs, and then checks
// that nothing is left. Leftovers are removed when they are certainly the
// stack's, and reported; any leftover makes Down fail.
func (s *Stack) Down() error {
	if _, err := os.Stat(s.Dir); err != nil {
		fmt.Fprintf(s.out, "no stack at %s: nothing to stop\n", s.Dir)
		return nil
	}
	unlock, err := s.group().Lock()
	if err != nil {
		return err
	}
	defer unlock()
	s.logf("stack            %s (down)", s.Dir)
	if other := activeStack(); other != "" && other != s.Dir && len((&Stack{Dir: other}).group().Live()) > 0 {
		// The bridge, namespaces and chains have per-machine names: they
		// belong to the stack that is up. Only this one's processes go.
		for name := range s.group().Live() {
			s.group().Stop(name, 15*time.Second)
		}
		fmt.Fprintf(s.out, "\nThe stack that is up runs from %s, not %s: its network (%s, %s* namespaces, %s-* chains) is left alone.\nStop it with: fnb-stack down --dir %s\n",
			other, s.Dir, bridgeName, netnsPrefix, chainPrefix, other)
		if left := s.strays(); len(left) > 0 {
			return fmt.Errorf("processes of %s still run: %v", s.Dir, left)
		}
		return nil
	}

	// Front to back: nothing new comes in while the rest stops.
	for _, name := range []string{"builder-forward", "queue-worker-2", "queue-worker-1", "gateway", "prometheus", "provider"} {
		s.group().Stop(name, 15*time.Second)
	}
	var problems []string
	problems = append(problems, s.teardownProvider()...)
	for _, name := range []string{"containerd", "buildkitd", "nats", "registry"} {
		s.group().Stop(name, 20*time.Second)
	}
	problems = append(problems, unguardGateway()...)
	// Anything else left in pids/ (a daemon from a newer fnb-stack).
	for _, name := range s.group().Recorded() {
		s.group().Stop(name, 10*time.Second)
	}
	// containerd's shims set their own process groups: any still alive
	// belongs to a task teardown could not delete.
	for _, p := range s.strays() {
		problems = append(problems, fmt.Sprintf("process %d outlived its daemon, killed: %s", p.PID, p.Cmdline))
		syscall.Kill(p.PID, syscall.SIGKILL)
	}
	for _, m := range daemon.Unmount(s.Dir) {
		problems = append(problems, "mount left, unmounted: "+m)
	}

	time.Sleep(200 * time.Millisecond)
	left := s.leftovers()
	if len(left) == 0 && activeStack() == s.Dir {
		os.Remove(activeMarker)
	}
	if len(problems) > 0 {
		fmt.Fprintf(s.out, "\n!!! fnb-stack down had to clean up after a component:\n  - %s\n", strings.Join(problems, "\n  - "))
	}
	if len(left) > 0 {
		return fmt.Errorf("LEFT BEHIND after down:\n  - %s", strings.Join(left, "\n  - "))
	}
	fmt.Fprintf(s.out, "\nThe stack is down (%.1fs): no process, network namespace, bridge, iptables rule or mount is left.\nState (registry, keys, credentials, function records) stays in %s; `make up` brings it back.\n",
		time.Since(s.t0).Seconds(), s.Dir)
	return nil
}

// teardownProvider runs `fnb-provider teardown` with the flags serve ran
// with. It needs containerd to delete tasks and containers, so a containerd
// that died is started again for it.
func (s *Stack) teardownProvider() []string {
	provider := filepath.Join(s.binDir(), "fnb-provider")
	if !fileExists(provider) {
		return nil // up never got as far as building it
	}
	var problems []string
	if _, ok := s.group().Running("containerd"); !ok && fileExists(s.providerState()) {
		if err := s.group().Start(context.Background(), s.containerdDaemon()); err != nil {
			problems = append(problems, fmt.Sprintf("containerd did not start for the teardown: %v", err))
		} else {
			problems = append(problems, "containerd was not running: started again for the teardown")
		}
	}
	cmd := exec.Command(provider, append([]string{"teardown"}, s.providerFlags()...)...)
	cmd.Env = daemon.BaseEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return append(problems, fmt.Sprintf("fnb-provider teardown: %v\n%s", err, out))
	}
	s.logf("provider         teardown done (containers, netns %s*, bridge %s, chains %s-*)", netnsPrefix, bridgeName, chainPrefix)
	return problems
}

// strays are live processes that name the stack directory (containerd's
// shims name its socket), other than fnb-stack commands looking at it.
func (s *Stack) strays() []daemon.Stray {
	return s.group().Strays(func(argv []string) bool {
		return len(argv) > 1 && filepath.Base(argv[0]) == "fnb-stack" && argv[1] != "forward" && argv[1] != "uts-exec"
	})
}

// leftovers lists what the stack may have left on the host.
func (s *Stack) leftovers() []string {
	var left []string
	for name, pid := range s.group().Live() {
		left = append(left, fmt.Sprintf("process %s (PID %d, %s)", name, pid, s.group().PIDPath(name)))
	}
	for _, p := range s.strays() {
		left = append(left, fmt.Sprintf("process %d: %s", p.PID, p.Cmdline))
	}
	left = append(left, network.Leftovers(netnsPrefix, bridgeName, chainPrefix)...)
	for _, m := range daemon.MountsUnder(s.Dir) {
		left = append(left, "mount "+m)
	}
	if ents, _ := os.ReadDir(filepath.Join("/run/containerd/runc", ctrdNamespace)); len(ents) > 0 {
		left = append(left, fmt.Sprintf("runc state of %d container(s) in /run/containerd/runc/%s", len(ents), ctrdNamespace))
	}
	sort.Strings(left)
	return left
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

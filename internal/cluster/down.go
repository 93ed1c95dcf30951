package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Down stops everything Up started and leaves no container, mount, network
// namespace, bridge or iptables rule behind. It keeps the certificates (the
// kubeconfig stays valid), the registry's images and the logs; the node's
// state (etcd, containerd, kubelet) goes, so the next Up is a fresh cluster.
// Every step runs even when one fails; the errors are joined.
func (c Cluster) Down(out io.Writer) error {
	var errs []string
	fail := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	c.adoptRunRecords()
	g := c.Daemons(func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) })
	// The kubelet first: it would restart what is stopped under it.
	g.Stop("kubelet", 15*time.Second)
	// A shim that dies leaves its container running: end the containers
	// through runc's state, then the shims of our containerd (they name
	// its socket, in our directory).
	fail(c.killContainers())
	for _, p := range g.Strays(func(argv []string) bool { return !strings.HasPrefix(filepath.Base(argv[0]), "containerd-shim") }) {
		syscall.Kill(p.PID, syscall.SIGKILL)
	}
	for i := len(daemonNames) - 1; i >= 0; i-- {
		g.Stop(daemonNames[i], 15*time.Second)
	}
	// A record of a daemon no longer in daemonNames.
	for _, name := range g.Recorded() {
		g.Stop(name, 15*time.Second)
	}
	fail(cleanIptables())
	if un := daemon.Unmount(c.Dir); len(un) > 0 {
		fmt.Fprintf(out, "unmounted %d mounts under %s\n", len(un), c.Dir)
	}
	if left := daemon.MountsUnder(c.Dir); len(left) > 0 {
		fail(fmt.Errorf("still mounted: %s", strings.Join(left, ", ")))
	}
	if exec.Command("ip", "link", "show", BridgeName).Run() == nil {
		if b, err := exec.Command("ip", "link", "del", BridgeName).CombinedOutput(); err != nil {
			fail(fmt.Errorf("ip link del %s: %v: %s", BridgeName, err, b))
		}
	}
	for _, d := range []string{c.path("etcd"), c.containerdDir(), c.kubeletDir(), c.path("kubelet-pki"), c.cniDataDir(), c.shimSocketDir()} {
		fail(daemon.RemoveAll(d))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster down: %s", strings.Join(errs, "; "))
	}
	return nil
}

// killContainers SIGKILLs and deletes every container in our runc root.
func (c Cluster) killContainers() error {
	runc := Bin("runc")
	roots, _ := filepath.Glob(filepath.Join(c.runcRoot(), "*"))
	if runc == "" || len(roots) == 0 {
		return nil
	}
	var errs []string
	for _, root := range roots {
		out, err := exec.Command(runc, "--root", root, "list", "-q").Output()
		if err != nil {
			errs = append(errs, fmt.Sprintf("runc --root %s list: %v", root, err))
			continue
		}
		for _, id := range strings.Fields(string(out)) {
			exec.Command(runc, "--root", root, "kill", "--all", id, "KILL").Run()
			if b, err := exec.Command(runc, "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Sprintf("runc delete %s: %v: %s", id, err, b))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// cleanIptables removes kube-proxy's chains (kube-proxy --cleanup) and the
// kubelet's, which that leaves: KUBE-FIREWALL (jumped to from INPUT and
// OUTPUT), KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, in iptables and ip6tables.
// Only KUBE-* chains are touched: no other project here makes them.
func cleanIptables() error {
	if proxy := Bin("kube-proxy"); proxy != "" {
		exec.Command(proxy, "--cleanup").Run()
	}
	var errs []string
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			rules, err := IptablesRules(ipt, table)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			var chains []string
			for _, line := range strings.Split(rules, "\n") {
				f := splitRule(line)
				switch {
				case len(f) == 2 && f[0] == "-N" && strings.HasPrefix(f[1], "KUBE-"):
					chains = append(chains, f[1])
				case len(f) > 2 && f[0] == "-A" && !strings.HasPrefix(f[1], "KUBE-") && jumpsToKube(f):
					f[0] = "-D"
					if b, err := exec.Command(ipt, append([]string{"-w", "5", "-t", table}, f...)...).CombinedOutput(); err != nil {
						errs = append(errs, fmt.Sprintf("%s -t %s %s: %v: %s", ipt, table, strings.Join(f, " "), err, b))
					}
				}
			}
			for _, op := range []string{"-F", "-X"} {
				for _, ch := range chains {
					if b, err := exec.Command(ipt, "-w", "5", "-t", table, op, ch).CombinedOutput(); err != nil {
						errs = append(errs, fmt.Sprintf("%s -t %s %s %s: %v: %s", ipt, table, op, ch, err, b))
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// IptablesRules is `ipt -t table -S`. A table that does not exist here
// (ip6tables without IPv6, or without the table's module) has no rules, and
// so has a missing ip6tables (the kubelet makes IPv6 chains only with it);
// any other failure is an error: the xtables lock held past -w 5, a missing
// iptables, a table the nft backend cannot show.
func IptablesRules(ipt, table string) (string, error) {
	out, err := exec.Command(ipt, "-w", "5", "-t", table, "-S").Output()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), nil
	case ipt == "ip6tables" && errors.Is(err, exec.ErrNotFound):
		return "", nil
	case errors.As(err, &exit):
		if tableMissing(exit.ExitCode(), string(exit.Stderr)) {
			return "", nil
		}
		return "", fmt.Errorf("%s -t %s -S: %v: %s", ipt, table, err, bytes.TrimSpace(exit.Stderr))
	}
	return "", fmt.Errorf("%s -t %s -S: %w", ipt, table, err)
}

// tableMissing tells a table that does not exist from other failures:
// iptables 1.8.9 exits 3 (VERSION_PROBLEM) with "can't initialize iptables
// table `bogus': Table does not exist" (legacy) or "table 'bogus' does not
// exist" (nf_tables); where the kernel has no IPv6 the error is the
// kernel's EAFNOSUPPORT, and no table of that family can exist.
func tableMissing(code int, stderr string) bool {
	return code == 3 && strings.Contains(stderr, "does not exist") ||
		code > 0 && strings.Contains(stderr, "Address family not supported by protocol")
}

// splitRule splits a line of iptables -S into arguments; iptables quotes
// the ones with spaces (comments) in double quotes.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	quoted, inArg := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, inArg = !quoted, true
		case r == ' ' && !quoted:
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

func jumpsToKube(rule []string) bool {
	for i := 0; i+1 < len(rule); i++ {
		if (rule[i] == "-j" || rule[i] == "-g") && strings.HasPrefix(rule[i+1], "KUBE-") {
			return true
		}
	}
	return false
}

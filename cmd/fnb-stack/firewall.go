package main

import (
	"fmt"
	"os/exec"
	"strings"
)

// guardChain keeps the gateway on loopback and the bridge. Upstream binds
// :8080 and :8082 on every interface (hard-coded); this chain drops what
// arrives for them from anywhere else, for IPv4 and IPv6.
const guardChain = chainPrefix + "-STACK-INPUT"

var guardedPorts = []string{gatewayPort, gatewayMetrics}

func iptablesCmds() []string {
	var out []string
	for _, c := range []string{"iptables", "ip6tables"} {
		if p, err := exec.LookPath(c); err == nil {
			out = append(out, p)
		} else if p := "/usr/sbin/" + c; fileExists(p) {
			out = append(out, p)
		}
	}
	return out
}

func ipt(bin string, args ...string) error {
	out, err := exec.Command(bin, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// guardGateway (re)creates the chain and its one jump from INPUT.
func guardGateway() error {
	cmds := iptablesCmds()
	if len(cmds) == 0 {
		return errMissing{[]string{"iptables (from Debian iptables)"}}
	}
	for i, bin := range cmds {
		if err := ipt(bin, "-N", guardChain); err != nil && ipt(bin, "-S", guardChain) != nil {
			if i > 0 { // IPv6 may be unavailable: only IPv4 is required
				continue
			}
			return err
		}
		rules := [][]string{{"-F", guardChain}, {"-A", guardChain, "-i", "lo", "-j", "RETURN"}, {"-A", guardChain, "-i", bridgeName, "-j", "RETURN"}}
		for _, p := range guardedPorts {
			rules = append(rules, []string{"-A", guardChain, "-p", "tcp", "--dport", p, "-j", "DROP"})
		}
		for _, r := range rules {
			if err := ipt(bin, r...); err != nil {
				return err
			}
		}
		if ipt(bin, "-C", "INPUT", "-j", guardChain) != nil {
			if err := ipt(bin, "-I", "INPUT", "1", "-j", guardChain); err != nil {
				return err
			}
		}
	}
	return nil
}

// unguardGateway removes every jump to the chain and the chain.
func unguardGateway() []string {
	var problems []string
	for _, bin := range iptablesCmds() {
		for i := 0; i < 10 && ipt(bin, "-C", "INPUT", "-j", guardChain) == nil; i++ {
			if err := ipt(bin, "-D", "INPUT", "-j", guardChain); err != nil {
				problems = append(problems, err.Error())
				break
			}
		}
		if ipt(bin, "-S", guardChain) == nil {
			if err := ipt(bin, "-F", guardChain); err != nil {
				problems = append(problems, err.Error())
			}
			if err := ipt(bin, "-X", guardChain); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	return problems
}

package main

import (
	"context"

	"github.com/fnbuilder/fnbuilder/internal/provider/network"
)

// guardChain keeps the gateway on loopback and the bridge. Upstream binds
// :8080 and :8082 on every interface (hard-coded); this chain drops what
// arrives for them from anywhere else, for IPv4 and IPv6.
const guardChain = chainPrefix + "-STACK-INPUT"

var guard = network.Chains{
	Jumps: []network.Rule{{Chain: "INPUT", Args: []string{"-j", guardChain}}},
	Rules: []network.Rule{
		{Chain: guardChain, Args: []string{"-i", "lo", "-j", "RETURN"}},
		{Chain: guardChain, Args: []string{"-i", bridgeName, "-j", "RETURN"}},
		{Chain: guardChain, Args: []string{"-p", "tcp", "--dport", gatewayPort, "-j", "DROP"}},
		{Chain: guardChain, Args: []string{"-p", "tcp", "--dport", gatewayMetrics, "-j", "DROP"}},
	},
}

// guardGateway (re)creates the chain and its one jump from INPUT.
func guardGateway() error {
	cmds := network.IptablesBinaries()
	if len(cmds) == 0 {
		return errMissing{[]string{"iptables (from Debian iptables)"}}
	}
	for i, bin := range cmds {
		ipt := network.IptablesOf(bin)
		if i > 0 && ipt(context.Background(), "-S", "INPUT") != nil {
			continue // IPv6 may be unavailable: only IPv4 is required
		}
		if err := guard.Apply(context.Background(), ipt); err != nil {
			return err
		}
	}
	return nil
}

// unguardGateway removes every jump to the chain and the chain.
func unguardGateway() []string {
	var problems []string
	for _, bin := range network.IptablesBinaries() {
		if err := guard.Remove(context.Background(), network.IptablesOf(bin)); err != nil {
			problems = append(problems, err.Error())
		}
	}
	return problems
}

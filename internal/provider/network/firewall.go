package network

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Rule is one iptables rule in the filter table: the chain it lives in and
// its match and target arguments.
type Rule struct {
	Chain string
	Args  []string
}

func (r Rule) String() string { return r.Chain + " " + strings.Join(r.Args, " ") }

// Firewall is the provider's whole iptables footprint: two chains of its own
// in the filter table, and one jump into each from a built-in chain.
// Everything it adds can therefore be removed exactly: delete the two jumps,
// flush and delete the two chains.
type Firewall struct {
	// Bridge is the CNI bridge the functions' interfaces hang off.
	Bridge string
	// Prefix names the chains: Prefix-FORWARD and Prefix-INPUT.
	Prefix string
}

// ForwardChain is the chain FORWARD jumps to.
func (f Firewall) ForwardChain() string { return f.Prefix + "-FORWARD" }

// InputChain is the chain INPUT jumps to.
func (f Firewall) InputChain() string { return f.Prefix + "-INPUT" }

// Jumps are the rules inserted at the top of the built-in chains.
func (f Firewall) Jumps() []Rule {
	return []Rule{
		{Chain: "FORWARD", Args: []string{"-j", f.ForwardChain()}},
		{Chain: "INPUT", Args: []string{"-j", f.InputChain()}},
	}
}

// Rules are the contents of the provider's own chains, in order.
//
// Containers may talk to the host (INPUT from the bridge is accepted, in
// case the host's INPUT policy is restrictive) and nothing else: any packet
// the host would route from the bridge to another interface, or from another
// interface onto the bridge, is dropped. Traffic between two containers on
// the bridge reaches these rules only where br_netfilter is loaded (with
// bridge-nf-call-iptables=1), and is dropped there too; without it, the
// isolated bridge ports stop it (see Network.Attach).
func (f Firewall) Rules() []Rule {
	return []Rule{
		{Chain: f.ForwardChain(), Args: []string{"-i", f.Bridge, "-j", "DROP"}},
		{Chain: f.ForwardChain(), Args: []string{"-o", f.Bridge, "-j", "DROP"}},
		{Chain: f.InputChain(), Args: []string{"-i", f.Bridge, "-j", "ACCEPT"}},
	}
}

func (f Firewall) chains() []string { return []string{f.ForwardChain(), f.InputChain()} }

// iptables runs iptables with args against the filter table; the error of
// a non-zero exit carries the tool's output.
type iptables func(ctx context.Context, args ...string) error

// Apply makes the live rules match the description: it creates the chains
// if needed, replaces their contents, and inserts each jump once.
func (f Firewall) Apply(ctx context.Context, ipt iptables) error {
	for _, c := range f.chains() {
		if ipt(ctx, "-S", c) != nil {
			if err := ipt(ctx, "-N", c); err != nil {
				return fmt.Errorf("create chain %s: %w", c, err)
			}
		}
		if err := ipt(ctx, "-F", c); err != nil {
			return fmt.Errorf("flush chain %s: %w", c, err)
		}
	}
	for _, r := range f.Rules() {
		if err := ipt(ctx, slices.Concat([]string{"-A", r.Chain}, r.Args)...); err != nil {
			return fmt.Errorf("add rule %s: %w", r, err)
		}
	}
	for _, j := range f.Jumps() {
		if ipt(ctx, slices.Concat([]string{"-C", j.Chain}, j.Args)...) == nil {
			continue
		}
		if err := ipt(ctx, slices.Concat([]string{"-I", j.Chain, "1"}, j.Args)...); err != nil {
			return fmt.Errorf("insert jump %s: %w", j, err)
		}
	}
	return nil
}

// Remove deletes every jump (however many copies) and both chains. Missing
// pieces are not errors, so it can run any number of times.
func (f Firewall) Remove(ctx context.Context, ipt iptables) error {
	var errs []error
	for _, j := range f.Jumps() {
		// Bounded: a rule that cannot be deleted must not loop forever.
		for i := 0; i < 100 && ipt(ctx, slices.Concat([]string{"-C", j.Chain}, j.Args)...) == nil; i++ {
			if err := ipt(ctx, slices.Concat([]string{"-D", j.Chain}, j.Args)...); err != nil {
				errs = append(errs, fmt.Errorf("delete jump %s: %w", j, err))
				break
			}
		}
	}
	for _, c := range f.chains() {
		if ipt(ctx, "-S", c) != nil {
			continue
		}
		if err := ipt(ctx, "-F", c); err != nil {
			errs = append(errs, fmt.Errorf("flush chain %s: %w", c, err))
			continue
		}
		if err := ipt(ctx, "-X", c); err != nil {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}

// Present reports whether either chain exists.
func (f Firewall) Present(ctx context.Context, ipt iptables) bool {
	for _, c := range f.chains() {
		if ipt(ctx, "-S", c) == nil {
			return true
		}
	}
	return false
}

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

// Chains is the whole of one's own iptables footprint in the filter
// table: the rules of chains of one's own, and one jump into each from a
// built-in chain. Everything Apply adds, Remove can take away exactly:
// delete the jumps, flush and delete the chains.
type Chains struct {
	Jumps []Rule
	Rules []Rule
}

// Chains is the provider's footprint.
func (f Firewall) Chains() Chains { return Chains{Jumps: f.Jumps(), Rules: f.Rules()} }

// own names the chains the jumps lead to.
func (c Chains) own() []string {
	var out []string
	for _, j := range c.Jumps {
		out = append(out, j.Args[len(j.Args)-1])
	}
	return out
}

// Iptables runs iptables (or ip6tables) with args against the filter
// table; the error of a non-zero exit carries the tool's output.
type Iptables func(ctx context.Context, args ...string) error

// IptablesOf runs bin ("iptables", "ip6tables"), waiting for the xtables lock.
func IptablesOf(bin string) Iptables {
	return func(ctx context.Context, args ...string) error {
		return run(ctx, bin, append([]string{"-w", "5", "-t", "filter"}, args...)...)
	}
}

// Apply makes the live rules match the description: it creates the chains
// if needed, replaces their contents, and inserts each jump once.
func (c Chains) Apply(ctx context.Context, ipt Iptables) error {
	for _, ch := range c.own() {
		if ipt(ctx, "-S", ch) != nil {
			if err := ipt(ctx, "-N", ch); err != nil {
				return fmt.Errorf("create chain %s: %w", ch, err)
			}
		}
		if err := ipt(ctx, "-F", ch); err != nil {
			return fmt.Errorf("flush chain %s: %w", ch, err)
		}
	}
	for _, r := range c.Rules {
		if err := ipt(ctx, slices.Concat([]string{"-A", r.Chain}, r.Args)...); err != nil {
			return fmt.Errorf("add rule %s: %w", r, err)
		}
	}
	for _, j := range c.Jumps {
		if ipt(ctx, slices.Concat([]string{"-C", j.Chain}, j.Args)...) == nil {
			continue
		}
		if err := ipt(ctx, slices.Concat([]string{"-I", j.Chain, "1"}, j.Args)...); err != nil {
			return fmt.Errorf("insert jump %s: %w", j, err)
		}
	}
	return nil
}

// Remove deletes every jump (however many copies) and the chains. Missing
// pieces are not errors, so it can run any number of times.
func (c Chains) Remove(ctx context.Context, ipt Iptables) error {
	var errs []error
	for _, j := range c.Jumps {
		// Bounded: a rule that cannot be deleted must not loop forever.
		for i := 0; i < 100 && ipt(ctx, slices.Concat([]string{"-C", j.Chain}, j.Args)...) == nil; i++ {
			if err := ipt(ctx, slices.Concat([]string{"-D", j.Chain}, j.Args)...); err != nil {
				errs = append(errs, fmt.Errorf("delete jump %s: %w", j, err))
				break
			}
		}
	}
	for _, ch := range c.own() {
		if ipt(ctx, "-S", ch) != nil {
			continue
		}
		if err := ipt(ctx, "-F", ch); err != nil {
			errs = append(errs, fmt.Errorf("flush chain %s: %w", ch, err))
			continue
		}
		if err := ipt(ctx, "-X", ch); err != nil {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", ch, err))
		}
	}
	return errors.Join(errs...)
}

// Present reports whether any of the chains exists.
func (c Chains) Present(ctx context.Context, ipt Iptables) bool {
	for _, ch := range c.own() {
		if ipt(ctx, "-S", ch) == nil {
			return true
		}
	}
	return false
}

package network

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestFirewallRules(t *testing.T) {
	f := Firewall{Bridge: "fnb0", Prefix: "FNB"}
	got := []string{}
	for _, r := range append(f.Jumps(), f.Rules()...) {
		got = append(got, r.String())
	}
	want := []string{
		"FORWARD -j FNB-FORWARD",
		"INPUT -j FNB-INPUT",
		"FNB-FORWARD -i fnb0 -j DROP",
		"FNB-FORWARD -o fnb0 -j DROP",
		"FNB-INPUT -i fnb0 -j ACCEPT",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rules:\n got %q\nwant %q", got, want)
	}
}

// fakeIptables keeps chains as lists of rule strings and records every
// call, failing -S/-C the way iptables does.
type fakeIptables struct {
	chains map[string][]string
	calls  []string
}

func newFake() *fakeIptables {
	return &fakeIptables{chains: map[string][]string{"FORWARD": {"-j DOCKER"}, "INPUT": nil}}
}

func (f *fakeIptables) run(_ context.Context, args ...string) error {
	f.calls = append(f.calls, strings.Join(args, " "))
	op, chain, rest := args[0], args[1], args[2:]
	rule := strings.Join(rest, " ")
	rules, exists := f.chains[chain]
	switch op {
	case "-S":
		if !exists {
			return errors.New("no chain")
		}
	case "-N":
		if exists {
			return errors.New("chain exists")
		}
		f.chains[chain] = nil
	case "-F":
		if !exists {
			return errors.New("no chain")
		}
		f.chains[chain] = nil
	case "-X":
		if !exists || len(rules) > 0 {
			return errors.New("cannot delete")
		}
		delete(f.chains, chain)
	case "-A":
		f.chains[chain] = append(rules, rule)
	case "-I": // -I CHAIN 1 rule…
		f.chains[chain] = append([]string{strings.Join(rest[1:], " ")}, rules...)
	case "-C", "-D":
		for i, r := range rules {
			if r == rule {
				if op == "-D" {
					f.chains[chain] = append(rules[:i:i], rules[i+1:]...)
				}
				return nil
			}
		}
		return errors.New("no such rule")
	}
	return nil
}

func TestFirewallApplyRemove(t *testing.T) {
	ctx := context.Background()
	f := Firewall{Bridge: "fnb0", Prefix: "FNB"}
	ipt := newFake()
	ipt.chains["FNB-FORWARD"] = []string{"-j stale"} // left from an older version

	for i := 0; i < 2; i++ { // idempotent
		if err := f.Chains().Apply(ctx, ipt.run); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]string{
		"FORWARD":     {"-j FNB-FORWARD", "-j DOCKER"},
		"INPUT":       {"-j FNB-INPUT"},
		"FNB-FORWARD": {"-i fnb0 -j DROP", "-o fnb0 -j DROP"},
		"FNB-INPUT":   {"-i fnb0 -j ACCEPT"},
	}
	if !reflect.DeepEqual(ipt.chains, want) {
		t.Fatalf("after Apply:\n got %q\nwant %q", ipt.chains, want)
	}
	if !f.Chains().Present(ctx, ipt.run) {
		t.Fatal("Present = false after Apply")
	}

	// A duplicated jump (two providers' starts racing) is removed too.
	ipt.chains["INPUT"] = append(ipt.chains["INPUT"], "-j FNB-INPUT")
	for i := 0; i < 2; i++ { // idempotent
		if err := f.Chains().Remove(ctx, ipt.run); err != nil {
			t.Fatal(err)
		}
	}
	want = map[string][]string{"FORWARD": {"-j DOCKER"}, "INPUT": {}}
	if len(ipt.chains["INPUT"]) == 0 {
		ipt.chains["INPUT"] = []string{}
	}
	if !reflect.DeepEqual(ipt.chains, want) {
		t.Fatalf("after Remove:\n got %q\nwant %q", ipt.chains, want)
	}
	if f.Chains().Present(ctx, ipt.run) {
		t.Fatal("Present = true after Remove")
	}
}

func testConfig() Config {
	return Config{
		Bridge:      "fnb0",
		Subnet:      netip.MustParsePrefix("10.62.0.0/24"),
		Gateway:     netip.MustParseAddr("10.62.0.1"),
		CNIBinDir:   "/usr/lib/cni",
		StateDir:    "/var/lib/fnbuilder-provider/cni",
		NetNSPrefix: "fnb-",
		ChainPrefix: "FNB",
		NetworkName: "fnbuilder",
	}
}

func TestConfList(t *testing.T) {
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Name       string
		Plugins    []struct {
			Type      string
			Bridge    string
			IsGateway bool `json:"isGateway"`
			IPMasq    bool `json:"ipMasq"`
			IPAM      struct {
				Type    string
				DataDir string `json:"dataDir"`
				Ranges  [][]map[string]string
				Routes  []any
			}
		}
	}
	if err := json.Unmarshal(ConfList(testConfig()), &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) != 1 {
		t.Fatalf("plugins: %+v", conf.Plugins)
	}
	p := conf.Plugins[0]
	if p.Type != "bridge" || p.Bridge != "fnb0" || !p.IsGateway || p.IPMasq {
		t.Errorf("bridge plugin: %+v", p)
	}
	if p.IPAM.Type != "host-local" || p.IPAM.DataDir != "/var/lib/fnbuilder-provider/cni/ipam" {
		t.Errorf("ipam: %+v", p.IPAM)
	}
	if got := p.IPAM.Ranges[0][0]; got["subnet"] != "10.62.0.0/24" || got["gateway"] != "10.62.0.1" {
		t.Errorf("range: %v", got)
	}
	if len(p.IPAM.Routes) != 0 {
		t.Errorf("routes %v: containers must get no route off the subnet", p.IPAM.Routes)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"long bridge":      func(c *Config) { c.Bridge = "a-very-long-bridge" },
		"gateway outside":  func(c *Config) { c.Gateway = netip.MustParseAddr("10.63.0.1") },
		"ipv6 subnet":      func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") },
		"tiny subnet":      func(c *Config) { c.Subnet = netip.MustParsePrefix("10.62.0.0/31") },
		"no netns prefix":  func(c *Config) { c.NetNSPrefix = "" },
		"no chain prefix":  func(c *Config) { c.ChainPrefix = "" },
		"no cni state dir": func(c *Config) { c.StateDir = "" },
	} {
		c := testConfig()
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := testConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}

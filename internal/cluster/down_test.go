package cluster

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// What iptables 1.8.9 printed here (both backends) for a table that does
// not exist, against the failures that must not pass for one.
func TestTableMissing(t *testing.T) {
	for _, c := range []struct {
		code    int
		stderr  string
		missing bool
	}{
		{3, "iptables v1.8.9 (legacy): can't initialize iptables table `nat': Table does not exist (do you need to insmod?)\nPerhaps iptables or your kernel needs to be upgraded.\n", true},
		{3, "ip6tables v1.8.9 (nf_tables): table 'nat' does not exist\nPerhaps ip6tables or your kernel needs to be upgraded.\n", true},
		{3, "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `filter': Address family not supported by protocol\n", true},
		{4, "Another app is currently holding the xtables lock. Stopped waiting after 5s.\n", false},
		{1, "iptables v1.8.9 (nf_tables): chain `KUBE-X' in table `nat' is incompatible, use 'nft' tool.\n", false},
		{2, "iptables v1.8.9 (nf_tables): unknown option \"-S\"\n", false},
		{1, "iptables v1.8.9 (legacy): can't initialize iptables table `filter': Permission denied (you must be root)\n", false},
	} {
		if got := tableMissing(c.code, c.stderr); got != c.missing {
			t.Errorf("tableMissing(%d, %q) = %v, want %v", c.code, c.stderr, got, c.missing)
		}
	}
}

// A table that is there lists, one that is not gives no rules and no
// error, and an iptables that cannot be asked is an error.
func TestIptablesRules(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (iptables -S)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("needs iptables (Debian iptables): %v", err)
	}
	rules, err := IptablesRules("iptables", "filter")
	if err != nil || !strings.Contains(rules, "-P INPUT") {
		t.Fatalf("filter: %q, %v", rules, err)
	}
	if rules, err := IptablesRules("iptables", "bogus"); err != nil || rules != "" {
		t.Fatalf("a table that does not exist: %q, %v", rules, err)
	}
	if _, err := IptablesRules("/nonexistent/iptables", "filter"); err == nil {
		t.Fatal("an iptables that is not there gave no error")
	}
}

func TestSplitRule(t *testing.T) {
	for line, want := range map[string][]string{
		`-A INPUT -j KUBE-FIREWALL`: {"-A", "INPUT", "-j", "KUBE-FIREWALL"},
		`-A INPUT -m comment --comment "kubernetes externally-visible service portals" -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES`: {
			"-A", "INPUT", "-m", "comment", "--comment", "kubernetes externally-visible service portals",
			"-m", "conntrack", "--ctstate", "NEW", "-j", "KUBE-EXTERNAL-SERVICES"},
		`-N KUBE-KUBELET-CANARY`: {"-N", "KUBE-KUBELET-CANARY"},
		``:                       nil,
	} {
		if got := splitRule(line); !slices.Equal(got, want) {
			t.Errorf("splitRule(%q) = %q, want %q", line, got, want)
		}
	}
	if !jumpsToKube(splitRule(`-A OUTPUT -j KUBE-FIREWALL`)) || jumpsToKube(splitRule(`-A FORWARD -i fnb0 -j FNB-FORWARD`)) {
		t.Error("jumpsToKube picks the wrong rules")
	}
}

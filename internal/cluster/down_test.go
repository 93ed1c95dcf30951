package cluster

import (
	"slices"
	"testing"
)

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

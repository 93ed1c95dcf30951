// Package network gives each function its own network namespace
// (/run/netns/<prefix><function>), attached with CNI (Debian's bridge and
// host-local plugins) to one bridge, and keeps the iptables rules that let
// the containers reach the host and nothing else. Everything it creates —
// namespaces, CNI cache and address allocations (under its state dir), the
// bridge, the iptables chains — Teardown removes again.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// NetNSDir is where iproute2 keeps named network namespaces.
const NetNSDir = "/run/netns"

// Config describes the network.
type Config struct {
	// Bridge is the Linux bridge's name ("fnb0").
	Bridge string
	// Subnet is the functions' subnet ("10.62.0.0/24").
	Subnet netip.Prefix
	// Gateway is the bridge's (the host's) address in Subnet ("10.62.0.1").
	Gateway netip.Addr
	// CNIBinDir holds the CNI plugin binaries ("/usr/lib/cni").
	CNIBinDir string
	// StateDir receives the CNI result cache and host-local's allocations.
	StateDir string
	// NetNSPrefix is prepended to function names for namespace names ("fnb-").
	NetNSPrefix string
	// ChainPrefix names the iptables chains ("FNB").
	ChainPrefix string
	// NetworkName is the CNI network's name ("fnbuilder").
	NetworkName string
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Bridge == "" || len(c.Bridge) > 15:
		return fmt.Errorf("bridge name %q: must be 1-15 characters", c.Bridge)
	case !c.Subnet.IsValid() || !c.Subnet.Addr().Is4():
		return fmt.Errorf("subnet %s: must be an IPv4 prefix", c.Subnet)
	case c.Subnet.Bits() > 30:
		return fmt.Errorf("subnet %s: too small", c.Subnet)
	case !c.Subnet.Contains(c.Gateway):
		return fmt.Errorf("gateway %s is not in subnet %s", c.Gateway, c.Subnet)
	case c.CNIBinDir == "" || c.StateDir == "" || c.NetNSPrefix == "" || c.ChainPrefix == "" || c.NetworkName == "":
		return errors.New("network: CNI bin dir, state dir, namespace prefix, chain prefix and network name are required")
	}
	return nil
}

// Network attaches functions and owns the host-side pieces.
type Network struct {
	cfg      Config
	cni      *libcni.CNIConfig
	list     *libcni.NetworkConfigList
	firewall Firewall
}

// New checks the plugins are there and prepares the CNI configuration. It
// changes nothing on the host: see Setup.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(cfg.CNIBinDir, p)); err != nil {
			return nil, fmt.Errorf("CNI plugin %s: %w (install Debian's containernetworking-plugins)", p, err)
		}
	}
	list, err := libcni.ConfListFromBytes(ConfList(cfg))
	if err != nil {
		return nil, fmt.Errorf("CNI config: %w", err)
	}
	return &Network{
		cfg:      cfg,
		cni:      libcni.NewCNIConfigWithCacheDir([]string{cfg.CNIBinDir}, filepath.Join(cfg.StateDir, "cache"), nil),
		list:     list,
		firewall: Firewall{Bridge: cfg.Bridge, Prefix: cfg.ChainPrefix},
	}, nil
}

// ConfList is the CNI network configuration: a bridge with the host as
// gateway, no masquerading, addresses from host-local with its allocations
// under the state dir. No default route: the containers have nowhere to go
// but the subnet, where the host is.
func ConfList(cfg Config) []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       cfg.NetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      cfg.Bridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": false,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": filepath.Join(cfg.StateDir, "ipam"),
					"ranges": [][]map[string]string{{{
						"subnet":  cfg.Subnet.String(),
						"gateway": cfg.Gateway.String(),
					}}},
				},
			},
		},
	}
	b, _ := json.Marshal(conf) // plain maps: cannot fail
	return b
}

// Firewall describes the iptables rules.
func (n *Network) Firewall() Firewall { return n.firewall }

// NetNSName is the name of function's network namespace.
func (n *Network) NetNSName(function string) string { return n.cfg.NetNSPrefix + function }

// NetNSPath is the path of function's network namespace.
func (n *Network) NetNSPath(function string) string {
	return filepath.Join(NetNSDir, n.NetNSName(function))
}

// Setup installs the iptables chains and jumps and creates the bridge with
// the gateway address (so the host can listen on it before the first
// function exists). It is idempotent; the CNI bridge plugin accepts a bridge
// that already carries its gateway address.
func (n *Network) Setup(ctx context.Context) error {
	if err := n.firewall.Chains().Apply(ctx, runIptables); err != nil {
		return err
	}
	return n.ensureBridge(ctx)
}

func (n *Network) ensureBridge(ctx context.Context) error {
	br := n.cfg.Bridge
	if !linkExists(br) {
		if err := run(ctx, "ip", "link", "add", "name", br, "type", "bridge"); err != nil {
			return fmt.Errorf("create bridge: %w", err)
		}
	}
	// The bridge gets no IPv6 address: IPv4 on the subnet is all there is.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+br+"/disable_ipv6", []byte("1"), 0o644)
	gw := netip.PrefixFrom(n.cfg.Gateway, n.cfg.Subnet.Bits()).String()
	out, err := exec.CommandContext(ctx, lookPath("ip"), "-4", "-o", "addr", "show", "dev", br).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip addr show %s: %w: %s", br, err, out)
	}
	if !strings.Contains(string(out), " "+gw+" ") {
		if err := run(ctx, "ip", "addr", "add", gw, "dev", br); err != nil {
			return fmt.Errorf("address bridge: %w", err)
		}
	}
	if err := run(ctx, "ip", "link", "set", br, "up"); err != nil {
		return fmt.Errorf("bring up bridge: %w", err)
	}
	return nil
}

func (n *Network) runtimeConf(function string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: n.NetNSName(function),
		NetNS:       n.NetNSPath(function),
		IfName:      "eth0",
	}
}

// Attach makes sure function has a network namespace attached to the
// bridge and returns its address. An intact attachment is kept; fresh
// reports whether a new namespace was made (any task still using an old one
// must be restarted).
func (n *Network) Attach(ctx context.Context, function string) (ip netip.Addr, fresh bool, err error) {
	rt := n.runtimeConf(function)
	if isNetNS(rt.NetNS) {
		if res, err := n.cni.GetNetworkListCachedResult(n.list, rt); err == nil && res != nil {
			if err := n.cni.CheckNetworkList(ctx, n.list, rt); err == nil {
				if ip, _, err := addresses(res, n.cfg.Bridge); err == nil {
					return ip, false, nil
				}
			}
		}
	}
	// Missing or damaged: start again from nothing.
	if err := n.Detach(ctx, function); err != nil {
		return netip.Addr{}, false, err
	}
	if err := addNetNS(ctx, n.NetNSName(function)); err != nil {
		return netip.Addr{}, false, err
	}
	res, err := n.cni.AddNetworkList(ctx, n.list, rt)
	if err != nil {
		n.Detach(ctx, function)
		return netip.Addr{}, false, fmt.Errorf("CNI ADD for %s: %w", function, err)
	}
	ip, hostVeth, err := addresses(res, n.cfg.Bridge)
	if err != nil {
		n.Detach(ctx, function)
		return netip.Addr{}, false, fmt.Errorf("CNI result for %s: %w", function, err)
	}
	// Bridged traffic between two functions never passes iptables: isolated
	// ports forward only to and from the bridge (the host) itself.
	if hostVeth != "" {
		if err := run(ctx, "bridge", "link", "set", "dev", hostVeth, "isolated", "on"); err != nil {
			n.Detach(ctx, function)
			return netip.Addr{}, false, fmt.Errorf("isolate %s: %w", hostVeth, err)
		}
	}
	return ip, true, nil
}

// addresses picks the container's IPv4 address and the host-side veth
// from a CNI result.
func addresses(res cnitypes.Result, bridge string) (netip.Addr, string, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}, "", err
	}
	var hostVeth string
	for _, i := range r.Interfaces {
		if i.Sandbox == "" && i.Name != bridge {
			hostVeth = i.Name
		}
	}
	for _, c := range r.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), hostVeth, nil
		}
	}
	return netip.Addr{}, "", errors.New("no IPv4 address in CNI result")
}

// Detach releases function's address and deletes its namespace. Nothing
// there is not an error.
func (n *Network) Detach(ctx context.Context, function string) error {
	rt := n.runtimeConf(function)
	var errs []error
	if err := n.cni.DelNetworkList(ctx, n.list, rt); err != nil {
		errs = append(errs, fmt.Errorf("CNI DEL for %s: %w", function, err))
	}
	if err := delNetNS(ctx, n.NetNSName(function)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// NetNSNames lists the function namespaces that exist, by function name.
func (n *Network) NetNSNames() ([]string, error) {
	entries, err := os.ReadDir(NetNSDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", NetNSDir, err)
	}
	var out []string
	for _, e := range entries {
		if fn, ok := strings.CutPrefix(e.Name(), n.cfg.NetNSPrefix); ok && fn != "" {
			out = append(out, fn)
		}
	}
	return out, nil
}

// Teardown removes every namespace with the prefix, the bridge, the
// iptables chains and the CNI state. It can run any number of times.
func (n *Network) Teardown(ctx context.Context) error {
	var errs []error
	fns, err := n.NetNSNames()
	if err != nil {
		errs = append(errs, err)
	}
	for _, fn := range fns {
		if err := n.Detach(ctx, fn); err != nil {
			errs = append(errs, err)
		}
	}
	if linkExists(n.cfg.Bridge) {
		if err := run(ctx, "ip", "link", "delete", n.cfg.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge: %w", err))
		}
	}
	if err := n.firewall.Chains().Remove(ctx, runIptables); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(n.cfg.StateDir); err != nil {
		errs = append(errs, fmt.Errorf("remove CNI state: %w", err))
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// nsfsMagic is NSFS_MAGIC from linux/magic.h: a bind-mounted namespace.
const nsfsMagic = 0x6e736673

// isNetNS reports whether path is a mounted namespace (not a stale file).
func isNetNS(path string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == nsfsMagic
}

func addNetNS(ctx context.Context, name string) error {
	if err := run(ctx, "ip", "netns", "add", name); err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		delNetNS(ctx, name)
		return fmt.Errorf("bring up lo in %s: %w", name, err)
	}
	return nil
}

func delNetNS(ctx context.Context, name string) error {
	path := filepath.Join(NetNSDir, name)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if isNetNS(path) {
		if err := run(ctx, "ip", "netns", "delete", name); err != nil {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
		return nil
	}
	// A stale file without a namespace mounted on it.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", path, err)
	}
	return nil
}

// sbinPath lets the tools be found when PATH lacks the sbin directories.
var sbinPath = []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin"}

func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range sbinPath {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return name
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, lookPath(name), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// runIptables runs iptables on the filter table, waiting for the xtables lock.
var runIptables = IptablesOf("iptables")

// FirewallPresent reports whether any of the provider's chains exist.
func (n *Network) FirewallPresent(ctx context.Context) bool {
	return n.firewall.Chains().Present(ctx, runIptables)
}

// CheckTools reports the host tools this package runs that are missing.
func CheckTools() error {
	var missing []string
	for _, t := range []string{"ip", "bridge", "iptables"} {
		if p := lookPath(t); !filepath.IsAbs(p) {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing host tools: %s (install iproute2 and iptables)", strings.Join(missing, ", "))
	}
	return nil
}

// IptablesBinaries are iptables and ip6tables, where installed.
func IptablesBinaries() []string {
	var out []string
	for _, c := range []string{"iptables", "ip6tables"} {
		if p := lookPath(c); filepath.IsAbs(p) {
			out = append(out, p)
		}
	}
	return out
}

// Leftovers lists what a network named by these prefixes still has on the
// host — namespaces (named, or stale files), the bridge, iptables and
// ip6tables rules of chains with chainPrefix — for a caller that checks
// that a teardown left nothing.
func Leftovers(netnsPrefix, bridge, chainPrefix string) []string {
	var left []string
	if out, err := exec.Command(lookPath("ip"), "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], netnsPrefix) {
				left = append(left, "network namespace "+f[0])
			}
		}
	}
	matches, _ := filepath.Glob(filepath.Join(NetNSDir, netnsPrefix+"*"))
	for _, m := range matches {
		left = append(left, "netns file "+m)
	}
	if linkExists(bridge) {
		left = append(left, "bridge "+bridge)
	}
	for _, bin := range IptablesBinaries() {
		out, err := exec.Command(bin, "-w", "5", "-S").Output()
		if err != nil {
			if filepath.Base(bin) == "iptables" {
				left = append(left, "iptables -S failed: "+err.Error())
			}
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, " "+chainPrefix+"-") || strings.HasPrefix(line, "-N "+chainPrefix+"-") {
				left = append(left, filepath.Base(bin)+": "+line)
			}
		}
	}
	return left
}

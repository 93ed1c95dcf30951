package supervisor

import (
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
)

// SecretsMountPath is where a function finds its secrets, one file each,
// as on faas-netes and faasd.
const SecretsMountPath = "/var/openfaas/secrets"

// cpuPeriod is the CFS period (µs) CPU limits are expressed against.
const cpuPeriod = 100000

// containerSpec turns a deployment into what the runtime creates.
// secretPath maps a secret name to its file on the host; hostsFile is the
// /etc/hosts to mount, or "".
func containerSpec(d types.FunctionDeployment, netns, hostsFile string, secretPath func(string) string) (runtime.Spec, error) {
	spec := runtime.Spec{
		ID:           d.Service,
		Image:        d.Image,
		Hostname:     d.Service,
		NetNS:        netns,
		ReadOnlyRoot: d.ReadOnlyRootFilesystem,
		Labels:       map[string]string{runtime.FunctionLabel: d.Service},
	}
	keys := make([]string, 0, len(d.EnvVars))
	for k := range d.EnvVars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		spec.Env = append(spec.Env, k+"="+d.EnvVars[k])
	}
	if d.EnvProcess != "" {
		spec.Env = append(spec.Env, "fprocess="+d.EnvProcess)
	}
	secrets := append([]string(nil), d.Secrets...)
	sort.Strings(secrets)
	for _, s := range secrets {
		spec.Mounts = append(spec.Mounts, runtime.Mount{
			Source:      secretPath(s),
			Destination: path.Join(SecretsMountPath, s),
			ReadOnly:    true,
		})
	}
	if hostsFile != "" {
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: hostsFile, Destination: "/etc/hosts", ReadOnly: true})
	}
	if d.Limits != nil {
		if d.Limits.Memory != "" {
			m, err := ParseMemory(d.Limits.Memory)
			if err != nil {
				return runtime.Spec{}, err
			}
			spec.MemoryLimit = m
		}
		if d.Limits.CPU != "" {
			quota, err := ParseCPU(d.Limits.CPU)
			if err != nil {
				return runtime.Spec{}, err
			}
			spec.CPUQuota, spec.CPUPeriod = quota, cpuPeriod
		}
	}
	return spec, nil
}

var memorySuffixes = []struct {
	suffix string
	factor int64
}{
	// Longest first, so "Mi" is not read as "M" followed by garbage.
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// ParseMemory reads a Kubernetes-style memory quantity ("128Mi", "1G",
// "134217728") as bytes. Below 4 MiB is refused: runc cannot start a
// container in less.
func ParseMemory(s string) (int64, error) {
	num, factor := strings.TrimSpace(s), int64(1)
	for _, sf := range memorySuffixes {
		if n, ok := strings.CutSuffix(num, sf.suffix); ok {
			num, factor = n, sf.factor
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("memory limit %q: not a positive quantity like 128Mi", s)
	}
	b := v * float64(factor)
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("memory limit %q: too large", s)
	}
	if b < 4<<20 {
		return 0, fmt.Errorf("memory limit %q: below 4Mi", s)
	}
	return int64(b), nil
}

// ParseCPU reads a Kubernetes-style CPU quantity ("500m", "1", "1.5") as a
// CFS quota in µs per 100 ms period.
func ParseCPU(s string) (int64, error) {
	num, scale := strings.TrimSpace(s), 1.0
	if n, ok := strings.CutSuffix(num, "m"); ok {
		num, scale = n, 0.001
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("cpu limit %q: not a positive quantity like 500m or 1.5", s)
	}
	q := v * scale * cpuPeriod
	if q < 1000 { // the kernel's minimum quota is 1 ms
		return 0, fmt.Errorf("cpu limit %q: below 10m", s)
	}
	if q > 1e12 {
		return 0, fmt.Errorf("cpu limit %q: too large", s)
	}
	return int64(q), nil
}

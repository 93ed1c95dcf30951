package supervisor

import (
	"reflect"
	"testing"

	"github.com/openfaas/faas-provider/types"

	"github.com/fnbuilder/fnbuilder/internal/provider/runtime"
)

func TestContainerSpec(t *testing.T) {
	d := types.FunctionDeployment{
		Service:                "hello",
		Image:                  "127.0.0.1:5000/fn/hello:1",
		EnvProcess:             "cat",
		EnvVars:                map[string]string{"B": "2", "A": "1"},
		Secrets:                []string{"token", "api-key"},
		Limits:                 &types.FunctionResources{Memory: "64Mi", CPU: "500m"},
		ReadOnlyRootFilesystem: true,
	}
	spec, err := containerSpec(d, "/run/netns/fnb-hello", "/state/run/hello/hosts", func(s string) string { return "/state/secrets/" + s })
	if err != nil {
		t.Fatal(err)
	}
	want := runtime.Spec{
		ID:       "hello",
		Image:    "127.0.0.1:5000/fn/hello:1",
		Hostname: "hello",
		Env:      []string{"A=1", "B=2", "fprocess=cat"},
		NetNS:    "/run/netns/fnb-hello",
		Mounts: []runtime.Mount{
			{Source: "/state/secrets/api-key", Destination: "/var/openfaas/secrets/api-key", ReadOnly: true},
			{Source: "/state/secrets/token", Destination: "/var/openfaas/secrets/token", ReadOnly: true},
			{Source: "/state/run/hello/hosts", Destination: "/etc/hosts", ReadOnly: true},
		},
		MemoryLimit:  64 << 20,
		CPUQuota:     50000,
		CPUPeriod:    100000,
		ReadOnlyRoot: true,
		Labels:       map[string]string{runtime.FunctionLabel: "hello"},
	}
	if !reflect.DeepEqual(spec, want) {
		t.Fatalf("spec:\n got %+v\nwant %+v", spec, want)
	}

	d.Limits = &types.FunctionResources{Memory: "lots"}
	if _, err := containerSpec(d, "", "", func(s string) string { return s }); err == nil {
		t.Fatal("accepted memory limit \"lots\"")
	}
}

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{
		"128Mi": 128 << 20, "1Gi": 1 << 30, "64M": 64e6, "1G": 1e9,
		"4194304": 4 << 20, "0.5Gi": 512 << 20, " 10Mi ": 10 << 20, "5000k": 5e6,
	} {
		got, err := ParseMemory(in)
		if err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Mi", "-1Mi", "1Xi", "abc", "1Ki", "NaN", "1e300Ti"} {
		if got, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseCPU(t *testing.T) {
	for in, want := range map[string]int64{"500m": 50000, "1": 100000, "1.5": 150000, "10m": 1000, "0.25": 25000} {
		got, err := ParseCPU(in)
		if err != nil || got != want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "m", "0", "-1", "5m", "two", "1e20"} {
		if got, err := ParseCPU(in); err == nil {
			t.Errorf("ParseCPU(%q) = %d, want an error", in, got)
		}
	}
}

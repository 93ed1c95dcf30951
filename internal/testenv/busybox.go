package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// PushBusybox builds the base image for the test builds (daemon.Busybox:
// Debian's static busybox with a /bin symlink per applet, /tmp, /etc/passwd
// and group) and pushes it as REG/busybox:latest, which it returns.
func PushBusybox(t testing.TB, bk *BuildKit, reg *Registry) string {
	t.Helper()
	bb, err := daemon.FindBusybox()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := t.TempDir()
	if err := bb.WriteContext(dir); err != nil {
		t.Fatalf("testenv: busybox context: %v", err)
	}
	ref := reg.Addr + "/busybox:latest"
	BuildPush(t, bk, reg, dir, ref, nil)
	return ref
}

// BuildPush builds contextDir/Dockerfile on bk with the built-in
// dockerfile.v0 frontend and pushes the image to ref on reg (logged in when
// it has a user; nil: a plain-HTTP registry). It returns the pushed image's
// digest. A failed build fails the test with the build's log.
func BuildPush(t testing.TB, bk *BuildKit, reg *Registry, contextDir, ref string, buildArgs map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := buildkit.New(buildkit.Daemon{Address: bk.Addr}, buildkit.Registries{Insecure: []string{"*"}})
	if reg != nil {
		var err error
		if b, err = reg.Registry.Builder(buildkit.Daemon{Address: bk.Addr}, reg.User); err != nil {
			t.Fatal(err)
		}
	}
	digest, err := daemon.BuildPush(ctx, b, buildkit.Build{Context: buildkit.Dir(contextDir), Image: ref, BuildArgs: buildArgs})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return digest
}

// Stack is a registry, a buildkitd that pushes to it over plain HTTP, and
// the busybox base image in it: where the build tests start.
type Stack struct {
	Reg  *Registry
	BK   *BuildKit
	Base string // REG/busybox:latest
}

// StartStack starts the three; the registry listens on registryAddr when
// it is set (a captured request names it), on a free port otherwise.
func StartStack(t testing.TB, registryAddr string, opts BuildKitOptions) *Stack {
	t.Helper()
	reg := startRegistry(t, registryAddr, false)
	opts.InsecureRegistries = append(opts.InsecureRegistries, reg.Addr)
	bk := StartBuildKit(t, opts)
	return &Stack{Reg: reg, BK: bk, Base: PushBusybox(t, bk, reg)}
}

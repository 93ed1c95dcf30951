package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/fileimage"
	"github.com/fnbuilder/fnbuilder/internal/templateimage"
)

// fnbuilder's four functions, each built from its production recipe,
// template/fnbuilder-go (of-watchdog in http mode in front of the
// function's handler), by internal/templateimage.
var functionNames = []string{"publickey-fn", "seal-fn", "build-fn", "deploy-fn"}

// stackTenant keys the function builds' caches on the stack's buildkitd.
const stackTenant = "fnbuilder-stack"

func baseImage() string { return registryAddr + "/busybox:latest" }

func functionImage(fn string) string { return registryAddr + "/fnbuilder/" + fn + ":dev" }

// buildBinaries builds, from the checkout, the fnb-provider the stack runs,
// and puts fnb-stack itself beside it (the queue-workers and the forwarder
// run it).
func (s *Stack) buildBinaries(ctx context.Context) error {
	t0 := time.Now()
	bin := s.binDir()
	tmp := filepath.Join(bin, ".new")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(bin, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, daemon.Find("go"), "build", "-trimpath", "-buildvcs=false", "-o", tmp+"/", "./cmd/fnb-provider")
	cmd.Dir = s.Repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/fnb-provider in %s: %v\n%s", s.Repo, err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, c := range []struct{ src, name string }{
		{filepath.Join(tmp, "fnb-provider"), "fnb-provider"},
		{self, "fnb-stack"},
	} {
		if err := daemon.Install(c.src, filepath.Join(bin, c.name)); err != nil {
			return fmt.Errorf("install %s: %w", c.name, err)
		}
	}
	s.logf("binaries         fnb-provider built from %s (%.1fs)", s.Repo, time.Since(t0).Seconds())
	return nil
}

// buildImages pushes the busybox base (what the examples build FROM) and
// builds the four function images from the template on the stack's
// buildkitd; each is skipped when unchanged. It returns each function
// image's digest.
func (s *Stack) buildImages(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	t0 := time.Now()
	remote, err := s.registry().RemoteOptions(pushUser)
	if err != nil {
		return nil, err
	}
	if _, err := fileimage.PushAll(ctx, s.logf, []fileimage.Recipe{{Ref: baseImage(), Make: fileimage.Busybox}}, remote...); err != nil {
		return nil, fmt.Errorf("base image %s: %w", baseImage(), err)
	}
	b, err := s.registry().Builder(buildkit.Daemon{Address: s.buildkitAddr()}, pushUser)
	if err != nil {
		return nil, err
	}
	var fns []templateimage.Function
	for _, fn := range functionNames {
		fns = append(fns, templateimage.Function{Name: fn, Ref: functionImage(fn)})
	}
	images, err := templateimage.Builder{
		Repo:     s.Repo,
		Registry: registryAddr,
		Remote:   remote,
		BuildKit: b,
		// RUN steps share the host's network (rootlesskit --net=host).
		Goproxy: goproxyAddr,
		Tenant:  stackTenant,
		Records: s.path("images"),
		Logf:    s.logf,
	}.Build(ctx, fns)
	if err != nil {
		return nil, fmt.Errorf("%w\n(buildkitd log: %s)", err, s.logPath("buildkitd"))
	}
	digests := map[string]string{}
	for fn, im := range images {
		digests[fn] = im.Digest
	}
	s.logf("images           base and %d functions ready (%.1fs)", len(digests), time.Since(t0).Seconds())
	return digests, nil
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// fnbuilder's four functions, each an image FROM the stack's busybox base
// with the static fnb CLI serving it.
var functionNames = []string{"publickey-fn", "seal-fn", "build-fn", "deploy-fn"}

func baseImage() string { return registryAddr + "/busybox:latest" }

func functionImage(fn string) string { return registryAddr + "/fnbuilder/" + fn + ":dev" }

// buildBinaries builds, from the checkout, the static fnb that the function
// images run and the fnb-provider the stack runs, and puts fnb-stack itself
// beside them (the queue-workers and the forwarder run it).
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
	// Static (the base image has no libc), reproducible (-trimpath, no VCS
	// stamp), so an unchanged checkout gives the same bytes and `up` skips
	// rebuilding the images.
	cmd := exec.CommandContext(ctx, daemon.Find("go"), "build", "-trimpath", "-buildvcs=false", "-o", tmp+"/", "./cmd/fnb", "./cmd/fnb-provider")
	cmd.Dir = s.Repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/fnb ./cmd/fnb-provider in %s: %v\n%s", s.Repo, err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, c := range []struct{ src, name string }{
		{filepath.Join(tmp, "fnb"), "fnb"},
		{filepath.Join(tmp, "fnb-provider"), "fnb-provider"},
		{self, "fnb-stack"},
	} {
		if err := daemon.Install(c.src, filepath.Join(bin, c.name)); err != nil {
			return fmt.Errorf("install %s: %w", c.name, err)
		}
	}
	s.logf("binaries         fnb, fnb-provider built from %s (%.1fs)", s.Repo, time.Since(t0).Seconds())
	return nil
}

// imageRecord remembers what an image was built from, so that an
// unchanged image is not rebuilt.
type imageRecord struct {
	Inputs string `json:"inputs"`
	Digest string `json:"digest"`
}

// ensureImage builds contextDir/dockerfile and pushes it as ref, unless
// the registry already has the digest built from the same inputs.
func (s *Stack) ensureImage(ctx context.Context, ref, contextDir, dockerfile, inputs string, prepare func() error) (string, error) {
	recPath := s.path("images", strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".json")
	var rec imageRecord
	if b, err := os.ReadFile(recPath); err == nil && json.Unmarshal(b, &rec) == nil && rec.Inputs == inputs {
		if d, err := s.registry().Digest(ctx, ref, pushUser); err == nil && d == rec.Digest {
			return rec.Digest, nil
		}
	}
	t0 := time.Now()
	if prepare != nil {
		if err := prepare(); err != nil {
			return "", err
		}
	}
	digest, err := s.buildPush(ctx, contextDir, dockerfile, ref)
	if err != nil {
		return "", err
	}
	rec = imageRecord{Inputs: inputs, Digest: digest}
	b, _ := json.Marshal(rec)
	if err := daemon.WriteFileAtomic(recPath, b, 0o644); err != nil {
		return "", err
	}
	s.logf("image            %s built and pushed (%.19s, %.1fs)", ref, digest, time.Since(t0).Seconds())
	return digest, nil
}

// buildImages pushes the busybox base and the four function images.
// It returns each function image's digest.
func (s *Stack) buildImages(ctx context.Context) (map[string]string, error) {
	if err := os.MkdirAll(s.path("images"), 0o755); err != nil {
		return nil, err
	}
	baseDigest, err := s.ensureBase(ctx)
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", baseImage(), err)
	}
	ctxDir := s.path("images", "functions")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		return nil, err
	}
	if err := daemon.Install(filepath.Join(s.binDir(), "fnb"), filepath.Join(ctxDir, "fnb")); err != nil {
		return nil, err
	}
	fnbSHA, err := daemon.FileSHA256(filepath.Join(ctxDir, "fnb"))
	if err != nil {
		return nil, err
	}
	digests := map[string]string{}
	for _, fn := range functionNames {
		df := "Dockerfile." + fn
		// No "# syntax=" line and a base from the local registry: the
		// built-in frontend, nothing pulled from the internet.
		content := fmt.Sprintf(`FROM %s
COPY fnb /usr/bin/fnb
ENV PATH=/usr/bin:/bin
EXPOSE 8080
CMD ["/usr/bin/fnb", "serve", %q, "--addr", "0.0.0.0:8080"]
`, baseImage(), fn)
		if err := daemon.WriteFileAtomic(filepath.Join(ctxDir, df), []byte(content), 0o644); err != nil {
			return nil, err
		}
		inputs := sha256Hex(content + "\n" + fnbSHA + "\n" + baseDigest)
		d, err := s.ensureImage(ctx, functionImage(fn), ctxDir, df, inputs, nil)
		if err != nil {
			return nil, fmt.Errorf("image of %s: %w", fn, err)
		}
		digests[fn] = d
	}
	return digests, nil
}

// ensureBase builds the base image from Debian's static busybox
// (daemon.Busybox).
func (s *Stack) ensureBase(ctx context.Context) (string, error) {
	bb, err := daemon.FindBusybox()
	if err != nil {
		return "", errMissing{[]string{err.Error()}}
	}
	dir := s.path("images", "busybox")
	prepare := func() error {
		os.RemoveAll(dir)
		return bb.WriteContext(dir)
	}
	return s.ensureImage(ctx, baseImage(), dir, "Dockerfile", bb.Inputs, prepare)
}

// buildPush builds with BuildKit's built-in dockerfile.v0 frontend on the
// stack's buildkitd (unix socket) and pushes to the stack's registry.
func (s *Stack) buildPush(ctx context.Context, contextDir, dockerfile, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	b, err := s.registry().Builder(buildkit.Daemon{Address: s.buildkitAddr()}, pushUser)
	if err != nil {
		return "", err
	}
	d, err := daemon.BuildPush(ctx, b, buildkit.Build{Context: buildkit.Dir(contextDir), Dockerfile: dockerfile, Image: ref})
	if err != nil {
		return "", fmt.Errorf("buildkitd: %w\n(buildkitd log: %s)", err, s.logPath("buildkitd"))
	}
	return d, nil
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

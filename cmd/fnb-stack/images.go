package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
)

// fnbuilder's four functions, each an image FROM the stack's busybox base
// with the static fnb CLI serving it.
var functionNames = []string{"publickey-fn", "seal-fn", "build-fn", "deploy-fn"}

const baseRepo = "busybox"

func baseImage() string { return registryAddr + "/" + baseRepo + ":latest" }

func functionImage(fn string) string { return registryAddr + "/fnbuilder/" + fn + ":dev" }

// buildBinaries builds, from the checkout, the static fnb that the function
// images run and the fnb-provider the stack runs, and puts fnb-stack itself
// and buildkitd where the daemons can run them (the rootless user cannot
// reach $HOME/.cache of root).
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
	cmd := exec.CommandContext(ctx, goBin(), "build", "-trimpath", "-buildvcs=false", "-o", tmp+"/", "./cmd/fnb", "./cmd/fnb-provider")
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
		{s.tool("buildkitd"), "buildkitd"},
	} {
		if err := installBinary(c.src, filepath.Join(bin, c.name)); err != nil {
			return fmt.Errorf("install %s: %w", c.name, err)
		}
	}
	s.logf("binaries         fnb, fnb-provider built from %s (%.1fs)", s.Repo, time.Since(t0).Seconds())
	return nil
}

// installBinary copies src to dst (0755) unless dst has the same bytes,
// through a rename so that a running copy is never overwritten in place.
func installBinary(src, dst string) error {
	if src == dst {
		return nil
	}
	a, err := fileSHA(src)
	if err != nil {
		return err
	}
	if b, err := fileSHA(dst); err == nil && a == b {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func fileSHA(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
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
		if d, err := registryDigest(ctx, ref); err == nil && d == rec.Digest {
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
	if err := writeFileAtomic(recPath, b, 0o644); err != nil {
		return "", err
	}
	s.logf("image            %s built and pushed (%s, %.1fs)", ref, short(digest), time.Since(t0).Seconds())
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
	if err := installBinary(filepath.Join(s.binDir(), "fnb"), filepath.Join(ctxDir, "fnb")); err != nil {
		return nil, err
	}
	fnbSHA, err := fileSHA(filepath.Join(ctxDir, "fnb"))
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
		if err := writeFileAtomic(filepath.Join(ctxDir, df), []byte(content), 0o644); err != nil {
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

// ensureBase builds the base image from Debian's static busybox: /bin/busybox
// with a symlink per applet, a world-writable /tmp, /etc/passwd and group.
func (s *Stack) ensureBase(ctx context.Context) (string, error) {
	bb := ""
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			bb = p
			break
		}
	}
	if bb == "" {
		return "", errMissing{[]string{"busybox (from Debian busybox-static)"}}
	}
	applets, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return "", fmt.Errorf("%s --list: %v", bb, err)
	}
	bbSHA, err := fileSHA(bb)
	if err != nil {
		return "", err
	}
	const dockerfile = "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"/bin/sh\"]\n"
	files := map[string]string{
		"rootfs/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"rootfs/etc/group":  "root:x:0:\nnogroup:x:65534:\n",
		"Dockerfile":        dockerfile,
	}
	inputs := sha256Hex(bbSHA + "\n" + string(applets) + dockerfile + files["rootfs/etc/passwd"] + files["rootfs/etc/group"])

	dir := s.path("images", "busybox")
	prepare := func() error {
		os.RemoveAll(dir)
		rootfs := filepath.Join(dir, "rootfs")
		for _, d := range []string{"bin", "etc", "tmp", "root", "usr/bin"} {
			if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
				return err
			}
		}
		if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
			return err
		}
		if err := installBinary(bb, filepath.Join(rootfs, "bin", "busybox")); err != nil {
			return err
		}
		for _, a := range strings.Fields(string(applets)) {
			if a == "busybox" || strings.Contains(a, "/") {
				continue
			}
			if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil && !os.IsExist(err) {
				return err
			}
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	return s.ensureImage(ctx, baseImage(), dir, "Dockerfile", inputs, prepare)
}

// buildPush builds with BuildKit's built-in dockerfile.v0 frontend on the
// stack's buildkitd (unix socket) and pushes over plain HTTP.
func (s *Stack) buildPush(ctx context.Context, contextDir, dockerfile, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	builder := buildkit.New(buildkit.Daemon{Address: s.buildkitAddr()}, buildkit.Registries{Insecure: []string{registryAddr}})
	var log strings.Builder
	d, err := builder.Push(ctx, buildkit.Build{Context: buildkit.Dir(contextDir), Dockerfile: dockerfile, Image: ref, Push: true},
		func(lines []string) { log.WriteString(strings.Join(lines, "\n") + "\n") })
	if err != nil {
		out := log.String()
		if len(out) > 6000 {
			out = "...\n" + out[len(out)-6000:]
		}
		return "", fmt.Errorf("buildkitd: build %s: %v\n--- build log ---\n%s\n(buildkitd log: %s)", ref, err, out, s.logPath("buildkitd"))
	}
	if d == "" {
		return "", fmt.Errorf("buildkitd: build %s: no digest in the exporter response", ref)
	}
	return d, nil
}

// registryDigest asks the registry which manifest ref's tag points to.
func registryDigest(ctx context.Context, ref string) (string, error) {
	rest := strings.TrimPrefix(ref, registryAddr+"/")
	repo, tag, ok := strings.Cut(rest, ":")
	if !ok {
		return "", fmt.Errorf("no tag in %s", ref)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+registryAddr+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", strings.Join([]string{
		"application/vnd.oci.image.index.v1+json",
		"application/vnd.oci.image.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.docker.distribution.manifest.v2+json",
	}, ", "))
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("registry: HEAD %s: %s", ref, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

// Package templateimage builds fnbuilder's functions from their production
// recipe, template/fnbuilder-go's Dockerfile, on a BuildKit with no way to
// pull: faas-cli lays out the build context (build/<fn>/, as `faas-cli
// build --shrinkwrap` does), stand-ins for the three base images the
// Dockerfile names are pushed to a local registry, the build's FROM names
// are redirected to them, and Go modules come from this machine's module
// cache served as a GOPROXY. `make cluster` (internal/cluster) and the local
// stack (cmd/fnb-stack) build their function images this way.
package templateimage

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/fileimage"
)

// Where the stand-ins go in the registry, by the FROM name of
// template/fnbuilder-go/Dockerfile they stand in for.
const (
	WatchdogRepo = "openfaas/of-watchdog:0.11.3"
	AlpineRepo   = "library/alpine:3.22.2"
	GolangRepo   = "library/golang:1.26-alpine"
)

var fromNames = map[string]string{
	"ghcr.io/openfaas/of-watchdog:0.11.3": WatchdogRepo,
	"golang:1.26-alpine":                  GolangRepo,
	"alpine:3.22.2":                       AlpineRepo,
}

// Builder builds function images from the template.
type Builder struct {
	// Repo is the checkout: stack.yaml and template/.
	Repo string
	// Registry (host:port) receives the stand-ins; Remote reaches it from
	// this machine. BuildKit pulls the stand-ins from it and pushes there.
	Registry string
	Remote   []remote.Option
	BuildKit *buildkit.Builder
	// Goproxy (host:port) is an address of this machine that the build's
	// RUN steps reach; the module cache is served there while the builds
	// run. Its URL is the template's GOPROXY build arg, and BuildKit keys
	// every RUN step after that ARG on it: a fixed port keeps those steps
	// cached from one Build to the next (port 0 takes a free port and
	// gives up that cache).
	Goproxy string
	// Tenant keys the build's caches (its cache mounts among them).
	Tenant string
	// Records is this builder's own directory: what each image was built
	// from (<fn>.json), its last build log (<fn>.log), the stand-ins'
	// fingerprints, and the contexts faas-cli lays out (shrinkwrap/).
	Records string
	Logf    fileimage.Logf
}

// Function is a function of stack.yaml and the image reference to build
// it as.
type Function struct{ Name, Ref string }

// Image is one function's image: where it is, and whether Build built it.
type Image struct {
	Ref, Digest string
	Built       bool
}

// SharedTool is one of ../shared/tools (faas-cli, of-watchdog): the
// variable the tests set, else beside the checkout.
func SharedTool(repo, env, name string) (string, error) {
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(filepath.Dir(repo), "shared", "tools", name)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found (%s): set %s", name, p, env)
	}
	return p, nil
}

// Build pushes the stand-ins, then builds the functions in turn, so that
// each build finds the previous one's Go build cache. A function whose build context and stand-ins are unchanged since
// its record, and whose image the registry still has, is not built again.
func (b Builder) Build(ctx context.Context, functions []Function) (map[string]Image, error) {
	if err := os.MkdirAll(b.Records, 0o755); err != nil {
		return nil, err
	}
	bases, err := b.pushStandIns(ctx)
	if err != nil {
		return nil, err
	}
	faasCLI, err := SharedTool(b.Repo, "FAAS_CLI", "faas-cli")
	if err != nil {
		return nil, err
	}
	work := filepath.Join(b.Records, "shrinkwrap")
	if err := b.stage(work); err != nil {
		return nil, err
	}
	// The module cache is served from the first build on.
	var goproxy string
	stopGoproxy := func() {}
	defer func() { stopGoproxy() }()
	out := map[string]Image{}
	for _, f := range functions {
		fn, ref := f.Name, f.Ref
		// The context exactly as faas-cli lays it out (build/<fn>/).
		shrink := exec.CommandContext(ctx, faasCLI, "build", "--shrinkwrap", "-f", "stack.yaml", "--filter", fn)
		shrink.Dir = work
		if o, err := shrink.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("faas-cli build --shrinkwrap --filter %s: %v\n%s", fn, err, o)
		}
		contextDir := filepath.Join(work, "build", fn)
		tree, err := treeDigest(contextDir)
		if err != nil {
			return nil, err
		}
		inputs := sha(tree + "\n" + bases)
		record := filepath.Join(b.Records, fn+".json")
		var rec struct{ Inputs, Digest string }
		if raw, err := os.ReadFile(record); err == nil && json.Unmarshal(raw, &rec) == nil && rec.Inputs == inputs {
			if d, err := b.digest(ctx, ref); err == nil && d == rec.Digest {
				b.Logf("image %s@%s up to date", ref, d)
				out[fn] = Image{Ref: ref, Digest: d}
				continue
			}
		}
		if goproxy == "" {
			if goproxy, stopGoproxy, err = b.serveGoproxy(ctx); err != nil {
				return nil, err
			}
		}
		t0 := time.Now()
		var log strings.Builder
		digest, err := daemon.BuildPushLog(ctx, b.BuildKit, buildkit.Build{
			Context:   buildkit.Dir(contextDir),
			Image:     ref,
			BuildArgs: map[string]string{"FUNCTION": fn, "GOPROXY": goproxy},
			Contexts:  b.contexts(),
			Tenant:    b.Tenant,
		}, &log)
		if werr := daemon.WriteFileAtomic(filepath.Join(b.Records, fn+".log"), []byte(log.String()), 0o644); err == nil {
			err = werr
		}
		if err != nil {
			return nil, err
		}
		rec.Inputs, rec.Digest = inputs, digest
		raw, _ := json.Marshal(rec)
		if err := daemon.WriteFileAtomic(record, raw, 0o644); err != nil {
			return nil, err
		}
		b.Logf("image %s@%s built from template/fnbuilder-go (%.0f s)", ref, digest, time.Since(t0).Seconds())
		out[fn] = Image{Ref: ref, Digest: digest, Built: true}
	}
	return out, nil
}

// contexts redirects the Dockerfile's FROM names to the stand-ins.
func (b Builder) contexts() map[string]string {
	m := map[string]string{}
	for from, repo := range fromNames {
		m[from] = "docker-image://" + b.Registry + "/" + repo
	}
	return m
}

func (b Builder) digest(ctx context.Context, ref string) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(r, append(b.Remote, remote.WithContext(ctx))...)
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// pushStandIns pushes the three stand-ins and returns a digest of their
// digests, an input of every function image.
func (b Builder) pushStandIns(ctx context.Context) (string, error) {
	watchdog, err := SharedTool(b.Repo, "OF_WATCHDOG", "of-watchdog")
	if err != nil {
		return "", err
	}
	refs := []string{b.Registry + "/" + WatchdogRepo, b.Registry + "/" + AlpineRepo, b.Registry + "/" + GolangRepo}
	digests, err := fileimage.PushAll(ctx, b.Logf, []fileimage.Recipe{
		{Ref: refs[0], Make: func(string) (fileimage.Rootfs, v1.Config, error) {
			r := fileimage.Rootfs{}
			r.File("fwatchdog", watchdog, 0o755)
			return r, v1.Config{}, nil
		}},
		{Ref: refs[1], Make: alpineStandIn},
		// GOROOT is 270 MB: its layer is made again only when its files'
		// fingerprint changes (fileimage.Recipe.Cache says why that is safe).
		{Ref: refs[2], Make: golangStandIn, Cache: filepath.Join(b.Records, "golang-stand-in.json")},
	}, b.Remote...)
	if err != nil {
		return "", err
	}
	var all strings.Builder
	for _, r := range refs {
		all.WriteString(digests[r] + "\n")
	}
	return sha(all.String()), nil
}

// Stand-in scripts: apk has nothing to install offline (the template asks
// for git and ca-certificates; the certificates are in the image), and
// Debian's busybox-static has no addgroup/adduser.
const (
	apkStandIn      = "#!/bin/sh\n# Offline stand-in for apk: what the template asks for is built in.\necho \"apk (offline stand-in) $*: nothing to do\"\n"
	addgroupStandIn = `#!/bin/sh
# Offline stand-in for busybox addgroup -S NAME.
eval name=\${$#}
gid=$(awk -F: 'BEGIN{m=100} $3>=m && $3<1000 {m=$3+1} END{print m}' /etc/group)
echo "$name:x:$gid:" >> /etc/group
`
	adduserStandIn = `#!/bin/sh
# Offline stand-in for busybox adduser -S -G GROUP NAME.
group=""; while [ $# -gt 1 ]; do case $1 in -G) group=$2; shift 2;; *) shift;; esac; done
name=$1
gid=$(awk -F: -v g="$group" '$1==g {print $3}' /etc/group)
uid=$(awk -F: 'BEGIN{m=100} $3>=m && $3<1000 {m=$3+1} END{print m}' /etc/passwd)
echo "$name:x:$uid:${gid:-$uid}:Linux User,,,:/home/$name:/sbin/nologin" >> /etc/passwd
mkdir -p /home/$name && chown $uid:${gid:-$uid} /home/$name
`
)

func alpineStandIn(tmp string) (fileimage.Rootfs, v1.Config, error) {
	r, _, err := fileimage.Busybox(tmp)
	if err != nil {
		return nil, v1.Config{}, err
	}
	for path, text := range map[string]string{"sbin/apk": apkStandIn, "sbin/addgroup": addgroupStandIn, "sbin/adduser": adduserStandIn} {
		if err := r.Content(tmp, path, text, 0o755); err != nil {
			return nil, v1.Config{}, err
		}
	}
	r.File("etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
	return r, v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: []string{"/bin/sh"}}, nil
}

func golangStandIn(tmp string) (fileimage.Rootfs, v1.Config, error) {
	r, _, err := alpineStandIn(tmp)
	if err != nil {
		return nil, v1.Config{}, err
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, v1.Config{}, fmt.Errorf("go env GOROOT: %v", err)
	}
	goroot, err := fileimage.TreeOf(strings.TrimSpace(string(out)))
	if err != nil {
		return nil, v1.Config{}, err
	}
	for p, e := range goroot {
		r["usr/local/go/"+p] = e
	}
	r.Dir("go", 0o777, 0, 0)
	return r, v1.Config{
		Env:        []string{"GOPATH=/go", "GOTOOLCHAIN=local", "PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: "/go",
		Cmd:        []string{"/bin/sh"},
	}, nil
}

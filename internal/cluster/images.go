package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// An image here is one layer written straight from files on this machine:
// no Dockerfile, no build daemon, nothing pulled. A layer says exactly who
// owns each file and which extended attributes it carries, which a COPY
// cannot (it drops file capabilities).

// entry is one file, directory or symlink of a layer.
type entry struct {
	src  string // file on this machine to copy; "" for a directory or a symlink
	link string // symlink target
	mode fs.FileMode
	uid  int
	gid  int
	// xattrs, e.g. "security.capability".
	xattrs map[string]string
}

// rootfs maps paths in the image (without a leading slash) to entries.
type rootfs map[string]entry

func (r rootfs) dir(path string, mode fs.FileMode, uid, gid int) {
	r[path] = entry{mode: fs.ModeDir | mode, uid: uid, gid: gid}
}

func (r rootfs) file(path, src string, mode fs.FileMode) { r[path] = entry{src: src, mode: mode} }

func (r rootfs) symlink(path, target string) {
	r[path] = entry{link: target, mode: fs.ModeSymlink | 0o777}
}

// content adds a small file written from memory: it is kept in a temp file
// so that every entry reads the same way.
func (r rootfs) content(dir, path, text string, mode fs.FileMode) error {
	p := filepath.Join(dir, strings.ReplaceAll(path, "/", "_"))
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		return err
	}
	r.file(path, p, mode)
	return nil
}

// withLibraries adds a dynamically linked binary at its own path and the
// shared libraries ldd names for it.
func (r rootfs) withLibraries(bin string) error {
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}
	r.file(strings.TrimPrefix(bin, "/"), bin, fi.Mode().Perm())
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil // "not a dynamic executable"
	}
	for _, f := range strings.Fields(string(out)) {
		if !strings.HasPrefix(f, "/") {
			continue
		}
		real, err := filepath.EvalSymlinks(f)
		if err != nil {
			return fmt.Errorf("ldd %s: %s: %v", bin, f, err)
		}
		r.file(strings.TrimPrefix(f, "/"), real, 0o755)
	}
	return nil
}

// layer writes the tar: parents before children, every parent directory
// present, owners and modes as given.
func (r rootfs) layer() (v1.Layer, error) {
	all := map[string]entry{}
	for p, e := range r {
		all[p] = e
		for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
			if _, ok := all[d]; !ok {
				if _, given := r[d]; !given {
					all[d] = entry{mode: fs.ModeDir | 0o755}
				}
			}
		}
	}
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := all[p]
		h := &tar.Header{Name: p, Mode: int64(e.mode.Perm()), Uid: e.uid, Gid: e.gid, Format: tar.FormatPAX}
		for bit, m := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
			if e.mode&bit != 0 {
				h.Mode |= m
			}
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		var data []byte
		switch {
		case e.mode&fs.ModeDir != 0:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		default:
			b, err := os.ReadFile(e.src)
			if err != nil {
				return nil, err
			}
			data = b
			h.Typeflag, h.Size = tar.TypeReg, int64(len(b))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// pushIfChanged makes a one-layer image of r with cfg and pushes it to the
// cluster's registry as repo:tag, unless the registry has that digest
// there already. It returns the image digest and whether it pushed.
func (r rootfs) pushIfChanged(ctx context.Context, repoTag string, cfg v1.Config) (string, bool, error) {
	layer, err := r.layer()
	if err != nil {
		return "", false, err
	}
	// The config first, then the layer: AppendLayers records its diff ID.
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Architecture: "amd64", OS: "linux", Config: cfg})
	if err != nil {
		return "", false, err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return "", false, err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", false, err
	}
	ref, err := name.ParseReference(RegistryAddr+"/"+repoTag, name.Insecure)
	if err != nil {
		return "", false, err
	}
	if d, err := remote.Head(ref, remote.WithContext(ctx)); err == nil && d.Digest == digest {
		return digest.String(), false, nil
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return "", false, fmt.Errorf("push %s: %w", ref, err)
	}
	return digest.String(), true, nil
}

// Image references in the cluster's registry.
const (
	BusyboxImage  = RegistryAddr + "/busybox:latest"
	CoreDNSImage  = RegistryAddr + "/coredns:1.14.7"
	BuildkitImage = RegistryAddr + "/buildkit:v0.33.1-rootless"
)

// image is one recipe: its rootfs and config, made in a temp dir.
type image struct {
	ref  string
	make func(tmp string) (rootfs, v1.Config, error)
}

// PushImages makes and pushes every image the cluster runs, skipping one
// the registry already has with the same digest (layers are written without
// times, so the same files give the same digest). pause is the static
// binary of cmd/fnb-pause.
func (c Cluster) PushImages(ctx context.Context, pause string, out io.Writer) error {
	return pushAll(ctx, out, []image{
		{PauseImage, func(string) (rootfs, v1.Config, error) {
			r := rootfs{}
			r.file("pause", pause, 0o755)
			return r, v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}, nil
		}},
		{BusyboxImage, busyboxImage},
		{CoreDNSImage, func(string) (rootfs, v1.Config, error) {
			r := rootfs{}
			r.file("coredns", Bin("coredns"), 0o755)
			return r, v1.Config{Entrypoint: []string{"/coredns"}}, nil
		}},
		{BuildkitImage, buildkitRootlessImage},
	})
}

func pushAll(ctx context.Context, out io.Writer, images []image) error {
	tmp, err := os.MkdirTemp("", "fnb-cluster-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, im := range images {
		repoTag := strings.TrimPrefix(im.ref, RegistryAddr+"/")
		dir := filepath.Join(tmp, strings.NewReplacer("/", "_", ":", "_").Replace(repoTag))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		r, cfg, err := im.make(dir)
		if err != nil {
			return fmt.Errorf("image %s: %w", im.ref, err)
		}
		digest, pushed, err := r.pushIfChanged(ctx, repoTag, cfg)
		if err != nil {
			return err
		}
		what := "up to date"
		if pushed {
			what = "pushed"
		}
		fmt.Fprintf(out, "image %s@%s %s\n", im.ref, digest, what)
	}
	return nil
}

// registryDigest is the digest the cluster's registry has for ref.
func registryDigest(ctx context.Context, ref string) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(r, remote.WithContext(ctx))
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// busyboxImage: the local stack's base (daemon.Busybox), as a layer.
func busyboxImage(tmp string) (rootfs, v1.Config, error) {
	bb, err := daemon.FindBusybox()
	if err != nil {
		return nil, v1.Config{}, err
	}
	if err := bb.WriteContext(tmp); err != nil {
		return nil, v1.Config{}, err
	}
	r, err := treeOf(filepath.Join(tmp, "rootfs"))
	if err != nil {
		return nil, v1.Config{}, err
	}
	r["tmp"] = entry{mode: fs.ModeDir | 0o777 | fs.ModeSticky}
	return r, v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}}, nil
}

// treeOf takes a directory as it is (modes, symlinks), owned by root.
func treeOf(dir string) (rootfs, error) {
	r := rootfs{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			r.dir(rel, fi.Mode().Perm(), 0, 0)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			r.symlink(rel, target)
		default:
			r.file(rel, p, fi.Mode().Perm())
		}
		return nil
	})
	return r, err
}

// vfsCapV2 is a security.capability xattr (struct vfs_cap_data, revision
// 2) granting caps as permitted and effective.
func vfsCapV2(caps ...uint) string {
	var perm uint64
	for _, c := range caps {
		perm |= 1 << c
	}
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1) // revision 2, effective
	binary.LittleEndian.PutUint32(b[4:], uint32(perm))
	binary.LittleEndian.PutUint32(b[12:], uint32(perm>>32))
	return string(b)
}

const (
	capSetgid  = 6
	capSetuid  = 7
	capSetfcap = 31
)

// buildkitRootlessImage has the shape of moby/buildkit:v0.33.1-rootless,
// from the buildkitd and buildctl of hack/install.sh and Debian's
// rootlesskit, runc and uidmap (docs/cluster-notes.md, "Images").
func buildkitRootlessImage(tmp string) (rootfs, v1.Config, error) {
	r := rootfs{}
	for _, b := range []string{"buildkitd", "buildctl"} {
		p := filepath.Join(daemon.ToolsDir(), b)
		if _, err := os.Stat(p); err != nil {
			return nil, v1.Config{}, fmt.Errorf("%s: run hack/install.sh", p)
		}
		r.file("usr/bin/"+b, p, 0o755)
	}
	for _, b := range []string{"rootlesskit", "runc", "newuidmap", "newgidmap", "busybox"} {
		p := daemon.Find(b)
		if p == "" {
			return nil, v1.Config{}, fmt.Errorf("%s not found: run hack/install.sh", b)
		}
		if err := r.withLibraries(p); err != nil {
			return nil, v1.Config{}, err
		}
		if dst := "usr/bin/" + b; strings.TrimPrefix(p, "/") != dst {
			r[dst] = r[strings.TrimPrefix(p, "/")]
			delete(r, strings.TrimPrefix(p, "/"))
		}
	}
	for _, a := range []string{"sh", "ls", "cat", "ps", "id", "mount"} {
		r.symlink("usr/bin/"+a, "busybox")
	}
	// Debian 12's newuidmap is setuid root and writes uid_map as root, which
	// a pod's user namespace refuses without CAP_SYS_ADMIN; with file
	// capabilities it stays uid 1000, the new namespace's owner.
	r["usr/bin/newuidmap"] = entry{src: r["usr/bin/newuidmap"].src, mode: 0o755,
		xattrs: map[string]string{"security.capability": vfsCapV2(capSetuid, capSetfcap)}}
	r["usr/bin/newgidmap"] = entry{src: r["usr/bin/newgidmap"].src, mode: 0o755,
		xattrs: map[string]string{"security.capability": vfsCapV2(capSetgid)}}
	for path, text := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
		"etc/subuid": "user:100000:65536\n",
		"etc/subgid": "user:100000:65536\n",
	} {
		if err := r.content(tmp, path, text, 0o644); err != nil {
			return nil, v1.Config{}, err
		}
	}
	r["tmp"] = entry{mode: fs.ModeDir | 0o777 | fs.ModeSticky}
	for _, d := range []string{"run/user/1000", "home/user", "home/user/.local", "home/user/.local/tmp",
		"home/user/.local/share", "home/user/.local/share/buildkit"} {
		r.dir(d, 0o755, 1000, 1000)
	}
	return r, v1.Config{
		User: "1000:1000",
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/user", "USER=user", "XDG_RUNTIME_DIR=/run/user/1000",
			"TMPDIR=/home/user/.local/tmp", "BUILDKIT_HOST=unix:///run/user/1000/buildkit/buildkitd.sock"},
		Volumes:    map[string]struct{}{"/home/user/.local/share/buildkit": {}},
		Entrypoint: []string{"rootlesskit", "buildkitd"},
	}, nil
}

// Package fileimage makes container images as one layer written straight
// from files on this machine: no Dockerfile, no build daemon, nothing
// pulled. A layer says exactly who owns each file and which extended
// attributes it carries, which a COPY cannot (it drops file capabilities).
// The cluster's own images and the stand-ins for the template's base images
// (internal/templateimage) are made this way.
package fileimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
)

// Entry is one file, directory or symlink of a layer.
type Entry struct {
	Src  string // file on this machine to copy; "" for a directory or a symlink
	Link string // symlink target
	Mode fs.FileMode
	UID  int
	GID  int
	// Xattrs, e.g. "security.capability".
	Xattrs map[string]string
}

// Rootfs maps paths in the image (without a leading slash) to entries.
type Rootfs map[string]Entry

func (r Rootfs) Dir(path string, mode fs.FileMode, uid, gid int) {
	r[path] = Entry{Mode: fs.ModeDir | mode, UID: uid, GID: gid}
}

func (r Rootfs) File(path, src string, mode fs.FileMode) { r[path] = Entry{Src: src, Mode: mode} }

func (r Rootfs) Symlink(path, target string) {
	r[path] = Entry{Link: target, Mode: fs.ModeSymlink | 0o777}
}

// Content adds a small file written from memory: it is kept in a temp file
// in dir so that every entry reads the same way.
func (r Rootfs) Content(dir, path, text string, mode fs.FileMode) error {
	p := filepath.Join(dir, strings.ReplaceAll(path, "/", "_"))
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		return err
	}
	r.File(path, p, mode)
	return nil
}

// WithLibraries adds a dynamically linked binary at its own path and the
// shared libraries ldd names for it.
func (r Rootfs) WithLibraries(bin string) error {
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}
	r.File(strings.TrimPrefix(bin, "/"), bin, fi.Mode().Perm())
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
		r.File(strings.TrimPrefix(f, "/"), real, 0o755)
	}
	return nil
}

// Layer writes the tar: parents before children, every parent directory
// present, owners and modes as given.
func (r Rootfs) Layer() (v1.Layer, error) {
	all := map[string]Entry{}
	for p, e := range r {
		all[p] = e
		for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
			if _, ok := all[d]; !ok {
				if _, given := r[d]; !given {
					all[d] = Entry{Mode: fs.ModeDir | 0o755}
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
		h := &tar.Header{Name: p, Mode: int64(e.Mode.Perm()), Uid: e.UID, Gid: e.GID, Format: tar.FormatPAX}
		for bit, m := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
			if e.Mode&bit != 0 {
				h.Mode |= m
			}
		}
		for k, v := range e.Xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		var data []byte
		switch {
		case e.Mode&fs.ModeDir != 0:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case e.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.Link
		default:
			b, err := os.ReadFile(e.Src)
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

// pushIfChanged makes a one-layer image of r with cfg and pushes it as
// ref, unless the registry has that digest there already. It returns the
// image digest and whether it pushed. With a cache file (Recipe.Cache) it
// neither reads nor compresses the files when their fingerprint is the one
// recorded there and the registry still has the recorded digest at ref.
func (r Rootfs) pushIfChanged(ctx context.Context, ref string, cfg v1.Config, opts []remote.Option, cache, tmp string) (string, bool, error) {
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", false, err
	}
	opts = append(opts, remote.WithContext(ctx))
	var rec struct{ Fingerprint, Digest string }
	if cache != "" {
		fp, err := r.fingerprint(cfg, tmp)
		if err != nil {
			return "", false, err
		}
		if raw, err := os.ReadFile(cache); err == nil && json.Unmarshal(raw, &rec) == nil && rec.Fingerprint == fp {
			if d, err := remote.Head(parsed, opts...); err == nil && d.Digest.String() == rec.Digest {
				return rec.Digest, false, nil
			}
		}
		rec.Fingerprint = fp
	}
	layer, err := r.Layer()
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
	pushed := false
	if d, err := remote.Head(parsed, opts...); err != nil || d.Digest != digest {
		if err := remote.Write(parsed, img, opts...); err != nil {
			return "", false, fmt.Errorf("push %s: %w", parsed, err)
		}
		pushed = true
	}
	if cache != "" {
		rec.Digest = digest.String()
		raw, _ := json.Marshal(rec)
		if err := daemon.WriteFileAtomic(cache, raw, 0o644); err != nil {
			return "", false, err
		}
	}
	return digest.String(), pushed, nil
}

// fingerprint identifies the image that r and cfg make without reading the
// files that were there before this run: for those it takes what stat
// says (size, modification and change times, device and inode). Writing a
// file changes its modification and change times, replacing one changes
// its inode, and the change time cannot be set back (tar and cp -p restore
// only the modification time): a Go toolchain upgraded or reinstalled in
// place, or a file of it edited, gives a new fingerprint. (What it cannot
// see: a rewrite to the same size within one tick of the file system clock
// of the previous change, with the modification time put back, which no
// installer does.) Files written
// into tmp by the recipe (Content, Busybox's copy) are new on every run:
// their contents count instead.
func (r Rootfs) fingerprint(cfg v1.Config, tmp string) (string, error) {
	h := sha256.New()
	c, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "fileimage fingerprint 1\n%s\n", c)
	paths := make([]string, 0, len(r))
	for p := range r {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e := r[p]
		xattrs := make([]string, 0, len(e.Xattrs))
		for k, v := range e.Xattrs {
			xattrs = append(xattrs, k+"="+v)
		}
		sort.Strings(xattrs)
		fmt.Fprintf(h, "%q %o %d %d %q %q\n", p, uint32(e.Mode), e.UID, e.GID, e.Link, xattrs)
		if e.Src == "" {
			continue
		}
		if rel, err := filepath.Rel(tmp, e.Src); err == nil && filepath.IsLocal(rel) {
			b, err := os.ReadFile(e.Src)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "content %x\n", sha256.Sum256(b))
			continue
		}
		fi, err := os.Stat(e.Src)
		if err != nil {
			return "", err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return "", fmt.Errorf("%s: no stat_t", e.Src)
		}
		fmt.Fprintf(h, "stat %q %d %d %d %d %d\n", e.Src, fi.Size(), fi.ModTime().UnixNano(), st.Ctim.Nano(), st.Dev, st.Ino)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Recipe is one image: its reference and how to make its rootfs and
// config in a temp dir.
type Recipe struct {
	Ref  string
	Make func(tmp string) (Rootfs, v1.Config, error)
	// Cache, when set, is a file that keeps the rootfs' fingerprint (see
	// fingerprint) and the digest it made, so that an unchanged image
	// costs a walk of stat calls instead of reading and compressing every
	// file. For images of large trees (a Go toolchain).
	Cache string
}

// Logf prints one progress line.
type Logf func(format string, args ...any)

// PushAll makes and pushes each image, reaching the registry with opts,
// and skips one the registry already has with the same digest (layers are
// written without times, so the same files give the same digest). It
// returns each image's digest by reference.
func PushAll(ctx context.Context, logf Logf, recipes []Recipe, opts ...remote.Option) (map[string]string, error) {
	tmp, err := os.MkdirTemp("", "fnb-file-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	digests := map[string]string{}
	for _, im := range recipes {
		dir := filepath.Join(tmp, strings.NewReplacer("/", "_", ":", "_").Replace(im.Ref))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		r, cfg, err := im.Make(dir)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", im.Ref, err)
		}
		digest, pushed, err := r.pushIfChanged(ctx, im.Ref, cfg, opts, im.Cache, dir)
		if err != nil {
			return nil, err
		}
		what := "up to date"
		if pushed {
			what = "pushed"
		}
		logf("image %s@%s %s", im.Ref, digest, what)
		digests[im.Ref] = digest
	}
	return digests, nil
}

// Busybox is the local stack's base (daemon.Busybox) as a layer.
func Busybox(tmp string) (Rootfs, v1.Config, error) {
	bb, err := daemon.FindBusybox()
	if err != nil {
		return nil, v1.Config{}, err
	}
	if err := bb.WriteContext(tmp); err != nil {
		return nil, v1.Config{}, err
	}
	r, err := TreeOf(filepath.Join(tmp, "rootfs"))
	if err != nil {
		return nil, v1.Config{}, err
	}
	r["tmp"] = Entry{Mode: fs.ModeDir | 0o777 | fs.ModeSticky}
	return r, v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}}, nil
}

// TreeOf takes a directory as it is (modes, symlinks), owned by root.
func TreeOf(dir string) (Rootfs, error) {
	r := Rootfs{}
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
			r.Dir(rel, fi.Mode().Perm(), 0, 0)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			r.Symlink(rel, target)
		default:
			r.File(rel, p, fi.Mode().Perm())
		}
		return nil
	})
	return r, err
}

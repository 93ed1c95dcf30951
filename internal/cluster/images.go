package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/fnbuilder/fnbuilder/internal/daemon"
	"github.com/fnbuilder/fnbuilder/internal/fileimage"
)

// The cluster's images are written straight from files on this machine
// (internal/fileimage) and pushed to its registry over plain HTTP.

// Image references in the cluster's registry.
const (
	BusyboxImage  = RegistryAddr + "/busybox:latest"
	CoreDNSImage  = RegistryAddr + "/coredns:1.14.7"
	BuildkitImage = RegistryAddr + "/buildkit:v0.33.1-rootless"
)

// PushImages makes and pushes every image the cluster runs, skipping one
// the registry already has with the same digest (layers are written without
// times, so the same files give the same digest). pause is the static
// binary of cmd/fnb-pause.
func (c Cluster) PushImages(ctx context.Context, pause string, out io.Writer) error {
	_, err := fileimage.PushAll(ctx, lineLogf(out), []fileimage.Recipe{
		{Ref: PauseImage, Make: func(string) (fileimage.Rootfs, v1.Config, error) {
			r := fileimage.Rootfs{}
			r.File("pause", pause, 0o755)
			return r, v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}, nil
		}},
		{Ref: BusyboxImage, Make: fileimage.Busybox},
		{Ref: CoreDNSImage, Make: func(string) (fileimage.Rootfs, v1.Config, error) {
			r := fileimage.Rootfs{}
			r.File("coredns", Bin("coredns"), 0o755)
			return r, v1.Config{Entrypoint: []string{"/coredns"}}, nil
		}},
		{Ref: BuildkitImage, Make: buildkitRootlessImage},
	})
	return err
}

// lineLogf prints progress lines to out.
func lineLogf(out io.Writer) fileimage.Logf {
	return func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
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
func buildkitRootlessImage(tmp string) (fileimage.Rootfs, v1.Config, error) {
	r := fileimage.Rootfs{}
	for _, b := range []string{"buildkitd", "buildctl"} {
		p := filepath.Join(daemon.ToolsDir(), b)
		if _, err := os.Stat(p); err != nil {
			return nil, v1.Config{}, fmt.Errorf("%s: run hack/install.sh", p)
		}
		r.File("usr/bin/"+b, p, 0o755)
	}
	for _, b := range []string{"rootlesskit", "runc", "newuidmap", "newgidmap", "busybox"} {
		p := daemon.Find(b)
		if p == "" {
			return nil, v1.Config{}, fmt.Errorf("%s not found: run hack/install.sh", b)
		}
		if err := r.WithLibraries(p); err != nil {
			return nil, v1.Config{}, err
		}
		if dst := "usr/bin/" + b; strings.TrimPrefix(p, "/") != dst {
			r[dst] = r[strings.TrimPrefix(p, "/")]
			delete(r, strings.TrimPrefix(p, "/"))
		}
	}
	for _, a := range []string{"sh", "ls", "cat", "ps", "id", "mount"} {
		r.Symlink("usr/bin/"+a, "busybox")
	}
	// Debian 12's newuidmap is setuid root and writes uid_map as root, which
	// a pod's user namespace refuses without CAP_SYS_ADMIN; with file
	// capabilities it stays uid 1000, the new namespace's owner.
	r["usr/bin/newuidmap"] = fileimage.Entry{Src: r["usr/bin/newuidmap"].Src, Mode: 0o755,
		Xattrs: map[string]string{"security.capability": vfsCapV2(capSetuid, capSetfcap)}}
	r["usr/bin/newgidmap"] = fileimage.Entry{Src: r["usr/bin/newgidmap"].Src, Mode: 0o755,
		Xattrs: map[string]string{"security.capability": vfsCapV2(capSetgid)}}
	for path, text := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
		"etc/subuid": "user:100000:65536\n",
		"etc/subgid": "user:100000:65536\n",
	} {
		if err := r.Content(tmp, path, text, 0o644); err != nil {
			return nil, v1.Config{}, err
		}
	}
	r["tmp"] = fileimage.Entry{Mode: fs.ModeDir | 0o777 | fs.ModeSticky}
	for _, d := range []string{"run/user/1000", "home/user", "home/user/.local", "home/user/.local/tmp",
		"home/user/.local/share", "home/user/.local/share/buildkit"} {
		r.Dir(d, 0o755, 1000, 1000)
	}
	return r, v1.Config{
		User: "1000:1000",
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/user", "USER=user", "XDG_RUNTIME_DIR=/run/user/1000",
			"TMPDIR=/home/user/.local/tmp", "BUILDKIT_HOST=unix:///run/user/1000/buildkit/buildkitd.sock"},
		Volumes:    map[string]struct{}{"/home/user/.local/share/buildkit": {}},
		Entrypoint: []string{"rootlesskit", "buildkitd"},
	}, nil
}

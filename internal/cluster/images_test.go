package cluster

import (
	"archive/tar"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/testenv"
)

// The rootless BuildKit image as containerd will unpack it: newuidmap and
// newgidmap with file capabilities instead of the setuid bit (a pod's user
// namespace refuses the setuid one), buildkitd's directories owned by uid
// 1000, and the binaries rootlesskit needs.
func TestBuildkitRootlessLayer(t *testing.T) {
	r, cfg, err := buildkitRootlessImage(t.TempDir())
	if err != nil {
		t.Fatalf("%v (hack/install.sh installs buildkitd, rootlesskit, runc, uidmap, busybox-static)", err)
	}
	if cfg.User != "1000:1000" || len(cfg.Entrypoint) != 2 || cfg.Entrypoint[0] != "rootlesskit" || cfg.Entrypoint[1] != "buildkitd" {
		t.Errorf("config user %q entrypoint %q, want 1000:1000 and rootlesskit buildkitd", cfg.User, cfg.Entrypoint)
	}
	layer, err := r.Layer()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	headers := map[string]*tar.Header{}
	testenv.EachEntry(t, "the rootless BuildKit layer", rc, func(h *tar.Header, _ []byte) { headers[h.Name] = h })
	for _, want := range []struct {
		name string
		caps string // the xattr, byte by byte as setcap writes it
	}{
		// revision 2 + effective; permitted CAP_SETUID|CAP_SETFCAP = 0x80000080
		{"usr/bin/newuidmap", "\x01\x00\x00\x02\x80\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"},
		// CAP_SETGID = 0x40
		{"usr/bin/newgidmap", "\x01\x00\x00\x02\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"},
	} {
		h := headers[want.name]
		if h == nil {
			t.Errorf("%s missing", want.name)
			continue
		}
		if h.Mode&0o4000 != 0 {
			t.Errorf("%s is setuid", want.name)
		}
		if got := h.PAXRecords["SCHILY.xattr.security.capability"]; got != want.caps {
			t.Errorf("%s security.capability %q, want %q", want.name, got, want.caps)
		}
	}
	for _, d := range []string{"run/user/1000/", "home/user/.local/share/buildkit/", "home/user/.local/tmp/"} {
		if h := headers[d]; h == nil || h.Typeflag != tar.TypeDir || h.Uid != 1000 || h.Gid != 1000 {
			t.Errorf("%s: %+v, want a directory owned by 1000:1000", d, h)
		}
	}
	if h := headers["tmp/"]; h == nil || h.Mode&0o1777 != 0o1777 {
		t.Errorf("tmp/: %+v, want mode 1777", h)
	}
	for _, f := range []string{"usr/bin/buildkitd", "usr/bin/buildctl", "usr/bin/rootlesskit", "usr/bin/runc", "etc/subuid", "usr/bin/sh"} {
		if headers[f] == nil {
			t.Errorf("%s missing", f)
		}
	}
	// Each shared library ldd names is there for the dynamically linked ones.
	if headers["lib/x86_64-linux-gnu/libc.so.6"] == nil && headers["usr/lib/x86_64-linux-gnu/libc.so.6"] == nil {
		t.Error("libc missing: runc and newuidmap are dynamically linked")
	}
}

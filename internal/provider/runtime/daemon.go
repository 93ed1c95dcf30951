package runtime

import (
	"fmt"
	"path/filepath"
)

// DaemonConfig is a containerd configuration for a private daemon: its own
// root (images, snapshots, metadata), state dir and sockets, the CRI and NRI
// plugins off. Version 2 of the format, which Debian's containerd 1.6 and
// containerd 2.x both read.
func DaemonConfig(root, stateDir, socket string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, root, stateDir, socket, socket+".ttrpc", filepath.Join(root, "opt"))
}

#!/usr/bin/env bash
# Installs what fnb-provider (cmd/fnb-provider, internal/provider) and its
# end-to-end test need:
#   - Debian packages: containerd (1.6; the provider's containerd v2 Go
#     client pulls and runs with it), runc, containernetworking-plugins
#     (bridge, host-local in /usr/lib/cni), iptables, iproute2, and for the
#     test docker-registry and busybox-static
#   - fnb-provider itself, built from this checkout into
#     ${FNB_TOOLS:-$HOME/.cache/fnbuilder}/bin
#
# No containerd is built: Debian's 1.6.20 daemon was verified to pull from a
# plain-HTTP registry and run tasks through the v2 client.
# The Debian containerd package enables a system containerd service where
# systemd runs; fnb-provider does not use it (`fnb-provider containerd`
# runs a private one, see its -h).
#
# Idempotent: a second run only checks and prints where things are.
# Runs unattended (CI=true, no stdin). Needs root (or passwordless sudo).
set -euo pipefail

APT_PACKAGES=(containerd runc containernetworking-plugins iptables iproute2 docker-registry busybox-static)
CNI_DIR=/usr/lib/cni

FNB_TOOLS=${FNB_TOOLS:-$HOME/.cache/fnbuilder}
BIN=$FNB_TOOLS/bin
REPO=$(cd "$(dirname "$0")/.." && pwd)

export DEBIAN_FRONTEND=noninteractive

. "$(dirname "$0")/lib.sh"
need_root

# --- Debian packages ---------------------------------------------------------
apt_ensure "${APT_PACKAGES[@]}"

for p in bridge host-local; do
	[ -x "$CNI_DIR/$p" ] || die "$CNI_DIR/$p missing after installing containernetworking-plugins"
done

# --- fnb-provider ----------------------------------------------------------------
need_go fnb-provider
mkdir -p "$BIN"
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || true)
# go build is incremental: when nothing changed this is a cache hit.
(cd "$REPO" && go build -buildvcs=false -ldflags "-X main.commit=$commit" -o "$BIN/.fnb-provider.tmp" ./cmd/fnb-provider)
if [ -x "$BIN/fnb-provider" ] && cmp -s "$BIN/.fnb-provider.tmp" "$BIN/fnb-provider"; then
	rm -f "$BIN/.fnb-provider.tmp"
	log "fnb-provider already up to date in $BIN"
else
	mv -f "$BIN/.fnb-provider.tmp" "$BIN/fnb-provider"
	log "built $BIN/fnb-provider"
fi

# --- summary -------------------------------------------------------------------
where() { command -v "$1" 2>/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$1" 2>/dev/null || echo "MISSING"; }
cat <<EOF
fnb-provider tools:
  fnb-provider             $BIN/fnb-provider
  containerd               $(where containerd) ($(containerd --version 2>/dev/null | awk '{print $3}'))
  containerd-shim-runc-v2  $(where containerd-shim-runc-v2)
  runc                     $(where runc)
  CNI plugins              $CNI_DIR (bridge, host-local)
  iptables                 $(where iptables) ($(PATH=$PATH:/usr/sbin:/sbin iptables --version 2>/dev/null))
  ip, bridge               $(where ip), $(where bridge)
  docker-registry          $(where docker-registry)
  busybox (static)         $(where busybox)
Run it:
  $BIN/fnb-provider containerd &     # private containerd (socket /run/fnbuilder/containerd/containerd.sock)
  $BIN/fnb-provider serve            # provider API on 127.0.0.1:8081
  $BIN/fnb-provider teardown         # remove everything it made on the host
EOF

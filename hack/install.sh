#!/usr/bin/env bash
# Installs the real components the end-to-end tests start (see internal/testenv):
#   - Debian packages: runc rootlesskit uidmap fuse-overlayfs docker-registry
#     busybox-static iptables iproute2
#   - buildkitd and buildctl (github.com/moby/buildkit v0.33.1), built from the
#     module served by the Go module proxy into ${FNB_TOOLS:-$HOME/.cache/fnbuilder}/bin
#   - a non-root user "fnbuilder" with /etc/subuid and /etc/subgid ranges, for
#     rootless buildkitd (rootlesskit)
#
# Idempotent: a second run only checks and prints where things are.
# Runs unattended (CI=true, no stdin). Needs root (or passwordless sudo).
set -euo pipefail

BUILDKIT_MODULE=github.com/moby/buildkit
BUILDKIT_VERSION=v0.33.1
ROOTLESS_USER=fnbuilder
APT_PACKAGES=(runc rootlesskit uidmap fuse-overlayfs docker-registry busybox-static iptables iproute2)

FNB_TOOLS=${FNB_TOOLS:-$HOME/.cache/fnbuilder}
BIN=$FNB_TOOLS/bin
SRC=$FNB_TOOLS/src/buildkit-$BUILDKIT_VERSION

export DEBIAN_FRONTEND=noninteractive

. "$(dirname "$0")/lib.sh"
need_root

# --- Debian packages ---------------------------------------------------------
apt_ensure "${APT_PACKAGES[@]}"

# --- buildkitd / buildctl ----------------------------------------------------
need_go "buildkit $BUILDKIT_VERSION"

# "buildkitd github.com/moby/buildkit v0.33.1 <rev>" -> third field.
has_version() {
	[ -x "$1" ] && [ "$("$1" --version 2>/dev/null | awk '{print $3}')" = "$BUILDKIT_VERSION" ]
}

need_build=()
for b in buildkitd buildctl; do
	has_version "$BIN/$b" || need_build+=("$b")
done

if [ "${#need_build[@]}" -gt 0 ]; then
	mkdir -p "$BIN" "$(dirname "$SRC")"
	fetch_module "$BUILDKIT_MODULE@$BUILDKIT_VERSION" "$SRC"
	for b in "${need_build[@]}"; do
		log "building $b $BUILDKIT_VERSION (takes a minute or two)"
		# Build to a temporary name and rename, so a running daemon is not disturbed.
		(cd "$SRC" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build \
			-ldflags "-X $BUILDKIT_MODULE/version.Version=$BUILDKIT_VERSION" \
			-o "$BIN/.$b.tmp" "./cmd/$b")
		mv -f "$BIN/.$b.tmp" "$BIN/$b"
		has_version "$BIN/$b" || die "$BIN/$b does not report $BUILDKIT_VERSION"
	done
else
	log "buildkitd and buildctl $BUILDKIT_VERSION already in $BIN"
fi

# --- rootless user -------------------------------------------------------------
if ! id "$ROOTLESS_USER" >/dev/null 2>&1; then
	if getent passwd 1000 >/dev/null; then
		log "creating user $ROOTLESS_USER (uid 1000 is taken)"
		"${SUDO[@]}" useradd --create-home --shell /bin/bash "$ROOTLESS_USER"
	else
		log "creating user $ROOTLESS_USER (uid 1000)"
		"${SUDO[@]}" useradd --create-home --shell /bin/bash --uid 1000 "$ROOTLESS_USER"
	fi
fi
uid=$(id -u "$ROOTLESS_USER")

# Adds "user:start:65536" to $1 unless the user (by name or uid) has a range;
# start is past every range already in the file (and at least 100000).
ensure_subids() {
	local file=$1
	"${SUDO[@]}" touch "$file"
	if grep -qE "^($ROOTLESS_USER|$uid):" "$file"; then
		return
	fi
	local start
	start=$(awk -F: 'BEGIN{m=100000} NF>=3 {e=$2+$3; if (e>m) m=e} END{print m}' "$file")
	log "adding $ROOTLESS_USER:$start:65536 to $file"
	echo "$ROOTLESS_USER:$start:65536" | "${SUDO[@]}" tee -a "$file" >/dev/null
}
ensure_subids /etc/subuid
ensure_subids /etc/subgid

# Debian kernels may gate unprivileged user namespaces behind a sysctl.
if [ -r /proc/sys/kernel/unprivileged_userns_clone ] &&
	[ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" = 0 ]; then
	log "enabling kernel.unprivileged_userns_clone"
	echo 1 | "${SUDO[@]}" tee /proc/sys/kernel/unprivileged_userns_clone >/dev/null
fi
if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 1)" = 0 ]; then
	log "WARNING: user.max_user_namespaces is 0: rootless buildkitd cannot start (tests fall back to root mode)"
fi

# --- helm (chart tests), the provider's containerd/CNI, OpenFaaS CE ----------------
bash "$(dirname "$0")/install-helm.sh"
bash "$(dirname "$0")/install-provider.sh"
bash "$(dirname "$0")/install-openfaas.sh"
# The single-node Kubernetes (make cluster, e2e/cluster): only when wanted,
# it takes minutes on a fresh machine.
if [ "${FNB_CLUSTER:-0}" = 1 ]; then
	bash "$(dirname "$0")/install-cluster.sh"
fi

# --- summary -------------------------------------------------------------------
where() { command -v "$1" 2>/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$1" 2>/dev/null || echo "MISSING"; }
cat <<EOF
fnbuilder test tools:
  FNB_TOOLS        $FNB_TOOLS
  buildkitd        $BIN/buildkitd ($("$BIN/buildkitd" --version | awk '{print $3}'))
  buildctl         $BIN/buildctl ($("$BIN/buildctl" --version | awk '{print $3}'))
  buildkit source  $SRC
  runc             $(where runc)
  rootlesskit      $(where rootlesskit)
  newuidmap        $(where newuidmap)
  fuse-overlayfs   $(where fuse-overlayfs)
  docker-registry  $(where docker-registry)
  busybox          $(where busybox)
  iptables         $(where iptables)
  ip               $(where ip)
  rootless user    $ROOTLESS_USER (uid $uid), subuid $(grep -E "^($ROOTLESS_USER|$uid):" /etc/subuid | head -n1 | cut -d: -f2-), subgid $(grep -E "^($ROOTLESS_USER|$uid):" /etc/subgid | head -n1 | cut -d: -f2-)
EOF

#!/usr/bin/env bash
# Installs what a real single-node Kubernetes on this machine needs
# (docs/cluster-notes.md says how the pieces fit together):
#   - Debian packages: etcd-server (3.4), containernetworking-plugins (bridge,
#     host-local, loopback, portmap in /usr/lib/cni), iptables, conntrack,
#     iproute2, uidmap; gcc and libseccomp-dev to build runc
#   - Kubernetes v1.34.2 kube-apiserver, kube-controller-manager,
#     kube-scheduler, kubelet, kube-proxy (and kubectl when the machine has none
#     or one older than 1.33), built from the k8s.io/kubernetes module with the
#     release's version ldflags
#   - containerd v2 and its runc shim, runc (user namespaces with idmapped
#     mounts need runc >= 1.2; Debian 12 has 1.1.5), CoreDNS, each built from
#     its Go module
# into ${FNB_TOOLS:-$HOME/.cache/fnbuilder}/cluster/bin, apart from bin/ so
# that nothing there shadows Debian's containerd and runc, which the local
# stack's provider uses. Sources are copied to $FNB_TOOLS/src.
#
# Only `make cluster` and CI need this: hack/install.sh calls it when
# FNB_CLUSTER=1. On a fresh machine it takes a while (the Kubernetes binaries
# dominate; docs/cluster-notes.md has the measured times).
#
# Idempotent: a binary that already reports the wanted version is kept.
# Runs unattended (CI=true, no stdin). Needs root (or passwordless sudo) for apt.
set -euo pipefail

KUBE_VERSION=v1.34.2
KUBE_STAGING_VERSION=v0.34.2 # the staging modules k8s.io/* of KUBE_VERSION
CONTAINERD_VERSION=v2.3.6
RUNC_VERSION=v1.5.3
COREDNS_VERSION=v1.14.7
KUBE_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
APT_PACKAGES=(etcd-server containernetworking-plugins iptables conntrack iproute2 uidmap gcc libc6-dev libseccomp-dev pkg-config)
CNI_DIR=/usr/lib/cni

FNB_TOOLS=${FNB_TOOLS:-$HOME/.cache/fnbuilder}
BIN=$FNB_TOOLS/cluster/bin
SRC=$FNB_TOOLS/src

export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-cluster.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
. "$(dirname "$0")/lib.sh"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "must run as root (or with passwordless sudo)"
	SUDO=(sudo -n)
fi

# --- Debian packages ---------------------------------------------------------
apt_ensure "${APT_PACKAGES[@]}"
for p in bridge host-local loopback portmap; do
	[ -x "$CNI_DIR/$p" ] || die "$CNI_DIR/$p missing after installing containernetworking-plugins"
done
# The package starts an etcd service where systemd runs; the cluster runs
# its own etcd on its own ports and data dir.
command -v etcd >/dev/null 2>&1 || die "etcd missing after installing etcd-server"

need_go "Kubernetes $KUBE_VERSION"
mkdir -p "$BIN" "$SRC"

# reports BINARY WANT ARGS...: the binary exists and its version output
# (BINARY ARGS...) contains WANT as a word.
reports() {
	local bin=$1 want=$2
	shift 2
	[ -x "$bin" ] && "$bin" "$@" 2>/dev/null | grep -qwF -- "$want"
}

# build_into SRC_DIR LDFLAGS TAGS CGO PKG...: go build the main packages into
# $BIN (each binary named after its package's directory), through temporary names renamed at the end, so that a
# running daemon is never overwritten half-way. One go build for all of
# them: they share the compilation of their common packages.
build_into() {
	local dir=$1 ldflags=$2 tags=$3 cgo=$4 out p
	shift 4
	out=$(mktemp -d "$BIN/.build.XXXXXX")
	(cd "$dir" && CGO_ENABLED=$cgo GOFLAGS="-mod=mod -buildvcs=false" \
		go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/" "$@")
	for p in "$out"/*; do
		mv -f "$p" "$BIN/"
	done
	rmdir "$out"
}

# --- Kubernetes ------------------------------------------------------------------
# The k8s.io/kubernetes module zip has no staging/src (those are the separate
# k8s.io/* modules) and drops vendor/'s symlinks: delete vendor and the
# workspace, and require each staging module at the release's version
# instead of replacing it with ./staging/src (../shared/docs/cluster.md).
kube_src=$SRC/kubernetes-$KUBE_VERSION
kube_wanted=("${KUBE_COMPONENTS[@]}")
# kubectl supports one minor version of skew: build it unless the machine's
# is at least 1.33.
machine_kubectl_minor=$(kubectl version --client -o json 2>/dev/null |
	sed -n 's/^[[:space:]]*"minor": "\([0-9]*\).*/\1/p' | head -n1 || true)
if [ "${machine_kubectl_minor:-0}" -lt 33 ]; then
	kube_wanted+=(kubectl)
fi
# kube_reports COMPONENT: it is in $BIN and says it is KUBE_VERSION.
kube_reports() {
	if [ "$1" = kubectl ]; then
		reports "$BIN/kubectl" "$KUBE_VERSION" version --client
	else
		reports "$BIN/$1" "$KUBE_VERSION" --version
	fi
}
kube_build=()
for c in "${kube_wanted[@]}"; do
	kube_reports "$c" || kube_build+=("./cmd/$c")
done
if [ "${#kube_build[@]}" -gt 0 ]; then
	if [ ! -f "$kube_src/.fnb-prepared" ]; then
		fetch_module "k8s.io/kubernetes@$KUBE_VERSION" "$kube_src"
		(
			cd "$kube_src"
			rm -rf vendor go.work go.work.sum
			drops=()
			for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' go.mod); do
				drops+=("-dropreplace=$m" "-require=$m@$KUBE_STAGING_VERSION")
			done
			[ "${#drops[@]}" -gt 0 ] || die "no ./staging/src replacements found in $kube_src/go.mod"
			go mod edit "${drops[@]}"
			touch .fnb-prepared
		)
	fi
	minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	kube_ldflags=""
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	log "building Kubernetes $KUBE_VERSION: ${kube_build[*]} (about 10 minutes on 2 cores with a cold build cache)"
	start=$SECONDS
	build_into "$kube_src" "-s -w$kube_ldflags" "" 0 "${kube_build[@]}"
	log "built ${kube_build[*]} in $((SECONDS - start)) s"
	for c in "${kube_wanted[@]}"; do
		kube_reports "$c" || die "$BIN/$c does not report $KUBE_VERSION"
	done
else
	log "Kubernetes $KUBE_VERSION ${kube_wanted[*]} already in $BIN"
fi

# --- containerd v2 ---------------------------------------------------------------
# user namespaces (hostUsers: false) need containerd >= 2.0.
containerd_src=$SRC/containerd-$CONTAINERD_VERSION
containerd_build=()
reports "$BIN/containerd" "$CONTAINERD_VERSION" --version || containerd_build+=(./cmd/containerd)
reports "$BIN/containerd-shim-runc-v2" "$CONTAINERD_VERSION" -v || containerd_build+=(./cmd/containerd-shim-runc-v2)
if [ "${#containerd_build[@]}" -gt 0 ]; then
	fetch_module "github.com/containerd/containerd/v2@$CONTAINERD_VERSION" "$containerd_src"
	log "building containerd $CONTAINERD_VERSION: ${containerd_build[*]}"
	start=$SECONDS
	build_into "$containerd_src" \
		"-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION -X github.com/containerd/containerd/v2/version.Revision=module" \
		"no_btrfs no_devmapper no_zfs no_aufs" 0 "${containerd_build[@]}"
	log "built ${containerd_build[*]} in $((SECONDS - start)) s"
	reports "$BIN/containerd" "$CONTAINERD_VERSION" --version || die "$BIN/containerd does not report $CONTAINERD_VERSION"
	reports "$BIN/containerd-shim-runc-v2" "$CONTAINERD_VERSION" -v || die "$BIN/containerd-shim-runc-v2 does not report $CONTAINERD_VERSION"
else
	log "containerd $CONTAINERD_VERSION already in $BIN"
fi

# --- runc ---------------------------------------------------------------------------
# cgo: runc's nsenter is C; seccomp: pods with a RuntimeDefault profile.
runc_src=$SRC/runc-$RUNC_VERSION
if ! reports "$BIN/runc" "${RUNC_VERSION#v}" --version; then
	fetch_module "github.com/opencontainers/runc@$RUNC_VERSION" "$runc_src"
	log "building runc $RUNC_VERSION"
	start=$SECONDS
	build_into "$runc_src" "-X main.gitCommit=module" "seccomp urfave_cli_no_docs" 1 .
	log "built runc in $((SECONDS - start)) s"
	reports "$BIN/runc" "${RUNC_VERSION#v}" --version || die "$BIN/runc does not report $RUNC_VERSION"
else
	log "runc $RUNC_VERSION already in $BIN"
fi

# --- CoreDNS ------------------------------------------------------------------------
coredns_src=$SRC/coredns-$COREDNS_VERSION
if ! reports "$BIN/coredns" "CoreDNS-${COREDNS_VERSION#v}" -version; then
	fetch_module "github.com/coredns/coredns@$COREDNS_VERSION" "$coredns_src"
	log "building CoreDNS $COREDNS_VERSION"
	start=$SECONDS
	build_into "$coredns_src" "-s -w -X github.com/coredns/coredns/coremain.GitCommit=module" "" 0 .
	log "built coredns in $((SECONDS - start)) s"
	reports "$BIN/coredns" "CoreDNS-${COREDNS_VERSION#v}" -version || die "$BIN/coredns does not report $COREDNS_VERSION"
else
	log "CoreDNS $COREDNS_VERSION already in $BIN"
fi

# --- summary -------------------------------------------------------------------
kubectl_path=$BIN/kubectl
[ -x "$kubectl_path" ] || kubectl_path=$(command -v kubectl)
cat <<EOF
fnbuilder cluster tools ($BIN):
  Kubernetes       $KUBE_VERSION ${KUBE_COMPONENTS[*]}
  kubectl          $kubectl_path ($("$kubectl_path" version --client 2>/dev/null | head -n1))
  containerd       $("$BIN/containerd" --version | awk '{print $3}') (+ containerd-shim-runc-v2)
  runc             $("$BIN/runc" --version | head -n1)
  coredns          $("$BIN/coredns" -version | head -n1)
  etcd             $(command -v etcd) ($(etcd --version 2>/dev/null | head -n1))
  CNI plugins      $CNI_DIR
EOF

#!/usr/bin/env bash
# Installs helm (helm.sh/helm/v3 v3.22.0), built from its Go module, into
# ${FNB_TOOLS:-$HOME/.cache/fnbuilder}/bin. The packaging tests
# (go test ./packaging/) lint and render charts/buildkit with it, offline.
#
# Idempotent: a second run only checks the version and prints where helm is.
# Needs Go and the Go module proxy (or a warm module cache); not root.
set -euo pipefail

HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.22.0

FNB_TOOLS=${FNB_TOOLS:-$HOME/.cache/fnbuilder}
BIN=$FNB_TOOLS/bin

. "$(dirname "$0")/lib.sh"
need_go "helm $HELM_VERSION"

# A helm built with `go install` says only "v3.22" (its release ldflags are
# not set), so read the module version Go stamps into the binary.
has_version() {
	[ -x "$1" ] && go version -m "$1" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+$HELM_MODULE[[:space:]]+$HELM_VERSION([[:space:]]|\$)"
}

if has_version "$BIN/helm"; then
	log "helm $HELM_VERSION already in $BIN"
else
	log "building helm $HELM_VERSION from $HELM_MODULE (about 90 s)"
	mkdir -p "$BIN"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# Outside any module (cd "$tmp") so nobody's go.mod/go.sum is touched; into
	# a temporary GOBIN and then renamed, so a helm in use is never half-written.
	(cd "$tmp" && GOBIN="$tmp/bin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
		go install "$HELM_MODULE/cmd/helm@$HELM_VERSION")
	mv -f "$tmp/bin/helm" "$BIN/helm"
	has_version "$BIN/helm" || die "$BIN/helm is not $HELM_MODULE $HELM_VERSION: $(go version -m "$BIN/helm" 2>&1 | head -n3)"
fi
echo "helm             $BIN/helm ($HELM_VERSION)"

#!/usr/bin/env bash
# Installs the OpenFaaS Community Edition pieces the local stack runs, at the
# pinned versions the Go module proxy serves (it refuses to list openfaas
# versions, so "@latest" cannot work): the gateway, the NATS queue-worker and
# NATS Streaming, plus Debian's prometheus (the gateway panics listing
# functions when Prometheus is unreachable).
#
# Binaries go to ${FNB_TOOLS:-$HOME/.cache/fnbuilder}/bin. Idempotent.
set -euo pipefail

GATEWAY_MOD=github.com/openfaas/faas/gateway@v0.0.0-20260702090804-8d803bf9e265 # 0.27.14
QUEUE_WORKER_MOD=github.com/openfaas/nats-queue-worker@v0.0.0-20250415083406-ed5414157b54 # 0.14.2+1
NATS_STREAMING_MOD=github.com/nats-io/nats-streaming-server@v0.25.6

FNB_TOOLS=${FNB_TOOLS:-$HOME/.cache/fnbuilder}
BIN=$FNB_TOOLS/bin
SRC=$FNB_TOOLS/src
export DEBIAN_FRONTEND=noninteractive
export GONOSUMDB=github.com/openfaas
export CGO_ENABLED=0
command -v go >/dev/null 2>&1 || export PATH=$PATH:/usr/local/go/bin

. "$(dirname "$0")/lib.sh"
need_root

apt_ensure prometheus
# Debian starts its own prometheus on :9090; the stack runs its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
	systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

mkdir -p "$BIN" "$SRC"

# build NAME MOD@VERSION: copy the module out of the cache (it is read-only
# and the zip has no vendored code) and build it with its own go.mod.
build() {
	local name=$1 modver=$2 stamp="$BIN/.$1.version"
	if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$modver" ]; then
		log "$name already built ($modver)"
		return
	fi
	local json dir
	local tmp
	tmp=$(mktemp -d) # outside any module, so no go.mod is touched
	json=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$modver")
	rmdir "$tmp"
	dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
	[ -n "$dir" ] || die "go mod download $modver: $json"
	rm -rf "$SRC/$name"
	cp -a "$dir/." "$SRC/$name"
	chmod -R u+w "$SRC/$name"
	log "building $name from $modver"
	(cd "$SRC/$name" && GOFLAGS="-mod=mod -buildvcs=false" go build -o "$BIN/.$name.tmp" .)
	mv -f "$BIN/.$name.tmp" "$BIN/$name"
	echo "$modver" >"$stamp"
}

build gateway "$GATEWAY_MOD"
build queue-worker "$QUEUE_WORKER_MOD"
if [ -x "$BIN/nats-streaming-server" ] && [ "$(cat "$BIN/.nats-streaming-server.version" 2>/dev/null)" = "$NATS_STREAMING_MOD" ]; then
	log "nats-streaming-server already built"
else
	log "building nats-streaming-server"
	GOBIN=$BIN GOFLAGS=-buildvcs=false go install "$NATS_STREAMING_MOD"
	echo "$NATS_STREAMING_MOD" >"$BIN/.nats-streaming-server.version"
fi

cat <<SUMMARY
OpenFaaS pieces in $BIN:
  gateway                $GATEWAY_MOD
  queue-worker           $QUEUE_WORKER_MOD
  nats-streaming-server  $NATS_STREAMING_MOD
  prometheus             $(command -v prometheus)
SUMMARY

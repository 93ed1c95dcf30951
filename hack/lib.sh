# Shared by the hack/install*.sh scripts; source it first.

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# need_root sets SUDO to what runs a command as root: nothing for root,
# sudo -n for a user with passwordless sudo.
need_root() {
	SUDO=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || die "must run as root (or with passwordless sudo)"
		SUDO=(sudo -n)
	fi
}

# need_go WHAT: go on PATH (or in /usr/local/go), or die naming what needs it.
need_go() {
	if ! command -v go >/dev/null 2>&1; then
		[ -x /usr/local/go/bin/go ] || die "go not found (need Go to build $1)"
		export PATH=$PATH:/usr/local/go/bin
	fi
}

# fetch_module MOD@VER DEST: a writable copy of the module's source at DEST.
# Downloaded outside any module so nobody's go.mod/go.sum is touched.
fetch_module() {
	local modver=$1 dest=$2 tmp json dir
	[ -f "$dest/go.mod" ] && return
	log "downloading $modver"
	tmp=$(mktemp -d)
	json=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$modver")
	rmdir "$tmp"
	dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
	[ -n "$dir" ] && [ -f "$dir/go.mod" ] || die "go mod download $modver gave no Dir: $json"
	rm -rf "$dest.tmp"
	cp -a "$dir/." "$dest.tmp"
	chmod -R u+w "$dest.tmp"
	mv "$dest.tmp" "$dest"
}

# apt_ensure PKG...: installs the Debian packages that are missing, with one
# apt-get update, and says so; does nothing when all are there.
apt_ensure() {
	local missing=() p
	for p in "$@"; do
		[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "Debian packages already installed: $*"
		return
	fi
	log "apt-get install ${missing[*]}"
	"${SUDO[@]}" apt-get update -qq </dev/null
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
}

# Shared by the hack/install*.sh scripts; source it, then call apt_ensure.

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

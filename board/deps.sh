#!/bin/sh
# deps.sh PKG... installs the Debian packages a board/image target needs,
# only when missing, so `make kernel` works on a fresh machine and is a no-op
# afterwards. It waits for a running apt/dpkg instead of racing its lock.
set -eu
missing=""
for p in "$@"; do
	if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0
while pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; do
	echo "deps.sh: waiting for a running apt-get/dpkg to finish" >&2
	sleep 5
done
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "deps.sh: installing$missing" >&2
$SUDO apt-get install -y -qq $missing

#!/usr/bin/env bash
# deps.sh PKG...: install the Debian packages that are missing, once.
# Every make target that needs a tool calls this, so a fresh machine (and CI's
# clean clone) gets what it needs without a separate set-up step.
set -euo pipefail
missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]]; then
	echo "deps.sh: need root to install: ${missing[*]}" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
# Wait for another apt run (a parallel make, a boot-time job) rather than fail.
for _ in $(seq 1 120); do
	fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break
	sleep 1
done
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

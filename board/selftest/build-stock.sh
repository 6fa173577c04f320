#!/bin/bash
# build-stock.sh builds the stock kernel the selftests compare the board kernel
# against: the same linux-source-6.12 and config, without patches/series,
# into build/kernel-stock (vmlinuz in build/kernel-stock/install), never
# touching board/amd64.
#
# A cold kernel build takes about 50 minutes on this machine's two cores. When
# the board kernel's object tree (build/kernel/out) exists, it is copied and
# rewritten to the stock source path, and every object that depends on a file
# the patches change is deleted, so only those recompile (a few minutes).
# - The path rewrite: Kbuild stores each object's command line in .<obj>.cmd
#   and rebuilds when it differs; the command names the source tree by its
#   absolute path. __FILE__ is mapped (-fmacro-prefix-map), so the path
#   does not reach the kernel's code or data.
# - The deletion: the stock tree is extracted with the tarball's old mtimes,
#   so make would otherwise keep the patched objects, which are newer.
# The result is checked: the stock vmlinux must not contain the patches'
# sysctl names.
#
# Environment: JOBS, NICE as for build-kernel.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
board=$root/board/amd64
stock=$root/build/kernel-stock
seedsrc=$root/build/kernel/linux-source-6.12
seed=$root/build/kernel/out

changed=()
if [ -f "$board/patches/series" ]; then
	while read -r p; do
		case "$p" in ''|'#'*) continue ;; esac
		while read -r f; do changed+=("$f"); done < <(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$board/patches/$p")
	done <"$board/patches/series"
fi

mkdir -p "$stock"
if [ ! -d "$stock/out" ] && [ -f "$seed/.config" ] && [ -f "$seed/vmlinux" ]; then
	echo "build-stock: seeding $stock/out from $seed"
	rm -rf "$stock/out.tmp"
	cp -a "$seed" "$stock/out.tmp"
	find "$stock/out.tmp" -name '*.cmd' -type f -print0 |
		xargs -0 sed -i "s|$seedsrc|$stock/linux-source-6.12|g"
	for f in "${changed[@]}"; do
		# grep exits 1 when nothing depends on f (e.g. Documentation/).
		{ grep -rlF --include='*.cmd' "$stock/linux-source-6.12/$f" "$stock/out.tmp" || true; } | while read -r cmd; do
			b=$(basename "$cmd" .cmd)
			echo "build-stock: dropping ${b#.} (depends on $f)"
			rm -f "$(dirname "$cmd")/${b#.}" "$cmd"
		done
	done
	mv "$stock/out.tmp" "$stock/out"
fi

BUILD=$stock DEST=$stock/install PATCHES=none "$board/build-kernel.sh"

# The patches add sysctls (net.mptcp.<name>); their names prove which is which.
names=$(cat "$board"/patches/*.patch 2>/dev/null | sed -n 's/^+.*\.procname[[:space:]]*=[[:space:]]*"\([a-z_]*\)".*/\1/p' | sort -u)
for n in $names; do
	if grep -qaF "$n" "$stock/out/vmlinux"; then
		echo "build-stock: stock vmlinux contains the patched sysctl $n: a patched object survived" >&2
		exit 1
	fi
	echo "build-stock: ok, stock vmlinux has no sysctl $n"
done

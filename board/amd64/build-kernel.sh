#!/bin/bash
# build-kernel.sh builds the Lifeline board kernel from Debian's
# linux-source-6.12: x86_64_defconfig + config.fragment (+ patches/*.patch in
# series order), and installs vmlinuz, cmdline.txt and lib/modules into
# board/amd64 as a gokrazy kernel package. The result is committed so CI
# never rebuilds it.
#
# Environment: BUILD (default build/kernel), JOBS (default 2), NICE (default
# 19: other work shares the machine; NICE=0 when the kernel is the critical path).
# PATCHES=none builds without patches/series (the stock kernel the selftests
# compare against); DEST (default board/amd64) is where vmlinuz, config, lib/
# and build-info.txt go, so such a build never overwrites the board kernel:
#   BUILD=build/kernel-stock DEST=build/kernel-stock/install PATCHES=none
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD:-$root/build/kernel}
jobs=${JOBS:-2}
niceness=${NICE:-19}
dest=${DEST:-$here}
case "${PATCHES:-series}" in series|none) ;; *) echo "build-kernel: PATCHES=$PATCHES: want series or none" >&2; exit 2 ;; esac
tarball=/usr/src/linux-source-6.12.tar.xz

"$root/tools/deps.sh" linux-source-6.12 bc bison flex libelf-dev libssl-dev cpio xz-utils kmod gcc make

mkdir -p "$build"
src="$build/linux-source-6.12"
out="$build/out"

# Re-extract when the tarball or the patch set changed, so a stale tree never
# silently carries an old patch.
patches=()
if [ "${PATCHES:-series}" = series ] && [ -f "$here/patches/series" ]; then
	while read -r p; do
		case "$p" in ''|'#'*) continue ;; esac
		patches+=("$here/patches/$p")
	done <"$here/patches/series"
fi
stamp=$( (sha256sum "$tarball" | cut -d' ' -f1; for p in "${patches[@]}"; do sha256sum "$p"; done) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$build/source.stamp" 2>/dev/null)" != "$stamp" ]; then
	echo "build-kernel: extracting $tarball"
	rm -rf "$src"
	tar -C "$build" -xf "$tarball"
	for p in "${patches[@]}"; do
		echo "build-kernel: applying $(basename "$p")"
		patch -d "$src" -p1 --forward --batch <"$p"
	done
	echo "$stamp" >"$build/source.stamp"
fi

# Reproducible metadata: the same inputs give the same vmlinuz.
# KBUILD_BUILD_VERSION fixes the "#N" in the version string, which otherwise
# counts builds in the object tree (out/.version) and changes the image.
export KBUILD_BUILD_USER=lifeline KBUILD_BUILD_HOST=lifeline KBUILD_BUILD_VERSION=1
export KBUILD_BUILD_TIMESTAMP="$(date -u -d @"$(stat -c %Y "$tarball")" '+%Y-%m-%d')"

mk() { nice -n "$niceness" make -s -C "$src" O="$out" "$@"; }

start=$(date +%s)
mkdir -p "$out"
mk x86_64_defconfig
"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "$here/config.fragment" >/dev/null
mk olddefconfig

# Every CONFIG_X=value line of the fragment must survive olddefconfig (a
# missing dependency silently drops an option otherwise).
fail=0
while IFS= read -r line; do
	case "$line" in CONFIG_*=*) ;; *) continue ;; esac
	if ! grep -qxF "$line" "$out/.config"; then
		echo "build-kernel: fragment wants $line, .config has: $(grep "^${line%%=*}=" "$out/.config" || echo "${line%%=*} unset")" >&2
		fail=1
	fi
done <"$here/config.fragment"
[ "$fail" = 0 ] || { echo "build-kernel: config fragment not satisfied" >&2; exit 1; }

# bzImage first: the VM stage can use it while the (WiFi-only) modules build.
mk -j"$jobs" bzImage
cp "$out/arch/x86/boot/bzImage" "$build/bzImage"
echo "build-kernel: bzImage done after $(( $(date +%s) - start )) s"
mk -j"$jobs" modules
release=$(cat "$out/include/config/kernel.release")

stage="$build/stage"
rm -rf "$stage"
mk INSTALL_MOD_PATH="$stage" INSTALL_MOD_STRIP=1 modules_install
rm -f "$stage/lib/modules/$release/build" "$stage/lib/modules/$release/source"

mkdir -p "$dest"
cp "$out/arch/x86/boot/bzImage" "$dest/vmlinuz"
cp "$out/.config" "$dest/config"
rm -rf "$dest/lib"
mkdir -p "$dest/lib/modules"
cp -a "$stage/lib/modules/$release" "$dest/lib/modules/"
end=$(date +%s)

cat >"$dest/build-info.txt" <<INFO
release: $release
source: $(basename "$tarball") ($(dpkg-query -W -f='${Version}' linux-source-6.12))
patches: ${#patches[@]}
build seconds: $((end - start)) (nice -n $niceness, -j$jobs, $(nproc) cores)
vmlinuz bytes: $(stat -c %s "$dest/vmlinuz")
vmlinuz sha256: $(sha256sum "$dest/vmlinuz" | cut -d' ' -f1)
INFO
cat "$dest/build-info.txt"

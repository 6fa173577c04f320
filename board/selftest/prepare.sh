#!/bin/bash
# prepare.sh SRC OUT lays out what the guest runs: the MPTCP selftest scripts
# of the kernel tree SRC (tools/testing/selftests/net/mptcp, with the
# ../lib.sh and ../net_helper.sh they source) in OUT/tree/net/mptcp, and
# their C helpers built there from the same tree against its own UAPI
# headers (Debian's linux-libc-dev is older than 6.12's MPTCP UAPI).
# The helpers are static: the guest has only the shared libraries of the
# host tools the runner copies.
set -euo pipefail

src=$(cd "$1" && pwd)
out=$(mkdir -p "$2" && cd "$2" && pwd)
st=$src/tools/testing/selftests/net
niceness=${NICE:-15}

"$(dirname "$0")/../../tools/deps.sh" gcc make rsync libc6-dev bash iproute2 nftables iptables ethtool procps iputils-ping coreutils

if [ ! -f "$out/usr/include/linux/mptcp.h" ] || [ "$st/mptcp/mptcp_connect.c" -nt "$out/usr/include/linux/mptcp.h" ]; then
	nice -n "$niceness" make -s -C "$src" O="$out/hdr-out" headers_install INSTALL_HDR_PATH="$out/usr"
fi

dst=$out/tree/net
rm -rf "$dst"
mkdir -p "$dst/mptcp"
cp "$st/lib.sh" "$st/net_helper.sh" "$dst/"
cp "$st"/mptcp/*.sh "$st/mptcp/settings" "$dst/mptcp/"
# The same flags as the selftests' Makefile, plus -static.
for p in mptcp_connect pm_nl_ctl mptcp_sockopt mptcp_inq; do
	nice -n "$niceness" gcc -Wall -Wl,--no-as-needed -O2 -static -I"$out/usr/include" \
		-o "$dst/mptcp/$p" "$st/mptcp/$p.c" 2>&1 | grep -v "getaddrinfo\|in function" >&2 || true
	[ -x "$dst/mptcp/$p" ] || { echo "prepare: building $p failed" >&2; exit 1; }
done
echo "prepare: $dst ready ($(ls "$dst/mptcp" | wc -l) files)"

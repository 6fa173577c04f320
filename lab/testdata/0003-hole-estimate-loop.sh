# Guest script for a logging build of 0003 (0003-hole-estimate-logging.diff): 20 cuts, then 14
# blackholes, on the default reinject_limit=4, each trial followed by what the kernel logged.
# Run with bin/lifeline-lab vm --bin-dir build/vmbin --clock-shift 0 --kernel BZIMAGE --script
# THIS > LOG (about 35 minutes), then: go run ./lab/testdata/holefit LOG
for s in cut:20 blackhole:14; do
	echo "# scenario: ${s%:*}"
	for i in $(seq "${s#*:}"); do
		/lab/lifeline-lab failover --lifeline /lab/lifeline --netem --cake --fiber 40mbit --lte 20mbit --no-nudge --size 16MB --cut-at 1500ms --restore-after 1500ms --scenario "${s%:*}" --json >/out/r.json 2>/out/e.txt
		echo "trial $i (exit $?) $(grep -o '"max_stall_ms": *[0-9.]*' /out/r.json)"
		dmesg -c | grep LLDBG | grep -v 'srtt=4[0-9][0-9][0-9][0-9] '
	done
done
true

/lab/lifeline-lab reinjection --lifeline /lab/lifeline --netem --cake --fiber 40mbit --lte 20mbit --nudge off --size 16MB --cut-at 1500ms --restore-after 1500ms --scenarios cut,blackhole --trials 2 --limits 0,4 --out /out/c.json --plot /out/c.svg 2>&1 | grep -E 'stall|PASS|FAIL'
echo "dmesg warnings: $(dmesg | grep -c -E 'WARNING|BUG|Call Trace')"
sysctl net.mptcp.reinject_limit

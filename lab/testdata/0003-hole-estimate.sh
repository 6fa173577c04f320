/lab/lifeline-lab reinjection --lifeline /lab/lifeline --netem --cake --fiber 40mbit --lte 20mbit --nudge off --size 16MB --cut-at 1500ms --restore-after 1500ms --scenarios cut --trials 8 --limits 0,4 --out /out/x.json --plot /out/x.svg 2>&1 | grep stall
dmesg | grep LLDBG | grep -v 'srtt=4[0-9][0-9][0-9][0-9] '

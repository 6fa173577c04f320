package lab

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// The kernel link element (Options.Netem), for our board kernel in the VM.
//
// Each path gets its own link from the ISP to the concentrator, so that both
// directions of a path have their own delay line on an egress qdisc and no
// IFB is needed:
//
//	router fiber0 ── ifiber0 [netem: downlink] ISP [netem: uplink] ifiber0c ── cfiber0 conc
//
// The ISP steers what arrives from a router link into that path's link with
// a policy rule (iif → table); the concentrator routes the router's uplink
// prefix back through it. A blackhole's nft rules sit in the ISP's forward
// hook, before either delay line: what was already in flight on the line
// still arrives, as with the relay.

// netemTable is the ISP's routing table for path p.
func netemTable(p *Path) int { return 100 + p.Index }

// ispLinkAddr is the ISP's end of p's link to the concentrator (a /30 of
// 192.0.2.0/24), concLinkAddr the concentrator's.
func ispLinkAddr(p *Path) string  { return fmt.Sprintf("192.0.2.%d", 4*p.Index+1) }
func concLinkAddr(p *Path) string { return fmt.Sprintf("192.0.2.%d", 4*p.Index+2) }

// ispConcDev is the ISP's end of p's link to the concentrator, concDev the
// concentrator's.
func ispConcDev(p *Path) string { return p.ISPDev + "c" }
func concDev(p *Path) string    { return "c" + p.Dev }

// buildNetemLinks adds the per-path links and routes (once, at Build).
func (w *World) buildNetemLinks(ctx context.Context) error {
	var ib, cb strings.Builder
	for _, p := range w.Paths {
		fmt.Fprintf(&ib, "link add %s type veth peer name %s netns %s\n", ispConcDev(p), concDev(p), w.Conc)
		fmt.Fprintf(&ib, "addr add %s/30 dev %s\n", ispLinkAddr(p), ispConcDev(p))
		fmt.Fprintf(&ib, "link set %s up\n", ispConcDev(p))
		fmt.Fprintf(&ib, "route replace %s/32 via %s dev %s table %d\n", ConcPublic, concLinkAddr(p), ispConcDev(p), netemTable(p))
		fmt.Fprintf(&ib, "rule add iif %s lookup %d priority %d\n", p.ISPDev, netemTable(p), 1000+p.Index)
		fmt.Fprintf(&cb, "addr add %s/30 dev %s\n", concLinkAddr(p), concDev(p))
		fmt.Fprintf(&cb, "link set %s up\n", concDev(p))
		fmt.Fprintf(&cb, "route replace 100.64.%d.0/24 via %s dev %s\n", p.Index, ispLinkAddr(p), concDev(p))
	}
	if err := ipBatch(ctx, w.ISP, ib.String()); err != nil {
		return err
	}
	return ipBatch(ctx, w.Conc, cb.String())
}

// netemLimit is the qdisc's packet limit: the ISP buffer plus what the
// delay line holds at the line rate, in full-size packets.
func (w *World) netemLimit(p *Path) int {
	d := w.opt.ISPBuffer + p.Link.RTT/2
	n := int(float64(p.Link.Rate)/8*d.Seconds()/1514) + 1
	return max(n, 64)
}

// netemLink sets both directions of p's line: half the RTT each way, the
// line rate, the ISP buffer and loss (0 ≤ loss < 1). A replace on an
// existing netem changes it in place and keeps its queue.
func (w *World) netemLink(ctx context.Context, p *Path, loss float64) error {
	var b strings.Builder
	for _, dev := range []string{p.ISPDev, ispConcDev(p)} {
		fmt.Fprintf(&b, "qdisc replace dev %s root handle 1: netem delay %dus rate %dbit limit %d",
			dev, (p.Link.RTT / 2).Microseconds(), p.Link.Rate, w.netemLimit(p))
		if loss > 0 {
			fmt.Fprintf(&b, " loss %.4f%%", loss*100)
		}
		b.WriteString("\n")
	}
	return tcBatch(ctx, w.ISP, b.String())
}

func tcBatch(ctx context.Context, ns, cmds string) error {
	cmd := exec.CommandContext(ctx, "tc", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tc -n %s -batch (%q): %w: %s", ns, cmds, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ispLinkStats is `tc -s qdisc` of both delay lines of every path, for
// the result (drops there are the ISP buffer overflowing).
func (w *World) ispLinkStats(ctx context.Context) map[string]string {
	m := map[string]string{}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, p := range w.Paths {
		var s strings.Builder
		for _, dev := range []string{p.ISPDev, ispConcDev(p)} {
			if out, err := run(ctx, "tc", "-n", w.ISP, "-s", "qdisc", "show", "dev", dev); err == nil {
				s.WriteString(out)
			}
		}
		m[p.Name] = s.String()
	}
	return m
}

// tunnelKinds reads each router tunnel's link kind: "wireguard" when the
// supervisor drives the kernel's WireGuard, "tun" for wireguard-go.
func (w *World) tunnelKinds() map[string]string {
	m := map[string]string{}
	for _, p := range w.Paths {
		l, err := w.routerNl.LinkByName(p.WG)
		if err != nil {
			continue
		}
		m[p.Name] = l.Type()
	}
	return m
}

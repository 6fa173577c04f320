package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lifeline-router/lifeline/lab/linkem"
)

// nftShell is one long-running `nft -i` in the ISP namespace. A blackhole
// must start at a known instant: forking nft on a loaded 2-core machine
// costs tens of milliseconds of unknown jitter, while a line written to an
// interactive nft already waiting on stdin is applied within a fraction of
// a millisecond. Every command is followed by a `list table`, whose closing
// brace acknowledges that the kernel has committed the change.
type nftShell struct {
	mu    sync.Mutex
	stdin io.WriteCloser
	out   *bufio.Reader
	cmd   *exec.Cmd
}

const nftTable = "lifeline_lab"

func (w *World) startNft(ctx context.Context) error {
	cmd := exec.Command("ip", "netns", "exec", w.ISP, "nft", "-i")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nft -i in %s: %w", w.ISP, err)
	}
	w.nft = &nftShell{stdin: stdin, out: bufio.NewReader(stdout), cmd: cmd}
	w.cleanup.push("nft shell", func() error {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		return nil
	})
	var b strings.Builder
	fmt.Fprintf(&b, "add table inet %s\n", nftTable)
	for _, p := range w.Paths {
		// Base chains per path, empty until a blackhole: restore is a flush.
		fmt.Fprintf(&b, "add chain inet %s %s_in { type filter hook input priority 0 ; }\n", nftTable, p.Name)
		fmt.Fprintf(&b, "add chain inet %s %s_out { type filter hook output priority 0 ; }\n", nftTable, p.Name)
		fmt.Fprintf(&b, "add chain inet %s %s_fwd { type filter hook forward priority 0 ; }\n", nftTable, p.Name)
	}
	_, err = w.nft.do(b.String())
	return err
}

// do writes cmds and waits for the acknowledging listing; it returns the
// listing and any "Error:" lines nft printed.
func (n *nftShell) do(cmds string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := io.WriteString(n.stdin, cmds+fmt.Sprintf("list table inet %s\n", nftTable)); err != nil {
		return "", fmt.Errorf("nft -i: write %q: %w", cmds, err)
	}
	var out strings.Builder
	var nftErr []string
	done := make(chan error, 1)
	go func() {
		for {
			line, err := n.out.ReadString('\n')
			if err != nil {
				done <- fmt.Errorf("nft -i: read: %w (after %q)", err, out.String())
				return
			}
			out.WriteString(line)
			if strings.Contains(line, "Error:") {
				nftErr = append(nftErr, strings.TrimSpace(line))
			}
			if line == "}\n" {
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), err
		}
	case <-time.After(5 * time.Second):
		return out.String(), fmt.Errorf("nft -i: no answer to %q within 5s", cmds)
	}
	if len(nftErr) > 0 {
		return out.String(), fmt.Errorf("nft %q: %s", cmds, strings.Join(nftErr, "; "))
	}
	return out.String(), nil
}

// startRelay runs `lifeline-lab relay` for p in the ISP namespace: it
// listens on the ISP's gateway address on p's port (the router's WireGuard
// endpoint for this path) and forwards to the concentrator's port.
func (w *World) startRelay(ctx context.Context, p *Path) error {
	p.relaySock = filepath.Join(w.Dir, "relay-"+p.Name+".sock")
	args := []string{"relay",
		"--name", p.Name,
		"--listen", fmt.Sprintf("%s:%d", p.Gateway(), p.Port),
		"--target", fmt.Sprintf("%s:%d", ConcPublic, p.Port),
		"--rate", strconv.FormatUint(p.Link.Rate, 10) + "bit",
		"--delay", (p.Link.RTT / 2).String(),
		"--buffer", strconv.Itoa(w.ispBufferBytes(p)),
		"--overhead", strconv.Itoa(relayOverhead),
		"--socket", p.relaySock,
		"--seed", strconv.FormatUint(w.opt.Seed+uint64(p.Index), 10),
	}
	pr, err := w.start("relay-"+p.Name, w.ISP, false, w.opt.LabBin, args...)
	if err != nil {
		return err
	}
	return pr.waitLine(ctx, "relay: ready", 10*time.Second)
}

// relayOverhead makes the relay count a datagram as the router's HTB counts
// the same packet on the veth: IPv4 (20) + UDP (8) + Ethernet header (14).
const relayOverhead = 42

// Relay returns a control client for p's relay.
func (w *World) Relay(p *Path) *linkem.Client {
	return linkem.NewClient(p.relaySock).Relay(p.Name)
}

// Fault names a fault the lab can inject.
type Fault string

const (
	FaultCut       Fault = "cut"
	FaultBlackhole Fault = "blackhole"
	FaultFlap      Fault = "flap"
	// FaultNone uploads without a fault: what the world sustains.
	FaultNone Fault = "none"
	// FaultLoss puts random loss (World.LossRate, both directions) on
	// the path for the fault's stretch: the seed's exercise 3 (netem
	// loss 5 % on the primary); the policy must not flap.
	FaultLoss Fault = "loss"
)

// ParseFault accepts cut, blackhole and flap.
func ParseFault(s string) (Fault, error) {
	switch f := Fault(s); f {
	case FaultCut, FaultBlackhole, FaultFlap, FaultNone, FaultLoss:
		return f, nil
	}
	return "", fmt.Errorf("scenario %q: want cut, blackhole, flap, loss or none", s)
}

// SetCarrier sets the ISP side of p's veth up or down; the router's end
// then shows (NO-)CARRIER as with a pulled fiber. It returns the instant
// just before the netlink call, which is the fault's time origin.
func (w *World) SetCarrier(p *Path, up bool) (time.Time, error) {
	link, err := w.ispNl.LinkByName(p.ISPDev)
	if err != nil {
		return time.Time{}, fmt.Errorf("LinkByName(%s in %s): %w", p.ISPDev, w.ISP, err)
	}
	t := time.Now()
	if up {
		err = w.ispNl.LinkSetUp(link)
	} else {
		err = w.ispNl.LinkSetDown(link)
	}
	if err != nil {
		return t, fmt.Errorf("LinkSet(%s in %s, up=%v): %w", p.ISPDev, w.ISP, up, err)
	}
	return t, nil
}

// SetBlackhole drops (or stops dropping) p's tunnel datagrams in the ISP
// namespace in both directions, at the router-facing side, while every
// link stays up. It returns the instant the rule was sent to nft.
func (w *World) SetBlackhole(p *Path, on bool) (time.Time, error) {
	var cmds string
	switch {
	case on && w.opt.Netem:
		// Forwarded, not relayed: drop before either delay line.
		cmds = fmt.Sprintf("add rule inet %[1]s %[2]s_fwd iifname %[3]q udp dport %[4]d drop\n"+
			"add rule inet %[1]s %[2]s_fwd oifname %[3]q udp sport %[4]d drop\n", nftTable, p.Name, p.ISPDev, p.Port)
	case on:
		cmds = fmt.Sprintf("add rule inet %[1]s %[2]s_in iifname %[3]q udp dport %[4]d drop\n"+
			"add rule inet %[1]s %[2]s_out oifname %[3]q udp sport %[4]d drop\n", nftTable, p.Name, p.ISPDev, p.Port)
	default:
		cmds = fmt.Sprintf("flush chain inet %[1]s %[2]s_in\nflush chain inet %[1]s %[2]s_out\nflush chain inet %[1]s %[2]s_fwd\n", nftTable, p.Name)
	}
	t := time.Now()
	_, err := w.nft.do(cmds)
	return t, err
}

// Ruleset returns the lab's nftables table as nft lists it.
func (w *World) Ruleset() (string, error) { return w.nft.do("") }

// Inject starts fault f on p and returns the time origin. Flap takes the
// carrier down, up after period and down again after another period; it
// blocks for those two periods.
func (w *World) Inject(ctx context.Context, f Fault, p *Path, period time.Duration) (time.Time, error) {
	switch f {
	case FaultCut:
		return w.SetCarrier(p, false)
	case FaultBlackhole:
		return w.SetBlackhole(p, true)
	case FaultLoss:
		return w.SetLoss(ctx, p, w.LossRate)
	case FaultFlap:
		origin, err := w.SetCarrier(p, false)
		if err != nil {
			return origin, err
		}
		next := origin
		for _, up := range []bool{true, false} {
			next = next.Add(period)
			select {
			case <-time.After(time.Until(next)):
			case <-ctx.Done():
				return origin, ctx.Err()
			}
			if _, err := w.SetCarrier(p, up); err != nil {
				return origin, err
			}
		}
		return origin, nil
	}
	return time.Time{}, errors.New("Inject: unknown fault " + string(f))
}

// Restore undoes fault f on p and returns the instant of the restore.
func (w *World) Restore(f Fault, p *Path) (time.Time, error) {
	switch f {
	case FaultBlackhole:
		return w.SetBlackhole(p, false)
	case FaultLoss:
		return w.SetLoss(context.Background(), p, 0)
	}
	return w.SetCarrier(p, true)
}

// SetLoss sets random loss on both directions of p's ISP link.
func (w *World) SetLoss(ctx context.Context, p *Path, loss float64) (time.Time, error) {
	t := time.Now()
	if w.opt.Netem {
		return t, w.netemLink(ctx, p, loss)
	}
	c := w.Relay(p)
	for _, d := range []linkem.Direction{linkem.Up, linkem.Down} {
		if err := c.SetLoss(ctx, d, loss); err != nil {
			return t, fmt.Errorf("relay %s: loss %v: %w", p.Name, loss, err)
		}
	}
	return t, nil
}

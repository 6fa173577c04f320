package vmbench

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	tc "github.com/florianl/go-tc"
	"github.com/florianl/go-tc/core"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lifeline-router/lifeline/lab/traces"
)

// Link is the modem side of the uplink: a tbf per direction whose rate follows a trace, with
// a byte FIFO as deep as a real modem's (bufferbloat is real when the router's shaper is set
// above the capacity).
type Link struct {
	topo   *Topology
	buffer uint32
	tc     *tc.Tc
	h      *vnl.Handle // in the modem namespace
	nsfd   int
	idx    map[string]uint32

	mu      sync.Mutex
	cur     traces.Point
	changes []Change
}

// SetBuffer changes the depth of both FIFOs (bytes) in place.
func (l *Link) SetBuffer(bytes uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buffer = bytes
	for _, dev := range []string{modemUp, modemDown} {
		if err := l.tc.Qdisc().Change(l.tbf(dev, rateOf(l.cur, dev))); err != nil {
			return fmt.Errorf("Qdisc().Change(tbf limit %d on %s): %w", bytes, dev, err)
		}
	}
	return nil
}

// Change is one capacity change applied to the kernel.
type Change struct {
	At       time.Time
	Up, Down uint64
}

// NewLink installs the modem's tbfs at first (Up, Down), each with a FIFO of buffer bytes.
func NewLink(t *Topology, first traces.Point, buffer uint32) (*Link, error) {
	fd, err := unix.Open("/run/netns/"+t.LTE, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", t.LTE, err)
	}
	l := &Link{topo: t, buffer: buffer, nsfd: fd, idx: map[string]uint32{}}
	l.tc, err = tc.Open(&tc.Config{NetNS: fd})
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tc.Open(netns %s): %w", t.LTE, err)
	}
	l.h, err = vnl.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("netlink.NewHandleAt(%s): %w", t.LTE, err)
	}
	for _, dev := range []string{modemUp, modemDown} {
		ln, err := l.h.LinkByName(dev)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("LinkByName(%s): %w", dev, err)
		}
		l.idx[dev] = uint32(ln.Attrs().Index)
		if err := l.tc.Qdisc().Replace(l.tbf(dev, rateOf(first, dev))); err != nil {
			l.Close()
			return nil, fmt.Errorf("Qdisc().Replace(tbf on %s): %w", dev, err)
		}
	}
	l.cur = first
	return l, nil
}

func rateOf(p traces.Point, dev string) uint64 {
	if dev == modemUp {
		return p.Up
	}
	return p.Down
}

// burst is tbf's bucket: two full frames, whatever the rate. It must not depend on the rate:
// tbf queues a GSO packet whole when it fits the bucket, and a packet bigger than the bucket
// after a change to a lower rate can never be sent (the FIFO stalls for good).
const burst = 2 * 1514

// tbf at bps with the modem's FIFO as its limit.
func (l *Link) tbf(dev string, bps uint64) *tc.Object {
	Bps := bps / 8
	burst := uint32(burst)
	ticks := uint32(float64(burst) / float64(Bps) * 1e9 / 64) // psched ticks are 64 ns
	return &tc.Object{
		Msg: tc.Msg{Family: unix.AF_UNSPEC, Ifindex: l.idx[dev], Handle: core.BuildHandle(0x1, 0), Parent: tc.HandleRoot},
		Attribute: tc.Attribute{Kind: "tbf", Tbf: &tc.Tbf{
			Parms: &tc.TbfQopt{Rate: tc.RateSpec{Linklayer: 1, Rate: uint32(min(Bps, 1<<32-1))}, Limit: l.buffer, Buffer: ticks, Mtu: 2048},
			Burst: &burst,
		}},
	}
}

// Set changes the capacity in place (tbf keeps its FIFO and what is queued in it).
func (l *Link) Set(p traces.Point) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := false
	for _, dev := range []string{modemUp, modemDown} {
		if rateOf(p, dev) == rateOf(l.cur, dev) {
			continue
		}
		if err := l.tc.Qdisc().Change(l.tbf(dev, rateOf(p, dev))); err != nil {
			return fmt.Errorf("Qdisc().Change(tbf %d bit/s on %s): %w", rateOf(p, dev), dev, err)
		}
		changed = true
	}
	if changed {
		l.cur = p
		l.changes = append(l.changes, Change{At: time.Now(), Up: p.Up, Down: p.Down})
	}
	return nil
}

// Follow applies tr from start on until ctx ends or the trace does; it returns the first
// error.
func (l *Link) Follow(ctx context.Context, tr traces.Trace, start time.Time) error {
	return atPoints(ctx, tr, start, l.Set)
}

// atPoints calls apply with each point of tr at its time after start, until ctx ends or the
// trace does; it returns apply's first error.
func atPoints(ctx context.Context, tr traces.Trace, start time.Time, apply func(traces.Point) error) error {
	for _, p := range tr.Points {
		if d := time.Until(start.Add(p.At)); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
		}
		if err := apply(p); err != nil {
			return err
		}
	}
	return nil
}

// Changes returns the capacity changes applied so far.
func (l *Link) Changes() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Change(nil), l.changes...)
}

// KernelRates reads the tbf rates back from the kernel (bit/s).
func (l *Link) KernelRates() (up, down uint64, err error) {
	for _, dev := range []string{modemUp, modemDown} {
		qs, err := l.tc.Qdisc().Get()
		if err != nil {
			return 0, 0, fmt.Errorf("Qdisc().Get: %w", err)
		}
		var r uint64
		for _, q := range qs {
			if q.Ifindex == l.idx[dev] && q.Kind == "tbf" && q.Tbf != nil && q.Tbf.Parms != nil {
				r = uint64(q.Tbf.Parms.Rate.Rate) * 8
			}
		}
		if r == 0 {
			return 0, 0, fmt.Errorf("no tbf on %s", dev)
		}
		if dev == modemUp {
			up = r
		} else {
			down = r
		}
	}
	return up, down, nil
}

// Delivered returns the bytes the modem has put on the air so far: upload (towards the core)
// and download (towards the router), as frames, which is what tbf's rate counts.
func (l *Link) Delivered() (up, down uint64, err error) {
	for _, dev := range []string{modemUp, modemDown} {
		ln, err := l.h.LinkByName(dev)
		if err != nil {
			return 0, 0, fmt.Errorf("LinkByName(%s): %w", dev, err)
		}
		st := ln.Attrs().Statistics
		if st == nil {
			return 0, 0, fmt.Errorf("LinkByName(%s): no statistics", dev)
		}
		if dev == modemUp {
			up = st.TxBytes
		} else {
			down = st.TxBytes
		}
	}
	return up, down, nil
}

// Backlog is the bytes queued in the modem's FIFOs.
func (l *Link) Backlog() (uint64, error) {
	qs, err := l.tc.Qdisc().Get()
	if err != nil {
		return 0, fmt.Errorf("Qdisc().Get: %w", err)
	}
	var b uint64
	for _, q := range qs {
		if q.Kind == "tbf" && q.Stats != nil {
			b += uint64(q.Stats.Backlog)
		}
	}
	return b, nil
}

// WaitDrained waits until the modem's FIFOs are empty (between runs), at most d.
func (l *Link) WaitDrained(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		b, err := l.Backlog()
		if err != nil {
			return err
		}
		if b == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("modem FIFO still holds %d bytes after %v", b, d)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
}

func (l *Link) Close() error {
	if l.tc != nil {
		l.tc.Close()
	}
	if l.h != nil {
		l.h.Close()
	}
	return os.NewFile(uintptr(l.nsfd), "netns").Close()
}

// nsCounters is sqm.Counters for a device in another namespace (the Service's default reads
// /sys/class/net, which shows the namespace sysfs was mounted in).
type nsCounters struct{ h *vnl.Handle }

func newNSCounters(ns string) (*nsCounters, func(), error) {
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %s: %w", ns, err)
	}
	h, err := vnl.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("netlink.NewHandleAt(%s): %w", ns, err)
	}
	return &nsCounters{h}, func() { h.Close(); unix.Close(fd) }, nil
}

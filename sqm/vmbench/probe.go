package vmbench

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/lifeline-router/lifeline/sqm"
	"github.com/lifeline-router/lifeline/sqm/autorate"
)

// Prober sends a UDP probe from the router to the server's echo every Interval and measures
// both one-way delays (both ends run in this process, on one monotonic clock). It is the
// bench's stand-in for the in-tunnel probes of uplinks/probe and implements sqm.DelaySource
// the way that prober does: results by ReceivedAt, the age of the oldest unanswered probe,
// probes given up after LostAfter.
type Prober struct {
	Interval  time.Duration
	LostAfter time.Duration

	epoch time.Time
	conn  *net.UDPConn // router end
	echo  *net.UDPConn // server end
	done  chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]time.Time
	sent    []time.Time   // every probe's send time
	results []ProbeResult // all of them, oldest first (by arrival)
}

// ProbeResult is one answered probe. Up is the router→server delay, Down server→router.
type ProbeResult struct {
	Sent, AtServer, Back time.Time
}

func (r ProbeResult) Up() time.Duration   { return r.AtServer.Sub(r.Sent) }
func (r ProbeResult) Down() time.Duration { return r.Back.Sub(r.AtServer) }

const probeSize = 64

// StartProber opens the echo in the server namespace and the sender in the router's.
func StartProber(t *Topology, interval time.Duration) (*Prober, error) {
	p := &Prober{Interval: interval, LostAfter: 2 * time.Second, epoch: time.Now(), done: make(chan struct{}), pending: map[uint64]time.Time{}}
	srv := &net.UDPAddr{IP: net.ParseIP(t.ServerIP), Port: 7007}
	if err := inNS(t.Srv, func() (err error) {
		p.echo, err = net.ListenUDP("udp4", srv)
		return err
	}); err != nil {
		return nil, fmt.Errorf("echo ListenUDP(%v): %w", srv, err)
	}
	if err := inNS(t.RT, func() (err error) {
		p.conn, err = net.DialUDP("udp4", nil, srv)
		return err
	}); err != nil {
		p.echo.Close()
		return nil, fmt.Errorf("prober DialUDP(%v): %w", srv, err)
	}
	p.wg.Add(3)
	go p.runEcho()
	go p.runReceive()
	go p.runSend()
	return p, nil
}

func (p *Prober) now() uint64 { return uint64(time.Since(p.epoch)) }
func (p *Prober) at(ns uint64) time.Time {
	return p.epoch.Add(time.Duration(ns))
}

func (p *Prober) runEcho() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.echo.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if n < probeSize {
			continue
		}
		binary.BigEndian.PutUint64(buf[16:], p.now())
		p.echo.WriteToUDP(buf[:n], from)
	}
}

func (p *Prober) runReceive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			return
		}
		back := p.now()
		if n < probeSize {
			continue
		}
		seq := binary.BigEndian.Uint64(buf)
		r := ProbeResult{Sent: p.at(binary.BigEndian.Uint64(buf[8:])), AtServer: p.at(binary.BigEndian.Uint64(buf[16:])), Back: p.at(back)}
		p.mu.Lock()
		if _, ok := p.pending[seq]; ok {
			delete(p.pending, seq)
			p.results = append(p.results, r)
		}
		p.mu.Unlock()
	}
}

func (p *Prober) runSend() {
	defer p.wg.Done()
	tk := time.NewTicker(p.Interval)
	defer tk.Stop()
	buf := make([]byte, probeSize)
	for {
		select {
		case <-p.done:
			return
		case <-tk.C:
		}
		p.mu.Lock()
		p.seq++
		seq := p.seq
		sent := p.now()
		p.pending[seq] = p.at(sent)
		p.sent = append(p.sent, p.at(sent))
		for s, at := range p.pending {
			if time.Since(at) > p.LostAfter {
				delete(p.pending, s)
			}
		}
		p.mu.Unlock()
		binary.BigEndian.PutUint64(buf, seq)
		binary.BigEndian.PutUint64(buf[8:], sent)
		p.conn.Write(buf)
	}
}

// Close stops the prober.
func (p *Prober) Close() {
	close(p.done)
	p.conn.Close()
	p.echo.Close()
	p.wg.Wait()
}

// Results returns the answered probes sent in [from, to).
func (p *Prober) Results(from, to time.Time) []ProbeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ProbeResult
	for _, r := range p.results {
		if !r.Sent.Before(from) && r.Sent.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// Sent counts the probes sent in [from, to).
func (p *Prober) Sent(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.sent {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// DelaySamples implements sqm.DelaySource: the upload's one-way delay for egress, the
// download's for ingress (SentAt when the echo left the server, IssuedAt when the probe left
// the router: OldestPending counts from there).
func (p *Prober) DelaySamples(uplink string, dir sqm.Dir, after time.Time) []autorate.DelaySample {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := len(p.results)
	for i > 0 && p.results[i-1].Back.After(after) {
		i--
	}
	out := make([]autorate.DelaySample, 0, len(p.results)-i)
	for _, r := range p.results[i:] {
		s := autorate.DelaySample{SentAt: r.Sent, Delay: r.Up(), ReceivedAt: r.Back}
		if dir == sqm.DirIngress {
			s.SentAt, s.Delay, s.IssuedAt = r.AtServer, r.Down(), r.Sent
		}
		out = append(out, s)
	}
	return out
}

// OldestPending implements sqm.DelaySource.
func (p *Prober) OldestPending(uplink string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest time.Duration
	for _, at := range p.pending {
		if a := time.Since(at); a <= p.LostAfter && a > oldest {
			oldest = a
		}
	}
	return oldest
}

var _ sqm.DelaySource = (*Prober)(nil)

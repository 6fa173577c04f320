package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// RTTStats summarises probe round trips through one tunnel.
type RTTStats struct {
	Sent int     `json:"sent"`
	Lost int     `json:"lost"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

// The concentrator's in-tunnel echo responder (uplinks/probe) answers only
// its own 20-byte format: magic "LLPR", sequence, send time.
const (
	probeMagic = 0x4c4c5052
	probeLen   = 20
	probePort  = 7
)

// pinger sends probes through p's tunnel (from its tunnel address to the
// concentrator's) every interval until stopped, timing each echo.
type pinger struct {
	conn *net.UDPConn
	mu   sync.Mutex
	sent map[uint64]time.Time
	rtts []time.Duration
	n    int
	quit chan struct{}
	done chan struct{}
}

func (w *World) startPinger(p *Path, interval time.Duration) (*pinger, error) {
	var c *net.UDPConn
	src := net.ParseIP(strings.Split(p.TunnelAddr(), "/")[0])
	err := inNetns(w.Router, func() error {
		var err error
		c, err = net.DialUDP("udp4", &net.UDPAddr{IP: src}, &net.UDPAddr{IP: net.ParseIP(p.TunnelPeer()), Port: probePort})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("DialUDP(%s -> %s:%d in %s): %w", src, p.TunnelPeer(), probePort, w.Router, err)
	}
	pg := &pinger{conn: c, sent: map[uint64]time.Time{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			if n != probeLen || binary.BigEndian.Uint32(buf) != probeMagic {
				continue
			}
			seq := binary.BigEndian.Uint64(buf[4:])
			pg.mu.Lock()
			if t, ok := pg.sent[seq]; ok {
				pg.rtts = append(pg.rtts, now.Sub(t))
				delete(pg.sent, seq)
			}
			pg.mu.Unlock()
		}
	}()
	go func() {
		defer close(pg.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		var pkt [probeLen]byte
		for seq := uint64(1); ; seq++ {
			binary.BigEndian.PutUint32(pkt[0:], probeMagic)
			binary.BigEndian.PutUint64(pkt[4:], seq)
			now := time.Now()
			binary.BigEndian.PutUint64(pkt[12:], uint64(now.UnixNano()))
			pg.mu.Lock()
			pg.sent[seq] = now
			pg.n++
			pg.mu.Unlock()
			c.Write(pkt[:])
			select {
			case <-pg.quit:
				return
			case <-t.C:
			}
		}
	}()
	return pg, nil
}

// stop ends the probes, waits up to grace for the last echoes and returns
// the statistics.
func (pg *pinger) stop(grace time.Duration) RTTStats {
	close(pg.quit)
	<-pg.done
	time.Sleep(grace)
	pg.conn.Close()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	s := RTTStats{Sent: pg.n, Lost: len(pg.sent)}
	if len(pg.rtts) > 0 {
		r := slices.Clone(pg.rtts)
		slices.Sort(r)
		s.P50, s.P99, s.Max = ms(r[len(r)/2]), ms(r[min(len(r)-1, len(r)*99/100)]), ms(r[len(r)-1])
	}
	return s
}

// TunnelRTT measures p's idle round trip through WireGuard for n probes.
func (w *World) TunnelRTT(ctx context.Context, p *Path, n int, interval time.Duration) (RTTStats, error) {
	pg, err := w.startPinger(p, interval)
	if err != nil {
		return RTTStats{}, err
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(n) * interval):
	}
	return pg.stop(p.Link.RTT*2 + 100*time.Millisecond), ctx.Err()
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// RTTResult is the idle round trip measured through one path's relay.
type RTTResult struct {
	Path     string  `json:"path"`
	SetMs    float64 `json:"set_ms"`
	MinMs    float64 `json:"min_ms"`
	MedianMs float64 `json:"median_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	Probes   int     `json:"probes"`
	// OK: the median is within 10 % or 1 ms of the setting.
	OK bool `json:"ok"`
}

// MeasureRTT sends n small UDP probes from the router namespace through
// each path's relay to an echo socket on the concentrator's address (in the
// tunnel's place: this checks the world, not WireGuard) and compares the
// median with the configured RTT. Run it before the concentrator owns the
// ports.
func (w *World) MeasureRTT(ctx context.Context, n int, gap time.Duration) ([]RTTResult, error) {
	var res []RTTResult
	for _, p := range w.Paths {
		r, err := w.measurePath(ctx, p, n, gap)
		if err != nil {
			return res, err
		}
		res = append(res, r)
	}
	return res, nil
}

func (w *World) measurePath(ctx context.Context, p *Path, n int, gap time.Duration) (RTTResult, error) {
	r := RTTResult{Path: p.Name, SetMs: ms(p.Link.RTT)}
	var echo, probe *net.UDPConn
	err := inNetns(w.Conc, func() error {
		var err error
		echo, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ConcPublic), Port: p.Port})
		return err
	})
	if err != nil {
		return r, fmt.Errorf("ListenUDP(%s:%d in %s): %w", ConcPublic, p.Port, w.Conc, err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			m, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:m], from)
		}
	}()
	err = inNetns(w.Router, func() error {
		var err error
		probe, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(p.Gateway()), Port: p.Port})
		return err
	})
	if err != nil {
		return r, fmt.Errorf("DialUDP(%s:%d in %s): %w", p.Gateway(), p.Port, w.Router, err)
	}
	defer probe.Close()
	var rtts []time.Duration
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		msg := fmt.Appendf(nil, "probe %d", i)
		t := time.Now()
		if _, err := probe.Write(msg); err != nil {
			return r, fmt.Errorf("probe %s: Write: %w", p.Name, err)
		}
		probe.SetReadDeadline(t.Add(p.Link.RTT*3 + 500*time.Millisecond))
		for {
			m, err := probe.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // lost: a relay with loss 0 should not, the count shows it
				}
				return r, fmt.Errorf("probe %s: Read: %w", p.Name, err)
			}
			if string(buf[:m]) == string(msg) {
				rtts = append(rtts, time.Since(t))
				break
			}
		}
		time.Sleep(gap)
	}
	r.Probes = len(rtts)
	if len(rtts) < n/2 {
		return r, fmt.Errorf("path %s: only %d of %d probes came back", p.Name, len(rtts), n)
	}
	slices.Sort(rtts)
	r.MinMs, r.MedianMs, r.MaxMs = ms(rtts[0]), ms(rtts[len(rtts)/2]), ms(rtts[len(rtts)-1])
	r.P99Ms = ms(rtts[min(len(rtts)-1, len(rtts)*99/100)])
	tol := max(0.1*r.SetMs, 1)
	r.OK = r.MedianMs >= r.SetMs-tol && r.MedianMs <= r.SetMs+tol
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

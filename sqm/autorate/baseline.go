package autorate

import "time"

// BaselineConfig holds cake-autorate's tunables; DefaultBaseline has its published defaults
// (defaults.sh of lynxthecat/cake-autorate).
type BaselineConfig struct {
	Bounds
	RateInterval             time.Duration // monitor_achieved_rates_interval_ms = 200
	HighLoad                 float64       // high_load_thr = 0.75
	ActiveThreshold          uint64        // connection_active_thr_kbps = 2000 (bit/s here)
	DelayThreshold           time.Duration // owd_delta_delay_thr_ms = 30
	AvgDeltaMaxAdjustUp      time.Duration // avg_owd_delta_max_adjust_up_thr_ms = 10
	AvgDeltaMaxAdjustDown    time.Duration // avg_owd_delta_max_adjust_down_thr_ms = 60
	Window, Threshold        int           // bufferbloat_detection_window = 6, _thr = 3
	AlphaBaselineIncrease    float64       // 0.001
	AlphaBaselineDecrease    float64       // 0.9
	MinAdjustDownBufferbloat float64       // 0.99
	MaxAdjustDownBufferbloat float64       // 0.75
	MinAdjustUpLoadHigh      float64       // 1.0
	MaxAdjustUpLoadHigh      float64       // 1.04
	AdjustDownLoadLow        float64       // 0.99
	AdjustUpLoadLow          float64       // 1.01
	BufferbloatRefractory    time.Duration // 300 ms
	DecayRefractory          time.Duration // 1000 ms
}

// DefaultBaseline returns cake-autorate's defaults within b.
func DefaultBaseline(b Bounds) BaselineConfig {
	return BaselineConfig{
		Bounds:                   b,
		RateInterval:             200 * time.Millisecond,
		HighLoad:                 0.75,
		ActiveThreshold:          2000e3,
		DelayThreshold:           30 * time.Millisecond,
		AvgDeltaMaxAdjustUp:      10 * time.Millisecond,
		AvgDeltaMaxAdjustDown:    60 * time.Millisecond,
		Window:                   6,
		Threshold:                3,
		AlphaBaselineIncrease:    0.001,
		AlphaBaselineDecrease:    0.9,
		MinAdjustDownBufferbloat: 0.99,
		MaxAdjustDownBufferbloat: 0.75,
		MinAdjustUpLoadHigh:      1.0,
		MaxAdjustUpLoadHigh:      1.04,
		AdjustDownLoadLow:        0.99,
		AdjustUpLoadLow:          1.01,
		BufferbloatRefractory:    300 * time.Millisecond,
		DecayRefractory:          time.Second,
	}
}

type loadState int

const (
	loadIdle loadState = iota
	loadLow
	loadHigh
)

// Baseline re-implements cake-autorate's rate control (cake-autorate.sh, main loop), for one
// direction and one reflector (our concentrator):
//   - achieved rate from the byte counter every RateInterval; load high when it exceeds
//     HighLoad of the shaper rate, idle below ActiveThreshold;
//   - on every delay sample: baseline EWMA (fast down, slow up), delta = delay − baseline;
//     bufferbloat when Threshold of the last Window deltas exceed DelayThreshold;
//   - bufferbloat (at most every BufferbloatRefractory): rate × 0.99…0.75, scaled by the
//     window's average delta between DelayThreshold and AvgDeltaMaxAdjustDown;
//   - high load, once per achieved-rate update: rate × 1.0…1.04, scaled down as the average
//     delta approaches DelayThreshold;
//   - otherwise, at most every DecayRefractory: ×0.99 / ×1.01 towards Base.
//
// Like the original, it only acts when a delay sample arrives.
type Baseline struct {
	cfg  BaselineConfig
	rate float64

	meter        rateMeter
	lastRateAt   time.Time
	load         loadState
	rateUpdated  bool
	baseline     float64 // µs
	haveBaseline bool
	delays       []bool
	deltas       []float64 // µs
	idx          int

	lastBufferbloat, lastDecay time.Time
}

// NewBaseline returns a cake-autorate controller starting at cfg.Base.
func NewBaseline(cfg BaselineConfig) *Baseline {
	return &Baseline{
		cfg:    cfg,
		rate:   float64(cfg.Base),
		meter:  rateMeter{keep: 2 * cfg.RateInterval},
		delays: make([]bool, cfg.Window),
		deltas: make([]float64, cfg.Window),
	}
}

func (c *Baseline) Rate() uint64 { return uint64(c.rate) }

func (c *Baseline) Observe(s Sample) {
	c.meter.add(s.At, s.TxBytes)
	if c.lastRateAt.IsZero() {
		c.lastRateAt = s.At
	}
	if s.At.Sub(c.lastRateAt) >= c.cfg.RateInterval {
		if achieved, ok := c.meter.between(c.lastRateAt, s.At); ok {
			c.lastRateAt = s.At
			c.rateUpdated = true
			switch {
			case achieved > c.cfg.HighLoad*c.rate:
				c.load = loadHigh
			case achieved > float64(c.cfg.ActiveThreshold):
				c.load = loadLow
			default:
				c.load = loadIdle
			}
		}
	}
	for _, d := range s.Delays {
		c.onDelay(s.At, float64(d.Delay.Microseconds()))
	}
}

func (c *Baseline) onDelay(now time.Time, owd float64) {
	cfg := &c.cfg
	if !c.haveBaseline {
		c.baseline, c.haveBaseline = owd, true
	} else {
		alpha := cfg.AlphaBaselineDecrease
		if owd >= c.baseline {
			alpha = cfg.AlphaBaselineIncrease
		}
		c.baseline = alpha*owd + (1-alpha)*c.baseline
	}
	delta := owd - c.baseline
	thr := float64(cfg.DelayThreshold.Microseconds())
	c.delays[c.idx] = delta > thr
	c.deltas[c.idx] = delta
	c.idx = (c.idx + 1) % cfg.Window
	n, sum := 0, 0.0
	for i := range c.delays {
		if c.delays[i] {
			n++
		}
		sum += c.deltas[i]
	}
	avg := sum / float64(cfg.Window)
	up := float64(cfg.AvgDeltaMaxAdjustUp.Microseconds())
	down := float64(cfg.AvgDeltaMaxAdjustDown.Microseconds())

	switch {
	case n >= cfg.Threshold:
		if now.Sub(c.lastBufferbloat) > cfg.BufferbloatRefractory {
			f := 1.0
			if down > thr {
				f = min(max((avg-thr)/(down-thr), 0), 1)
			}
			c.rate *= cfg.MinAdjustDownBufferbloat - f*(cfg.MinAdjustDownBufferbloat-cfg.MaxAdjustDownBufferbloat)
			c.lastBufferbloat, c.lastDecay = now, now
		}
	case c.load == loadHigh:
		if c.rateUpdated && now.Sub(c.lastBufferbloat) > cfg.BufferbloatRefractory {
			f := 1.0
			if thr > up {
				f = min(max((thr-avg)/(thr-up), 0), 1)
			}
			c.rate *= cfg.MinAdjustUpLoadHigh - f*(cfg.MinAdjustUpLoadHigh-cfg.MaxAdjustUpLoadHigh)
			c.rateUpdated = false
			c.lastDecay = now
		}
	default:
		if now.Sub(c.lastDecay) > cfg.DecayRefractory {
			base := float64(cfg.Base)
			if c.rate > base {
				c.rate = max(c.rate*cfg.AdjustDownLoadLow, base)
			} else if c.rate < base {
				c.rate = min(c.rate*cfg.AdjustUpLoadLow, base)
			}
			c.lastDecay = now
		}
	}
	c.rate = cfg.clamp(c.rate)
	// cake-autorate works in integer kbit/s.
	c.rate = float64(uint64(c.rate/1000) * 1000)
}

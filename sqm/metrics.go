package sqm

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	labelsDir = []string{"uplink", "direction"}

	descRate     = prometheus.NewDesc("sqm_rate_bps", "CAKE bandwidth of the direction (bit/s) as last set.", labelsDir, nil)
	descTarget   = prometheus.NewDesc("sqm_target_rate_bps", "Rate the autorate controller wants now (bit/s).", labelsDir, nil)
	descAchieved = prometheus.NewDesc("sqm_achieved_bps", "Throughput of the direction over the last second, from the interface counter (autorate directions).", labelsDir, nil)
	descCapEst   = prometheus.NewDesc("sqm_capacity_estimate_bps", "Bottleneck capacity the controller last derived from the delay gradient (0 unknown).", labelsDir, nil)
	descChanges  = prometheus.NewDesc("sqm_rate_changes_total", "Rate changes applied to the kernel.", labelsDir, nil)
	descBacklog  = prometheus.NewDesc("sqm_backlog_bytes", "Bytes queued in CAKE, all tins.", labelsDir, nil)
	descDrops    = prometheus.NewDesc("sqm_drops_total", "Packets CAKE dropped (AQM and overflow), all tins.", labelsDir, nil)
	descMarks    = prometheus.NewDesc("sqm_marks_total", "Packets CAKE ECN-marked, all tins.", labelsDir, nil)
	descDelay    = prometheus.NewDesc("sqm_delay_seconds", "CAKE's average queueing delay of the tin.", []string{"uplink", "direction", "tin"}, nil)
)

// Describe implements prometheus.Collector.
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRate, descTarget, descAchieved, descCapEst, descChanges, descBacklog, descDrops, descMarks, descDelay} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. CAKE's statistics are read at scrape time; a
// direction whose statistics cannot be read (no sch_cake, device gone) only has the rate.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	for _, sn := range s.snapshot() {
		st := sn.st
		l := []string{st.Uplink, st.Direction}
		rate := st.RateBps
		if rate == 0 {
			rate = st.TargetBps
		}
		ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, float64(rate), l...)
		if st.Controller != "fixed" {
			ch <- prometheus.MustNewConstMetric(descTarget, prometheus.GaugeValue, float64(st.TargetBps), l...)
			ch <- prometheus.MustNewConstMetric(descAchieved, prometheus.GaugeValue, st.AchievedBps, l...)
			ch <- prometheus.MustNewConstMetric(descCapEst, prometheus.GaugeValue, float64(st.CapacityEstimate), l...)
			ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(st.RateChanges), l...)
		}
		cs, err := s.o.Backend.Stats(sn.dev, sn.dir)
		if err != nil {
			continue
		}
		backlog, drops, marks, _ := cs.Totals()
		ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(backlog), l...)
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(drops), l...)
		ch <- prometheus.MustNewConstMetric(descMarks, prometheus.CounterValue, float64(marks), l...)
		for i, t := range cs.Tins {
			ch <- prometheus.MustNewConstMetric(descDelay, prometheus.GaugeValue, t.AvgDelay.Seconds(), st.Uplink, st.Direction, tinLabel(sn.tins, i))
		}
	}
}

var _ prometheus.Collector = (*Service)(nil)

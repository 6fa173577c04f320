package wifi

import (
	"slices"
	"time"
)

// SignalPolicy demotes a WiFi uplink whose signal stays weak, the way the
// modem's RSSI rule demotes LTE: a single bad sample (a person walking
// past the antenna) changes nothing; Hold of continuously bad samples
// demotes, and Hold of samples above Threshold+Hysteresis restores, so a
// signal hovering at the threshold cannot flap the uplink.
type SignalPolicy struct {
	Threshold  float64 // dBm; below it counts as weak
	Hysteresis float64 // dB above Threshold needed to count as good again
	Hold       time.Duration

	demoted bool
	since   time.Time // start of the current run of samples against the state
}

// Observe feeds one sample taken at now and returns the demoted state and
// whether this sample changed it.
func (p *SignalPolicy) Observe(now time.Time, dbm float64) (demoted, changed bool) {
	against := dbm < p.Threshold // weak while not demoted
	if p.demoted {
		against = dbm >= p.Threshold+p.Hysteresis // strong while demoted
	}
	if !against {
		p.since = time.Time{}
		return p.demoted, false
	}
	if p.since.IsZero() {
		p.since = now
	}
	if now.Sub(p.since) >= p.Hold {
		p.demoted = !p.demoted
		p.since = time.Time{}
		return p.demoted, true
	}
	return p.demoted, false
}

// Demoted is the current state.
func (p *SignalPolicy) Demoted() bool { return p.demoted }

// Reset forgets the history (after a disconnect: the next AP starts
// clean) and reports whether the uplink was demoted.
func (p *SignalPolicy) Reset() (wasDemoted bool) {
	wasDemoted = p.demoted
	p.demoted, p.since = false, time.Time{}
	return wasDemoted
}

// bandRank is the position of band in prefs (lower is better); bands not
// allowed rank last.
func bandRank(prefs []string, band string) int {
	if i := slices.Index(prefs, band); i >= 0 {
		return i
	}
	return len(prefs)
}

// PreferredBSS picks where to be among scan results: our SSID, at least
// minSignal dBm, the most preferred band first, then the strongest. The
// band order is ours (6 GHz > 5 GHz > 2.4 GHz by default) rather than
// wpa_supplicant's throughput estimate, which on a marginal 6 GHz signal
// may pick 2.4 GHz and stay there.
func PreferredBSS(results []BSS, ssid string, prefs []string, minSignal int) (BSS, bool) {
	var best BSS
	found := false
	for _, b := range results {
		if b.SSID != ssid || b.Signal < minSignal || bandRank(prefs, BandOf(b.Freq)) >= len(prefs) {
			continue
		}
		if !found {
			best, found = b, true
			continue
		}
		rb, rc := bandRank(prefs, BandOf(b.Freq)), bandRank(prefs, BandOf(best.Freq))
		if rb < rc || (rb == rc && b.Signal > best.Signal) {
			best = b
		}
	}
	return best, found
}

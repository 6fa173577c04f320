// Package failover decides which uplinks carry traffic.
//
// It is pure logic over observations (carrier, in-tunnel liveness, signal
// demotion) and time, with no kernel access, so the same decisions are
// tested deterministically and then carried out by the supervisor through
// netlink. Its asymmetry is deliberate: a path that goes silent is dropped
// at once (every millisecond of a dead primary is a stalled upload), but a
// path that comes back must stay healthy for a hold-down period before it
// is trusted again, so a flapping or lossy link cannot make traffic bounce.
package failover

import (
	"sort"
	"time"
)

// Role of an uplink as configured.
type Role int

const (
	Primary Role = iota
	Backup
)

// Observation is what the supervisor knows about one uplink right now.
type Observation struct {
	Name     string
	Role     Role
	Priority int
	Carrier  bool // link has carrier (and the uplink has its address)
	Alive    bool // in-tunnel probes or tunnel traffic within the timeout
	Demoted  bool // weak signal (LTE RSSI, WiFi signal) held past its hold time
}

// State of one uplink in the policy.
type State string

const (
	StateDown       State = "down"       // unusable
	StateRecovering State = "recovering" // usable, waiting out the hold-down
	StateUp         State = "up"         // in use
)

// Mode is how an in-use uplink's MPTCP endpoint is flagged.
type Mode int

const (
	// Unused: no endpoint, no subflows.
	Unused Mode = iota
	// Active: endpoint with the subflow flag; the scheduler uses it.
	Active
	// Standby: endpoint with subflow+backup: the subflow exists, so a
	// failover needs no handshake, but it carries data only when no active
	// subflow is left.
	Standby
)

func (m Mode) String() string {
	switch m {
	case Active:
		return "active"
	case Standby:
		return "standby"
	}
	return "unused"
}

// Transition is one change the policy made, for logs, events and metrics.
type Transition struct {
	Uplink string
	From   State
	To     State
	Reason string
}

// Decision is the desired state.
type Decision struct {
	Modes map[string]Mode
	// Preferred carries new connections (the route to the service
	// address); "" when nothing is usable.
	Preferred   string
	Transitions []Transition
}

type uplinkState struct {
	state       State
	usableSince time.Time
	lastReason  string
	demoted     bool
	everUp      bool
}

// Policy holds per-uplink state across updates.
type Policy struct {
	HoldDown time.Duration
	states   map[string]*uplinkState
}

// New returns a policy with the given hold-down.
func New(holdDown time.Duration) *Policy {
	return &Policy{HoldDown: holdDown, states: map[string]*uplinkState{}}
}

// State returns an uplink's current state.
func (p *Policy) State(name string) State {
	if s, ok := p.states[name]; ok {
		return s.state
	}
	return StateDown
}

func reason(o Observation) string {
	switch {
	case !o.Carrier:
		return "carrier"
	case !o.Alive:
		return "probe timeout"
	}
	return ""
}

// Update feeds observations taken at now and returns the decision.
func (p *Policy) Update(now time.Time, obs []Observation) Decision {
	d := Decision{Modes: map[string]Mode{}}
	for _, o := range obs {
		s, ok := p.states[o.Name]
		if !ok {
			s = &uplinkState{state: StateDown}
			p.states[o.Name] = s
		}
		usable := o.Carrier && o.Alive
		from := s.state
		switch {
		case !usable:
			s.usableSince = time.Time{}
			if s.state != StateDown {
				s.state = StateDown
				s.lastReason = reason(o)
			}
		case s.state == StateDown:
			s.usableSince = now
			// The very first time an uplink is seen healthy there is
			// nothing to protect against: use it at once, so start-up
			// doesn't wait a hold-down.
			if !s.everUp {
				s.state = StateUp
				s.lastReason = "healthy"
			} else {
				s.state = StateRecovering
				s.lastReason = "healthy, holding down"
			}
		case s.state == StateRecovering && now.Sub(s.usableSince) >= p.HoldDown:
			s.state = StateUp
			s.lastReason = "healthy for hold-down"
		}
		if s.state == StateUp {
			s.everUp = true
		}
		if from != s.state {
			d.Transitions = append(d.Transitions, Transition{Uplink: o.Name, From: from, To: s.state, Reason: s.lastReason})
		}
		if s.demoted != o.Demoted {
			s.demoted = o.Demoted
			r := "signal recovered"
			if o.Demoted {
				r = "weak signal: demoted"
			}
			d.Transitions = append(d.Transitions, Transition{Uplink: o.Name, From: s.state, To: s.state, Reason: r})
		}
		switch {
		case s.state != StateUp:
			d.Modes[o.Name] = Unused
		case o.Role == Backup || o.Demoted:
			d.Modes[o.Name] = Standby
		default:
			d.Modes[o.Name] = Active
		}
	}
	// Preference for new connections: active before standby, then
	// primaries, then priority, then a stable name order. A demoted
	// uplink ranks below every healthy one but is still better than none.
	cands := make([]Observation, 0, len(obs))
	for _, o := range obs {
		if d.Modes[o.Name] != Unused {
			cands = append(cands, o)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if (d.Modes[a.Name] == Active) != (d.Modes[b.Name] == Active) {
			return d.Modes[a.Name] == Active
		}
		if a.Role != b.Role {
			return a.Role == Primary
		}
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.Name < b.Name
	})
	if len(cands) > 0 {
		d.Preferred = cands[0].Name
	}
	return d
}

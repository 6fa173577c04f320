// Package sim is a modem simulator on a pseudo-terminal. Tests, the lab and
// the demo drive the real driver against it: it replays a family's replies
// (kept verbatim from real devices where we have them), sends URCs on a
// schedule and injects the faults a driver must survive (reset, silence,
// garbage, floods, a vanishing port). Its data call runs a hook, so in the
// lab the simulated modem controls wwan0.
package sim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Profile describes one simulated modem. See modem/testdata/profiles.
type Profile struct {
	Name string `json:"name"`
	// Echo is the echo state after power-up (real modems: on).
	Echo bool `json:"echo"`
	// Unknown is the reply to a command no entry matches (default
	// ["ERROR"]; some Quectel firmwares say "COMMAND NOT SUPPORT").
	Unknown []string `json:"unknown"`
	// Vars are substituted as ${name} in replies and URCs. The data-call
	// actions set "data" (0/1) and "ip".
	Vars map[string]string `json:"vars"`
	// DataIP is the address the data call gets.
	DataIP string `json:"data_ip"`
	// Boot is what the modem prints after a reset, unasked.
	Boot     []string  `json:"boot"`
	Commands []Command `json:"commands"`
	Schedule []Event   `json:"schedule"`
	// Repeat, when set, restarts the schedule every Repeat.
	Repeat Duration `json:"repeat"`
	// Include names profiles (relative to this file) whose commands are
	// tried after this one's, and whose vars and boot lines fill gaps.
	Include []string `json:"include"`
}

// Command is one reply rule. Cmd matches the command line exactly (case
// does not matter) or, ending in "*", by prefix. The first rule whose When
// vars all match wins.
type Command struct {
	Cmd   string            `json:"cmd"`
	When  map[string]string `json:"when,omitempty"`
	Reply []string          `json:"reply"`
	// Delay holds the reply back (the modem is busy; later commands queue).
	Delay Duration `json:"delay,omitempty"`
	// Set assigns vars after replying.
	Set map[string]string `json:"set,omitempty"`
	// Action: data_up, data_down, reset (boot lines after the reply).
	Action string `json:"action,omitempty"`
}

// Event is a scheduled URC, var change or fault, At after start (or after
// the schedule restarted).
type Event struct {
	At     Duration          `json:"at"`
	URC    []string          `json:"urc,omitempty"`
	Repeat int               `json:"repeat,omitempty"` // send URC this many times (a flood)
	Set    map[string]string `json:"set,omitempty"`
	Action string            `json:"action,omitempty"` // data_up, data_down
	Fault  string            `json:"fault,omitempty"`  // reset, silence, garbage, vanish
	For    Duration          `json:"for,omitempty"`    // silence / vanish length
	Data   string            `json:"data,omitempty"`   // garbage bytes
	// Late: after a silence, send the replies held back instead of dropping them.
	Late bool `json:"late,omitempty"`
}

// Duration is a time.Duration written as "1.5s" in JSON.
type Duration time.Duration

// UnmarshalJSON accepts "1.5s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("duration %s: want \"1.5s\" or seconds", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// MarshalJSON writes "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadProfile reads and checks a profile file.
func LoadProfile(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	p, err := ParseProfile(b)
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	for _, inc := range p.Include {
		if !filepath.IsAbs(inc) {
			inc = filepath.Join(filepath.Dir(path), inc)
		}
		base, err := LoadProfile(inc)
		if err != nil {
			return nil, fmt.Errorf("profile %s: include: %w", path, err)
		}
		p.Commands = append(p.Commands, base.Commands...)
		for k, v := range base.Vars {
			if _, ok := p.Vars[k]; !ok || (k == "data" || k == "ip") && p.Vars[k] == defaultVars[k] {
				p.Vars[k] = v
			}
		}
		if len(p.Boot) == 0 {
			p.Boot = base.Boot
		}
		p.Schedule = append(p.Schedule, base.Schedule...)
	}
	return p, nil
}

var defaultVars = map[string]string{"data": "0", "ip": "0.0.0.0"}

// ParseProfile parses and checks a JSON profile.
func ParseProfile(b []byte) (*Profile, error) {
	var p Profile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	for i, c := range p.Commands {
		if c.Cmd == "" {
			return nil, fmt.Errorf("commands[%d]: cmd is empty", i)
		}
		if !validAction(c.Action) {
			return nil, fmt.Errorf("commands[%d] (%s): unknown action %q", i, c.Cmd, c.Action)
		}
	}
	for i, e := range p.Schedule {
		if !validAction(e.Action) {
			return nil, fmt.Errorf("schedule[%d]: unknown action %q", i, e.Action)
		}
		switch e.Fault {
		case "", "reset", "silence", "garbage", "vanish":
		default:
			return nil, fmt.Errorf("schedule[%d]: unknown fault %q", i, e.Fault)
		}
	}
	if p.Unknown == nil {
		p.Unknown = []string{"ERROR"}
	}
	if p.Vars == nil {
		p.Vars = map[string]string{}
	}
	for k, v := range defaultVars {
		if _, ok := p.Vars[k]; !ok {
			p.Vars[k] = v
		}
	}
	if p.DataIP == "" {
		p.DataIP = "10.64.64.64"
	}
	return &p, nil
}

func validAction(a string) bool {
	switch a {
	case "", "data_up", "data_down", "reset":
		return true
	}
	return false
}

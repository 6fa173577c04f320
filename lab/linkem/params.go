package linkem

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Direction names one half of a relayed path.
type Direction int

const (
	// Up is client (router) to target (concentrator).
	Up Direction = iota
	// Down is target (concentrator) to client (router).
	Down
)

func (d Direction) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// ParseDirection accepts "up" and "down".
func ParseDirection(s string) (Direction, error) {
	switch strings.ToLower(s) {
	case "up":
		return Up, nil
	case "down":
		return Down, nil
	}
	return 0, fmt.Errorf("direction %q: want up or down", s)
}

func (d Direction) valid() bool { return d == Up || d == Down }

// Params describe one direction of an emulated link.
type Params struct {
	// Rate is the line rate in bit/s; 0 means unlimited.
	Rate uint64
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Buffer is the bottleneck buffer in bytes (datagrams waiting for
	// serialization, counted with Overhead); 0 means unlimited. A datagram
	// arriving at an empty queue is always admitted.
	Buffer int
	// Loss is the probability (0..1) that a datagram is lost on arrival.
	Loss float64
	// Blackhole drops every datagram, including those in flight.
	Blackhole bool
	// Overhead is added to each datagram's UDP payload size for
	// serialization and buffer accounting: 28 bytes for IPv4+UDP headers,
	// 48 for IPv6, plus link framing (e.g. 14+4 for Ethernet) to match
	// how the modelled ISP counts its line rate.
	Overhead int
}

// Validate reports the first field out of range.
func (p Params) Validate() error {
	switch {
	case p.Delay < 0:
		return fmt.Errorf("delay %v: must not be negative", p.Delay)
	case p.Delay > time.Minute:
		return fmt.Errorf("delay %v: larger than 1m", p.Delay)
	case p.Buffer < 0:
		return fmt.Errorf("buffer %d: must not be negative", p.Buffer)
	case math.IsNaN(p.Loss) || p.Loss < 0 || p.Loss > 1:
		return fmt.Errorf("loss %v: must be within 0..1", p.Loss)
	case p.Overhead < 0 || p.Overhead > 1<<16:
		return fmt.Errorf("overhead %d: must be within 0..65536", p.Overhead)
	}
	return nil
}

// clamp brings p into range; Set cannot return an error, so it never
// applies a value the model cannot handle.
func (p Params) clamp() Params {
	if p.Delay < 0 {
		p.Delay = 0
	}
	if p.Delay > time.Minute {
		p.Delay = time.Minute
	}
	if p.Buffer < 0 {
		p.Buffer = 0
	}
	if math.IsNaN(p.Loss) || p.Loss < 0 {
		p.Loss = 0
	}
	if p.Loss > 1 {
		p.Loss = 1
	}
	if p.Overhead < 0 {
		p.Overhead = 0
	}
	if p.Overhead > 1<<16 {
		p.Overhead = 1 << 16
	}
	return p
}

func (p Params) String() string {
	s := fmt.Sprintf("rate %s delay %v buffer %dB loss %g", FormatRate(p.Rate), p.Delay, p.Buffer, p.Loss)
	if p.Overhead != 0 {
		s += fmt.Sprintf(" overhead %dB", p.Overhead)
	}
	if p.Blackhole {
		s += " blackhole"
	}
	return s
}

// paramsJSON is the wire form: rate in bit/s, delay as a Go duration string.
// Decoding accepts a rate string ("20mbit") and a delay in nanoseconds too,
// so the socket can be driven with curl.
type paramsJSON struct {
	Rate      json.RawMessage `json:"rate,omitempty"`
	Delay     json.RawMessage `json:"delay,omitempty"`
	Buffer    *int            `json:"buffer,omitempty"`
	Loss      *float64        `json:"loss,omitempty"`
	Blackhole *bool           `json:"blackhole,omitempty"`
	Overhead  *int            `json:"overhead,omitempty"`
}

// MarshalJSON writes {"rate":bit/s,"delay":"5ms","buffer":...,"loss":...,"blackhole":...,"overhead":...}.
func (p Params) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Rate      uint64  `json:"rate"`
		Delay     string  `json:"delay"`
		Buffer    int     `json:"buffer"`
		Loss      float64 `json:"loss"`
		Blackhole bool    `json:"blackhole"`
		Overhead  int     `json:"overhead"`
	}{p.Rate, p.Delay.String(), p.Buffer, p.Loss, p.Blackhole, p.Overhead})
}

// UnmarshalJSON overwrites only the fields present, so decoding into the
// current Params is a partial update.
func (p *Params) UnmarshalJSON(b []byte) error {
	var j paramsJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	if len(j.Rate) > 0 {
		var n uint64
		var s string
		if err := json.Unmarshal(j.Rate, &n); err == nil {
			p.Rate = n
		} else if err := json.Unmarshal(j.Rate, &s); err == nil {
			r, err := ParseRate(s)
			if err != nil {
				return fmt.Errorf("params: rate: %w", err)
			}
			p.Rate = r
		} else {
			return fmt.Errorf("params: rate %s: want bit/s or a string like \"20mbit\"", j.Rate)
		}
	}
	if len(j.Delay) > 0 {
		var n int64
		var s string
		if err := json.Unmarshal(j.Delay, &n); err == nil {
			p.Delay = time.Duration(n)
		} else if err := json.Unmarshal(j.Delay, &s); err == nil {
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("params: delay: %w", err)
			}
			p.Delay = d
		} else {
			return fmt.Errorf("params: delay %s: want nanoseconds or a string like \"2.5ms\"", j.Delay)
		}
	}
	if j.Buffer != nil {
		p.Buffer = *j.Buffer
	}
	if j.Loss != nil {
		p.Loss = *j.Loss
	}
	if j.Blackhole != nil {
		p.Blackhole = *j.Blackhole
	}
	if j.Overhead != nil {
		p.Overhead = *j.Overhead
	}
	return nil
}

var rateUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first so "mbit" is not read as "bit".
	{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
}

// ParseRate reads a rate in bit/s as tc writes it: "220mbit", "20Mbit",
// "500kbit", "1gbit", "2.5mbit", "64000bit" or a bare number of bit/s.
// Byte-based units ("kbps" means kilobytes per second in tc) are refused
// rather than guessed.
func ParseRate(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range rateUnits {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSuffix(t, u.suffix)
			mult = u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || t == "" || strings.ContainsAny(t, "eEnNiIxXpP_") {
		return 0, fmt.Errorf("rate %q: want a number with bit, kbit, mbit or gbit", s)
	}
	v *= mult
	if v < 0 || v > 1e15 {
		return 0, fmt.Errorf("rate %q: out of range 0..1000tbit", s)
	}
	return uint64(math.Round(v)), nil
}

// FormatRate writes a rate the way ParseRate reads it.
func FormatRate(r uint64) string {
	switch {
	case r == 0:
		return "unlimited"
	case r%1e9 == 0:
		return fmt.Sprintf("%dgbit", r/1e9)
	case r%1e6 == 0:
		return fmt.Sprintf("%dmbit", r/1e6)
	case r%1e3 == 0:
		return fmt.Sprintf("%dkbit", r/1e3)
	case r >= 1e6:
		return strconv.FormatFloat(float64(r)/1e6, 'f', -1, 64) + "mbit"
	}
	return fmt.Sprintf("%dbit", r)
}

// Step sets the line rate At an offset from the trace's start.
type Step struct {
	At   time.Duration
	Rate uint64
}

// Trace is a list of rate steps in non-decreasing time order.
type Trace []Step

// ParseTrace reads a trace file: one step per line, "<seconds> <rate>"
// (e.g. "12.5 20mbit"), blank lines and '#' comments ignored. Errors name
// the line number.
func ParseTrace(r io.Reader) (Trace, error) {
	var tr Trace
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("trace line %d: %q: want \"<seconds> <rate>\"", line, strings.TrimSpace(text))
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil || math.IsNaN(sec) || math.IsInf(sec, 0) || sec < 0 || sec > 1e6 {
			return nil, fmt.Errorf("trace line %d: time %q: want seconds within 0..1e6", line, f[0])
		}
		rate, err := ParseRate(f[1])
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		at := time.Duration(math.Round(sec * float64(time.Second)))
		if n := len(tr); n > 0 && at < tr[n-1].At {
			return nil, fmt.Errorf("trace line %d: time %v is before the previous step's %v", line, at, tr[n-1].At)
		}
		tr = append(tr, Step{At: at, Rate: rate})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trace line %d: %w", line+1, err)
	}
	if len(tr) == 0 {
		return nil, errors.New("trace: no steps")
	}
	return tr, nil
}

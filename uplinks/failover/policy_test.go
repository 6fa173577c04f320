package failover

import (
	"math/rand/v2"
	"testing"
	"time"
)

func obs(fiberCarrier, fiberAlive, lteAlive bool) []Observation {
	return []Observation{
		{Name: "fiber", Role: Primary, Priority: 300, Carrier: fiberCarrier, Alive: fiberAlive},
		{Name: "lte", Role: Backup, Priority: 100, Carrier: true, Alive: lteAlive},
	}
}

func TestFailoverAndHoldDown(t *testing.T) {
	p := New(3 * time.Second)
	t0 := time.Unix(1000, 0)
	d := p.Update(t0, obs(true, true, true))
	if d.Modes["fiber"] != Active || d.Modes["lte"] != Standby || d.Preferred != "fiber" {
		t.Fatalf("start: modes %v preferred %q, want fiber active, lte standby, fiber preferred", d.Modes, d.Preferred)
	}
	// Silent blackhole: dropped on the first observation.
	d = p.Update(t0.Add(time.Second), obs(true, false, true))
	if d.Modes["fiber"] != Unused || d.Preferred != "lte" {
		t.Fatalf("blackhole: modes %v preferred %q, want fiber unused, lte preferred", d.Modes, d.Preferred)
	}
	if len(d.Transitions) != 1 || d.Transitions[0].Reason != "probe timeout" {
		t.Fatalf("blackhole transitions = %+v, want one with reason probe timeout", d.Transitions)
	}
	// Back, but must wait out the hold-down.
	d = p.Update(t0.Add(2*time.Second), obs(true, true, true))
	if d.Modes["fiber"] != Unused || p.State("fiber") != StateRecovering {
		t.Fatalf("recovering: fiber mode %v state %v, want unused/recovering", d.Modes["fiber"], p.State("fiber"))
	}
	d = p.Update(t0.Add(4900*time.Millisecond), obs(true, true, true))
	if d.Modes["fiber"] != Unused {
		t.Fatalf("fiber back in use %v before the hold-down ended", d.Modes["fiber"])
	}
	d = p.Update(t0.Add(5*time.Second), obs(true, true, true))
	if d.Modes["fiber"] != Active || d.Preferred != "fiber" {
		t.Fatalf("after hold-down: modes %v preferred %q", d.Modes, d.Preferred)
	}
}

func TestFlapRestartsHoldDown(t *testing.T) {
	p := New(time.Second)
	t0 := time.Unix(0, 0)
	p.Update(t0, obs(true, true, true))
	p.Update(t0.Add(10*time.Millisecond), obs(false, false, true))
	p.Update(t0.Add(500*time.Millisecond), obs(true, true, true))
	p.Update(t0.Add(900*time.Millisecond), obs(false, false, true)) // flap
	p.Update(t0.Add(1000*time.Millisecond), obs(true, true, true))
	if d := p.Update(t0.Add(1600*time.Millisecond), obs(true, true, true)); d.Modes["fiber"] != Unused {
		t.Fatalf("a flap must restart the hold-down; fiber is %v", d.Modes["fiber"])
	}
	if d := p.Update(t0.Add(2000*time.Millisecond), obs(true, true, true)); d.Modes["fiber"] != Active {
		t.Fatalf("fiber %v one hold-down after the last flap, want active", d.Modes["fiber"])
	}
}

// The policy itself never flaps on lossy input as long as liveness (which
// needs several consecutive losses) holds; what it must guarantee is that
// independent 5% probe losses, fed through a liveness rule of "alive unless
// the last 4 probes were lost", produce no transitions in an hour.
func TestNoFlapUnderRandomLoss(t *testing.T) {
	p := New(3 * time.Second)
	r := rand.New(rand.NewPCG(1, 2))
	t0 := time.Unix(0, 0)
	lostRun := 0
	transitions := 0
	for i := 0; i < 3600*200; i++ { // an hour of 5 ms probes
		if r.Float64() < 0.05 {
			lostRun++
		} else {
			lostRun = 0
		}
		d := p.Update(t0.Add(time.Duration(i)*5*time.Millisecond), obs(true, lostRun < 4, true))
		transitions += len(d.Transitions)
	}
	// 0.05^4 per probe ≈ 4.5 expected runs in 720k probes; each costs a
	// down and (after hold-down) an up. Anything beyond that is flapping.
	if transitions > 2*12 {
		t.Fatalf("%d transitions in an hour at 5%% loss", transitions)
	}
}

func TestDemotedRanksLast(t *testing.T) {
	p := New(time.Second)
	t0 := time.Unix(0, 0)
	in := []Observation{
		{Name: "wifi", Role: Primary, Priority: 200, Carrier: true, Alive: true, Demoted: true},
		{Name: "lte", Role: Backup, Priority: 100, Carrier: true, Alive: true},
	}
	d := p.Update(t0, in)
	if d.Modes["wifi"] != Standby {
		t.Fatalf("demoted primary mode %v, want standby", d.Modes["wifi"])
	}
	if d.Preferred != "wifi" {
		// Both standby: primaries still rank first.
		t.Fatalf("preferred %q, want wifi (primary among standbys)", d.Preferred)
	}
	in[0].Demoted = false
	d = p.Update(t0.Add(time.Millisecond), in)
	if d.Modes["wifi"] != Active || len(d.Transitions) != 1 || d.Transitions[0].Reason != "signal recovered" {
		t.Fatalf("undemote: modes %v transitions %+v", d.Modes, d.Transitions)
	}
}

func TestNothingUsable(t *testing.T) {
	p := New(time.Second)
	d := p.Update(time.Unix(0, 0), obs(false, false, false))
	if d.Preferred != "" || d.Modes["fiber"] != Unused || d.Modes["lte"] != Unused {
		t.Fatalf("all down: %+v", d)
	}
}

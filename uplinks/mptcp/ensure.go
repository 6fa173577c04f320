package mptcp

import (
	"errors"
	"fmt"
)

// settable are the flags SET_FLAGS can change in place (the kernel's mask in
// mptcp_pm_nl_set_flags); any other difference needs delete+add.
const settable = FlagBackup | FlagFullmesh

// EnsureEndpoint makes exactly one endpoint exist for e.Addr with e.Flags,
// e.Port and e.IfIndex (and e.ID when non-zero): a no-op when it already
// matches, SET_FLAGS when only backup/fullmesh differ (existing subflows
// survive and get MP_PRIO), delete+add otherwise. It returns the endpoint as
// the kernel has it, so a restarted supervisor adopts what it finds.
func (c *Client) EnsureEndpoint(e Endpoint) (Endpoint, error) {
	a, err := checkAddr(e)
	if err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): %w", e, err)
	}
	if err := checkFlags(e); err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): %w", e, err)
	}
	e.Addr = a

	eps, err := c.Endpoints()
	if err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): %w", e, err)
	}
	var keep *Endpoint
	var stale []Endpoint
	for i := range eps {
		x := eps[i]
		if x.Addr != a {
			continue
		}
		if keep == nil && compatible(x, e) {
			keep = &eps[i]
			continue
		}
		stale = append(stale, x)
	}
	for _, x := range stale {
		if err := c.DelEndpoint(x.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): remove %v: %w", e, x, err)
		}
	}

	if keep != nil {
		if keep.Flags == e.Flags {
			return *keep, nil
		}
		if err := c.SetFlags(Endpoint{ID: keep.ID, Flags: e.Flags}); err != nil {
			return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): %w", e, err)
		}
		got, err := c.Endpoint(keep.ID)
		if err != nil {
			return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): %w", e, err)
		}
		if got.Flags != e.Flags {
			return got, fmt.Errorf("mptcp: EnsureEndpoint(%v): kernel kept flags %q after SET_FLAGS", e, got.Flags)
		}
		return got, nil
	}

	if err := c.AddEndpoint(e); err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): %w", e, err)
	}
	// ADD_ADDR does not report the id the kernel picked.
	eps, err = c.Endpoints()
	if err != nil {
		return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): %w", e, err)
	}
	for _, x := range eps {
		if x.Addr == a && x.Port == e.Port {
			return x, nil
		}
	}
	return Endpoint{}, fmt.Errorf("mptcp: EnsureEndpoint(%v): added, but the kernel does not list it", e)
}

// compatible reports whether existing endpoint x can become want with
// SET_FLAGS alone.
func compatible(x, want Endpoint) bool {
	return x.Port == want.Port &&
		x.IfIndex == want.IfIndex &&
		(want.ID == 0 || x.ID == want.ID) &&
		x.Flags&^settable == want.Flags&^settable
}

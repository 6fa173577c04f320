package dhcp4

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Kind says what happened to the lease.
type Kind int

const (
	// Bound: a lease is (newly) in use; apply its address and route.
	Bound Kind = iota
	// Renewed: the same binding was extended (renew, rebind or a confirmed
	// reboot); refresh the address lifetimes.
	Renewed
	// Lost: the address is no longer ours (expiry, NAK); remove it now.
	Lost
)

func (k Kind) String() string {
	switch k {
	case Bound:
		return "bound"
	case Renewed:
		return "renewed"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Update is one change of the lease, delivered synchronously to
// Client.Notify from Run's goroutine, so the address is applied before the
// client moves on.
type Update struct {
	Kind   Kind
	Lease  *Lease // the new lease (Bound, Renewed) or the lost one (Lost)
	Reason string // "obtained", "renewed", "rebound", "rebooted", "persisted", "nak", "expired"
	Err    error  // for Lost by NAK: the server's message
}

// Client runs the RFC 2131 state machine over a Transport.
type Client struct {
	Transport Transport
	Store     *Store // nil: leases are not persisted
	Notify    func(Update)
	Log       *slog.Logger

	// MinRetry is the floor of the wait between failed renew/rebind
	// attempts (RFC 2131 4.4.5 says 60s; tests use less).
	MinRetry time.Duration
	// DiscoverBackoff is the first wait after a failed DISCOVER; it doubles
	// up to MaxBackoff.
	DiscoverBackoff, MaxBackoff time.Duration
	// RebootTimeout bounds the INIT-REBOOT exchange after a restart.
	RebootTimeout time.Duration
}

func (c *Client) defaults() {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Notify == nil {
		c.Notify = func(Update) {}
	}
	if c.MinRetry <= 0 {
		c.MinRetry = 60 * time.Second
	}
	if c.DiscoverBackoff <= 0 {
		c.DiscoverBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.RebootTimeout <= 0 {
		c.RebootTimeout = 10 * time.Second
	}
}

// sleepUntil waits for t (zero: forever) or ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	if t.IsZero() {
		<-ctx.Done()
		return ctx.Err()
	}
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// deadlineCtx bounds one attempt by a lease boundary; a zero boundary
// (infinite lease) leaves the transport's own retries in charge.
func deadlineCtx(ctx context.Context, t time.Time) (context.Context, context.CancelFunc) {
	if t.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, t)
}

func (c *Client) lost(l *Lease, reason string, err error) {
	if rerr := c.Store.Remove(); rerr != nil {
		c.Log.Warn("dhcp4: removing stored lease", "err", rerr)
	}
	c.Notify(Update{Kind: Lost, Lease: l, Reason: reason, Err: err})
}

func (c *Client) bound(kind Kind, l *Lease, reason string) {
	if err := c.Store.Save(l); err != nil {
		// A lease we cannot persist still works until the next restart.
		c.Log.Warn("dhcp4: persisting lease", "path", c.Store.Path, "err", err)
	}
	c.Notify(Update{Kind: kind, Lease: l, Reason: reason})
}

// Run obtains and keeps a lease until ctx ends; it returns ctx's error.
// It does not release the lease on exit: a restarted client reuses it.
func (c *Client) Run(ctx context.Context) error {
	c.defaults()
	if c.Transport == nil {
		return errors.New("dhcp4: no transport")
	}
	lease, err := c.Store.Load()
	if err != nil {
		c.Log.Warn("dhcp4: ignoring stored lease", "err", err)
		lease = nil
	}
	if lease != nil && lease.Expired(time.Now()) {
		c.Log.Info("dhcp4: stored lease expired", "lease", lease)
		c.lost(lease, "expired", nil)
		lease = nil
	}
	if lease != nil {
		if lease, err = c.reboot(ctx, lease); err != nil {
			return err
		}
	}
	backoff := c.DiscoverBackoff
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if lease == nil {
			l, err := c.Transport.Discover(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c.Log.Info("dhcp4: no lease yet", "err", err, "retry_in", backoff)
				if err := sleepUntil(ctx, time.Now().Add(backoff)); err != nil {
					return err
				}
				backoff = min(2*backoff, c.MaxBackoff)
				continue
			}
			backoff = c.DiscoverBackoff
			lease = l
			c.bound(Bound, lease, "obtained")
		}
		next, err := c.keep(ctx, lease)
		if err != nil {
			return err
		}
		lease = next
	}
}

// reboot verifies a stored lease with INIT-REBOOT. Silence keeps the
// lease (RFC 2131 3.7 allows using it until expiry); NAK drops it.
func (c *Client) reboot(ctx context.Context, l *Lease) (*Lease, error) {
	bctx, cancel := deadlineCtx(ctx, earliest(l.Expiry(), time.Now().Add(c.RebootTimeout)))
	nl, err := c.Transport.Reboot(bctx, l)
	cancel()
	switch {
	case err == nil && nl.Address == l.Address:
		c.bound(Bound, nl, "rebooted")
		return nl, nil
	case err == nil:
		// A different address: the old one is gone.
		c.lost(l, "server assigned a new address", nil)
		c.bound(Bound, nl, "obtained")
		return nl, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, ErrNAK):
		c.Log.Info("dhcp4: stored lease refused", "lease", l, "err", err)
		c.lost(l, "nak", err)
		return nil, nil
	case l.Expired(time.Now()):
		c.lost(l, "expired", nil)
		return nil, nil
	default:
		c.Log.Info("dhcp4: no answer to reboot, using stored lease", "lease", l, "err", err)
		c.bound(Bound, l, "persisted")
		return l, nil
	}
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// keep holds l through BOUND, RENEWING and REBINDING. It returns the
// renewed lease, or nil once l is lost (after notifying).
func (c *Client) keep(ctx context.Context, l *Lease) (*Lease, error) {
	if err := sleepUntil(ctx, l.RenewAt()); err != nil {
		return nil, err
	}
	phases := []struct {
		name, reason string
		until        time.Time
		try          func(context.Context, *Lease) (*Lease, error)
	}{
		{"renew", "renewed", l.RebindAt(), c.Transport.Renew},
		{"rebind", "rebound", l.Expiry(), c.Transport.Rebind},
	}
	for _, ph := range phases {
		for time.Now().Before(ph.until) {
			actx, cancel := deadlineCtx(ctx, ph.until)
			nl, err := ph.try(actx, l)
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err == nil {
				if nl.Address != l.Address {
					c.lost(l, "server assigned a new address", nil)
					c.bound(Bound, nl, "obtained")
				} else {
					c.bound(Renewed, nl, ph.reason)
				}
				return nl, nil
			}
			if errors.Is(err, ErrNAK) {
				c.lost(l, "nak", err)
				return nil, nil
			}
			c.Log.Info("dhcp4: "+ph.name+" failed", "lease", l.Address, "err", err)
			// RFC 2131 4.4.5: wait half the time left to the boundary,
			// at least MinRetry, never past the boundary.
			wait := max(time.Until(ph.until)/2, c.MinRetry)
			if err := sleepUntil(ctx, earliest(ph.until, time.Now().Add(wait))); err != nil {
				return nil, err
			}
		}
	}
	c.lost(l, "expired", nil)
	return nil, nil
}

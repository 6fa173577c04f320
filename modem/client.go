package modem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/lifeline-router/lifeline/modem/at"
	"github.com/lifeline-router/lifeline/modem/signal"
)

// Identity is what +CGMI/+CGMM/+CGMR/+CGSN report.
type Identity struct {
	Manufacturer, Model, Revision, IMEI string
}

// DataConfig is the data call's configuration.
type DataConfig struct {
	CID      int    // PDP context, default 1
	APN      string // required
	User     string
	Password string
	// Auth: none, pap, chap (default: pap when a user is set, else none).
	Auth string
}

func (d DataConfig) authCode() int {
	switch strings.ToLower(d.Auth) {
	case "pap":
		return 1
	case "chap":
		return 2
	case "none":
		return 0
	}
	if d.User != "" {
		return 1
	}
	return 0
}

// Client speaks AT to one modem.
type Client struct {
	port *at.Port
	fam  *Family
	id   Identity
	// CmdTimeout is the default per-command timeout.
	CmdTimeout time.Duration
	// ProbeTimeout bounds the first command: a port that is not a modem, or
	// a modem that answers nothing, fails within it.
	ProbeTimeout time.Duration
}

// ErrNoAnswer: the port gave no reply to the first command.
var ErrNoAnswer = errors.New("no answer to AT commands: not a modem, or the modem is hung")

// OpenClient opens the tty at path with an exclusive lock and returns a
// Client (not yet initialised: call Init).
func OpenClient(path string, logf func(string, ...any)) (*Client, error) {
	f, err := at.OpenTTY(path)
	if err != nil {
		return nil, err
	}
	return NewClient(f, logf), nil
}

// NewClient drives the modem at the other end of rw.
func NewClient(rw io.ReadWriteCloser, logf func(string, ...any)) *Client {
	return &Client{
		port:         at.NewPort(rw, at.Options{Logf: logf}),
		fam:          Generic,
		CmdTimeout:   5 * time.Second,
		ProbeTimeout: 2 * time.Second,
	}
}

// Port is the underlying AT port (URCs, Done).
func (c *Client) Port() *at.Port { return c.port }

// Family is the family picked by Init.
func (c *Client) Family() *Family { return c.fam }

// Identity is what Init read.
func (c *Client) Identity() Identity { return c.id }

// Close closes the port.
func (c *Client) Close() error { return c.port.Close() }

// Cmd runs one command ("+CSQ", without "AT"); timeout 0 means CmdTimeout.
func (c *Client) Cmd(ctx context.Context, cmd string, timeout time.Duration) ([]string, error) {
	if timeout == 0 {
		timeout = c.CmdTimeout
	}
	return c.port.Command(ctx, cmd, timeout)
}

// Init resets the dialogue (echo off, verbose result codes, numeric +CME
// errors), identifies the modem and picks its family, and asks for
// packet-domain event URCs (+CGEV), which announce a dropped data call.
func (c *Client) Init(ctx context.Context) error {
	// A modem that was mid-command or has junk in its input buffer answers
	// the first line with ERROR; one retry clears that.
	var err error
	for try := 0; try < 2; try++ {
		_, err = c.Cmd(ctx, "E0Q0V1", c.ProbeTimeout)
		if err == nil || errors.Is(err, at.ErrTimeout) || errors.Is(err, at.ErrClosed) || ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, at.ErrTimeout) {
		return fmt.Errorf("ATE0Q0V1: %w (waited %v)", ErrNoAnswer, c.ProbeTimeout)
	}
	if err != nil {
		return err
	}
	if _, err := c.Cmd(ctx, "+CMEE=1", 0); err != nil {
		return err
	}
	if err := c.identify(ctx); err != nil {
		return err
	}
	// Optional: not every modem supports them; polling is the backstop.
	_, _ = c.Cmd(ctx, "+CGEREP=2,1", 0)
	_, _ = c.Cmd(ctx, "+CEREG=2", 0)
	return nil
}

func (c *Client) identify(ctx context.Context) error {
	for _, q := range []struct {
		cmd string
		dst *string
	}{{"+CGMI", &c.id.Manufacturer}, {"+CGMM", &c.id.Model}, {"+CGMR", &c.id.Revision}, {"+CGSN", &c.id.IMEI}} {
		lines, err := c.Cmd(ctx, q.cmd, 0)
		if err != nil {
			return err
		}
		*q.dst = idLine(lines, q.cmd)
	}
	c.fam = FamilyFor(c.id.Manufacturer)
	return nil
}

// SIM returns the SIM state (see Info.SIM).
func (c *Client) SIM(ctx context.Context) (string, error) {
	lines, err := c.Cmd(ctx, "+CPIN?", 0)
	var ae *at.Error
	if errors.As(err, &ae) {
		if s, ok := cmeSIM(ae); ok {
			return s, nil
		}
	}
	if err != nil {
		return "", err
	}
	return parseCPIN(lines)
}

// UnlockSIM enters the PIN.
func (c *Client) UnlockSIM(ctx context.Context, pin string) error {
	_, err := c.Cmd(ctx, fmt.Sprintf(`+CPIN="%s"`, pin), 10*time.Second)
	return err
}

// Registration returns the registration state and the access technology
// of +COPS (or the registration reply), and the operator name.
func (c *Client) Registration(ctx context.Context) (reg, oper, rat string, err error) {
	var states []string
	act := -1
	for _, cmd := range []string{"+CREG", "+CEREG", "+C5GREG"} {
		lines, cerr := c.Cmd(ctx, cmd+"?", 0)
		if cerr != nil {
			var ae *at.Error
			if errors.As(cerr, &ae) {
				continue // not supported (no 5G, no CS domain)
			}
			return "", "", "", cerr
		}
		st, a, perr := parseReg(cmd, lines)
		if perr != nil {
			return "", "", "", perr
		}
		states = append(states, st)
		if a >= 0 && (st == RegHome || st == RegRoaming) {
			act = a
		}
	}
	reg = bestReg(states...)
	lines, cerr := c.Cmd(ctx, "+COPS?", 0)
	if cerr == nil {
		o, a, perr := parseCOPS(lines)
		if perr == nil {
			oper = o
			if a >= 0 {
				act = a
			}
		}
	} else if !isATError(cerr) {
		return reg, "", "", cerr
	}
	return reg, oper, actRAT(act), nil
}

func isATError(err error) bool {
	var ae *at.Error
	return errors.As(err, &ae)
}

// Signal reads the family's richest report and fills gaps from +CESQ/+CSQ.
func (c *Client) Signal(ctx context.Context) (signal.Reading, error) {
	var r signal.Reading
	got := false
	for _, src := range append(append([]SignalSource{}, c.fam.Signal...), srcCESQ, srcCSQ) {
		if got && r.RSSI != nil && r.RSRP != nil && r.RSRQ != nil && r.SINR != nil {
			break
		}
		if got && src.Cmd == "+CESQ" && r.RSRP != nil && r.RSRQ != nil {
			continue // CESQ adds only RSRP/RSRQ
		}
		lines, err := c.Cmd(ctx, src.Cmd, 0)
		if err != nil {
			if isATError(err) {
				continue // not supported by this firmware
			}
			return r, err
		}
		rd, perr := src.Parse(lines)
		if perr != nil {
			continue
		}
		if !got {
			r, got = rd, true
		} else {
			r = signal.Merge(r, rd)
		}
	}
	return r, nil
}

// DataState asks the modem for the call's address (the polling backstop
// for a lost call).
func (c *Client) DataState(ctx context.Context, cid int) (DataState, error) {
	if cid == 0 {
		cid = 1
	}
	lines, err := c.Cmd(ctx, fmt.Sprintf("+CGPADDR=%d", cid), 0)
	if err != nil {
		if isATError(err) {
			return DataState{}, nil // no such context yet
		}
		return DataState{}, err
	}
	a, err := parseCGPADDR(lines, cid)
	if err != nil {
		return DataState{}, err
	}
	return DataState{Connected: a.IsValid(), IPv4: a}, nil
}

// Info reads everything Info holds.
func (c *Client) Info(ctx context.Context, cid int) (Info, error) {
	i := Info{Manufacturer: c.id.Manufacturer, Model: c.id.Model, Revision: c.id.Revision, IMEI: c.id.IMEI}
	var err error
	if i.SIM, err = c.SIM(ctx); err != nil {
		return i, err
	}
	if i.Registration, i.Operator, i.RAT, err = c.Registration(ctx); err != nil {
		return i, err
	}
	r, err := c.Signal(ctx)
	if err != nil {
		return i, err
	}
	i.setSignal(r)
	if i.Data, err = c.DataState(ctx, cid); err != nil {
		return i, err
	}
	return i, nil
}

// Connect configures the APN and starts the family's data call. It returns
// the prefix to put on wwan0: invalid when the modem serves DHCP, else the
// reported address as a /32 (raw-IP links have no subnet).
func (c *Client) Connect(ctx context.Context, cfg DataConfig) (netip.Prefix, error) {
	if cfg.CID == 0 {
		cfg.CID = 1
	}
	if cfg.APN == "" {
		return netip.Prefix{}, errors.New("connect: APN is empty")
	}
	if strings.ContainsAny(cfg.APN+cfg.User+cfg.Password, "\"\r\n") {
		return netip.Prefix{}, errors.New("connect: APN, user or password contains a quote or line break")
	}
	if _, err := c.Cmd(ctx, fmt.Sprintf(`+CGDCONT=%d,"IP","%s"`, cfg.CID, cfg.APN), 0); err != nil {
		return netip.Prefix{}, err
	}
	if cfg.User != "" || cfg.Password != "" {
		var err error
		if c.fam.auth != nil {
			err = c.fam.auth(ctx, c, cfg)
		} else {
			_, err = c.Cmd(ctx, fmt.Sprintf(`+CGAUTH=%d,%d,"%s","%s"`, cfg.CID, cfg.authCode(), cfg.User, cfg.Password), 0)
		}
		if err != nil {
			return netip.Prefix{}, err
		}
	}
	dhcp, err := c.fam.up(ctx, c, cfg.CID)
	if err != nil {
		return netip.Prefix{}, err
	}
	if dhcp {
		return netip.Prefix{}, nil
	}
	ds, err := c.DataState(ctx, cfg.CID)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !ds.Connected {
		return netip.Prefix{}, fmt.Errorf("connect: %s data call reported success but +CGPADDR=%d has no IPv4 address", c.fam.Name, cfg.CID)
	}
	return netip.PrefixFrom(ds.IPv4, 32), nil
}

// Disconnect stops the data call.
func (c *Client) Disconnect(ctx context.Context, cid int) error {
	if cid == 0 {
		cid = 1
	}
	return c.fam.down(ctx, c, cid)
}

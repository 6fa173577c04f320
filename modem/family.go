package modem

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lifeline-router/lifeline/modem/signal"
)

// Family is what differs between modem vendors: where the richest signal
// report is and how the data call feeding wwan0 is started.
type Family struct {
	Name string // quectel, sierra, fibocom, simcom, generic
	// Signal lists the serving-cell reports to try, richest first;
	// +CESQ and +CSQ are always tried after them to fill gaps.
	Signal []SignalSource
	// up starts the data call on cid; dhcp reports that the address on
	// wwan0 comes from DHCP served by the modem (ECM/NCM/RNDIS), not from
	// the address the modem reports (QMI/MBIM raw-IP).
	up   func(ctx context.Context, c *Client, cid int) (dhcp bool, err error)
	down func(ctx context.Context, c *Client, cid int) error
	// auth sets APN credentials; nil uses AT+CGAUTH.
	auth func(ctx context.Context, c *Client, cfg DataConfig) error
}

// SignalSource is one signal command and its parser.
type SignalSource struct {
	Cmd   string
	Parse func([]string) (signal.Reading, error)
}

// Data-call commands can take minutes on a real network (TS 27.007 allows
// 150 s for PDP activation).
const dataCallTimeout = 150 * time.Second

var (
	srcCESQ = SignalSource{"+CESQ", signal.ParseCESQ}
	srcCSQ  = SignalSource{"+CSQ", signal.ParseCSQ}
)

func cgactUp(ctx context.Context, c *Client, cid int) (bool, error) {
	_, err := c.Cmd(ctx, fmt.Sprintf("+CGACT=1,%d", cid), dataCallTimeout)
	return false, err
}

func cgactDown(ctx context.Context, c *Client, cid int) error {
	_, err := c.Cmd(ctx, fmt.Sprintf("+CGACT=0,%d", cid), dataCallTimeout)
	return err
}

// Families, by name.
var (
	Quectel = &Family{
		Name:   "quectel",
		Signal: []SignalSource{{`+QENG="servingcell"`, signal.ParseQENG}, {"+QCSQ", signal.ParseQCSQ}},
		up: func(ctx context.Context, c *Client, cid int) (bool, error) {
			// The command depends on the USB network mode: QMI (0) is
			// started with $QCRMCALL and takes the modem's address;
			// ECM/MBIM/RNDIS/NCM with +QNETDEVCTL, and the modem serves
			// DHCP. Changing the mode re-enumerates USB: not done here.
			mode := "0"
			if lines, err := c.Cmd(ctx, `+QCFG="usbnet"`, 5*time.Second); err == nil {
				for _, l := range lines {
					if rest, ok := strings.CutPrefix(l, `+QCFG: "usbnet",`); ok {
						mode = strings.TrimSpace(rest)
					}
				}
			}
			if mode == "0" {
				_, err := c.Cmd(ctx, fmt.Sprintf("$QCRMCALL=1,%d", cid), dataCallTimeout)
				return false, err
			}
			_, err := c.Cmd(ctx, fmt.Sprintf("+QNETDEVCTL=1,%d,1", cid), dataCallTimeout)
			return true, err
		},
		down: func(ctx context.Context, c *Client, cid int) error {
			if lines, err := c.Cmd(ctx, `+QCFG="usbnet"`, 5*time.Second); err == nil && !strings.Contains(strings.Join(lines, ""), `"usbnet",0`) {
				_, err := c.Cmd(ctx, fmt.Sprintf("+QNETDEVCTL=0,%d,0", cid), dataCallTimeout)
				return err
			}
			_, err := c.Cmd(ctx, fmt.Sprintf("$QCRMCALL=0,%d", cid), dataCallTimeout)
			return err
		},
		auth: func(ctx context.Context, c *Client, cfg DataConfig) error {
			// Quectel's own context command carries APN and credentials in
			// one step; context type 1 = IPv4.
			_, err := c.Cmd(ctx, fmt.Sprintf(`+QICSGP=%d,1,"%s","%s","%s",%d`, cfg.CID, cfg.APN, cfg.User, cfg.Password, cfg.authCode()), 5*time.Second)
			return err
		},
	}
	Sierra = &Family{
		Name:   "sierra",
		Signal: []SignalSource{{"!GSTATUS?", signal.ParseGSTATUS}},
		up: func(ctx context.Context, c *Client, cid int) (bool, error) {
			_, err := c.Cmd(ctx, fmt.Sprintf("!SCACT=1,%d", cid), dataCallTimeout)
			return false, err
		},
		down: func(ctx context.Context, c *Client, cid int) error {
			_, err := c.Cmd(ctx, fmt.Sprintf("!SCACT=0,%d", cid), dataCallTimeout)
			return err
		},
	}
	Fibocom = &Family{
		Name:   "fibocom",
		Signal: []SignalSource{{"+GTCCINFO?", signal.ParseGTCCINFO}},
		up: func(ctx context.Context, c *Client, cid int) (bool, error) {
			// FM350 (MediaTek) brings the call up with +CGACT and takes the
			// modem's address; the Qualcomm/Intel-based FM150/L8x0 in
			// RNDIS/ECM mode use +GTRNDIS and serve DHCP.
			if strings.Contains(strings.ToUpper(c.id.Model), "FM350") {
				return cgactUp(ctx, c, cid)
			}
			_, err := c.Cmd(ctx, fmt.Sprintf("+GTRNDIS=1,%d", cid), dataCallTimeout)
			return true, err
		},
		down: func(ctx context.Context, c *Client, cid int) error {
			if strings.Contains(strings.ToUpper(c.id.Model), "FM350") {
				return cgactDown(ctx, c, cid)
			}
			_, err := c.Cmd(ctx, fmt.Sprintf("+GTRNDIS=0,%d", cid), dataCallTimeout)
			return err
		},
	}
	SIMCom = &Family{
		Name:   "simcom",
		Signal: []SignalSource{{"+CPSI?", signal.ParseCPSI}},
		up: func(ctx context.Context, c *Client, cid int) (bool, error) {
			_, err := c.Cmd(ctx, fmt.Sprintf("$QCRMCALL=1,%d", cid), dataCallTimeout)
			return false, err
		},
		down: func(ctx context.Context, c *Client, cid int) error {
			_, err := c.Cmd(ctx, fmt.Sprintf("$QCRMCALL=0,%d", cid), dataCallTimeout)
			return err
		},
	}
	Generic = &Family{Name: "generic", up: cgactUp, down: cgactDown}
)

// FamilyFor picks the family from the +CGMI manufacturer string.
func FamilyFor(manufacturer string) *Family {
	m := strings.ToLower(manufacturer)
	switch {
	case strings.Contains(m, "quectel"):
		return Quectel
	case strings.Contains(m, "sierra"):
		return Sierra
	case strings.Contains(m, "fibocom"):
		return Fibocom
	case strings.Contains(m, "simcom"):
		return SIMCom
	}
	return Generic
}

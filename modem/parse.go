package modem

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lifeline-router/lifeline/modem/at"
	"github.com/lifeline-router/lifeline/modem/signal"
)

// Registration states.
const (
	RegHome          = "home"
	RegRoaming       = "roaming"
	RegSearching     = "searching"
	RegDenied        = "denied"
	RegNotRegistered = "not_registered"
	RegUnknown       = "unknown"
)

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// regStat maps the <stat> of +CREG/+CEREG/+C5GREG (TS 27.007).
func regStat(s string) string {
	switch s {
	case "0":
		return RegNotRegistered
	case "1":
		return RegHome
	case "2":
		return RegSearching
	case "3":
		return RegDenied
	case "5":
		return RegRoaming
	case "4", "":
		return RegUnknown
	}
	// 6..10: SMS-only / emergency / CSFB variants of home and roaming.
	switch s {
	case "6", "9":
		return RegHome
	case "7", "10":
		return RegRoaming
	case "8":
		return RegSearching // emergency bearer services only
	}
	return RegUnknown
}

// parseReg reads the reply to AT+CREG?/+CEREG?/+C5GREG? ("+CEREG: <n>,<stat>[,...]").
func parseReg(prefix string, lines []string) (stat string, act int, err error) {
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, prefix+":")
		if !ok {
			continue
		}
		f := signal.Fields(strings.TrimSpace(rest))
		if len(f) < 2 {
			return "", -1, fmt.Errorf("%s?: %q has %d fields, want at least 2", prefix, l, len(f))
		}
		act = -1
		// <n>,<stat>,<tac>,<ci>,<AcT>
		if len(f) >= 5 {
			if a, err := strconv.Atoi(f[4]); err == nil {
				act = a
			}
		}
		return regStat(f[1]), act, nil
	}
	return "", -1, fmt.Errorf("%s?: no %s line in %q", prefix, prefix, lines)
}

var regRank = map[string]int{RegHome: 5, RegRoaming: 5, RegSearching: 3, RegDenied: 2, RegNotRegistered: 1, RegUnknown: 0}

// bestReg combines CREG, CEREG and C5GREG: registered in any domain counts.
func bestReg(states ...string) string {
	best := ""
	for _, s := range states {
		if s == "" {
			continue
		}
		if best == "" || regRank[s] >= regRank[best] { // later (CEREG, C5GREG) wins ties: the data domain
			best = s
		}
	}
	if best == "" {
		return RegUnknown
	}
	return best
}

// actRAT maps <AcT> of +COPS/+CEREG/+C5GREG.
func actRAT(act int) string {
	switch act {
	case 0, 1, 3:
		return signal.GSM
	case 2, 4, 5, 6:
		return signal.UMTS
	case 7, 8, 9, 10:
		return signal.LTE
	case 11, 12:
		return signal.NRSA
	case 13:
		return signal.NRNSA
	}
	return ""
}

// parseCOPS reads "+COPS: <mode>[,<format>,<oper>[,<AcT>]]".
func parseCOPS(lines []string) (oper string, act int, err error) {
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, "+COPS:")
		if !ok {
			continue
		}
		f := signal.Fields(strings.TrimSpace(rest))
		act = -1
		if len(f) >= 4 {
			if a, err := strconv.Atoi(f[3]); err == nil {
				act = a
			}
		}
		if len(f) >= 3 {
			oper = f[2]
		}
		return oper, act, nil
	}
	return "", -1, fmt.Errorf("+COPS?: no +COPS line in %q", lines)
}

// parseCPIN reads "+CPIN: READY" / "+CPIN: SIM PIN".
func parseCPIN(lines []string) (string, error) {
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "+CPIN:"); ok {
			return simState(strings.TrimSpace(rest)), nil
		}
	}
	return "", fmt.Errorf("+CPIN?: no +CPIN line in %q", lines)
}

func simState(s string) string {
	switch strings.ToUpper(strings.Trim(s, `"`)) {
	case "READY":
		return "ready"
	case "SIM PIN":
		return "pin_required"
	case "SIM PUK":
		return "puk_required"
	case "NOT INSERTED", "NOT READY":
		return "not_inserted"
	}
	return strings.ToLower(s)
}

// cmeSIM maps the +CME ERROR that AT+CPIN? returns without a usable SIM;
// numeric after AT+CMEE=1, words after AT+CMEE=2.
func cmeSIM(e *at.Error) (string, bool) {
	code, ok := e.CME()
	if !ok {
		return "", false
	}
	switch strings.ToLower(code) {
	case "10", "sim not inserted":
		return "not_inserted", true
	case "11", "sim pin required":
		return "pin_required", true
	case "12", "sim puk required":
		return "puk_required", true
	case "13", "sim failure":
		return "failure", true
	case "14", "sim busy":
		return "busy", true
	}
	return "", false
}

// parseCGPADDR reads "+CGPADDR: <cid>,"<addr>"[,"<addr6>"]" for cid.
func parseCGPADDR(lines []string, cid int) (netip.Addr, error) {
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, "+CGPADDR:")
		if !ok {
			continue
		}
		f := signal.Fields(strings.TrimSpace(rest))
		if len(f) == 0 || f[0] != strconv.Itoa(cid) {
			continue
		}
		for _, s := range f[1:] {
			a, err := netip.ParseAddr(s)
			if err != nil {
				// Some firmwares print IPv6 as 16 dotted bytes; not ours.
				continue
			}
			if a.Is4() && !a.IsUnspecified() {
				return a, nil
			}
		}
		return netip.Addr{}, nil
	}
	return netip.Addr{}, nil
}

// idLine returns the first informational line, without a "+CGMI:" style
// prefix and quotes (some firmwares add them).
func idLine(lines []string, prefix string) string {
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(l, prefix+":"); ok {
			l = strings.TrimSpace(rest)
		}
		return strings.Trim(l, `"`)
	}
	return ""
}

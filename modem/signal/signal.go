// Package signal turns the serving-cell reports of the modem families we
// drive into dBm and dB. It exists apart from the driver because each vendor
// invents its own report (field order by access technology, raw 3GPP indices,
// tenths of a dB on some lines and whole units on others) and each parser
// must be fuzzed and tested on real lines on its own.
//
// An unknown value is nil: never 0, never -113. A value outside what a radio
// can physically report is unknown too, so a vendor's sentinel (-32768, 255,
// "-") never reaches a metric or the LTE demote policy.
package signal

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Access technologies, as reported in Info.RAT.
const (
	LTE    = "LTE"
	NRSA   = "NR5G-SA"
	NRNSA  = "NR5G-NSA"
	UMTS   = "UMTS"
	GSM    = "GSM"
	NoRAT  = ""
	nrLine = "NR5G"
)

// Reading is the serving cell's signal. For NR5G-NSA the RSSI..SINR fields
// are the LTE anchor and the NR* fields the NR leg; for NR5G-SA the NR cell
// is the serving cell and fills RSRP, RSRQ and SINR (and the NR* fields).
type Reading struct {
	RAT                    string
	RSSI, RSRP, RSRQ, SINR *float64
	NRRSRP, NRRSRQ, NRSINR *float64
}

// Physical ranges (3GPP TS 36.133 / 38.133 reporting ranges, widened a little).
type rng struct{ lo, hi float64 }

var (
	rRSSI = rng{-125, -10}
	rRSRP = rng{-156, -31}
	rRSRQ = rng{-43.5, 20}
	rSINR = rng{-23.5, 40}
)

func (r rng) in(v float64) bool { return v >= r.lo && v <= r.hi }

func ptr(v float64) *float64 {
	v = math.Round(v*100) / 100
	return &v
}

// whole reads a field that is whole units on most firmwares and tenths on
// some (Quectel RM5xx SINR, e.g. "145" for 14.5 dB): a value outside the
// physical range that fits once divided by ten is taken as tenths.
func whole(field string, r rng) *float64 {
	v, ok := num(field)
	if !ok {
		return nil
	}
	if r.in(v) {
		return ptr(v)
	}
	if r.in(v / 10) {
		return ptr(v / 10)
	}
	return nil
}

// tenths reads a field documented in tenths (SIMCom +CPSI), accepting whole
// units where a firmware prints those (a tenths reading would be out of range).
func tenths(field string, r rng) *float64 {
	v, ok := num(field)
	if !ok {
		return nil
	}
	if r.in(v / 10) {
		return ptr(v / 10)
	}
	if r.in(v) {
		return ptr(v)
	}
	return nil
}

// index maps a raw 3GPP index n in [0, max] to off + n*step, nil outside.
func index(field string, max, off, step float64, r rng) *float64 {
	n, ok := num(field)
	if !ok || n < 0 || n > max || n != math.Trunc(n) {
		return nil
	}
	v := off + n*step
	if !r.in(v) {
		return nil
	}
	return ptr(v)
}

func num(field string) (float64, bool) {
	s := strings.TrimSpace(strings.Trim(strings.TrimSpace(field), `"`))
	if s == "" || s == "-" {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// Fields splits the part after "PREFIX:" at commas outside double quotes,
// trims spaces and strips quotes.
func Fields(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// find returns the fields of every line starting with prefix.
func find(lines []string, prefix string) [][]string {
	var out [][]string
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
			out = append(out, Fields(strings.TrimSpace(rest)))
		}
	}
	return out
}

func get(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func from(f []string, i int) []string {
	if i < len(f) {
		return f[i:]
	}
	return nil
}

// ParseCSQ parses "+CSQ: <rssi>,<ber>": dBm = -113 + 2*rssi for 0..31, 99
// unknown.
func ParseCSQ(lines []string) (Reading, error) {
	ls := find(lines, "+CSQ:")
	if len(ls) == 0 {
		return Reading{}, fmt.Errorf("+CSQ: no +CSQ line in %q", lines)
	}
	f := ls[0]
	if _, ok := num(get(f, 0)); !ok {
		return Reading{}, fmt.Errorf("+CSQ: field rssi %q is not a number", get(f, 0))
	}
	return Reading{RSSI: index(get(f, 0), 31, -113, 2, rRSSI)}, nil
}

// ParseCESQ parses "+CESQ: rxlev,ber,rscp,ecno,rsrq,rsrp" (TS 27.007):
// RSRP = -141 + n (0..97), RSRQ = -20 + n/2 (0..34), 255 unknown.
func ParseCESQ(lines []string) (Reading, error) {
	ls := find(lines, "+CESQ:")
	if len(ls) == 0 {
		return Reading{}, fmt.Errorf("+CESQ: no +CESQ line in %q", lines)
	}
	f := ls[0]
	if len(f) < 6 {
		return Reading{}, fmt.Errorf("+CESQ: %d fields, want 6", len(f))
	}
	r := Reading{RSRQ: index(f[4], 34, -20, 0.5, rRSRQ), RSRP: index(f[5], 97, -141, 1, rRSRP)}
	if r.RSRP != nil || r.RSRQ != nil {
		r.RAT = LTE
	}
	return r, nil
}

// ParseQENG parses Quectel AT+QENG="servingcell". LTE and NR5G-SA come as one
// "servingcell" line whose layout depends on the RAT; NR5G-NSA as three lines
// (state, the LTE anchor, the NR leg), each with its own layout.
func ParseQENG(lines []string) (Reading, error) {
	ls := find(lines, "+QENG:")
	if len(ls) == 0 {
		return Reading{}, fmt.Errorf(`+QENG="servingcell": no +QENG line in %q`, lines)
	}
	var r Reading
	for _, f := range ls {
		switch {
		case get(f, 0) == "servingcell" && get(f, 2) == "LTE":
			// "servingcell",state,"LTE",duplex,MCC,MNC,cellID,PCID,EARFCN,band,ULbw,DLbw,TAC,RSRP,RSRQ,RSSI,SINR,...
			r.RAT = LTE
			quectelLTE(&r, from(f, 4))
		case get(f, 0) == "servingcell" && get(f, 2) == NRSA:
			// "servingcell",state,"NR5G-SA",duplex,MCC,MNC,cellID,PCID,TAC,ARFCN,band,NRDLbw,RSRP,RSRQ,SINR,SCS,srxlev
			r.RAT = NRSA
			r.RSRP, r.RSRQ, r.SINR = whole(get(f, 12), rRSRP), whole(get(f, 13), rRSRQ), whole(get(f, 14), rSINR)
			r.NRRSRP, r.NRRSRQ, r.NRSINR = r.RSRP, r.RSRQ, r.SINR
		case get(f, 0) == "servingcell":
			// state line of the NSA form, or "SEARCH"/"LIMSRV" with no cell
		case get(f, 0) == "LTE":
			// "LTE",duplex,MCC,MNC,cellID,PCID,EARFCN,band,ULbw,DLbw,TAC,RSRP,RSRQ,RSSI,SINR,...
			if r.RAT == NoRAT {
				r.RAT = LTE
			}
			quectelLTE(&r, from(f, 2))
		case get(f, 0) == NRNSA:
			// "NR5G-NSA",MCC,MNC,PCID,RSRP,SINR,RSRQ,ARFCN,band,bw,SCS
			r.RAT = NRNSA
			r.NRRSRP, r.NRSINR, r.NRRSRQ = whole(get(f, 4), rRSRP), whole(get(f, 5), rSINR), whole(get(f, 6), rRSRQ)
		case get(f, 0) == "WCDMA" || get(f, 2) == "WCDMA":
			r.RAT = UMTS
		case get(f, 0) == "GSM" || get(f, 2) == "GSM":
			r.RAT = GSM
		}
	}
	return r, nil
}

// quectelLTE reads MCC,MNC,cellID,PCID,EARFCN,band,ULbw,DLbw,TAC,RSRP,RSRQ,RSSI,SINR.
func quectelLTE(r *Reading, f []string) {
	r.RSRP = whole(get(f, 9), rRSRP)
	r.RSRQ = whole(get(f, 10), rRSRQ)
	r.RSSI = whole(get(f, 11), rRSSI)
	r.SINR = whole(get(f, 12), rSINR)
}

// ParseQCSQ parses Quectel AT+QCSQ: one line per RAT in service.
//
//	+QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq>
//	+QCSQ: "NR5G",<rsrp>,<sinr>,<rsrq>
//	+QCSQ: "WCDMA",<rssi>,<rscp>,<ecio>
//	+QCSQ: "GSM",<rssi>
//	+QCSQ: "NOSERVICE"
func ParseQCSQ(lines []string) (Reading, error) {
	ls := find(lines, "+QCSQ:")
	if len(ls) == 0 {
		return Reading{}, fmt.Errorf("+QCSQ: no +QCSQ line in %q", lines)
	}
	var r Reading
	var lte, nr bool
	for _, f := range ls {
		switch get(f, 0) {
		case "LTE":
			lte = true
			r.RSSI, r.RSRP, r.SINR, r.RSRQ = whole(get(f, 1), rRSSI), whole(get(f, 2), rRSRP), whole(get(f, 3), rSINR), whole(get(f, 4), rRSRQ)
		case nrLine:
			nr = true
			r.NRRSRP, r.NRSINR, r.NRRSRQ = whole(get(f, 1), rRSRP), whole(get(f, 2), rSINR), whole(get(f, 3), rRSRQ)
		case "WCDMA":
			r.RAT = UMTS
			r.RSSI = whole(get(f, 1), rRSSI)
		case "GSM":
			r.RAT = GSM
			r.RSSI = whole(get(f, 1), rRSSI)
		}
	}
	switch {
	case lte && nr:
		r.RAT = NRNSA
	case nr:
		r.RAT = NRSA
		r.RSRP, r.RSRQ, r.SINR = r.NRRSRP, r.NRRSRQ, r.NRSINR
	case lte:
		r.RAT = LTE
	}
	return r, nil
}

// ParseGSTATUS parses Sierra Wireless AT!GSTATUS?: "key: value" cells
// separated by tabs, trailing spaces and blank lines included.
func ParseGSTATUS(lines []string) (Reading, error) {
	kv := map[string]string{}
	seen := false
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "!GSTATUS:") {
			seen = true
			continue
		}
		for _, cell := range strings.Split(l, "\t") {
			k, v, ok := strings.Cut(cell, ":")
			if !ok {
				continue
			}
			k = strings.TrimSpace(k)
			v = strings.TrimSpace(v)
			if k != "" && v != "" {
				if _, dup := kv[k]; !dup {
					kv[k] = v
				}
			}
		}
	}
	if !seen {
		return Reading{}, fmt.Errorf("!GSTATUS?: no !GSTATUS line in %q", lines)
	}
	val := func(k string) string {
		f := strings.Fields(kv[k])
		if len(f) == 0 {
			return ""
		}
		return f[0]
	}
	var r Reading
	mode := strings.ToUpper(val("System mode"))
	switch {
	case mode == "LTE":
		r.RAT = LTE
	case mode == "ENDC" || strings.Contains(strings.ToUpper(kv["System mode"]), "EN-DC"):
		r.RAT = NRNSA
	case strings.HasPrefix(mode, "NR5G") || mode == "NR":
		r.RAT = NRSA
	case mode == "WCDMA" || mode == "UMTS" || mode == "HSPA":
		r.RAT = UMTS
	case mode == "GSM":
		r.RAT = GSM
	}
	r.RSSI = whole(val("PCC RxM RSSI"), rRSSI)
	r.RSRP = whole(val("RSRP (dBm)"), rRSRP)
	r.RSRQ = whole(val("RSRQ (dB)"), rRSRQ)
	r.SINR = whole(val("SINR (dB)"), rSINR)
	r.NRRSRP = whole(val("NR5G RSRP (dBm)"), rRSRP)
	r.NRRSRQ = whole(val("NR5G RSRQ (dB)"), rRSRQ)
	r.NRSINR = whole(val("NR5G SINR (dB)"), rSINR)
	if r.RAT == NRSA && r.RSRP == nil {
		r.RSRP, r.RSRQ, r.SINR = r.NRRSRP, r.NRRSRQ, r.NRSINR
	}
	return r, nil
}

// ParseGTCCINFO parses Fibocom AT+GTCCINFO?: a header line per RAT ("LTE
// service cell:", "NR service cell:", "LTE-NR EN-DC service cell:") followed
// by cell lines; the serving cell's line starts with 1:
//
//	1,<rat>,MCC,MNC,TAC,cellID,ARFCN,PCI,band,bw,<sinr>,<rxlev>,<rsrp>,<rsrq>
//
// The last four are 3GPP indices: LTE RSRP = n-141, RSRQ = n/2-20, SINR =
// n/2; NR SS-RSRP = n-157, SS-RSRQ = n/2-43.5, SS-SINR = n/2-23.
func ParseGTCCINFO(lines []string) (Reading, error) {
	seen := false
	section := ""
	var r Reading
	var lte, nr bool
	for _, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "+GTCCINFO:"):
			seen = true
			continue
		case strings.Contains(strings.ToLower(l), "service cell"):
			section = strings.ToUpper(strings.Fields(l)[0])
			continue
		case strings.Contains(strings.ToLower(l), "neighbor cell"):
			section = ""
			continue
		}
		f := Fields(l)
		if section == "" || get(f, 0) != "1" || len(f) < 14 {
			continue
		}
		isNR := section == "NR" || (section == "LTE-NR" && lte)
		if isNR {
			nr = true
			r.NRSINR = index(f[10], 127, -23, 0.5, rSINR)
			r.NRRSRP = index(f[12], 127, -157, 1, rRSRP)
			r.NRRSRQ = index(f[13], 127, -43.5, 0.5, rRSRQ)
		} else {
			lte = true
			r.SINR = index(f[10], 100, 0, 0.5, rSINR)
			r.RSRP = index(f[12], 97, -141, 1, rRSRP)
			r.RSRQ = index(f[13], 34, -20, 0.5, rRSRQ)
		}
	}
	if !seen {
		return Reading{}, fmt.Errorf("+GTCCINFO?: no +GTCCINFO line in %q", lines)
	}
	switch {
	case lte && nr:
		r.RAT = NRNSA
	case nr:
		r.RAT = NRSA
		r.RSRP, r.RSRQ, r.SINR = r.NRRSRP, r.NRRSRQ, r.NRSINR
	case lte:
		r.RAT = LTE
	}
	return r, nil
}

// ParseCPSI parses SIMCom AT+CPSI?; RSRQ, RSRP, RSSI and NR SINR are in
// tenths of a dB, LTE RSSNR in whole dB.
//
//	+CPSI: LTE,Online,MCC-MNC,TAC,SCellID,PCellID,band,EARFCN,dlbw,ulbw,RSRQ,RSRP,RSSI,RSSNR
//	+CPSI: NR5G_SA,Online,MCC-MNC,TAC,SCellID,PCellID,band,ARFCN,RSRP,RSRQ,SINR
//	+CPSI: NR5G_NSA,PCellID,band,ARFCN,RSRP,RSRQ,SINR      (after the LTE line)
//	+CPSI: NO SERVICE,Online
func ParseCPSI(lines []string) (Reading, error) {
	ls := find(lines, "+CPSI:")
	if len(ls) == 0 {
		return Reading{}, fmt.Errorf("+CPSI?: no +CPSI line in %q", lines)
	}
	var r Reading
	for _, f := range ls {
		switch get(f, 0) {
		case "LTE":
			if r.RAT == NoRAT {
				r.RAT = LTE
			}
			// The unit is the firmware's, for the whole line; RSRP tells
			// (no RSRP is -156 dBm or below, every RSRP in tenths is).
			conv := tenths
			if v, ok := num(get(f, 11)); ok && rRSRP.in(v) {
				conv = whole
			}
			r.RSRQ, r.RSRP, r.RSSI, r.SINR = conv(get(f, 10), rRSRQ), conv(get(f, 11), rRSRP), conv(get(f, 12), rRSSI), whole(get(f, 13), rSINR)
		case "NR5G_SA":
			r.RAT = NRSA
			r.NRRSRP, r.NRRSRQ, r.NRSINR = tenths(get(f, 8), rRSRP), tenths(get(f, 9), rRSRQ), tenths(get(f, 10), rSINR)
			r.RSRP, r.RSRQ, r.SINR = r.NRRSRP, r.NRRSRQ, r.NRSINR
		case "NR5G_NSA":
			r.RAT = NRNSA
			r.NRRSRP, r.NRRSRQ, r.NRSINR = tenths(get(f, 4), rRSRP), tenths(get(f, 5), rRSRQ), tenths(get(f, 6), rSINR)
		case "WCDMA":
			r.RAT = UMTS
		case "GSM":
			r.RAT = GSM
		}
	}
	return r, nil
}

// Merge fills the fields r lacks from fallback (a +CESQ or +CSQ reading),
// never overriding a value the richer report gave.
func Merge(r, fallback Reading) Reading {
	if r.RAT == NoRAT {
		r.RAT = fallback.RAT
	}
	for _, p := range []struct {
		dst **float64
		src *float64
	}{
		{&r.RSSI, fallback.RSSI}, {&r.RSRP, fallback.RSRP}, {&r.RSRQ, fallback.RSRQ}, {&r.SINR, fallback.SINR},
	} {
		if *p.dst == nil {
			*p.dst = p.src
		}
	}
	return r
}

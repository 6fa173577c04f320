// Package modem drives the LTE/5G modem of the router over its AT port: it
// identifies the modem family, unlocks the SIM, waits for registration, brings
// up the data call that feeds wwan0, reads the serving cell's signal and keeps
// the data call up (Manager). It exists so that the supervisor sees one
// vendor-neutral Info and never speaks AT itself; the vendor differences
// live in family.go and in package signal.
package modem

import (
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/lifeline-router/lifeline/modem/signal"
)

// Info is one snapshot of the modem, as printed by `lifeline modem info
// --json` and exported as metrics. Unknown values are empty strings and nil
// pointers (JSON null), never 0.
type Info struct {
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Revision     string `json:"revision"`
	IMEI         string `json:"imei"`
	// SIM: ready, pin_required, puk_required, not_inserted, failure, busy, or
	// the modem's own words.
	SIM string `json:"sim"`
	// Registration: home, roaming, searching, denied, not_registered, unknown.
	Registration string `json:"registration"`
	Operator     string `json:"operator"`
	// RAT: LTE, NR5G-SA, NR5G-NSA, UMTS, GSM.
	RAT string `json:"rat"`
	// Serving cell; for NR5G-NSA the LTE anchor.
	RSSI *float64 `json:"rssi_dbm"`
	RSRP *float64 `json:"rsrp_dbm"`
	RSRQ *float64 `json:"rsrq_db"`
	SINR *float64 `json:"sinr_db"`
	// NR leg (NSA) or NR serving cell (SA); null without NR.
	NRRSRP *float64  `json:"nr_rsrp_dbm"`
	NRRSRQ *float64  `json:"nr_rsrq_db"`
	NRSINR *float64  `json:"nr_sinr_db"`
	Data   DataState `json:"data"`
}

// DataState is the data call as the modem reports it.
type DataState struct {
	Connected bool
	// IPv4 is the address the modem reports for the call; invalid when none.
	IPv4 netip.Addr
}

// MarshalJSON writes {"connected":bool,"ipv4":"a.b.c.d"|null}.
func (d DataState) MarshalJSON() ([]byte, error) {
	var ip *string
	if d.IPv4.IsValid() {
		s := d.IPv4.String()
		ip = &s
	}
	return json.Marshal(struct {
		Connected bool    `json:"connected"`
		IPv4      *string `json:"ipv4"`
	}{d.Connected, ip})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (d *DataState) UnmarshalJSON(b []byte) error {
	var v struct {
		Connected bool    `json:"connected"`
		IPv4      *string `json:"ipv4"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d.Connected = v.Connected
	d.IPv4 = netip.Addr{}
	if v.IPv4 != nil {
		a, err := netip.ParseAddr(*v.IPv4)
		if err != nil {
			return err
		}
		d.IPv4 = a
	}
	return nil
}

func (i *Info) setSignal(r signal.Reading) {
	i.RSSI, i.RSRP, i.RSRQ, i.SINR = r.RSSI, r.RSRP, r.RSRQ, r.SINR
	i.NRRSRP, i.NRRSRQ, i.NRSINR = r.NRRSRP, r.NRRSRQ, r.NRSINR
	if r.RAT != "" {
		i.RAT = r.RAT
	}
}

// Registered reports whether the modem is registered (home or roaming).
func (i Info) Registered() bool {
	return i.Registration == RegHome || i.Registration == RegRoaming
}

// String is the person-friendly summary.
func (i Info) String() string {
	var b strings.Builder
	f := func(v *float64, unit string) string {
		if v == nil {
			return "unknown"
		}
		return strings.TrimRight(strings.TrimRight(formatFloat(*v), "0"), ".") + " " + unit
	}
	w := func(k, v string) {
		if v == "" {
			v = "unknown"
		}
		b.WriteString(k + ": " + v + "\n")
	}
	w("Modem", strings.TrimSpace(i.Manufacturer+" "+i.Model))
	w("Firmware", i.Revision)
	w("IMEI", i.IMEI)
	w("SIM", i.SIM)
	w("Registration", i.Registration)
	w("Operator", i.Operator)
	w("Access", i.RAT)
	w("Signal", "RSSI "+f(i.RSSI, "dBm")+", RSRP "+f(i.RSRP, "dBm")+", RSRQ "+f(i.RSRQ, "dB")+", SINR "+f(i.SINR, "dB"))
	if i.NRRSRP != nil || i.NRRSRQ != nil || i.NRSINR != nil {
		w("NR leg", "RSRP "+f(i.NRRSRP, "dBm")+", RSRQ "+f(i.NRRSRQ, "dB")+", SINR "+f(i.NRSINR, "dB"))
	}
	data := "down"
	if i.Data.Connected {
		data = "up"
		if i.Data.IPv4.IsValid() {
			data += ", " + i.Data.IPv4.String()
		}
	}
	w("Data", data)
	return b.String()
}

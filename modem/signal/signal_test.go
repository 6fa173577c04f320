package signal

import (
	"fmt"
	"testing"
)

func f(v float64) *float64 { return &v }

func show(p *float64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

func same(t *testing.T, name string, got, want Reading) {
	t.Helper()
	check := func(field string, g, w *float64) {
		if show(g) != show(w) {
			t.Errorf("%s: %s = %s, want %s", name, field, show(g), show(w))
		}
	}
	if got.RAT != want.RAT {
		t.Errorf("%s: RAT = %q, want %q", name, got.RAT, want.RAT)
	}
	check("RSSI", got.RSSI, want.RSSI)
	check("RSRP", got.RSRP, want.RSRP)
	check("RSRQ", got.RSRQ, want.RSRQ)
	check("SINR", got.SINR, want.SINR)
	check("NRRSRP", got.NRRSRP, want.NRRSRP)
	check("NRRSRQ", got.NRRSRQ, want.NRRSRQ)
	check("NRSINR", got.NRSINR, want.NRSINR)
}

type tc struct {
	name  string
	lines []string
	want  Reading
}

func run(t *testing.T, parse func([]string) (Reading, error), cases []tc) {
	t.Helper()
	for _, c := range cases {
		got, err := parse(c.lines)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		same(t, c.name, got, c.want)
	}
}

func TestCSQ(t *testing.T) {
	run(t, ParseCSQ, []tc{
		{"18", []string{"+CSQ: 18,99"}, Reading{RSSI: f(-77)}},
		{"0", []string{"+CSQ: 0,99"}, Reading{RSSI: f(-113)}},
		{"31", []string{"+CSQ: 31,0"}, Reading{RSSI: f(-51)}},
		{"unknown is null, not -113", []string{"+CSQ: 99,99"}, Reading{}},
		{"out of range", []string{"+CSQ: 32,99"}, Reading{}},
	})
	for _, bad := range [][]string{nil, {"+CSQ: x,99"}, {"OK"}} {
		if _, err := ParseCSQ(bad); err == nil {
			t.Errorf("ParseCSQ(%q): no error", bad)
		}
	}
}

func TestCESQ(t *testing.T) {
	run(t, ParseCESQ, []tc{
		{"lte", []string{"+CESQ: 99,99,255,255,20,50"}, Reading{RAT: LTE, RSRQ: f(-10), RSRP: f(-91)}},
		{"edges", []string{"+CESQ: 99,99,255,255,0,97"}, Reading{RAT: LTE, RSRQ: f(-20), RSRP: f(-44)}},
		{"unknown", []string{"+CESQ: 99,99,255,255,255,255"}, Reading{}},
	})
	if _, err := ParseCESQ([]string{"+CESQ: 1,2"}); err == nil {
		t.Error("short +CESQ accepted")
	}
}

func TestQENG(t *testing.T) {
	run(t, ParseQENG, []tc{
		{"LTE (real)", []string{`+QENG: "servingcell","NOCONN","LTE","FDD",311,480,334220,221,66536,66,5,5,D00,-96,-11,-56,14,0,-,29`},
			Reading{RAT: LTE, RSRP: f(-96), RSRQ: f(-11), RSSI: f(-56), SINR: f(14)}},
		{"NSA (real)", []string{
			`+QENG: "servingcell","NOCONN"`,
			`+QENG: "LTE","FDD",222,01,4940206,427,1350,3,5,5,BFF,-94,-15,-58,9,5,100,-`,
			`+QENG: "NR5G-NSA",222,01,920,-96,18,-10,648768,78,10,1`},
			Reading{RAT: NRNSA, RSRP: f(-94), RSRQ: f(-15), RSSI: f(-58), SINR: f(9), NRRSRP: f(-96), NRSINR: f(18), NRRSRQ: f(-10)}},
		{"SA (real, space after duplex)", []string{`+QENG: "servingcell","NOCONN","NR5G-SA","TDD", 515,66,100072000,538,114000,620640,78,12,-109,-12,14,1,-`},
			Reading{RAT: NRSA, RSRP: f(-109), RSRQ: f(-12), SINR: f(14), NRRSRP: f(-109), NRRSRQ: f(-12), NRSINR: f(14)}},
		{"SA (real)", []string{`+QENG: "servingcell","NOCONN","NR5G-SA","FDD",310,260,939204254,24,60AA00,126490,71,1,-104,-13,11,0,-`},
			Reading{RAT: NRSA, RSRP: f(-104), RSRQ: f(-13), SINR: f(11), NRRSRP: f(-104), NRRSRQ: f(-13), NRSINR: f(11)}},
		{"RM5xx SINR in tenths of a dB on the NR line, whole on the LTE line", []string{
			`+QENG: "servingcell","NOCONN"`,
			`+QENG: "LTE","FDD",222,01,4940206,427,1350,3,5,5,BFF,-94,-15,-58,9,5,100,-`,
			`+QENG: "NR5G-NSA",222,01,920,-96,185,-10,648768,78,10,1`},
			Reading{RAT: NRNSA, RSRP: f(-94), RSRQ: f(-15), RSSI: f(-58), SINR: f(9), NRRSRP: f(-96), NRSINR: f(18.5), NRRSRQ: f(-10)}},
		{"SA SINR in tenths", []string{`+QENG: "servingcell","NOCONN","NR5G-SA","TDD",515,66,100072000,538,114000,620640,78,12,-109,-12,145,1,-`},
			Reading{RAT: NRSA, RSRP: f(-109), RSRQ: f(-12), SINR: f(14.5), NRRSRP: f(-109), NRRSRQ: f(-12), NRSINR: f(14.5)}},
		{"NSA without NR leg yet: LTE", []string{`+QENG: "servingcell","NOCONN"`, `+QENG: "LTE","FDD",222,01,4940206,427,1350,3,5,5,BFF,-94,-15,-58,9,5,100,-`},
			Reading{RAT: LTE, RSRP: f(-94), RSRQ: f(-15), RSSI: f(-58), SINR: f(9)}},
		{"dashes and sentinels are null", []string{`+QENG: "servingcell","NOCONN","LTE","FDD",311,480,334220,221,66536,66,5,5,D00,-,-32768,-,-`},
			Reading{RAT: LTE}},
		{"searching", []string{`+QENG: "servingcell","SEARCH"`}, Reading{}},
		{"short line does not panic", []string{`+QENG: "servingcell","NOCONN","LTE"`}, Reading{RAT: LTE}},
	})
	if _, err := ParseQENG([]string{"OK"}); err == nil {
		t.Error("no +QENG line accepted")
	}
}

func TestQCSQ(t *testing.T) {
	run(t, ParseQCSQ, []tc{
		{"SA (README)", []string{`+QCSQ: "NR5G",-75,4,-11`}, Reading{RAT: NRSA, RSRP: f(-75), SINR: f(4), RSRQ: f(-11), NRRSRP: f(-75), NRSINR: f(4), NRRSRQ: f(-11)}},
		{"LTE", []string{`+QCSQ: "LTE",-58,-94,9,-15`}, Reading{RAT: LTE, RSSI: f(-58), RSRP: f(-94), SINR: f(9), RSRQ: f(-15)}},
		{"LTE SINR in tenths", []string{`+QCSQ: "LTE",-58,-94,195,-15`}, Reading{RAT: LTE, RSSI: f(-58), RSRP: f(-94), SINR: f(19.5), RSRQ: f(-15)}},
		{"NSA", []string{`+QCSQ: "LTE",-58,-94,9,-15`, `+QCSQ: "NR5G",-96,18,-10`}, Reading{RAT: NRNSA, RSSI: f(-58), RSRP: f(-94), SINR: f(9), RSRQ: f(-15), NRRSRP: f(-96), NRSINR: f(18), NRRSRQ: f(-10)}},
		{"no service", []string{`+QCSQ: "NOSERVICE"`}, Reading{}},
		{"WCDMA", []string{`+QCSQ: "WCDMA",-70,-80,-6`}, Reading{RAT: UMTS, RSSI: f(-70)}},
	})
}

func TestGSTATUS(t *testing.T) {
	real := []string{ // (real) tabs, trailing spaces, blank line
		"!GSTATUS: ",
		"System mode:   LTE        \tPS state:    Attached     ",
		"",
		"PCC RxM RSSI:  -45\t\tRSRP (dBm):  -81",
		"RSRQ (dB):     -14.0\t\tCell ID:     0A14666A (169106666)",
		"SINR (dB):     23.8",
	}
	run(t, ParseGSTATUS, []tc{
		{"EM7455 (real)", real, Reading{RAT: LTE, RSSI: f(-45), RSRP: f(-81), RSRQ: f(-14), SINR: f(23.8)}},
		{"EM919x ENDC", []string{"!GSTATUS:", "System mode:   ENDC       \tPS state:    Attached", "PCC RxM RSSI:  -60\t\tRSRP (dBm):  -90",
			"RSRQ (dB):     -11.0", "SINR (dB):     12.4", "NR5G RSRP (dBm):  -95\tNR5G RSRQ (dB):  -12", "NR5G SINR (dB):  8.5"},
			Reading{RAT: NRNSA, RSSI: f(-60), RSRP: f(-90), RSRQ: f(-11), SINR: f(12.4), NRRSRP: f(-95), NRRSRQ: f(-12), NRSINR: f(8.5)}},
		{"no service", []string{"!GSTATUS:", "System mode:   NO SERVICE\tPS state:    Not attached"}, Reading{}},
	})
	if _, err := ParseGSTATUS([]string{"System mode: LTE"}); err == nil {
		t.Error("missing !GSTATUS header accepted")
	}
}

func TestGTCCINFO(t *testing.T) {
	nsa := []string{"+GTCCINFO: ", "LTE service cell:", "1,4,505,01,5A1F,1A2D001,1275,120,103,100,40,62,58,24",
		"LTE neighbor cell:", "0,4,505,01,5A1F,1A2D002,1275,121,103,100,30,50,40,18",
		"NR service cell:", "1,9,505,01,5A1F,1A2D001,627264,300,78,100,70,60,70,60"}
	run(t, ParseGTCCINFO, []tc{
		{"NSA", nsa, Reading{RAT: NRNSA, SINR: f(20), RSRP: f(-83), RSRQ: f(-8), NRSINR: f(12), NRRSRP: f(-87), NRRSRQ: f(-13.5)}},
		{"LTE", nsa[:3], Reading{RAT: LTE, SINR: f(20), RSRP: f(-83), RSRQ: f(-8)}},
		{"SA", []string{"+GTCCINFO:", "NR service cell:", "1,9,505,01,5A1F,1A2D001,627264,300,78,100,70,60,70,60"},
			Reading{RAT: NRSA, SINR: f(12), RSRP: f(-87), RSRQ: f(-13.5), NRSINR: f(12), NRRSRP: f(-87), NRRSRQ: f(-13.5)}},
		{"unknown indices", []string{"+GTCCINFO:", "LTE service cell:", "1,4,505,01,5A1F,1A2D001,1275,120,103,100,255,255,255,255"}, Reading{RAT: LTE}},
	})
}

func TestCPSI(t *testing.T) {
	run(t, ParseCPSI, []tc{
		{"LTE tenths", []string{"+CPSI: LTE,Online,404-45,0x21F9,322642,453,EUTRAN-BAND40,39275,4,4,-168,-1126,-773,7"},
			Reading{RAT: LTE, RSRQ: f(-16.8), RSRP: f(-112.6), RSSI: f(-77.3), SINR: f(7)}},
		{"LTE whole units (older firmware)", []string{"+CPSI: LTE,Online,460-11,0x5A1E,187214780,257,EUTRAN-BAND3,1850,5,5,-9,-85,-55,15"},
			Reading{RAT: LTE, RSRQ: f(-9), RSRP: f(-85), RSSI: f(-55), SINR: f(15)}},
		{"SA", []string{"+CPSI: NR5G_SA,Online,460-11,0xCFA102,55744245764,196,NR5G_BAND78,627264,-940,-110,230"},
			Reading{RAT: NRSA, RSRP: f(-94), RSRQ: f(-11), SINR: f(23), NRRSRP: f(-94), NRRSRQ: f(-11), NRSINR: f(23)}},
		{"NSA", []string{"+CPSI: LTE,Online,460-11,0x5A1E,187214780,257,EUTRAN-BAND3,1850,5,5,-94,-850,-545,15", "+CPSI: NR5G_NSA,644,NR5G_BAND78,627264,-960,-120,95"},
			Reading{RAT: NRNSA, RSRQ: f(-9.4), RSRP: f(-85), RSSI: f(-54.5), SINR: f(15), NRRSRP: f(-96), NRRSRQ: f(-12), NRSINR: f(9.5)}},
		{"no service", []string{"+CPSI: NO SERVICE,Online"}, Reading{}},
		{"sentinel", []string{"+CPSI: NR5G_SA,Online,460-11,0xCFA102,55744245764,196,NR5G_BAND78,627264,-32768,-32768,-32768"}, Reading{RAT: NRSA}},
	})
}

func TestMergeNeverOverrides(t *testing.T) {
	r := Merge(Reading{RAT: NRSA, RSRP: f(-104)}, Reading{RSSI: f(-77), RSRP: f(-50)})
	same(t, "merge", r, Reading{RAT: NRSA, RSSI: f(-77), RSRP: f(-104)})
}

package signal

import (
	"math"
	"strings"
	"testing"
)

// Every parser, on any input: no panic, and every value it returns is a
// finite number inside the physical range (an unknown is nil, never a
// garbage number).
func fuzzParser(f *testing.F, parse func([]string) (Reading, error), seeds ...string) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parse(strings.Split(s, "\n"))
		if err != nil {
			return
		}
		for _, c := range []struct {
			v *float64
			r rng
		}{{r.RSSI, rRSSI}, {r.RSRP, rRSRP}, {r.RSRQ, rRSRQ}, {r.SINR, rSINR}, {r.NRRSRP, rRSRP}, {r.NRRSRQ, rRSRQ}, {r.NRSINR, rSINR}} {
			if c.v != nil && (math.IsNaN(*c.v) || !c.r.in(*c.v)) {
				t.Fatalf("%q: value %v outside %v", s, *c.v, c.r)
			}
		}
		switch r.RAT {
		case NoRAT, LTE, NRSA, NRNSA, UMTS, GSM:
		default:
			t.Fatalf("%q: RAT %q", s, r.RAT)
		}
	})
}

func FuzzParseCSQ(f *testing.F)  { fuzzParser(f, ParseCSQ, "+CSQ: 18,99", "+CSQ: 99,99") }
func FuzzParseCESQ(f *testing.F) { fuzzParser(f, ParseCESQ, "+CESQ: 99,99,255,255,20,50") }
func FuzzParseQENG(f *testing.F) {
	fuzzParser(f, ParseQENG,
		`+QENG: "servingcell","NOCONN","LTE","FDD",311,480,334220,221,66536,66,5,5,D00,-96,-11,-56,14,0,-,29`,
		"+QENG: \"servingcell\",\"NOCONN\"\n+QENG: \"LTE\",\"FDD\",222,01,4940206,427,1350,3,5,5,BFF,-94,-15,-58,9,5,100,-\n+QENG: \"NR5G-NSA\",222,01,920,-96,18,-10,648768,78,10,1",
		`+QENG: "servingcell","NOCONN","NR5G-SA","TDD", 515,66,100072000,538,114000,620640,78,12,-109,-12,14,1,-`)
}
func FuzzParseQCSQ(f *testing.F) {
	fuzzParser(f, ParseQCSQ, `+QCSQ: "NR5G",-75,4,-11`, "+QCSQ: \"LTE\",-58,-94,9,-15\n+QCSQ: \"NR5G\",-96,18,-10")
}
func FuzzParseGSTATUS(f *testing.F) {
	fuzzParser(f, ParseGSTATUS, "!GSTATUS: \nSystem mode:   LTE        \tPS state:    Attached     \n\nPCC RxM RSSI:  -45\t\tRSRP (dBm):  -81\nRSRQ (dB):     -14.0\t\tCell ID:     0A14666A (169106666)\nSINR (dB):     23.8")
}
func FuzzParseGTCCINFO(f *testing.F) {
	fuzzParser(f, ParseGTCCINFO, "+GTCCINFO: \nLTE service cell:\n1,4,505,01,5A1F,1A2D001,1275,120,103,100,40,62,58,24\nNR service cell:\n1,9,505,01,5A1F,1A2D001,627264,300,78,100,70,60,70,60")
}
func FuzzParseCPSI(f *testing.F) {
	fuzzParser(f, ParseCPSI, "+CPSI: LTE,Online,404-45,0x21F9,322642,453,EUTRAN-BAND40,39275,4,4,-168,-1126,-773,7",
		"+CPSI: NR5G_SA,Online,460-11,0xCFA102,55744245764,196,NR5G_BAND78,627264,-940,-110,230")
}

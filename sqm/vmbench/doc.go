// Package vmbench is the real-kernel autorate benchmark: a variable LTE link built from network
// namespaces, whose modem side shapes to a capacity trace (lab/traces) behind a deep FIFO, and
// the four contenders of issue 4 (no shaping, fixed CAKE at the seed's 20 Mbit/s, cake-autorate's
// rules, ours) run on it one after the other with saturating TCP in both directions.
//
// It exists because the simulated link (autorate/simlink) only models a FIFO: here the real
// CAKE qdiscs, IFB redirect, TCP congestion control and kernel timers are in the loop, driven
// through sqm.Service exactly as on the router (counters, probe results via a DelaySource,
// in-place rate changes). It needs a kernel with sch_cake, tbf and netem, so it runs inside
// the board kernel under qemu (cmd/autorate-vmbench, and TestVMLinkFollowsTrace for `make
// vmtest`).
//
// Topology (one namespace each, created with unique names and deleted afterwards):
//
//	rt [wwan0] ── [lte-r] lte [lte-s] ── [core-m] core [core-s] ── [srv0] srv
//
// rt is the router: CAKE on wwan0 (upload) and on ifb-wwan0 (download, via an ingress redirect).
// lte is the modem and the radio: a tbf at the trace's capacity on lte-s (upload) and lte-r
// (download), each with a FIFO of Options.ModemBuffer bytes, changed in place as the trace
// advances. core adds the base one-way delay with netem. srv is the far end: TCP sink and
// source, and the echo of the delay probes.
//
// Under TCG the guest runs on a virtual clock (VirtualClockQEMU): on a shared host, real-time
// TCG turned host load into tens to hundreds of ms of "queueing delay". Wall time then grows
// with the packets carried, so the bench runs the traces at half their rates by default
// (Options.Scale; the report says which) and the modem FIFO scales with them, keeping its
// depth in milliseconds.
package vmbench

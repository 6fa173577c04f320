// Package sqm puts CAKE on an uplink's egress and, through an IFB device, on its ingress,
// changes its rate in place and reads its statistics back.
//
// It exists because a fixed, unshaped uplink lets the modem's or ISP's deep buffer fill: latency
// rises for every flow, and whatever that buffer holds when the link is cut is what MPTCP later
// re-sends as duplicates on the other uplink. Shaping every uplink a little below its capacity
// keeps the queue in CAKE, where we can see it (Stats) and where the autorate controller
// (package sqm/autorate) can move the rate with SetRate without resetting it.
//
// Kernel boundary: qdiscs and filters are written with github.com/florianl/go-tc, the IFB link with
// github.com/vishvananda/netlink, and qdiscs are read back with a raw RTM_GETQDISC dump decoded
// here, because go-tc neither decodes CAKE's nested statistics nor tolerates every kind of qdisc
// it may meet on a dump.
package sqm

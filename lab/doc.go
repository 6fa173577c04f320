// Package lab builds the fail-over world out of the real kernel and measures
// what an MPTCP upload does when the fiber dies.
//
// It exists because the spine's promise ("no lost byte when the fiber drops,
// the upload moves to LTE") can only be checked end to end: our supervisor
// and concentrator, wireguard-go, the kernel's MPTCP stack, a router-side
// shaper as a real SQM appliance has, and ISP links with deep buffers and a
// real round-trip time. The host has no netem, so the ISP links are
// userspace relays (package linkem) in an "isp" network namespace between a
// "router" and a "conc" (concentrator) namespace:
//
//	router ns                      isp ns                          conc ns
//	fiber0 100.64.1.2 ─ veth ─ ifiber0 100.64.1.1  relay :51820 ┐
//	wifi0  100.64.2.2 ─ veth ─ iwifi0  100.64.2.1  relay :51821 ├─ tconc ─ eth0 198.51.100.2
//	wwan0  100.64.3.2 ─ veth ─ iwwan0  100.64.3.1  relay :51822 ┘  198.51.100.1
//
// Each relay forwards one path's WireGuard datagrams to the concentrator's
// port for that path with the ISP's line rate, a deep buffer and half the
// round-trip delay per direction. The router shapes its own egress a little
// below the line rate (HTB with a short bfifo: the host has no CAKE), so the
// deep ISP buffer stays empty in steady state, as SQM intends.
//
// Faults act where they do in the field: a cut takes the ISP side of the
// veth down (the router sees NO-CARRIER), a blackhole drops the path's UDP
// in the ISP namespace with nftables while every link stays up, a flap is a
// quick down/up/down. Everything the lab creates is pushed on a cleanup
// stack and torn down on success, failure and Ctrl-C.
//
// The upload itself is `lifeline-lab send` in the router namespace and
// `lifeline-lab recv` in the concentrator namespace: one Go MPTCP
// connection carrying a seeded ChaCha8 stream, hashed with SHA-256 at both
// ends, with the receiver timing every gap in the byte stream.
package lab

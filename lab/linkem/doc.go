// Package linkem is the lab's userspace link emulator: a per-path UDP relay
// that models an access link between a router's WireGuard socket and the
// concentrator's WireGuard port.
//
// It exists because the host kernel we test on has no netem, so the lab
// cannot give a veth pair a propagation delay, random loss or a rate that
// follows a trace. The relay sits in the ISP namespace and, per direction,
// models a bottleneck (line rate, serialization), a deep ISP-side byte buffer
// with tail drop, a one-way propagation delay, independent random loss and a
// blackhole switch (everything is silently dropped while the sockets stay up,
// as when an upstream router stops forwarding).
//
// The model, per direction, for a datagram of size s bytes arriving at t:
//
//	departure = max(t, previous departure) + (s+Overhead)*8/Rate
//	delivery  = departure + Delay
//
// A datagram is tail-dropped on arrival when the bytes still waiting for
// serialization would exceed Buffer; loss and the blackhole are applied on
// arrival too (like netem, a lost datagram costs no line time). A blackhole
// also drops datagrams already in flight when they come due, because a dead
// path delivers nothing, even what had left the bottleneck before the cut.
//
// Delivery timing is the whole point of the package, so each direction has
// one goroutine, a FIFO of datagrams and a timerfd armed at an absolute
// CLOCK_MONOTONIC time. Go's own timers are not good enough here: with the
// runtime otherwise idle they wake through epoll_wait, whose timeout has
// millisecond resolution, and were measured 0.2-1 ms late on this host, more
// than the 1 ms budget of a 5 ms RTT. Where the process may (root or
// CAP_SYS_NICE), each delivery goroutine runs on its own SCHED_FIFO thread
// blocked in read(2) on its timerfd, so the busy lab (wireguard-go and MPTCP
// senders on two cores) does not delay its wake-ups; otherwise the timerfd
// is read through the runtime poller (~10-50 µs when the host is quiet).
// Each datagram's arrival time is the kernel's receive stamp
// (SO_TIMESTAMPNS), so a reader that wakes late does not delay it either.
//
// CPU matters as much, since the relay shares two cores with the traffic it
// carries. Sockets are read and written with recvmmsg/sendmmsg into reused
// buffers, so steady state allocates nothing per datagram. A direction
// carrying a stream (two or more datagrams held) lets its wake-ups slip by
// up to Relay.Coalesce so that datagrams due close together leave in one
// sendmmsg, and its reader pauses briefly between reads (at most half the
// delay, so nothing is made late); a lone datagram, such as an idle-link
// probe, is never held back by either. Stats.LateMean and Stats.LateMax
// report the emulator's own timing error; on a VM, hypervisor steal shows
// up there as rare outliers of tens of milliseconds.
//
// Relays are controlled from other processes (the lab CLI runs in another
// network namespace) over HTTP on a unix socket: see Handler, Serve and
// Client. This package is Linux-only.
package linkem

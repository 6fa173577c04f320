# How fast is kernel WireGuard in the VM? Two namespaces over a veth, ping
# plain, through netem (2.5 ms one way) and through a kernel WireGuard tunnel,
# then iperf3 through the tunnel, saturating and at 15 Mbit/s with pings.
#   bin/lifeline-lab vm --virtual-clock=false --tool iperf3 --tool wg --tool ping --script lab/testdata/vm-wg-iperf.sh
set -e
ip netns add a; ip netns add b
ip link add va netns a type veth peer name vb netns b
ip -n a addr add 10.0.0.1/24 dev va; ip -n a link set va up; ip -n a link set lo up
ip -n b addr add 10.0.0.2/24 dev vb; ip -n b link set vb up; ip -n b link set lo up
echo "ping, veth:"; ip netns exec a ping -c 50 -i 0.02 -q 10.0.0.2 | tail -1
tc -n b qdisc add dev vb root netem delay 2500us
echo "ping, veth + netem 2.5 ms one way:"; ip netns exec a ping -c 50 -i 0.02 -q 10.0.0.2 | tail -1
umask 077
wg genkey >/tmp/ka; wg genkey >/tmp/kb
ip -n a link add wga type wireguard; ip -n b link add wgb type wireguard
ip netns exec a wg set wga private-key /tmp/ka listen-port 1000 peer "$(wg pubkey </tmp/kb)" endpoint 10.0.0.2:1001 allowed-ips 0.0.0.0/0
ip netns exec b wg set wgb private-key /tmp/kb listen-port 1001 peer "$(wg pubkey </tmp/ka)" endpoint 10.0.0.1:1000 allowed-ips 0.0.0.0/0
ip -n a addr add 10.9.0.1/24 dev wga; ip -n a link set wga up
ip -n b addr add 10.9.0.2/24 dev wgb; ip -n b link set wgb up
echo "ping, through WireGuard:"; ip netns exec a ping -c 50 -i 0.02 -q 10.9.0.2 | tail -1
ip netns exec b iperf3 -s -D -1; sleep 1
echo "iperf3 through WireGuard, saturating:"; ip netns exec a iperf3 -c 10.9.0.2 -t 3 | grep receiver
ip netns exec b iperf3 -s -D -1; sleep 1
ip netns exec a iperf3 -c 10.9.0.2 -t 3 -b 15M | grep receiver &
sleep 1
echo "ping through WireGuard under a 15 Mbit/s load:"; ip netns exec a ping -c 50 -i 0.02 -q 10.9.0.2 | tail -1
wait

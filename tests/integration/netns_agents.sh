# Sourced by the link-fault test and the shaped-links benchmark: two network namespaces $A and $B
# joined by four data veth links (10.<net>.0-3.x, each shaped with tc to the rate given) and a
# control link (10.<net>.9.x), one braidd per namespace with a soft NIC on each data link (gRPC on
# every interface, peers told the control link's address: the chart's shape), and a
# cleanup trap that removes all of it. Requires: BRAIDD, NET (second octet), and RATES (an array of
# four tc rates). Sets A, B, DIR; writes $DIR/link.sh (`K up|down`, link K's end in $A) and
# $DIR/agent.sh (`start|kill SIDE`).
A="braid-a$NET-$$"
B="braid-b$NET-$$"
DIR=$(mktemp -d /dev/shm/braid-netns-XXXXXX)
cleanup() {
  for f in "$DIR"/agent*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for f in "$DIR"/agent*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
for k in 0 1 2 3 9; do
  ip link add "va$k-$$" netns "$A" type veth peer name "vb$k-$$" netns "$B"
  ip -n "$A" addr add "10.$NET.$k.1/24" dev "va$k-$$"
  ip -n "$B" addr add "10.$NET.$k.2/24" dev "vb$k-$$"
  ip -n "$A" link set "va$k-$$" up
  ip -n "$B" link set "vb$k-$$" up
  if [ "$k" != 9 ]; then
    ip netns exec "$A" tc qdisc add dev "va$k-$$" root tbf rate "${RATES[$k]}" burst 1mb latency 20ms
    ip netns exec "$B" tc qdisc add dev "vb$k-$$" root tbf rate "${RATES[$k]}" burst 1mb latency 20ms
  fi
done
# A veth is operationally up (IFF_RUNNING, what a soft NIC's port follows) a moment after both
# ends are up, up to a second after its carrier; an agent reads its NICs' ports at start.
for k in 0 1 2 3 9; do
  for _ in $(seq 50); do
    [ "$(ip netns exec "$A" cat "/sys/class/net/va$k-$$/operstate" 2>/dev/null)" = up ] &&
      [ "$(ip netns exec "$B" cat "/sys/class/net/vb$k-$$/operstate" 2>/dev/null)" = up ] && break
    sleep 0.1
  done
done
# `$DIR/agent.sh start|kill SIDE` starts braidd in its namespace (pid in $DIR/agent<side>.pid) or
# SIGKILLs it; the peer-kill scenario calls it too.
cat > "$DIR/agent.sh" <<AGENT
#!/usr/bin/env bash
side=\$2
ns=$A
[ "\$side" = 2 ] && ns=$B
if [ "\$1" = kill ]; then kill -9 "\$(cat "$DIR/agent\$side.pid")"; exit; fi
mkdir -p "$DIR/\$side"
ip netns exec "\$ns" "$BRAIDD" --agent-id "netns-\$side" --grpc-tcp "0.0.0.0:7600" \\
  --advertise "10.$NET.9.\$side:7600" \\
  --metrics "10.$NET.9.\$side:9464" --region-dir "$DIR/\$side" --log-level warn \\
  --plaintext --anonymous-role admin \\
  --soft-nic "soft0=10.$NET.0.\$side" --soft-nic "soft1=10.$NET.1.\$side" \\
  --soft-nic "soft2=10.$NET.2.\$side" --soft-nic "soft3=10.$NET.3.\$side" &
echo \$! > "$DIR/agent\$side.pid"
AGENT
chmod +x "$DIR/agent.sh"
"$DIR/agent.sh" start 1
"$DIR/agent.sh" start 2
cat > "$DIR/link.sh" <<LINK
#!/usr/bin/env bash
ip netns exec "$A" ip link set "va\$1-$$" "\$2"
LINK
chmod +x "$DIR/link.sh"

#!/usr/bin/env bash
# Try a multi-host testbed on one machine (root): each "host" is a network
# namespace with one veth onto an underlay bridge, running its own
# `netstation agent` with a state directory of its own. The hosts share this
# kernel, as cmd/netstation/multihost_test.go's simulated hosts do.
#
#   scripts/multihost-local.sh up [N]          # hosts h1..hN (default 3), agents joined
#   scripts/multihost-local.sh run h1 ARGS...  # the CLI as host h1 sees it
#   scripts/multihost-local.sh down            # testbeds, agents, namespaces removed
#
# Environment: NETSTATION (the binary, default: netstation on PATH),
# MH_PREFIX (namespace prefix, default mh), MH_ROOT (state, default
# /tmp/netstation-multihost). The underlay is 10.99.0.0/24, host i at .i.
set -euo pipefail
ns=${NETSTATION:-netstation}
pfx=${MH_PREFIX:-mh}
root=${MH_ROOT:-/tmp/netstation-multihost}

# as HOST CMD...: run CMD in HOST's network namespace only (not a mount
# namespace of its own, so the testbed namespaces the agents name are
# visible to every host, as on one kernel they must be).
as() {
	local h=$1
	shift
	NETSTATION_STATE_DIR="$root/$h" nsenter --net="/run/netns/$pfx$h" "$@"
}

up() {
	local n=${1:-3}
	mkdir -p "$root"
	ip netns add "${pfx}ul"
	ip -n "${pfx}ul" link add br0 type bridge
	ip -n "${pfx}ul" link set br0 up
	head -c 32 /dev/urandom | base64 >"$root/cluster.key"
	chmod 600 "$root/cluster.key"
	for i in $(seq 1 "$n"); do
		ip netns add "${pfx}h$i"
		ip link add eth0 netns "${pfx}h$i" type veth peer name "p$i" netns "${pfx}ul"
		ip -n "${pfx}ul" link set "p$i" master br0 up
		ip -n "${pfx}h$i" addr add "10.99.0.$i/24" dev eth0
		ip -n "${pfx}h$i" link set eth0 up
		ip -n "${pfx}h$i" link set lo up
		mkdir -p "$root/h$i"
		# exec all the way down, so that $! is the agent itself (a
		# function run in the background is a subshell whose pid is not
		# the agent's: killing it left agents running after down).
		(
			export NETSTATION_STATE_DIR="$root/h$i"
			exec nsenter --net="/run/netns/${pfx}h$i" setsid "$ns" agent --name "h$i" --bind "10.99.0.$i" \
				--join 10.99.0.1 --key-file "$root/cluster.key"
		) >"$root/h$i/agent.log" 2>&1 </dev/null &
		echo $! >"$root/h$i/agent.pid"
	done
	echo "$n hosts up; try:"
	echo "  $0 run h1 hosts"
	echo "  $0 run h1 up -f topo.yaml   # a topology with hosts: [h1, h2, ...]"
	echo "  $0 run h1 ping cpu0 disk0"
	echo "  $0 down"
}

down() {
	for d in "$root"/h*; do
		[ -d "$d" ] || continue
		h=$(basename "$d")
		as "$h" "$ns" down --all >/dev/null 2>&1 || true
	done
	for d in "$root"/h*; do
		[ -f "$d/agent.pid" ] && kill "$(cat "$d/agent.pid")" 2>/dev/null || true
	done
	# Any agent of this root that a pid file missed (the key file's path
	# is this root's own).
	pkill -f -- "--key-file $root/cluster.key" 2>/dev/null || true
	# An agent leaves the cluster before it exits: give it 10 s, then kill.
	for _ in $(seq 1 50); do
		pgrep -f -- "--key-file $root/cluster.key" >/dev/null || break
		sleep 0.2
	done
	pkill -9 -f -- "--key-file $root/cluster.key" 2>/dev/null || true
	sleep 1
	for n in $(ip netns list | awk '{print $1}' | grep "^${pfx}\(h[0-9]*\|ul\)$" || true); do
		ip netns del "$n"
	done
	rm -rf "$root"
}

case "${1:-}" in
up) up "${2:-3}" ;;
run)
	h=$2
	shift 2
	as "$h" "$ns" "$@"
	;;
down) down ;;
*)
	sed -n '2,13p' "$0"
	exit 2
	;;
esac

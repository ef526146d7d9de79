#!/usr/bin/env bash
# The main job: builds shoal, starts a private containerd and a local
# N-node cluster on loopback (127.0.10.1, .2, ... with the default ports,
# each node with its own containerd namespace, bridge and subnet), builds
# and loads the demo image, runs a 3-replica demo service, and shows every
# replica answering. The cluster keeps running until Ctrl-C (or tears down
# after the tour with --once), and cleans up after itself: services,
# containers, agents, containerd, bridges.
#
# Usage: scripts/demo.sh [--nodes N] [--once]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

nodes=3
once=0
while [ $# -gt 0 ]; do
	case "$1" in
	--nodes) nodes="$2"; shift 2 ;;
	--once) once=1; shift ;;
	*) echo "demo: unknown argument $1 (usage: scripts/demo.sh [--nodes N] [--once])" >&2; exit 2 ;;
	esac
done
if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root (containers need it)" >&2
	exit 1
fi

scripts/install-deps.sh
mkdir -p bin
CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
shoal=$PWD/bin/shoal

dir=$PWD/.dev/demo
rm -rf "$dir"
mkdir -p "$dir"
ctd_pid=""
pids=()
addr() { echo "127.0.10.$1"; }
cli() { "$shoal" --addr "$(addr "$1"):7070" "${@:2}"; }

cleanup() {
	echo
	echo "== tearing down"
	if [ ${#pids[@]} -gt 0 ]; then
		cli 1 rm web >/dev/null 2>&1 || true
		deadline=$((SECONDS + 30))
		while [ -n "$(cli 1 ps -o json 2>/dev/null | grep '"service"' || true)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
	fi
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -n "$ctd_pid" ]; then
		pkill -f "containerd-shim.*-address $dir/containerd/containerd.sock" 2>/dev/null || true
		kill -TERM "$ctd_pid" 2>/dev/null || true
		wait "$ctd_pid" 2>/dev/null || true
		grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	fi
	for i in $(seq 1 "$nodes"); do ip link del "shoal-demo$i" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting a private containerd under $dir/containerd"
mkdir -p "$dir/containerd"
cat >"$dir/containerd/config.toml" <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd/containerd.sock"
TOML
containerd --config "$dir/containerd/config.toml" >"$dir/containerd.log" 2>&1 &
ctd_pid=$!
sock=$dir/containerd/containerd.sock

wait_for() { # wait_for SECONDS CMD...: poll until CMD succeeds
	local deadline=$((SECONDS + $1)); shift
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then echo "demo: timed out waiting for: $*" >&2; return 1; fi
		sleep 0.2
	done
}
wait_for 30 ctr --address "$sock" version

key=$("$shoal" keygen)
for i in $(seq 1 "$nodes"); do
	ip=$(addr "$i")
	join=()
	[ "$i" -gt 1 ] && join=(--join "$(addr 1):7946")
	"$shoal" agent --name "node-$i" --data-dir "$dir/node-$i" --bind "$ip" \
		--api "$ip:7070" --encrypt "$key" --profile local --label "zone=z$(((i - 1) % 2))" \
		--containerd "$sock" --namespace "demo-node-$i" --bridge "shoal-demo$i" --subnet "10.213.$i.0/24" \
		"${join[@]}" >"$dir/node-$i.log" 2>&1 &
	pids+=($!)
done
all_ready() {
	[ "$(cli 1 nodes -o json | grep -c '"ready": true')" -eq "$nodes" ]
}
wait_for 60 all_ready

echo "== shoal nodes (asked of node-1)"
cli 1 nodes
echo
echo "== shoal image build-demo, and shoal image load on every node"
"$shoal" image build-demo -o "$dir/shoal-demo.tar"
for i in $(seq 1 "$nodes"); do cli "$i" image load "$dir/shoal-demo.tar" >/dev/null; done
cli 1 image ls
echo
echo "== shoal run web on node-$nodes"
cli "$nodes" run web --image shoal-demo:latest --replicas 3 \
	--publish 8080:8080/http --health-http /healthz --env GREETING=hello
echo
all_healthy() {
	[ "$(cli 1 ps web -o json | grep -c '"healthy": true')" -eq 3 ]
}
wait_for 120 all_healthy
echo "== shoal ps (asked of node-1)"
cli 1 ps
echo
echo "== every replica answers on its endpoint"
for ep in $(cli 1 ps web -o json | grep -o '"endpoint": *"[^"]*"' | cut -d'"' -f4); do
	echo "curl http://$ep/ -> $(curl -fsS "http://$ep/")"
done
echo
echo "== the routing mesh: every node serves published port 8080 and spreads requests over all replicas"
mesh_ready() { curl -fsS -o /dev/null "http://$(addr "$nodes"):8080/"; }
wait_for 30 mesh_ready
for i in $(seq 1 "$nodes"); do
	for _ in 1 2 3; do
		echo "curl http://$(addr "$i"):8080/ -> $(curl -fsS "http://$(addr "$i"):8080/")"
	done
done
echo
echo "== shoal placement web --slot 0 --explain"
cli 1 placement web --slot 0 --explain
echo
echo "The cluster is up. Try, from another shell:"
echo "  $shoal --addr $(addr 1):7070 ps"
echo "  $shoal --addr $(addr 2):7070 scale web 5 && $shoal --addr $(addr 3):7070 ps"
echo "  $shoal --addr $(addr 1):7070 logs web"
echo "  curl http://$(addr 2):8080/   # any node, any replica"
echo "Logs are in $dir/node-*.log."
if [ "$once" = 1 ]; then
	exit 0
fi
echo "Ctrl-C stops the cluster and removes everything it made."
wait "${pids[@]}"

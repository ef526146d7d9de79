#!/usr/bin/env bash
# The main job: builds shoal, starts a local N-node cluster on loopback
# (127.0.10.1, .2, ... with the default ports), writes a demo service on
# one node and shows it replicated on every node. The cluster keeps
# running until Ctrl-C (or exits after the tour with --once).
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

[ "$(id -u)" = 0 ] && scripts/install-deps.sh
mkdir -p bin
CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
shoal=bin/shoal

dir=.dev/demo
rm -rf "$dir"
mkdir -p "$dir"
key=$($shoal keygen)
pids=()
cleanup() {
	echo
	echo "== stopping the cluster (graceful leave)"
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addr() { echo "127.0.10.$1"; }
for i in $(seq 1 "$nodes"); do
	ip=$(addr "$i")
	join=()
	[ "$i" -gt 1 ] && join=(--join "$(addr 1):7946")
	$shoal agent --name "node-$i" --data-dir "$dir/node-$i" --bind "$ip" \
		--api "$ip:7070" --encrypt "$key" --profile local --label "zone=z$(( (i - 1) % 2 ))" \
		"${join[@]}" >"$dir/node-$i.log" 2>&1 &
	pids+=($!)
done

wait_for() { # wait_for SECONDS CMD...: poll until CMD succeeds
	local deadline=$((SECONDS + $1)); shift
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then echo "demo: timed out waiting for: $*" >&2; return 1; fi
		sleep 0.2
	done
}
all_alive() {
	[ "$($shoal --addr "$(addr 1):7070" nodes -o json | grep -o '"status": *"alive"' | wc -l)" -eq "$nodes" ]
}
wait_for 30 all_alive

echo "== shoal nodes (asked of node-1)"
$shoal --addr "$(addr 1):7070" nodes
echo
echo "== shoal run web on node-$nodes"
$shoal --addr "$(addr "$nodes"):7070" run web --image shoal-demo:latest --replicas 3 \
	--publish 8080:8080/http --health-http /healthz --env GREETING=hello
echo
has_web() { $shoal --addr "$(addr "$1"):7070" inspect web; }
for i in $(seq 1 "$nodes"); do
	wait_for 10 has_web "$i"
	echo "== shoal ls on node-$i"
	$shoal --addr "$(addr "$i"):7070" ls
done
echo
echo "The cluster is up. Try, from another shell:"
echo "  $shoal --addr $(addr 1):7070 nodes"
echo "  $shoal --addr $(addr 2):7070 scale web 5 && $shoal --addr $(addr 3):7070 ls"
echo "Logs are in $dir/node-*.log."
if [ "$once" = 1 ]; then
	exit 0
fi
echo "Ctrl-C stops the cluster."
wait "${pids[@]}"

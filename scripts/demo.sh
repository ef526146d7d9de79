#!/usr/bin/env bash
# The main job: installs what is missing, builds shoal, starts a local
# multi-host cluster with `shoal dev up` (N hosts, each a network namespace
# with its own address on a bridge, running a real `shoal agent`; a private
# containerd), loads the demo image on one host and prefetches it to the
# others over the peer plane, runs a 3-replica demo
# service on published port 8080, curls it through every host, then kills a
# host (SIGKILL of its agent and containers) and shows the replacement
# starting elsewhere while the answers continue. The cluster keeps running
# until Ctrl-C (or is torn down after the tour with --once); either way
# `shoal dev down` removes every namespace, link, rule, container and
# process it made.
#
# Usage: scripts/demo.sh [--nodes N] [--once]   (root)
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
	echo "demo: run as root (namespaces and containers need it)" >&2
	exit 1
fi
if [ "$nodes" -lt 2 ]; then
	echo "demo: --nodes must be at least 2 (one is killed)" >&2
	exit 2
fi

scripts/install-deps.sh
mkdir -p bin .dev
CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
shoal=$PWD/bin/shoal
dir=$PWD/.dev/demo
dev() { "$shoal" dev --dir "$dir" "$@"; }

if [ -f "$dir/state.json" ]; then
	echo "== removing the cluster an earlier demo left"
	dev down || true
fi
rm -rf "$dir"
loader_pid=""
cleanup() {
	echo
	echo "== tearing down: shoal dev down"
	[ -n "$loader_pid" ] && kill "$loader_pid" 2>/dev/null || true
	dev down || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS CMD...: poll until CMD succeeds
	local deadline=$((SECONDS + $1)); shift
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then echo "demo: timed out waiting for: $*" >&2; return 1; fi
		sleep 0.2
	done
}

echo "== shoal image build-demo"
"$shoal" image build-demo -o .dev/shoal-demo.tar
echo
echo "== shoal dev up --nodes $nodes"
dev up --nodes "$nodes"
SHOAL_ADDR=$(dev addr 1)
SHOAL_TOKEN=$(dev token)
export SHOAL_ADDR SHOAL_TOKEN
mapfile -t addrs < <(dev ls -o json | grep -o '"address": *"[^"]*"' | cut -d'"' -f4)
echo
echo "== shoal nodes"
"$shoal" nodes
echo
echo "== shoal image load (on host-1 only), then prefetch: the others copy it from host-1 over the peer plane"
"$shoal" image load .dev/shoal-demo.tar
"$shoal" image prefetch shoal-demo:latest
"$shoal" image ls
echo
echo "== shoal run web (3 replicas, published port 8080, HTTP health check)"
"$shoal" run web --image shoal-demo:latest --replicas 3 \
	--publish 8080:8080/http --health-http /healthz --env GREETING=hello
healthy() { # healthy N [NOT_ON_HOST]: N healthy replicas, none on NOT_ON_HOST
	local json
	json=$("$shoal" ps web -o json)
	[ "$(grep -c '"healthy": true' <<<"$json")" -eq "$1" ] || return 1
	[ -z "${2:-}" ] || ! grep -q "\"node\": \"$2\"" <<<"$json"
}
wait_for 120 healthy 3
"$shoal" ps
echo
echo "== the routing mesh: every host serves port 8080 and spreads requests over all replicas"
wait_for 30 curl -fsS -o /dev/null "http://${addrs[0]}:8080/"
for a in "${addrs[@]}"; do
	for _ in 1 2; do
		echo "curl http://$a:8080/ -> $(curl -fsS "http://$a:8080/")"
	done
done
echo
echo "== shoal placement web --slot 0 --explain"
"$shoal" placement web --slot 0 --explain
echo
# Steady load on host-1's load balancer while host-2 crashes.
log=$dir/load.log
(
	while true; do
		out=$(curl -sS --max-time 2 "http://${addrs[0]}:8080/" 2>&1) && echo "ok $(grep -o '"node":"[^"]*"' <<<"$out")" || echo "FAILED $out"
		sleep 0.05
	done
) >"$log" &
loader_pid=$!
sleep 1
echo "== shoal dev kill host-2 (a crash: its agent and containers get SIGKILL)"
start=$(date +%s%N)
dev kill host-2
wait_for 60 healthy 3 host-2
took=$((($(date +%s%N) - start) / 1000000))
sleep 1
kill "$loader_pid" 2>/dev/null || true
wait "$loader_pid" 2>/dev/null || true
loader_pid=""
echo "host-2's replica runs healthy on another host ${took} ms after the kill:"
"$shoal" ps
echo "requests through host-1 during the kill: $(grep -c '^ok' "$log") answered, $(grep -c '^FAILED' "$log") failed; the last answers came from:"
tail -n 3 "$log"
echo
echo "== shoal dev start host-2 (it rejoins with its data dir)"
dev start host-2
"$shoal" nodes
echo
dev ls
echo
echo "The cluster is up. Try, from another shell:"
echo "  export SHOAL_ADDR=$SHOAL_ADDR SHOAL_TOKEN=$SHOAL_TOKEN"
echo "  $shoal ps; $shoal scale web 5; $shoal logs web"
echo "  curl http://${addrs[1]}:8080/                     # any host, any replica"
echo "  $shoal dev --dir $dir partition 1 2,3; $shoal dev --dir $dir heal"
echo "Agent logs are in $dir/host-*.log."
if [ "$once" = 1 ]; then
	exit 0
fi
echo "Ctrl-C stops the cluster and removes everything it made."
while true; do sleep 3600; done

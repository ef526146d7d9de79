#!/usr/bin/env bash
# Idle cost of an agent: starts N real `shoal agent` processes on loopback
# (127.0.20.1..N, LAN gossip timing, encrypted), lets them sit idle, and
# prints per node: RSS, CPU time, and the bytes it sent (gossip + peer
# plane, counted by iptables per source address) per second.
#
# Usage: scripts/bench-idle.sh [--nodes N] [--seconds S] [--services K]
# Needs root (iptables). Cleans up its rules and processes on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
nodes=5 seconds=60 services=10
while [ $# -gt 0 ]; do
	case "$1" in
	--nodes) nodes=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--services) services=$2; shift 2 ;;
	*) echo "bench-idle: unknown argument $1" >&2; exit 2 ;;
	esac
done
CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
dir=$(mktemp -d)
chain=SHOAL_BENCH_$$
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	iptables -D OUTPUT -j "$chain" 2>/dev/null || true
	iptables -F "$chain" 2>/dev/null || true
	iptables -X "$chain" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
key=$(bin/shoal keygen)
for i in $(seq 1 "$nodes"); do
	ip=127.0.20.$i
	join=()
	[ "$i" -gt 1 ] && join=(--join 127.0.20.1:7946)
	bin/shoal agent --name "n$i" --data-dir "$dir/n$i" --bind "$ip" --api "$ip:7070" \
		--encrypt "$key" --log-level warn "${join[@]}" 2>"$dir/n$i.log" &
	pids+=($!)
done
deadline=$((SECONDS + 30))
until [ "$(bin/shoal --addr 127.0.20.1:7070 nodes -o json 2>/dev/null | grep -c '"alive"')" -eq "$nodes" ]; do
	[ $SECONDS -lt $deadline ] || { echo "bench-idle: cluster did not form" >&2; exit 1; }
	sleep 0.2
done
for k in $(seq 1 "$services"); do
	bin/shoal --addr 127.0.20.1:7070 run "svc-$k" --image "demo:$k" --replicas 3 --publish "$((9000 + k)):80" >/dev/null
done
sleep 5 # let the writes settle before counting idle traffic
iptables -N "$chain"
iptables -I OUTPUT -j "$chain"
for i in $(seq 1 "$nodes"); do iptables -A "$chain" -s "127.0.20.$i"; done
cpu0=()
for p in "${pids[@]}"; do cpu0+=("$(awk '{print $14+$15}' "/proc/$p/stat")"); done
sleep "$seconds"
hz=$(getconf CLK_TCK)
printf '%-4s %10s %14s %12s\n' node rss_MB cpu_ms_per_s bytes_per_s
i=0
iptables -L "$chain" -vnx | awk 'NR>2 {print $2}' >"$dir/bytes"
while read -r bytes; do
	p=${pids[$i]}
	rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$p/status")
	cpu1=$(awk '{print $14+$15}' "/proc/$p/stat")
	cpu=$(( (cpu1 - cpu0[i]) * 1000 / hz / seconds ))
	printf '%-4s %10s %14s %12s\n' "n$((i + 1))" "$rss" "$cpu" "$((bytes / seconds))"
	i=$((i + 1))
done <"$dir/bytes"

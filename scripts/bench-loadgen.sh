#!/usr/bin/env bash
# What the load generator of scripts/bench-lb.sh costs, and how precise it
# is: bin/shoal-loadgen at fixed rates against the demo server, with the
# server on the last CPU and the generator on the first (taskset), then wrk
# at its maximum on the same CPU for comparison. Prints, per rate, the
# generator's CPU time (user and system, from bash's time) per request and
# its latency line; the direct path's p99 here is the floor under every
# latency that bench-lb reports.
#
# Usage: scripts/bench-loadgen.sh [--idle poll|halt] [--duration S]
#                 [--loadgen PATH] [RATE...]          (root for --idle poll)
#   --idle poll (default) holds /dev/cpu_dma_latency at 0 while it runs, as
#   bench-lb does; halt leaves the machine's idle states alone.
#   --loadgen runs another build (an older commit's, say) instead of this
#   tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
idle=poll duration=8 loadgen="" rates=()
while [ $# -gt 0 ]; do
	case "$1" in
	--idle) idle=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--loadgen) loadgen=$2; shift 2 ;;
	--*) echo "bench-loadgen: unknown argument $1" >&2; exit 2 ;;
	*) rates+=("$1"); shift ;;
	esac
done
[ ${#rates[@]} -gt 0 ] || rates=(5000 10000)
case "$idle" in poll | halt) ;; *) echo "bench-loadgen: --idle wants poll or halt" >&2; exit 2 ;; esac
for v in "$duration" "${rates[@]}"; do
	case "$v" in '' | *[!0-9]*) echo "bench-loadgen: wants a number, got $v" >&2; exit 2 ;; esac
done
command -v wrk >/dev/null || { echo "bench-loadgen: needs wrk (apt-get install wrk)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "bench-loadgen: needs 2 CPUs" >&2; exit 1; }

CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
if [ -z "$loadgen" ]; then
	CGO_ENABLED=0 go build -o bin/shoal-loadgen ./cmd/shoal-loadgen
	loadgen=bin/shoal-loadgen
fi
if [ "$idle" = poll ]; then
	[ -w /dev/cpu_dma_latency ] || { echo "bench-loadgen: --idle poll needs to write /dev/cpu_dma_latency (root)" >&2; exit 1; }
	exec 9>/dev/cpu_dma_latency # held until this script exits
	printf '\x00\x00\x00\x00' >&9
fi
cpus=($(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status | tr ',' '\n' | while IFS=- read -r a b; do seq "$a" "${b:-$a}"; done))
gen=${cpus[0]} srv_cpu=${cpus[-1]}
addr=127.0.50.1:18090
taskset -c "$srv_cpu" bin/shoal demo-server --listen "$addr" >/dev/null 2>&1 &
srv=$!
out=$(mktemp)
trap 'kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null || true; rm -f "$out"' EXIT
for ((i = 0; i < 100; i++)); do
	curl -sf "http://$addr/healthz" >/dev/null && break
	sleep 0.1
done
echo "idle CPUs: $idle; generator on CPU $gen, demo server on CPU $srv_cpu; $duration s after 1 s of warmup, 64 connections"
TIMEFORMAT='%U %S'
for rate in "${rates[@]}"; do
	t=$({ time taskset -c "$gen" "$loadgen" -rate "$rate" -duration "${duration}s" -warmup 1s -c 64 "http://$addr/" >"$out"; } 2>&1)
	read -r u s <<<"$t"
	awk -v u="$u" -v s="$s" -v r="$rate" -v d="$duration" -v line="$(cat "$out")" \
		'BEGIN {printf "loadgen %6d req/s: %.1f us CPU per request; %s\n", r, (u + s) * 1e6 / (r * (d + 1)), line}'
done
t=$({ time taskset -c "$gen" wrk -t1 -c64 -d"${duration}s" "http://$addr/" >"$out"; } 2>&1)
read -r u s <<<"$t"
n=$(awk '/requests in/ {print $1}' "$out")
awk -v u="$u" -v s="$s" -v n="$n" -v rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")" \
	'BEGIN {printf "wrk -t1 at its max, %.0f req/s: %.1f us CPU per request\n", rps, (u + s) * 1e6 / n}'

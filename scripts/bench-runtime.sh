#!/usr/bin/env bash
# Agent cost with many replicas: a private containerd and one `shoal agent`
# on 127.0.30.1, the demo image, one service with N replicas (bridge
# networking, HTTP health checks). Prints the time until all are healthy,
# then the agent's RSS and CPU over S seconds of steady state, then removes
# everything it made.
#
# Usage: scripts/bench-runtime.sh [--replicas N] [--seconds S]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
replicas=50 seconds=30
while [ $# -gt 0 ]; do
	case "$1" in
	--replicas) replicas=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	*) echo "bench-runtime: unknown argument $1" >&2; exit 2 ;;
	esac
done
CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
shoal=$PWD/bin/shoal
dir=$(mktemp -d /tmp/shoal-bench.XXXXXX)
ip=127.0.30.1
ctd_pid="" agent_pid=""
cli() { "$shoal" --addr "$ip:7070" "$@"; }
cleanup() {
	if [ -n "$agent_pid" ]; then
		cli rm bench >/dev/null 2>&1 || true
		deadline=$((SECONDS + 60))
		while [ -n "$(cli ps -o json 2>/dev/null | grep '"service"' || true)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
		kill -TERM "$agent_pid" 2>/dev/null || true
		wait "$agent_pid" 2>/dev/null || true
	fi
	if [ -n "$ctd_pid" ]; then
		pkill -f "containerd-shim.*-address $dir/containerd.sock" 2>/dev/null || true
		kill -TERM "$ctd_pid" 2>/dev/null || true
		wait "$ctd_pid" 2>/dev/null || true
		grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	fi
	ip link del shoal-bench 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
TOML
containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
ctd_pid=$!
until ctr --address "$dir/containerd.sock" version >/dev/null 2>&1; do sleep 0.2; done
"$shoal" agent --name bench --data-dir "$dir/agent" --bind "$ip" --api "$ip:7070" \
	--containerd "$dir/containerd.sock" --namespace bench --bridge shoal-bench --subnet 10.215.0.0/24 \
	--log-level warn 2>"$dir/agent.log" &
agent_pid=$!
until cli nodes -o json 2>/dev/null | grep -q '"ready": true'; do sleep 0.2; done
"$shoal" image build-demo -o "$dir/demo.tar" >/dev/null
cli image load "$dir/demo.tar" >/dev/null
start=$(date +%s.%N)
cli run bench --image shoal-demo:latest --replicas "$replicas" --publish 8080:8080 --health-http /healthz >/dev/null
until [ "$(cli ps bench -o json | grep -c '"healthy": true')" -eq "$replicas" ]; do sleep 0.2; done
end=$(date +%s.%N)
printf 'replicas=%d  all healthy after %.1f s\n' "$replicas" "$(echo "$end - $start" | bc)"
hz=$(getconf CLK_TCK)
cpu0=$(awk '{print $14+$15}' "/proc/$agent_pid/stat")
sleep "$seconds"
cpu1=$(awk '{print $14+$15}' "/proc/$agent_pid/stat")
rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$agent_pid/status")
printf 'agent RSS %s MB, CPU %d ms/s over %d s (%d replicas running, probed every 5 s)\n' \
	"$rss" $(((cpu1 - cpu0) * 1000 / hz / seconds)) "$seconds" "$replicas"

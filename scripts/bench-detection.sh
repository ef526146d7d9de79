#!/usr/bin/env bash
# Gossip failure detection (issue #6): for each PROFILE, starts N real
# `shoal agent` processes on loopback (NET.1..N, own data dirs, no
# containerd), then
#   1. soak: SOAK of nothing killed, from the moment the cluster has formed,
#      counting any member ever seen suspect or failed (every API polled
#      every 100 ms, plus the agents' logs): false detections;
#   2. detection: ROUNDS times SIGKILL one agent and time until every other
#      agent's API (polled every 20 ms) reports it failed, and until each
#      logged the failure; restart it, wait until all see it alive. Any other
#      member suspected or failed meanwhile is a false detection too.
# With --load cpu (the default), both cores are kept busy during both phases
# by 2 stress-ng CPU workers (or 2 `yes`) at normal priority.
#
# The agents and the bench run in a network namespace of their own (and,
# through `ip netns exec`, a mount namespace): an agent without containerd
# still keeps a pool of network namespaces attached to its bridge (CNI
# bridge, veths, iptables rules, bind mounts in its data dir), which an
# agent killed with SIGKILL cannot release. Deleting the namespace does.
# Needs root.
#
# The agents are driven by cmd/shoal-detectbench (Go, so that the survivors
# can be polled concurrently every 20 ms without forking `shoal nodes`; see
# its doc comment). PROFILE is a --profile name (lan, fast, ...) or, for
# trying candidates, tune:BASE,key=value,... (see gossip/profile_tune.go;
# such profiles run a copy of shoal built with -tags detectbench). A PROFILE
# may be prefixed with LABEL= to name it in the results.
#
# Usage: scripts/bench-detection.sh [--nodes N] [--rounds K] [--soak DUR]
#          [--load cpu|none] [--net A.B.C] [--out FILE.jsonl] [--keep] PROFILE...
# e.g.   scripts/bench-detection.sh --soak 10m --rounds 20 lan fast
# Cleans up its agents, load and temporary files on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
nodes=5 rounds=20 soak=2m load=cpu net=127.0.66 out="" keep=""
profiles=()
while [ $# -gt 0 ]; do
	case "$1" in
	--nodes) nodes=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--soak) soak=$2; shift 2 ;;
	--load) load=$2; shift 2 ;;
	--net) net=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	-*) echo "bench-detection: unknown argument $1" >&2; exit 2 ;;
	*) profiles+=("$1"); shift ;;
	esac
done
[ ${#profiles[@]} -gt 0 ] || profiles=(lan fast)
[ "$(id -u)" -eq 0 ] || { echo "bench-detection: needs root (ip netns)" >&2; exit 2; }
case "$load" in cpu | none) ;; *) echo "bench-detection: --load cpu or none" >&2; exit 2 ;; esac

dir=$(mktemp -d /tmp/shoal-bench-detection.XXXXXX)
ns=shoal-detbench-$$
loadpids=() bpid="" nsmade=""
cleanup() {
	trap - EXIT INT TERM
	# The bench kills its agents on SIGTERM; they also die with it (Pdeathsig).
	if [ -n "$bpid" ]; then kill -TERM "$bpid" 2>/dev/null || true; wait "$bpid" 2>/dev/null || true; fi
	for p in "${loadpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${loadpids[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -z "$nsmade" ] || ip netns del "$ns" 2>/dev/null || true
	if [ -n "$keep" ]; then echo "bench-detection: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
# Run private copies: bin/shoal may be rebuilt by someone else while we run.
cp bin/shoal "$dir/shoal"
for p in "${profiles[@]}"; do
	case "${p#*=}" in tune:*)
		CGO_ENABLED=0 go build -tags detectbench -o "$dir/shoal-tune" ./cmd/shoal
		break ;;
	esac
done
go build -o "$dir/detectbench" ./cmd/shoal-detectbench
ip netns add "$ns"
nsmade=1
ip -n "$ns" link set lo up

if [ "$load" = cpu ]; then
	if command -v stress-ng >/dev/null; then
		stress-ng --cpu 2 --quiet &
		loadpids+=($!)
		loadname="2 stress-ng --cpu workers"
	else
		for _ in 1 2; do yes >/dev/null & loadpids+=($!); done
		loadname="2 x yes >/dev/null"
	fi
	echo "bench-detection: CPU load: $loadname (PIDs ${loadpids[*]})"
	sleep 2
fi

results=${out:-$dir/results.jsonl}
for p in "${profiles[@]}"; do
	label=$p profile=$p
	case "$p" in *=*) label=${p%%=*} profile=${p#*=} ;; esac
	bin="$dir/shoal"
	case "$profile" in tune:*) bin="$dir/shoal-tune" ;; esac
	# The agents' files live in $dir/run-*, removed (with $dir) from outside
	# the mount namespace, where their pool's bind mounts are not seen.
	mkdir -p "$dir/run-$label"
	ip netns exec "$ns" "$dir/detectbench" -shoal "$bin" -profile "$profile" -label "$label" \
		-nodes "$nodes" -rounds "$rounds" -soak "$soak" -net "$net" -json "$results" \
		-dir "$dir/run-$label" &
	bpid=$!
	wait "$bpid"
	bpid=""
	echo
done

echo "load: $load; soak $soak; $rounds rounds; $nodes nodes"
# Detection p50/p99 by API poll and by the survivors' logs; false failures
# ("member fail" events, counted per observer, plus failed states seen by
# API polls) and false suspicions (memberlist's "Suspect X has failed"
# lines) in the soak and in the rounds.
printf '%-10s %7s %7s %7s %7s %6s %6s %6s %6s %6s %s\n' profile \
	api_p50 api_p99 log_p50 log_p99 soak_s s_fail s_susp r_fail r_susp loadavg
while read -r line; do
	python3 - "$line" <<'EOF'
import json, math, sys
r = json.loads(sys.argv[1])
s, d = r["soak_false"], r["rounds_false"]
def pct(xs, p):
    if not xs:
        return "-"
    xs = sorted(xs)
    return "%.0f" % xs[max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))]
api, log = r.get("detect_ms") or [], [x for x in r.get("detect_log_ms") or [] if x > 0]
print("%-10s %7s %7s %7s %7s %6.0f %6d %6d %6d %6d %s" % (r["label"],
      pct(api, 50), pct(api, 99), pct(log, 50), pct(log, 99),
      r["soak_s"], s["log_failed"] + s["poll_failed"], s["log_suspect"],
      d["log_failed"] + d["poll_failed"], d["log_suspect"], r["loadavg_end"]))
EOF
done < <(tail -n ${#profiles[@]} "$results")

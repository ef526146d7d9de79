#!/usr/bin/env bash
# Load balancer benchmark (issue #5): Shoal's load balancer against HAProxy
# and nginx (Debian's packages), same backend, same machine, same run.
#
# A private containerd and one `shoal agent` on 127.0.40.1 run the demo image
# as host-network services; HAProxy and nginx run in the foreground from
# config files in a temp dir, pointed at the same replica endpoint that
# Shoal's load balancer forwards to. For the direct path, HAProxy, nginx and
# Shoal, at L4 (TCP) and L7 (HTTP):
#   - maximum rate: wrk -t2 -c64 --latency, after a short warmup;
#   - latency at a fixed rate of half of HAProxy's maximum for that layer:
#     p50 and p99 from bin/shoal-loadgen (open loop; see cmd/shoal-loadgen
#     for why not hey), over the same number of connections.
# Each measurement is repeated --runs times (the order of the paths rotates
# from run to run) and the median is reported, as a markdown table, with
# the targets: L4 >= 0.9x HAProxy's rate, L7 >= 0.8x, added p99 at the fixed
# rate <= 1 ms over direct.
#
# Core budget: each proxy gets --proxy-cores workers (default 1): nginx
# worker_processes, HAProxy nbthread, GOMAXPROCS of the Shoal agent. The
# backend is Go with GOMAXPROCS unset.
#
# Where the processes run (--cpus):
#   shared  nothing pinned: the load generator, the backend and the proxy
#           share all cores;
#   split   the load generator and the backend (and containerd) on the
#           first half of the CPUs, the proxies (Shoal agent, HAProxy,
#           nginx) on the others (taskset, every thread), so that a proxy
#           never waits for a CPU that the generator or the backend holds,
#           as on a machine of its own. Direct runs the same generator and
#           backend on the same CPUs;
#   both    (default) shared, then split.
# Each placement has its own maximum-rate runs and fixed rate (half of
# HAProxy's maximum in that placement), so that the fixed rate is one the
# generator and the backend can carry there.
#
# Idle CPUs: on a virtual machine an idle vCPU halts, and the host takes
# milliseconds to run it again when a wake-up (a loopback packet for a
# process on it) arrives; on this project's machines (Firecracker guests,
# cpuidle haltpoll with guest_halt_poll_ns=0) that alone put the direct
# path's p50 at 2.5 ms at 5,000 req/s at times (how slow depends on the
# host's load, which the guest cannot see). The script therefore holds
# /dev/cpu_dma_latency at 0 while it runs (as cyclictest and tuned's
# latency-performance profile do), so that idle CPUs poll instead of
# halting; --idle halt leaves the machine's idle states alone. The kernel
# drops the request when the script exits.
#
# When Shoal's port does not answer within a deadline (the load balancer is
# not there yet, or broken), Shoal's rows say "not available" and the rest
# of the benchmark runs anyway.
#
# The machine may be shared: the CPU that other processes use during each
# measurement is measured (cgroup v1 cpuacct) and reported. Each attempt
# first waits up to --quiet-wait seconds (default 10) for a second in which
# they use at most --max-background % of a core (default 25); a measurement
# during which they used more is done again, up to --attempts times (default
# 3), keeping the quietest.
#
# Usage: scripts/bench-lb.sh [--runs N] [--duration S] [--proxy-cores N]
#                 [--max-background PCT] [--attempts N] [--quiet-wait S]
#                 [--cpus shared|split|both] [--idle poll|halt]   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
runs=3 duration=10 cores=1 max_bg=25 attempts=3 quiet_wait=10 cpus=both idle=poll
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) runs=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--proxy-cores) cores=$2; shift 2 ;;
	--max-background) max_bg=$2; shift 2 ;;
	--attempts) attempts=$2; shift 2 ;;
	--quiet-wait) quiet_wait=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--idle) idle=$2; shift 2 ;;
	*) echo "bench-lb: unknown argument $1" >&2; exit 2 ;;
	esac
done
for v in runs duration cores attempts max_bg quiet_wait; do
	case "${!v}" in '' | *[!0-9]*) echo "bench-lb: wants a number, got $v=${!v}" >&2; exit 2 ;; esac
done
for v in runs duration cores attempts; do
	[ "${!v}" -gt 0 ] || { echo "bench-lb: $v must be positive" >&2; exit 2; }
done
case "$cpus" in
shared) placements=(shared) ;;
split) placements=(split) ;;
both) placements=(shared split) ;;
*) echo "bench-lb: --cpus wants shared, split or both, got $cpus" >&2; exit 2 ;;
esac
case "$idle" in
poll | halt) ;;
*) echo "bench-lb: --idle wants poll or halt, got $idle" >&2; exit 2 ;;
esac
if [ "$cpus" != shared ] && [ "$(nproc)" -lt 2 ]; then
	echo "bench-lb: --cpus $cpus needs at least 2 CPUs" >&2
	exit 2
fi
ip=127.0.40.1
conns=64 wrk_threads=2 warmup=3
shoal_wait=30 # seconds Shoal's ports get to answer once the backend is healthy
log() { echo "bench-lb: $*" >&2; }

# --- packages ---------------------------------------------------------------
# Shoal's own (containerd, runc, CNI plugins...), then the other proxies and wrk.
bash scripts/install-deps.sh
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
for p in haproxy nginx libnginx-mod-stream wrk; do
	pkg_installed "$p" || need+=("$p")
done
if ((${#need[@]})); then
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Keep apt from starting the packaged services: this script runs its
	# own daemons from its own configs.
	made_policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		made_policy=1
	fi
	rc=0
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } || rc=$?
	[ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
	[ $rc -eq 0 ] || exit $rc
	# If a service was started anyway (a policy-rc.d that allows it), stop
	# it: it would listen on port 80 and take CPU during the benchmark.
	for s in nginx haproxy; do
		case " ${need[*]} " in *" $s "*) ;; *) continue ;; esac
		if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then
			log "apt started the $s service; stopping it"
			systemctl stop "$s" || true
		elif [ -s "/run/$s.pid" ] && kill -0 "$(cat "/run/$s.pid")" 2>/dev/null; then
			log "apt started $s (pid $(cat "/run/$s.pid")); stopping it"
			kill -TERM "$(cat "/run/$s.pid")" || true
		fi
	done
fi

# --- build --------------------------------------------------------------------
CGO_ENABLED=0 go build -o bin/shoal ./cmd/shoal
CGO_ENABLED=0 go build -o bin/shoal-loadgen ./cmd/shoal-loadgen
shoal=$PWD/bin/shoal loadgen=$PWD/bin/shoal-loadgen
for port in 7070 18080 18081 28080 28081 38080 38081; do
	if ss -Hltn "src $ip:$port" | grep -q .; then
		log "$ip:$port is already in use (another bench-lb running?)"
		exit 1
	fi
done

# --- cleanup ------------------------------------------------------------------
dir=$(mktemp -d /tmp/shoal-benchlb.XXXXXX)
ctd_pid="" agent_pid="" haproxy_pid="" nginx_pid="" services=""
cli() { "$shoal" --addr "$ip:7070" "$@"; }
stop_pid() { # stop_pid PID: TERM, wait up to 10 s, then KILL
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	set +e
	trap '' INT TERM
	[ -z "$haproxy_pid" ] || stop_pid "$haproxy_pid"
	[ -z "$nginx_pid" ] || stop_pid "$nginx_pid" # the master; its workers exit with it
	if [ -n "$agent_pid" ]; then
		for s in $services; do cli rm "$s" >/dev/null 2>&1; done
		local deadline=$((SECONDS + 60))
		while [ -n "$(cli ps -o json 2>/dev/null | grep '"service"')" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
		stop_pid "$agent_pid"
	fi
	local f pid
	# Replicas the agent did not remove (it was interrupted too, say): their
	# processes, by PID, from their cgroups (containerd namespace benchlb).
	for f in /sys/fs/cgroup/pids/benchlb/*/cgroup.procs /sys/fs/cgroup/unified/benchlb/*/cgroup.procs; do
		[ -r "$f" ] || continue
		for pid in $(cat "$f"); do stop_pid "$pid"; done
	done
	if [ -n "$ctd_pid" ]; then
		# The shims of this containerd, by PID (their command line names
		# its socket), then the containerd itself.
		for f in /proc/[0-9]*/cmdline; do
			case "$({ tr '\0' ' ' <"$f"; } 2>/dev/null)" in
			*containerd-shim*" -address $dir/containerd.sock"*)
				pid=${f#/proc/} pid=${pid%/cmdline}
				stop_pid "$pid" ;;
			esac
		done
		stop_pid "$ctd_pid"
		grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
	fi
	ip link del shoal-benchlb 2>/dev/null
	rm -rf "$dir"
	if [ -n "$own_cg" ]; then
		echo $$ >"$cg/cgroup.procs"
		for ((i = 0; i < 50; i++)); do rmdir "$own_cg" 2>/dev/null && break; sleep 0.1; done
	fi
	# The containers' cgroups, once empty.
	rmdir /sys/fs/cgroup/*/benchlb/* /sys/fs/cgroup/*/benchlb 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# This script and all it starts run in a cgroup of their own, so that the
# CPU the machine's other processes use during a measurement can be told
# apart (the containers get theirs, benchlb/*, from containerd).
cg=/sys/fs/cgroup/cpuacct own_cg=""
if [ -w "$cg/cgroup.procs" ] && [ -r "$cg/cpuacct.usage" ]; then
	own_cg=$cg/shoal-benchlb.$$
	mkdir "$own_cg"
	echo $$ >"$own_cg/cgroup.procs"
else
	log "no cgroup v1 cpuacct hierarchy: the background CPU is not measured"
fi

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
	local secs=$1 what=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			log "timed out after ${secs}s waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

# --- containerd, agent, backend -------------------------------------------------
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
wait_for 60 containerd ctr --address "$dir/containerd.sock" version
GOMAXPROCS=$cores "$shoal" agent --name benchlb --data-dir "$dir/agent" --bind "$ip" --api "$ip:7070" \
	--containerd "$dir/containerd.sock" --namespace benchlb --bridge shoal-benchlb --subnet 10.216.0.0/24 \
	--log-level warn 2>"$dir/agent.log" &
agent_pid=$!
ready() { cli nodes -o json | grep -q '"ready": true'; }
wait_for 60 "the agent" ready || { tail -20 "$dir/agent.log" >&2; exit 1; }
"$shoal" image build-demo -o "$dir/demo.tar" >/dev/null
cli image load "$dir/demo.tar" >/dev/null

# One service publishing both ports would have L4 and L7 share one replica,
# but a host-network service has a single $PORT, so at most one published
# port. Then: one service per layer, and each layer's paths (direct,
# HAProxy, nginx, Shoal) all go to that layer's replica.
run_args=(--image shoal-demo:latest --replicas 1 --network host --health-http /healthz --health-interval 1s)
if cli run bench "${run_args[@]}" --publish 18080:8080 --publish 18081:8080/http >/dev/null 2>"$dir/run.err"; then
	services="bench" svc4=bench svc7=bench
else
	log "one service with both ports was refused ($(tr '\n' ' ' <"$dir/run.err")); using one service per layer"
	cli run bench-l4 "${run_args[@]}" --publish 18080:8080 >/dev/null
	services="bench-l4"
	cli run bench-l7 "${run_args[@]}" --publish 18081:8080/http >/dev/null
	services="bench-l4 bench-l7" svc4=bench-l4 svc7=bench-l7
fi
healthy() { [ "$(cli ps "$1" -o json | grep -c '"healthy": true')" -ge 1 ]; }
for s in $services; do
	wait_for 120 "service $s to be healthy" healthy "$s" || { cli ps >&2; tail -20 "$dir/agent.log" >&2; exit 1; }
done
endpoint() { cli ps "$1" -o json | grep -o '"endpoint": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/'; }
be4=$(endpoint "$svc4") be7=$(endpoint "$svc7")
[ -n "$be4" ] && [ -n "$be7" ] || { log "no endpoint in shoal ps"; cli ps -o json >&2; exit 1; }
log "backends: L4 $be4 ($svc4), L7 $be7 ($svc7)"

# --- HAProxy and nginx ------------------------------------------------------------
cat >"$dir/haproxy.cfg" <<CFG
global
	nbthread $cores
	maxconn 4096
defaults
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	maxconn 4096
frontend l4
	mode tcp
	bind $ip:28080
	default_backend l4
backend l4
	mode tcp
	server backend $be4
frontend l7
	mode http
	bind $ip:28081
	default_backend l7
backend l7
	mode http
	http-reuse always
	server backend $be7
CFG
haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
haproxy_pid=$!

mkdir -p "$dir/nginx"
cat >"$dir/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes $cores;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events {
	worker_connections 4096;
}
stream {
	upstream l4 {
		server $be4;
	}
	server {
		listen $ip:38080;
		proxy_pass l4;
	}
}
http {
	access_log off;
	client_body_temp_path $dir/nginx/client;
	proxy_temp_path $dir/nginx/proxy;
	fastcgi_temp_path $dir/nginx/fastcgi;
	uwsgi_temp_path $dir/nginx/uwsgi;
	scgi_temp_path $dir/nginx/scgi;
	keepalive_requests 1000000;
	upstream l7 {
		server $be7;
		keepalive 128;
		keepalive_requests 1000000;
	}
	server {
		listen $ip:38081;
		location / {
			proxy_pass http://l7;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
CFG
nginx -p "$dir/nginx" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" >"$dir/nginx.log" 2>&1 &
nginx_pid=$!

# --- paths ------------------------------------------------------------------------
paths=(direct haproxy nginx shoal)
declare -A url avail
url[L4,direct]=http://$be4/ url[L7,direct]=http://$be7/
url[L4,haproxy]=http://$ip:28080/ url[L7,haproxy]=http://$ip:28081/
url[L4,nginx]=http://$ip:38080/ url[L7,nginx]=http://$ip:38081/
url[L4,shoal]=http://$ip:18080/ url[L7,shoal]=http://$ip:18081/
answers() { curl -sf --max-time 2 "$1" | grep -q '"service"'; }
for l in L4 L7; do
	for p in direct haproxy nginx; do
		wait_for 30 "$p $l at ${url[$l,$p]}" answers "${url[$l,$p]}" || { tail -n5 "$dir"/haproxy.log "$dir"/nginx*.log >&2; exit 1; }
		avail[$l,$p]=1
	done
	if wait_for "$shoal_wait" "Shoal $l at ${url[$l,shoal]}" answers "${url[$l,shoal]}" 2>/dev/null; then
		avail[$l,shoal]=1
	else
		avail[$l,shoal]=""
		log "Shoal's $l port ${url[$l,shoal]} did not answer within ${shoal_wait}s: not available"
	fi
done

mkdir -p "$dir/res"
notes=()
idle_note="idle CPUs: the machine's idle states (halt)"
if [ "$idle" = poll ]; then
	if [ -w /dev/cpu_dma_latency ]; then
		# A 32-bit 0, held as long as fd 9 is open: until this script exits.
		exec 9>/dev/cpu_dma_latency
		printf '\x00\x00\x00\x00' >&9
		idle_note="idle CPUs poll (/dev/cpu_dma_latency held at 0)"
	else
		log "cannot write /dev/cpu_dma_latency: idle CPUs may halt"
		idle_note="idle CPUs: the machine's idle states (/dev/cpu_dma_latency not writable)"
	fi
fi
load0=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/')
order() { # order RUN: the paths, rotated by RUN
	local i n=${#paths[@]}
	for ((i = 0; i < n; i++)); do echo "${paths[$(((i + $1) % n))]}"; done
}
median() { # median FILE: the median of the numbers in FILE, one a line
	sort -g "$1" | awk '{v[NR] = $1} END {if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# --- measurements -----------------------------------------------------------------
# Background CPU: what processes other than this script's used while a
# measurement ran, in % of one core: the machine's total CPU time (the root
# cpuacct cgroup) less that of this script's cgroup and of its containers'.
# A measurement with more than --max-background is done again, up to
# --attempts times, keeping the quietest attempt.
cpu_ns() { # prints: total-CPU-ns our-CPU-ns wall-ns
	local o=0 f
	for f in "$own_cg" "$cg/benchlb"; do
		[ -n "$f" ] && [ -r "$f/cpuacct.usage" ] && o=$((o + $(cat "$f/cpuacct.usage")))
	done
	echo "$(cat "$cg/cpuacct.usage") $o $(date +%s%N)"
}
background() { # background "T0 O0 W0" "T1 O1 W1": % of one core
	local a=($1) b=($2)
	echo $((((b[0] - a[0]) - (b[1] - a[1])) * 100 / (b[2] - a[2])))
}
wait_quiet() { # up to --quiet-wait seconds for a second with little background
	[ -n "$own_cg" ] || return 0
	local a b deadline=$((SECONDS + quiet_wait))
	while [ $SECONDS -lt $deadline ]; do
		a=$(cpu_ns)
		sleep 1
		b=$(cpu_ns)
		[ "$(background "$a" "$b")" -gt "$max_bg" ] || return 0
	done
}
measure() { # measure max-PLACEMENT|lat-PLACEMENT LAYER PATH: sets out and bg
	local kind=$1 l=$2 p=$3 before after
	wait_quiet
	if [ "${kind%%-*}" = max ]; then
		"${wrk_cmd[@]}" -t"$wrk_threads" -c"$conns" -d"${warmup}s" "${url[$l,$p]}" >/dev/null 2>&1 || true
		before=$(cpu_ns)
		out=$("${wrk_cmd[@]}" -t"$wrk_threads" -c"$conns" -d"${duration}s" --latency "${url[$l,$p]}" 2>&1) || true
	else
		before=$(cpu_ns)
		out=$("${loadgen_cmd[@]}" -rate "${rate[$l,${kind#*-}]}" -duration "${duration}s" -warmup "${warmup}s" -c "$conns" "${url[$l,$p]}" 2>&1) || true
	fi
	after=$(cpu_ns)
	bg=-1
	[ -z "$own_cg" ] || bg=$(background "$before" "$after")
}
attempt() { # attempt max-PLACEMENT|lat-PLACEMENT LAYER PATH RUN: measure, again while the background is too high
	local kind=$1 l=$2 p=$3 r=$4 a best_bg="" best_out=""
	for ((a = 1; a <= attempts; a++)); do
		measure "$kind" "$l" "$p"
		echo "$out" >>"$dir/res/$l.$p.$kind.out"
		if [ -z "$best_bg" ] || [ "$bg" -lt "$best_bg" ]; then best_bg=$bg best_out=$out; fi
		[ "$bg" -gt "$max_bg" ] || break
		[ $a -eq "$attempts" ] || log "run $((r + 1)) $l $p: other processes used ${bg}% of a core; again"
	done
	out=$best_out bg=$best_bg
	echo "$bg" >>"$dir/res/$l.$p.$kind.bg"
	echo "$bg" >>"$dir/res/all.bg"
}

get() { echo "$out" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; } # get KEY: from loadgen's $out
# CPUs for --cpus split: the first half of those this script may use for
# the load generator and the backend, the others for the proxies.
expand_cpus() { # expand_cpus LIST: "0-2,4" -> "0 1 2 4"
	local IFS=, part i
	for part in $1; do
		case "$part" in
		*-*) for ((i = ${part%-*}; i <= ${part#*-}; i++)); do echo "$i"; done ;;
		*) echo "$part" ;;
		esac
	done
}
allowed=($(expand_cpus "$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)"))
half=$((${#allowed[@]} / 2))
gen_cpus=$(IFS=,; echo "${allowed[*]:0:half}")
proxy_cpus=$(IFS=,; echo "${allowed[*]:half}")
pin() { # pin CPULIST PID...: every thread of each process; a process gone meanwhile is skipped
	local cpus=$1 pid
	shift
	for pid in "$@"; do
		# Twice: a thread that exits while taskset walks them fails the first.
		taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 || taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 ||
			! kill -0 "$pid" 2>/dev/null || { log "could not pin process $pid to CPU(s) $cpus"; exit 1; }
	done
}
pin_split() {
	local f pid gen=("$ctd_pid") proxies=("$agent_pid" "$haproxy_pid" "$nginx_pid")
	proxies+=($(pgrep -P "$nginx_pid" || true)) # nginx's workers
	for f in /proc/[0-9]*/cmdline; do # this containerd's shims
		case "$({ tr '\0' ' ' <"$f"; } 2>/dev/null)" in
		*containerd-shim*" -address $dir/containerd.sock"*) pid=${f#/proc/} gen+=("${pid%/cmdline}") ;;
		esac
	done
	for f in /sys/fs/cgroup/pids/benchlb/*/cgroup.procs /sys/fs/cgroup/unified/benchlb/*/cgroup.procs; do
		[ -r "$f" ] && gen+=($(cat "$f")) # the backends
	done
	pin "$gen_cpus" "${gen[@]}"
	pin "$proxy_cpus" "${proxies[@]}"
	log "split: load generator, backend and containerd on CPU(s) $gen_cpus; Shoal, HAProxy and nginx on CPU(s) $proxy_cpus"
}

declare -A rate
for pl in "${placements[@]}"; do
	wrk_cmd=(wrk) loadgen_cmd=("$loadgen")
	if [ "$pl" = split ]; then
		pin_split
		wrk_cmd=(taskset -c "$gen_cpus" wrk) loadgen_cmd=(taskset -c "$gen_cpus" "$loadgen")
	fi
	for ((r = 0; r < runs; r++)); do
		for l in L4 L7; do
			for p in $(order $r); do
				[ -n "${avail[$l,$p]}" ] || continue
				attempt "max-$pl" "$l" "$p" "$r"
				rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
				bad=$(echo "$out" | awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}')
				[ "$bad" -eq 0 ] || notes+=("run $((r + 1)) $l $p max, $pl: $bad errors or non-2xx answers (wrk)")
				log "run $((r + 1))/$runs $l $p max, $pl CPUs: ${rps:-none} req/s (background ${bg}%)"
				echo "${rps:-0}" >>"$dir/res/$l.$p.$pl.max"
			done
		done
	done
	for l in L4 L7; do
		rate[$l,$pl]=$(median "$dir/res/$l.haproxy.$pl.max" | awk '{printf "%d", $1 / 2}')
	done
	for ((r = 0; r < runs; r++)); do
		for l in L4 L7; do
			for p in $(order $r); do
				[ -n "${avail[$l,$p]}" ] || continue
				attempt "lat-$pl" "$l" "$p" "$r"
				p50=$(get p50) p99=$(get p99) achieved=$(get achieved) errors=$(get errors) missed=$(get missed)
				if [ -z "$p99" ]; then
					notes+=("run $((r + 1)) $l $p fixed rate, $pl: loadgen failed: $out")
					continue
				fi
				[ "${errors:-0}" -eq 0 ] || notes+=("run $((r + 1)) $l $p fixed rate, $pl: $errors errors")
				if awk -v a="$achieved" -v t="${rate[$l,$pl]}" 'BEGIN {exit !(a < 0.95 * t)}'; then
					notes+=("run $((r + 1)) $l $p fixed rate, $pl: only $achieved of ${rate[$l,$pl]} req/s completed, ${missed:-0} never sent (latencies include the queueing)")
				fi
				log "run $((r + 1))/$runs $l $p at ${rate[$l,$pl]} req/s, $pl CPUs: p50 ${p50} us, p99 ${p99} us (background ${bg}%)"
				echo "$p50" >>"$dir/res/$l.$p.$pl.p50"
				echo "$p99" >>"$dir/res/$l.$p.$pl.p99"
			done
		done
	done
done

# --- report -----------------------------------------------------------------------
declare -A max p50 p99 bgrow
for l in L4 L7; do
	for p in "${paths[@]}"; do
		bgrow[$l,$p]=""
		for pl in "${placements[@]}"; do
			max[$l,$p,$pl]="" p50[$l,$p,$pl]="" p99[$l,$p,$pl]=""
			[ -n "${avail[$l,$p]}" ] || continue
			bgrow[$l,$p]+="${bgrow[$l,$p]:+; }$(median "$dir/res/$l.$p.max-$pl.bg"); $(median "$dir/res/$l.$p.lat-$pl.bg" 2>/dev/null || echo -)"
			max[$l,$p,$pl]=$(median "$dir/res/$l.$p.$pl.max")
			[ ! -s "$dir/res/$l.$p.$pl.p50" ] || p50[$l,$p,$pl]=$(median "$dir/res/$l.$p.$pl.p50")
			[ ! -s "$dir/res/$l.$p.$pl.p99" ] || p99[$l,$p,$pl]=$(median "$dir/res/$l.$p.$pl.p99")
		done
	done
done
ms() { [ -n "$1" ] && awk -v u="$1" 'BEGIN {printf "%.3f", u / 1000}' || echo "-"; }
echo
echo "Load balancer benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average before: $load0"
echo
echo "$(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); each proxy $cores worker(s)"
echo "(nginx worker_processes, HAProxy nbthread, Shoal agent GOMAXPROCS); backend: demo image, host network."
echo "Max: wrk -t$wrk_threads -c$conns -d${duration}s after a ${warmup}s warmup. Fixed rate: shoal-loadgen -c $conns -d ${duration}s,"
echo "open loop at half of HAProxy's max in the same placement. Median of $runs run(s). $idle_note; cpuidle driver $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)."
for pl in "${placements[@]}"; do
	case "$pl" in
	shared) echo "shared: nothing pinned; generator, backend and proxy share the $(nproc) cores. Fixed rate L4 ${rate[L4,$pl]}, L7 ${rate[L7,$pl]} req/s." ;;
	split) echo "split: generator, backend and containerd on CPU(s) $gen_cpus, the proxies on CPU(s) $proxy_cpus (taskset). Fixed rate L4 ${rate[L4,$pl]}, L7 ${rate[L7,$pl]} req/s." ;;
	esac
done
if [ -n "$own_cg" ]; then
	echo "Other processes on the machine used $(median "$dir/res/all.bg")% of a core (median; max $(sort -n "$dir/res/all.bg" | tail -1)%) during"
	echo "the measurements; $(awk -v m="$max_bg" '$1 > m {n++} END {print n + 0}' "$dir/res/all.bg") of $(wc -l <"$dir/res/all.bg") stayed above ${max_bg}% after $attempts attempt(s). Column \"other CPU\": max; fixed rate, per placement."
fi
echo
head="| path | layer |" rule="| --- | --- |"
for pl in "${placements[@]}"; do
	head+=" $pl: max req/s | vs HAProxy | p50 ms | p99 ms | added p99 ms |" rule+=" ---: | ---: | ---: | ---: | ---: |"
done
echo "$head other CPU % |"
echo "$rule ---: |"
for l in L4 L7; do
	for p in "${paths[@]}"; do
		row="| $p | $l |"
		for pl in "${placements[@]}"; do
			if [ -z "${avail[$l,$p]}" ]; then
				row+=" not available | | | | |"
				continue
			fi
			added="-"
			if [ "$p" != direct ] && [ -n "${p99[$l,$p,$pl]}" ] && [ -n "${p99[$l,direct,$pl]}" ]; then
				added=$(awk -v a="${p99[$l,$p,$pl]}" -v d="${p99[$l,direct,$pl]}" 'BEGIN {printf "%+.3f", (a - d) / 1000}')
			fi
			row+=" $(printf '%.0f' "${max[$l,$p,$pl]}") | $(awk -v a="${max[$l,$p,$pl]}" -v h="${max[$l,haproxy,$pl]}" 'BEGIN {printf "%.2f", a / h}') |"
			row+=" $(ms "${p50[$l,$p,$pl]}") | $(ms "${p99[$l,$p,$pl]}") | $added |"
		done
		echo "$row ${bgrow[$l,$p]} |"
	done
done
echo
verdict() { # verdict DESCRIPTION CONDITION-AWK-EXPRESSION (or "" when not available)
	if [ -z "$2" ]; then
		echo "- $1: not available"
	elif awk "BEGIN {exit !($2)}"; then
		echo "- $1: PASS"
	else
		echo "- $1: FAIL"
	fi
}
echo "Targets:"
for pl in "${placements[@]}"; do
	for l in L4 L7; do
		want=0.9
		[ "$l" = L4 ] || want=0.8
		cond=""
		[ -z "${max[$l,shoal,$pl]}" ] || cond="${max[$l,shoal,$pl]} >= $want * ${max[$l,haproxy,$pl]}"
		verdict "$l max rate >= ${want}x HAProxy's ($(awk -v h="${max[$l,haproxy,$pl]}" -v w=$want 'BEGIN {printf "%.0f", h * w}') req/s), $pl CPUs" "$cond"
	done
	for l in L4 L7; do
		cond=""
		[ -z "${p99[$l,shoal,$pl]}" ] || [ -z "${p99[$l,direct,$pl]}" ] || cond="${p99[$l,shoal,$pl]} - ${p99[$l,direct,$pl]} <= 1000"
		verdict "$l added p99 at ${rate[$l,$pl]} req/s <= 1 ms over direct, $pl CPUs" "$cond"
	done
done
if ((${#notes[@]})); then
	echo
	echo "Notes:"
	printf -- '- %s\n' "${notes[@]}"
fi

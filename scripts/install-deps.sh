#!/usr/bin/env bash
# Installs what Shoal's build, tests and demo need, idempotently: only
# packages that are missing are installed (Debian/apt). Needs root.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Container runtime and networking (used by the runtime and failover work).
for p in containerd runc containernetworking-plugins iptables iproute2 ca-certificates curl busybox-static docker-registry; do
	pkg_installed "$p" || need+=("$p")
done

if ((${#need[@]})); then
	echo "install-deps: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! have go; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "install-deps: add /usr/local/go/bin to PATH" >&2
	else
		echo "install-deps: Go is required (https://go.dev/doc/install); this machine kind ships it at /usr/local/go" >&2
		exit 1
	fi
fi

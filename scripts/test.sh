#!/usr/bin/env bash
# Runs the whole test suite: formatting, vet, and every test with the race
# detector (fuzz targets run their seed corpora as ordinary tests).
# Usage: scripts/test.sh [go test flags...]   e.g. scripts/test.sh -run Partition ./node
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" = 0 ]; then
	scripts/install-deps.sh
fi

echo "== gofmt" >&2
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then
	echo "gofmt: these files need formatting:" >&2
	echo "$bad" >&2
	exit 1
fi

echo "== go vet" >&2
go vet ./...

echo "== go test -race" >&2
if [ $# -eq 0 ]; then
	set -- ./...
fi
go test -race -count=1 -timeout 20m "$@"
